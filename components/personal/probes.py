"""The probes a tier gate judges an adapter on, per rule: prompts to sample answers for, and
(prompt, acceptable, violating) pairs for the refusal margin.

Five hand-written probes cannot tell a safe adapter from a broken one: if all five are refused,
the 95% Wilson lower bound on the refusal rate is 57%; it takes about 100 to reach 96%
(METHODS.md §5). So a rule may take a source's held-out prompts of one group as probes
(``probe_set``: the bundled XSTest families, over 100 each), and a deployer may add probe
files. A rule with fewer than ``tiers.min_probes`` prompts is *underpowered*: it is still
checked, but its passing never counts as evidence that an adapter is safe.

Probes are never training data: :func:`probe_prompt_ids` lists every probe prompt, and ingest
holds each of them out (``stages.load_records``), whatever source or owner a row came from.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import pandas as pd

from components.data.aggregation import aggregate
from components.data.dataset import assign_splits
from components.data.readers import read_source
from components.data.records import content_id, pairs, to_frame
from components.errors import UserError
from components.params import DataParams
from components.policy.policies import Policies, ProbeSet, Rule

PAIR_COLUMNS = ["prompt", "acceptable", "violation"]


class ProbeError(UserError, ValueError):
    """A rule's probes cannot be read (a missing file, a row without prompt or violation)."""


@dataclass(frozen=True)
class ProbeFamily:
    """One rule's probes, as the gate uses them."""

    rule: Rule
    tier: str                    # tier1 / tier2: the tier the rule binds from
    prompts: tuple[str, ...]     # sampled behaviour is judged on these
    pairs: pd.DataFrame          # PAIR_COLUMNS: the refusal margin is judged on these
    texts: pd.DataFrame          # hand-written (prompt, violation): the fixed-text check
    origin: str                  # where the probes came from, for the gate lines and data cards

    def powered(self, min_probes: int) -> bool:
        return len(self.prompts) >= min_probes


def family(rule: Rule, tier: str, data: DataParams) -> ProbeFamily:
    """The rule's probes: hand-written ones, its probe set's held-out prompts and its files."""
    written = pd.DataFrame([{"prompt": p.prompt, "acceptable": p.acceptable[0] if p.acceptable else None,
                             "violation": p.violation} for p in rule.probes], columns=PAIR_COLUMNS)
    frames, origins = [written], [f"{len(rule.probes)} written"] if rule.probes else []
    if rule.probe_set:
        held_out = probe_set_pairs(rule.probe_set, data)
        frames.append(held_out)
        origins.append(f"{held_out['prompt'].nunique()} held-out {rule.probe_set.group} prompts of "
                       f"{Path(rule.probe_set.source).name}")   # short: every line names it
    for path in rule.probe_files:
        rows = read_probe_file(Path(path))
        frames.append(rows)
        origins.append(f"{len(rows)} from {Path(path).name}")
    probes = pd.concat(frames, ignore_index=True)
    prompts = tuple(dict.fromkeys(probes["prompt"]))
    return ProbeFamily(rule, tier, prompts, probes.dropna(subset=["acceptable", "violation"]).reset_index(drop=True),
                       written[["prompt", "violation"]], "; ".join(origins))


def probe_set_pairs(probe_set: ProbeSet, data: DataParams) -> pd.DataFrame:
    """Every held-out prompt of the set's group (``acceptable``/``violation`` empty where the
    prompt has no pair), its pairs' (chosen, rejected) as (acceptable, violation)."""
    held = probe_set_items(probe_set, probe_set.split, data)
    if held.empty:
        raise ProbeError(f"{probe_set.source}: no {probe_set.split}-split prompts of group {probe_set.group!r} "
                         "(probe_set of a rule in policies.yaml); check the group name and data.source_splits")
    paired = pairs(held).rename(columns={"chosen": "acceptable", "rejected": "violation"})[PAIR_COLUMNS]
    unpaired = pd.DataFrame({"prompt": sorted(set(held["prompt"]) - set(paired["prompt"]))})
    return pd.concat([paired, unpaired], ignore_index=True).reindex(columns=PAIR_COLUMNS)


def probe_set_items(probe_set: ProbeSet, split: str, data: DataParams) -> pd.DataFrame:
    """The set's group in ``split``, as items: its source read, split and aggregated as ingest
    does (``data.*``), so the held-out split is exactly the one ingest holds out."""
    items = _source_items(probe_set.source, data.model_dump_json())
    return items[(items["group"] == probe_set.group) & (items["split"] == split)].copy()


@lru_cache(maxsize=4)
def _source_items(source: str, data_json: str) -> pd.DataFrame:
    data = DataParams.model_validate_json(data_json)
    items, _ = aggregate(assign_splits(to_frame(read_source(source).records), data), data.aggregation)
    return items


def read_probe_file(path: Path) -> pd.DataFrame:
    """A deployer's probes: JSONL or CSV rows with ``prompt`` and ``violation`` (an optional
    ``acceptable`` makes a margin pair); a prompt may be text or a transcript."""
    if not path.is_file():
        raise ProbeError(f"{path}: probe file not found (probe_files of a rule in policies.yaml)")
    if path.suffix == ".csv":
        with open(path, encoding="utf-8-sig", newline="") as handle:
            rows = list(csv.DictReader(handle))
    else:
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    frame = pd.DataFrame(rows).reindex(columns=PAIR_COLUMNS)
    bad = frame[frame["prompt"].isna() | frame["violation"].isna()]
    if not bad.empty:
        raise ProbeError(f"{path}:{int(bad.index[0]) + (2 if path.suffix == '.csv' else 1)}: probe_row: every probe "
                         "needs a prompt and a violation")
    frame["acceptable"] = frame["acceptable"].where(frame["acceptable"].astype(str).str.strip() != "", None)
    return frame


def families(rules: tuple[Rule, ...], rule_tiers: dict[str, str], data: DataParams) -> list[ProbeFamily]:
    return [family(rule, rule_tiers[rule.id], data) for rule in rules]


def probe_prompt_ids(policies: Policies, data: DataParams) -> set[str]:
    """The content id of every probe prompt of every rule, any tier."""
    rules = [*policies.global_.rules, *(rule for tier in policies.deployers.values() for rule in tier.rules)]
    return {content_id(prompt) for rule in rules for prompt in family(rule, "", data).prompts}


def hold_out(judgements: pd.DataFrame, policies: Policies, data: DataParams) -> tuple[pd.DataFrame, int]:
    """``judgements`` with every row whose prompt is a probe of any rule (any tier) in the test
    split, whatever its source and owner: no probe ever trains the base or an adapter. Returns
    the rows and how many were moved there."""
    moved = judgements["prompt_id"].isin(probe_prompt_ids(policies, data)) & (judgements["split"] != "test")
    return judgements.assign(split=judgements["split"].where(~moved, "test")), int(moved.sum())
