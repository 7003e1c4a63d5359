"""The data card: "who we align to", carried with every dataset version and model version.

It states where the negatives came from, who annotated them, under which policy tier, and
how the data was split, so a registered model can be audited without rerunning anything.
"""

from __future__ import annotations

import pandas as pd


def _counts(series: pd.Series, limit: int = 10) -> str:
    counts = series.fillna("unknown").replace("", "unknown").value_counts()
    lines = [f"| {value} | {count} |" for value, count in counts.head(limit).items()]
    if len(counts) > limit:
        lines.append(f"| ({len(counts) - limit} more) | {int(counts.iloc[limit:].sum())} |")
    return "\n".join(lines)


def render_data_card(frame: pd.DataFrame, manifest: dict) -> str:
    return f"""# Data card: dataset {manifest['version']}

**Who we align to.** The negatives below are outputs that the listed annotators judged
harmful or unwanted under the listed policy tiers. A model trained on them learns *their*
judgement, not a universal one: read this before you deploy it.

- Source: `{manifest['source']}` (sha256 `{manifest['source_sha256'][:16]}`)
- Rows: {manifest['n_rows']} ({manifest['labels'].get('negative', 0)} negative, {manifest['labels'].get('positive', 0)} positive)
- Splits: {', '.join(f"{k} {v}" for k, v in manifest['splits'].items())} (by prompt hash; test is held out from training and gating)
- Multi-turn prompts: {int((frame['n_turns'] > 2).sum())} rows

| source | rows |
|---|---|
{_counts(frame['source'])}

| annotator | rows |
|---|---|
{_counts(frame['annotator'])}

| policy tier | rows |
|---|---|
{_counts(frame['policy_tier'])}
"""
