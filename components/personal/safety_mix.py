"""The repair path for an adapter the tier gate refused: retrain it with a small share of tier 1's
own training data mixed in, then gate it again (the "safety-tuned" recipe: Qi et al. 2023 and
Bianchi et al. 2024 found that a small share of safety examples mixed into fine-tuning keeps most
of a model's safety, and Bianchi et al. that too many make it refuse safe requests; so the mix
holds both of tier 1's families, harmful requests refused and safe ones answered).

The mix is tier 1's own training data: the **train** split of each group a tier-1 rule takes its
probes from (``probe_set``), its source read and split as ingest does, whether or not the base
trained on it. For the bundled rules: XSTest's unsafe prompts with their human-labelled
compliance as the negative and refusal as the positive, and its safe prompts with a needless
refusal as the negative and the helpful answer as the positive. The probes are that split's
test side, and any prompt that is a probe of any rule is left out, so no probe is ever in the mix.
Only pairs are mixed in: with ``tiers.pair_anchors``, D2O anchors each violating answer on its
acceptable one, so the acceptable answers are what the adapter learns toward, as in the recipe.
The repaired adapter meets the same gate; a repair never loosens a bound.
"""

from __future__ import annotations

import math

import pandas as pd

from components.data.records import NEGATIVE, POSITIVE
from components.params import DataParams
from components.personal.probes import probe_prompt_ids, probe_set_items
from components.policy.policies import Policies
from components.training.negatives import balanced_sample


def safety_mix(policies: Policies, data: DataParams, owner_negatives: int, share: float, seed: int) -> pd.DataFrame:
    """Tier-1 training pairs (violating answer, acceptable answer) to make ``share`` of the mixed
    training negatives, split alike over the probe-set groups (seeded). Empty when ``share`` is 0
    or tier 1 has no probe set to draw from."""
    sets = [rule.probe_set for rule in policies.global_.rules if rule.probe_set]
    if share <= 0 or not sets or owner_negatives == 0:
        return pd.DataFrame()
    pool = pd.concat([probe_set_items(probe_set, "train", data) for probe_set in sets], ignore_index=True)
    pool = pool[~pool["prompt_id"].isin(probe_prompt_ids(policies, data))]
    acceptable = pool[pool["label"] == POSITIVE].dropna(subset=["pair_id"])
    negatives = pool[(pool["label"] == NEGATIVE) & pool["pair_id"].isin(set(acceptable["pair_id"]))].sort_values("id")
    if negatives.empty:
        return pd.DataFrame()
    wanted = max(len(sets), math.ceil(owner_negatives * share / (1 - share)))
    chosen = balanced_sample(negatives, wanted, seed, by="group")
    pairs = pd.concat([chosen, acceptable[acceptable["pair_id"].isin(set(chosen["pair_id"]))]])
    return pairs.sort_values("id").reset_index(drop=True)
