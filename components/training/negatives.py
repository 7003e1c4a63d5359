"""The training negatives of one relearn run, encoded once with the reference's log-probs.

Shared by the forget-and-relearn cycles (the base model) and personal adapters: both pick
negatives the same way, weight them the same way and pair each with its objective's
companions (``companions.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch

from components.data.records import NEGATIVE, POSITIVE
from components.evaluation.evidence import group_keys
from components.modeling.sequences import Encoded, encode_prompt, encode_response, score
from components.params import RelearnParams, SequenceParams
from components.training.anchors import AnchorSet
from components.training.companions import fixed_companions, with_anchors
from components.training.relearn import RelearnExample, example_weights, with_weights


def training_negatives(train: pd.DataFrame, max_prompts: int, seed: int, paired: bool = False,
                       rated: bool = False, balance: str = "none") -> pd.DataFrame:
    """Training negatives (a seeded sample of ``max_prompts``); ``paired`` keeps only those
    whose pair has a positive in ``train`` (DPO needs both sides), ``rated`` those with a rating
    and another rated response to the same prompt (Stable Alignment's groups). ``balance``
    ``group`` samples each group (its ``group``, else its source) alike, ``source`` each source,
    so that a large source does not drown a small one."""
    negatives = train[train["label"] == NEGATIVE].sort_values("id")
    if negatives.empty:
        raise ValueError("no training negatives: the train split holds no row labelled 'negative'")
    if paired:
        positive_pairs = train.loc[train["label"] == POSITIVE, "pair_id"].dropna()
        negatives = negatives[negatives["pair_id"].isin(set(positive_pairs))]
        if negatives.empty:
            raise ValueError("no training pairs: dpo needs negatives whose pair_id has a positive in the train split")
    if rated:
        group_sizes = train.dropna(subset=["rating"]).groupby("prompt_id").size()
        negatives = negatives.dropna(subset=["rating"])
        negatives = negatives[negatives["prompt_id"].map(group_sizes).fillna(0) >= 2]
        if negatives.empty:
            raise ValueError("no rated groups: stable_alignment needs rated negatives with another rated response to "
                             "the same prompt in the train split (the sandbox's derived rows carry ratings)")
    if balance != "none":
        return balanced_sample(negatives, max_prompts, seed, balance)
    if max_prompts and len(negatives) > max_prompts:
        negatives = negatives.sample(n=max_prompts, random_state=seed)
    return negatives


def balanced_sample(rows: pd.DataFrame, total: int, seed: int, by: str = "group") -> pd.DataFrame:
    """An equal share of ``total`` from each ``by`` (``group``: its group, else its source;
    ``source``) (one smaller than its share gives all it has); ``total`` 0: as many from each
    as the smallest holds."""
    groups = [group for _, group in rows.groupby(group_keys(rows, by), sort=True)]
    share = total // len(groups) if total else min(len(group) for group in groups)
    return pd.concat([group.sample(n=min(len(group), max(share, 1)), random_state=seed) for group in groups])


@dataclass(frozen=True)
class EncodedNegatives:
    rows: pd.DataFrame
    prompts: list[list[int]]      # prompt token ids, where D2O samples its anchors
    encoded: list[Encoded]
    ref_logps: torch.Tensor       # the reference's summed log-probs of each negative
    weights: list[float]          # loss weights (relearn.weighting)


def encode_negatives(reference, tokenizer, train: pd.DataFrame, relearn: RelearnParams, seq: SequenceParams,
                     seed: int) -> EncodedNegatives:
    rows = training_negatives(train, relearn.max_prompts, seed, paired=relearn.objective == "dpo",
                              rated=relearn.objective == "stable_alignment", balance=relearn.balance)
    prompts = [encode_prompt(tokenizer, p, seq.max_prompt_tokens) for p in rows["prompt"]]
    encoded = [Encoded(p, encode_response(tokenizer, r, seq.max_response_tokens)) for p, r in zip(prompts, rows["response"])]
    ref_logps, _ = score(reference, encoded, tokenizer.pad_token_id)
    return EncodedNegatives(rows, prompts, encoded, ref_logps, example_weights(rows, relearn.weighting))


def relearn_examples(negatives: EncodedNegatives, relearn: RelearnParams, reference, tokenizer, train: pd.DataFrame,
                     seq: SequenceParams, seed: int, anchors: AnchorSet | None = None,
                     drop_pattern: str = "") -> list[RelearnExample]:
    """Each negative with its companions and weight: D2O's ``anchors``, else the fixed ones."""
    if relearn.objective == "d2o":
        examples = with_anchors(negatives.encoded, negatives.ref_logps, anchors, tokenizer, drop_pattern)
    else:
        examples = fixed_companions(relearn.objective, negatives.encoded, negatives.ref_logps, negatives.rows, train,
                                    reference, tokenizer, seq.max_response_tokens,
                                    relearn.stable_alignment.group_size, seed)
    return with_weights(examples, negatives.weights)
