"""What each negative is trained *with*, per objective, with its reference log-probs.

D2O's anchors are the model's own samples (``anchors.py``), or for a personal adapter the
negative's own pair's positive where there is one (``with_pair_anchors``); DPO's companion is
the paired chosen response; KTO's is a mismatched (prompt, response) pair from the same data, whose
policy-minus-reference log-prob estimates the KL term z0; Stable Alignment's are the other rated
responses to the same prompt. Reference log-probs are computed here once, so training never runs
the reference.
"""

from __future__ import annotations

import re
from dataclasses import replace

import numpy as np
import pandas as pd

from components.data.records import POSITIVE
from components.modeling.sequences import Encoded, encode_response, score
from components.training.anchors import AnchorSet
from components.training.relearn import RelearnExample


def with_anchors(negatives: list[Encoded], ref_neg, anchors: AnchorSet, tokenizer,
                 drop_pattern: str = "") -> list[RelearnExample]:
    """D2O examples; anchors whose text matches ``drop_pattern`` (a regex scorer) are masked."""
    scorer = re.compile(drop_pattern) if drop_pattern else None
    examples = []
    for negative, ref, group, ref_group in zip(negatives, ref_neg, anchors.responses, anchors.ref_logps):
        mask = None
        if scorer is not None:
            mask = tuple(scorer.search(tokenizer.decode(a, skip_special_tokens=True)) is None for a in group)
        examples.append(RelearnExample(negative, float(ref), tuple(Encoded(negative.prompt_ids, a) for a in group),
                                       tuple(float(x) for x in ref_group), mask))
    return examples


def with_pair_anchors(examples: list[RelearnExample], negative_rows: pd.DataFrame, train: pd.DataFrame, reference,
                      tokenizer, max_response_tokens: int) -> list[RelearnExample]:
    """D2O examples whose negative has a positive in its pair (``train``), anchored on that
    positive instead of the model's own samples, as wide as before; the rest unchanged. Where
    someone said what the right answer is, D2O need not guess it from the model: its samples
    share the negative's content (the answer the owner kept, only its sign-off flagged) and, on
    a model that over-refuses, its refusals."""
    chosen = train[train["label"] == POSITIVE].dropna(subset=["pair_id"]).sort_values("id")
    chosen = chosen.drop_duplicates("pair_id").set_index("pair_id")["response"]
    where = [i for i, pair in enumerate(negative_rows["pair_id"]) if pair in chosen.index]
    if not where:
        return examples
    anchors = [Encoded(examples[i].negative.prompt_ids,
                       encode_response(tokenizer, chosen[negative_rows["pair_id"].iloc[i]], max_response_tokens))
               for i in where]
    ref, _ = score(reference, anchors, tokenizer.pad_token_id)
    out = list(examples)
    for i, anchor, logp in zip(where, anchors, ref.tolist()):
        width = len(examples[i].companions)
        out[i] = replace(examples[i], companions=(anchor,) * width, ref_companion_logps=(logp,) * width,
                         companion_mask=None)
    return out


def with_chosen(negatives: list[Encoded], ref_neg, negative_rows: pd.DataFrame, train: pd.DataFrame,
                reference, tokenizer, max_response_tokens: int) -> list[RelearnExample]:
    """DPO examples: each negative with the positive response of the same pair."""
    positives = train[train["label"] == POSITIVE].dropna(subset=["pair_id"]).set_index("pair_id")["response"]
    chosen = [Encoded(n.prompt_ids, encode_response(tokenizer, positives[pid], max_response_tokens))
              for n, pid in zip(negatives, negative_rows["pair_id"])]
    ref_chosen, _ = score(reference, chosen, tokenizer.pad_token_id)
    return [RelearnExample(n, float(r), (c,), (float(rc),)) for n, r, c, rc in zip(negatives, ref_neg, chosen, ref_chosen)]


def with_mismatched(negatives: list[Encoded], ref_neg, reference, tokenizer) -> list[RelearnExample]:
    """KTO examples: prompt i with the response of negative i+1, for the KL estimate z0."""
    shifted = [Encoded(n.prompt_ids, negatives[(i + 1) % len(negatives)].response_ids) for i, n in enumerate(negatives)]
    ref_shifted, _ = score(reference, shifted, tokenizer.pad_token_id)
    return [RelearnExample(n, float(r), (m,), (float(rm),)) for n, r, m, rm in zip(negatives, ref_neg, shifted, ref_shifted)]


def with_rated_group(negatives: list[Encoded], ref_neg, negative_rows: pd.DataFrame, train: pd.DataFrame,
                     tokenizer, max_response_tokens: int, group_size: int, seed: int) -> list[RelearnExample]:
    """Stable Alignment examples: each negative with up to ``group_size - 1`` other rated
    responses to its prompt: always the best-rated one, the rest a seeded sample. Groups are
    padded to one width with masked copies of the negative."""
    rated = train.dropna(subset=["rating"])
    by_prompt = {pid: group.sort_values("id") for pid, group in rated.groupby("prompt_id")}
    rng = np.random.default_rng(seed)
    groups = []
    for row in negative_rows.itertuples():
        others = by_prompt[row.prompt_id][lambda g, item=row.id: g["id"] != item]
        best = others.sort_values(["rating", "id"], ascending=[False, True]).head(1)
        rest = others.drop(best.index)
        picked = rng.choice(len(rest), size=min(len(rest), group_size - 2), replace=False) if group_size > 2 else []
        groups.append(pd.concat([best, rest.iloc[sorted(picked)]]))
    width = max(len(g) for g in groups)
    examples = []
    for negative, ref, row, group in zip(negatives, ref_neg, negative_rows.itertuples(), groups):
        members = [Encoded(negative.prompt_ids, encode_response(tokenizer, r, max_response_tokens)) for r in group["response"]]
        padding = width - len(members)
        examples.append(RelearnExample(
            negative, float(ref), tuple(members + [negative] * padding), (0.0,) * width,
            tuple([True] * len(members) + [False] * padding), ratings=(float(row.rating), *group["rating"], *[0.0] * padding)))
    return examples


def plain(negatives: list[Encoded], ref_neg) -> list[RelearnExample]:
    """NPO and GA need nothing beside the negative."""
    return [RelearnExample(n, float(r)) for n, r in zip(negatives, ref_neg)]


def fixed_companions(objective: str, negatives: list[Encoded], ref_neg, negative_rows: pd.DataFrame,
                     train: pd.DataFrame, reference, tokenizer, max_response_tokens: int, group_size: int = 4,
                     seed: int = 0) -> list[RelearnExample]:
    """Examples for the objectives whose companions never change between cycles (all but D2O,
    whose anchors are sampled: ``with_anchors``)."""
    if objective == "dpo":
        return with_chosen(negatives, ref_neg, negative_rows, train, reference, tokenizer, max_response_tokens)
    if objective == "kto":
        return with_mismatched(negatives, ref_neg, reference, tokenizer)
    if objective == "stable_alignment":
        return with_rated_group(negatives, ref_neg, negative_rows, train, tokenizer, max_response_tokens, group_size, seed)
    return plain(negatives, ref_neg)
