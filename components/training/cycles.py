"""Iterative forget-and-relearn cycles, each behind a gate on development pairs.

Cycle 1 relearns from the reference; every later cycle first applies the forgetting
operation (train, then forget and train again: Zhou et al. 2022). A cycle is accepted only
if it *significantly* widens the separation on dev pairs (positives' per-token log-prob change
minus the negatives'): the lower bound of the paired gain over the policy before the cycle
must be above 0, and dev positives' lower bound must stay within the allowed drop; otherwise
the policy reverts. Separation, not the negatives' drop alone, because damage (say, from
forgetting) lowers every log-prob and would pass for progress; an interval, not a point
estimate, because on a few dozen dev pairs noise passes for progress too. The bootstrap
settings are the registry gate's (``gate.confidence``, ``gate.bootstrap_samples``,
``gate.ci_method``), seeded with ``seed``.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import pandas as pd
import torch

from components.evaluation.evidence import align, group_table, improvement, interval
from components.evaluation.intervals import BootstrapSettings, Interval
from components.evaluation.metrics import pair_evidence, score_pairs
from components.modeling.models import check_context, decoder_blocks
from components.params import Params
from components.registry.tracking import log_live
from components.training.anchors import AnchorSet, sample_anchors
from components.training.forgetting import check_forget, forget
from components.training.negatives import encode_negatives, relearn_examples
from components.training.relearn import relearn
from components.training.resume import CycleState, WorkFolder, rng_state, set_rng_state
from components.training.step_log import StepLog


@dataclass(frozen=True)
class CycleRecord:
    cycle: int
    forget_op: str
    accepted: bool
    relearn_train_loss: float
    dev_neg_logp_delta: float
    dev_pos_logp_delta: float
    dev_pref_accuracy: float
    dev_separation: float
    dev_separation_gain: float       # paired, over the policy before this cycle
    dev_separation_gain_ci_low: float
    dev_separation_gain_ci_high: float
    dev_pos_logp_delta_ci_low: float
    dev_worst_group_gain_ci_low: float | None   # None when no dev group is judged (cycles.gate.min_group_pairs)
    dev_pairs: int   # no wall-clock time: cycles.json must repeat bit for bit (MLflow gets cycle.seconds)

    def as_dict(self) -> dict:
        return asdict(self)


def cycle_gate(dev: pd.DataFrame, before: pd.DataFrame, params: Params,
               settings: BootstrapSettings) -> tuple[bool, Interval, Interval, float | None]:
    """``(accepted, separation gain over `before`, dev positives, worst group's gain low end)``
    from per-pair dev evidence of the policy after and before a cycle: the registry gate's
    paired comparison, on dev. With ``cycles.gate.min_group_pairs``, each dev group (by
    ``gate.groups.by``) that large must also show it lost at most ``gate.groups.max_regression``
    in the cycle, as the registry gate asks of held-out groups: a cycle that buys one group's
    gain with another's loss is reverted, not passed on for the registry gate to refuse."""
    gain = improvement(align(dev, before), "separation", settings)
    positives = interval(dev, "pos_logp_delta", settings)
    accepted = gain.low > 0 and positives.low >= -params.cycles.gate.max_pos_drop
    worst = None
    if params.cycles.gate.min_group_pairs:
        groups = group_table(dev, params.gate.groups.by, "separation", settings, champion=before)
        judged = groups[groups["n_pairs"] >= params.cycles.gate.min_group_pairs]
        if not judged.empty:
            worst = float(judged["improvement_ci_low"].min())
            accepted = accepted and worst >= -params.gate.groups.max_regression
    return accepted, gain, positives, worst


def run_cycles(reference, tokenizer, train: pd.DataFrame, dev_pairs: pd.DataFrame, params: Params,
               log: Callable[[str], None] = print, step_log: StepLog | None = None,
               work: WorkFolder | None = None) -> tuple[torch.nn.Module, list[CycleRecord]]:
    """Return the final policy (a trained copy of ``reference``) and one record per cycle.
    ``step_log`` collects relearn loss per step, cycles one after another on one axis.
    ``work`` keeps resumable state: a rerun after a kill resumes from the last finished cycle
    and relearn's newest checkpoint (``cycles.checkpoint_steps``)."""
    seq, cfg = params.sequence, params.cycles
    policy = copy.deepcopy(reference).requires_grad_(True)  # trainable even if the caller froze the reference
    for parameter in reference.parameters():
        parameter.requires_grad_(False)
    objective = cfg.relearn.objective
    check_forget(cfg.forget, len(decoder_blocks(policy)))  # before cycle 1 trains, though it forgets nothing
    check_context(reference, seq.max_prompt_tokens, seq.max_response_tokens, "sequence.max_response_tokens")
    if objective == "d2o":
        check_context(reference, seq.max_prompt_tokens, cfg.anchors.max_new_tokens, "cycles.anchors.max_new_tokens")
    negatives = encode_negatives(reference, tokenizer, train, cfg.relearn, seq, params.seed)
    ref_dev = score_pairs(reference, tokenizer, dev_pairs, seq)
    best = pair_evidence(ref_dev, ref_dev, dev_pairs)
    settings = BootstrapSettings.from_gate(params.gate, params.seed)
    anchors: AnchorSet | None = None
    records = []
    resumed = work.load(policy) if work else None
    if resumed:
        log(f"resuming after cycle {resumed.cycle} from {work.path}")
        records, best, anchors = [CycleRecord(**r) for r in resumed.records], resumed.best, resumed.anchors
        set_rng_state(resumed.rng)
        if step_log is not None:
            step_log.history = resumed.history
    examples = None
    if objective != "d2o":
        examples = relearn_examples(negatives, cfg.relearn, reference, tokenizer, train, seq, params.seed)
    elif anchors is not None:
        examples = relearn_examples(negatives, cfg.relearn, reference, tokenizer, train, seq, params.seed,
                                    anchors, cfg.anchors.drop_pattern)
    for cycle in range(len(records) + 1, cfg.count + 1):
        started = time.perf_counter()
        cycle_seed = params.seed + cycle
        snapshot = {name: tensor.clone() for name, tensor in policy.state_dict().items()}
        if objective == "d2o" and (anchors is None or cfg.anchors.mode == "online"):
            sampler = reference if cfg.anchors.mode == "offline" else policy
            log(f"cycle {cycle}: sampling {cfg.anchors.k} anchors for {len(negatives.prompts)} prompts "
                f"({cfg.anchors.mode})")
            anchors = sample_anchors(sampler, reference, tokenizer, negatives.prompts, cfg.anchors, cycle_seed)
            examples = relearn_examples(negatives, cfg.relearn, reference, tokenizer, train, seq, params.seed,
                                        anchors, cfg.anchors.drop_pattern)
        # cycle 1 relearns from the reference itself; forgetting starts with cycle 2
        forgetting = cfg.forget.model_copy(update={"op": "none"}) if cycle == 1 else cfg.forget
        forget(policy, forgetting, cycle_seed)
        log(f"cycle {cycle}: forget={forgetting.op}, relearn {cfg.relearn.objective} for {cfg.relearn.steps} steps")
        if step_log is not None:
            step_log.step_offset = (cycle - 1) * cfg.relearn.steps
        loss = relearn(policy, tokenizer, examples, cfg.relearn, cycle_seed, callbacks=[step_log] if step_log else None,
                       checkpoints=work.relearn_checkpoints(cycle) if work else None,
                       checkpoint_steps=cfg.checkpoint_steps if work else 0)
        dev = pair_evidence(score_pairs(policy, tokenizer, dev_pairs, seq), ref_dev, dev_pairs)
        passed, gain, positives, worst_group = cycle_gate(dev, best, params, settings)
        accepted = not cfg.gate.enabled or passed
        if accepted:
            best = dev
        else:
            policy.load_state_dict(snapshot)
        means = dev[["neg_logp_delta", "pos_logp_delta", "pref_accuracy", "separation"]].mean()
        record = CycleRecord(cycle, forgetting.op, accepted, loss["relearn_train_loss"], float(means["neg_logp_delta"]),
                             float(means["pos_logp_delta"]), float(means["pref_accuracy"]), float(means["separation"]),
                             gain.estimate, gain.low, gain.high, positives.low, worst_group, len(dev))
        log_live({**{f"cycle.{key}": value for key, value in record.as_dict().items() if key != "cycle"},
                  "cycle.seconds": round(time.perf_counter() - started, 2)}, step=cycle)
        log(f"cycle {cycle}: {'accepted' if accepted else 'reverted'} (dev separation gain {gain.describe()}; "
            f"dev pos_logp_delta {positives.describe()}"
            + ("" if worst_group is None else f"; worst dev group's gain, low end {worst_group:+.4f}") + ")")
        records.append(record)
        if work:
            work.save(policy, CycleState(cycle, [r.as_dict() for r in records], best, anchors,
                                         step_log.history if step_log else [], rng_state()))
    return policy, records
