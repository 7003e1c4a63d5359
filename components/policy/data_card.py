"""The data card: "who we align to", carried with every dataset version and model version.

It states where the negatives came from, who judged them (pseudonymous ids only), under which
policy tier and group, how much they agreed and how their judgements became training labels,
what was set aside and withdrawn, and how the data was split, so a registered model can be
audited without rerunning anything. It counts withdrawals; it never names who withdrew.
"""

from __future__ import annotations

import pandas as pd

from components.validation.agreement import alpha_text


def _table(header: str, counts: dict | pd.Series, what: str = "rows", limit: int = 10) -> str:
    counts = pd.Series(counts, dtype="int64") if isinstance(counts, dict) else counts
    lines = [f"| {header} | {what} |", "|---|---|"]
    lines += [f"| {value} | {count} |" for value, count in counts.head(limit).items()]
    if len(counts) > limit:
        lines.append(f"| ({len(counts) - limit} more) | {int(counts.iloc[limit:].sum())} |")
    if counts.empty:
        lines.append("| (none) | 0 |")
    return "\n".join(lines)


def _inline(counts: dict) -> str:
    return ", ".join(f"{count} {what}" for what, count in counts.items()) or "none"


def _values(series: pd.Series) -> pd.Series:
    return series.fillna("unknown").replace("", "unknown").value_counts()


def _source_notes(notes: dict) -> str:
    """What each source's reader resolved or left out (XSTest: merged repeats, contradicting
    labels, partial refusals, pairs per group), one table per source."""
    return "".join(f"\n{_table(f'`{source}`: read', counts, 'count', limit=20)}\n" for source, counts in notes.items())


def _app_line(app: dict | None) -> str:
    """What people gave in ``alignpipe app``, and the cap on any one person's share (person_share.py)."""
    if not app or not (app["rows"] or app["over_cap"]):
        return "none"
    rows = f"{app['rows']} judgement{'' if app['rows'] == 1 else 's'}"
    people = f"{app['persons']} {'person' if app['persons'] == 1 else 'people'}"
    return (f"{rows} from {people} (pseudonymous); the largest person's share of this version is "
            f"{100 * app['largest_share']:.1f}% (cap {100 * app['max_person_share']:.1f}%, app.max_person_share); "
            f"{app['over_cap']} over the cap left out")


def _screened(screened: dict, probes_held_out: int) -> str:
    """Owner feedback set aside for working against a rule above its owner, per owner (never per
    annotator), and the rows held out because their prompt is a policy probe."""
    lines = [f"- Held out because their prompt is a policy probe (never trained on): {probes_held_out} judgements",
             "", "| owner | rows | screened | by reason | adapter trained |", "|---|---|---|---|---|"]
    lines += [f"| {owner} | {row['rows']} | {row['screened']} ({100 * row['fraction']:.1f}%) | "
              f"{_inline(row['by_reason'])} | {'no: beyond tiers.max_screened_fraction' if row['too_many'] else 'yes'} |"
              for owner, row in screened.items()] or ["| (no owner feedback) | 0 | 0 | none | - |"]
    return "\n".join(lines) + "\n"


def render_data_card(judgements: pd.DataFrame, items: pd.DataFrame, manifest: dict) -> str:
    aggregation, agreement = manifest["aggregation"], manifest["agreement"]
    quarantine, withdrawals, unpaired = manifest["quarantine"], manifest["withdrawals"], manifest["unpaired"]
    item_labels = manifest["items"]["labels"]
    return f"""# Data card: dataset {manifest['version']}

**Who we align to.** The negatives below are outputs that the listed annotators judged
harmful or unwanted under the listed policy tiers. A model trained on them learns *their*
judgement, not a universal one: read this before you deploy it.

- Sources: {', '.join(f"`{path}` (sha256 `{digest[:16]}`)" for path, digest in manifest['sources'].items())}
- Judgements kept: {manifest['n_rows']} ({manifest['labels'].get('negative', 0)} negative, {manifest['labels'].get('positive', 0)} positive), by {judgements['annotator'].nunique()} annotator id(s) (e-mail addresses pseudonymised)
- Training items: {manifest['items']['n']} ({item_labels.get('negative', 0)} negative, {item_labels.get('positive', 0)} positive)
- Splits (items): {', '.join(f"{k} {v}" for k, v in manifest['items']['splits'].items())} (by prompt hash; test is held out from training and gating)
- Multi-turn prompts: {int((items['n_turns'] > 2).sum())} items
- App feedback (people in the loop): {_app_line(manifest.get('app'))}

## How judgements became labels

- Aggregation rule: **{aggregation['rule']}**: {aggregation['kept']} of {aggregation['items']} items kept; left out: {_inline(aggregation['left_out'])}
- Krippendorff's alpha (nominal): **{alpha_text(agreement)}** over {agreement['items_judged_twice_or_more']} items judged twice or more

{_table("agreement (largest label share / judgements)", agreement['distribution'], "items")}

## What was set aside

- Quarantined: {quarantine['rows']} of {quarantine['source_rows']} source rows ({100 * quarantine['fraction']:.2f}%), kept with file, line and rule in `quarantine.jsonl`
- Read as unpaired records: {unpaired['rows']} source rows ({_inline(unpaired['by_rule'])})
- Withdrawn (consent): {withdrawals['judgements']} judgements, {withdrawals['annotators']} annotator(s), from {withdrawals['listed']} listed id(s)
- Reclassified by policy rules (positives that break a rule of their owner's tiers now train as negatives): {_inline(manifest.get('reclassified', {})) if manifest.get('reclassified') else 'none'}

{_table("quarantine rule", quarantine['by_rule'], "problems")}
{_source_notes(manifest.get('source_notes', {}))}
{_screened(manifest.get('screened', {}), manifest.get('probes_held_out', 0))}

## Who judged, where from

{_table("source", _values(judgements['source']), "judgements")}

{_table("annotator", _values(judgements['annotator']), "judgements")}

{_table("policy tier", _values(judgements['policy_tier']), "judgements")}

{_table("owner (whose model it trains)", judgements['owner'].fillna('').replace('', 'global (base model)').value_counts(), "judgements")}

{_table("group", _values(judgements['group']), "judgements")}
"""


def render_adapter_card(rows: pd.DataFrame, owner: str, tier: str, deployer: str, data_version: str,
                        dataset_version: str) -> str:
    """The data card of a personal adapter: whose feedback it learned from, and nothing else's."""
    reclassified = rows["reclassified_by"].fillna("").replace("", pd.NA).dropna().value_counts()
    return f"""# Data card: adapter for {owner} ({tier})

**Whose feedback this adapter learned from.** Only the rows below, all owned by `{owner}`
{f"(under deployer `{deployer}`, whose adapter it sits on)" if deployer else "(a deployer: it sits on the base model)"}.
No other deployer's or user's feedback trained it; the base model's global feedback trained the
base beneath it (see that version's data card).

- Owner data version: {data_version} (dataset {dataset_version})
- Items: {len(rows)} ({int((rows['label'] == 'negative').sum())} negative, {int((rows['label'] == 'positive').sum())} positive); trained on the train split ({int((rows['split'] == 'train').sum())} items), gated on dev and test ({int(rows['split'].isin(['dev', 'test']).sum())})
- Reclassified by policy rules: {_inline(reclassified.to_dict()) if not reclassified.empty else 'none'}

{_table("annotator", _values(rows['annotator']), "items")}
"""
