"""The pipeline's stages as plain functions: files in, files and metrics out.

``dvc.yaml`` runs each one through ``alignpipe stage NAME`` and the Prefect flow runs them
through ``dvc repro``, so there is one code path whichever way the pipeline starts. Stages
never touch the model registry: that belongs to the flow.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from transformers import set_seed

from components.data.aggregation import aggregate
from components.data.consent import read_withdrawals, withdraw
from components.data.dataset import assign_splits, build_manifest, check_held_out, read_items, write_dataset
from components.data.person_share import cap_person_share
from components.data.quarantine import summarise
from components.data.readers import read_sources
from components.data.records import pairs, to_frame
from components.atomic import replaced_folder, write_text
from components.distributed import is_writer
from components.errors import UserError
from components.evaluation.evidence import flat_metrics, metric_intervals
from components.evaluation.intervals import BootstrapSettings
from components.evaluation.metrics import evaluate_policy
from components.evaluation.plots import plot_cycle_dev, plot_reward_distributions, plot_training_loss
from components.modeling.models import build_tiny_model, check_context, load_model, load_tokenizer, save_model
from components.modeling.sequences import encode
from components.modeling.tokenizer import train_bpe_tokenizer
from components.params import APP_SOURCE, Params
from components.personal.probes import hold_out
from components.policy.data_card import render_data_card
from components.policy.policies import load_policies
from components.policy.screening import screen_owner_rows, screened_summary
from components.policy.tiers import assign_tiers, reclassify
from components.registry.tracking import LIVE_RUN_VARIABLE
from components.resolve import APP_EXPORT
from components.training.cycles import run_cycles
from components.training.resume import WorkFolder, folder_digest
from components.training.sft import supervised_finetune
from components.training.step_log import StepLog
from components.validation.agreement import alpha_text, check_min_agreement, measure
from components.validation.screen import screen

ARTIFACTS = Path("artifacts")
PLOTS_DIR = ARTIFACTS / "plots"
DATASET_DIR = ARTIFACTS / "dataset"
REFERENCE_DIR = ARTIFACTS / "reference"
POLICY_DIR = ARTIFACTS / "policy"
CYCLES_FILE = ARTIFACTS / "cycles.json"
CYCLES_WORK_DIR = ARTIFACTS / ".cycles-work"   # resumable state of a cycles stage under way (not an output)
METRICS_FILE = ARTIFACTS / "metrics.json"
EVIDENCE_FILE = ARTIFACTS / "evidence.parquet"
SANDBOX_DIR = ARTIFACTS / "sandbox"
SIMULATE_STAGE_FILE = "stage.json"
REFERENCE_POINTER = "reference.json"
DATA_CARD = "data_card.md"
VALIDATION_REPORT = "validation.json"


def _write_json(path: Path, payload: dict) -> None:
    write_text(path, json.dumps(payload, indent=2, sort_keys=True) + "\n")


@dataclass(frozen=True)
class LoadedSource:
    """A source read, screened, withdrawn from and aggregated: what ingest writes, and what
    evaluation scores (``pairs(loaded.items)``)."""

    judgements: pd.DataFrame   # every kept judgement, canonical columns
    items: pd.DataFrame        # one training row per item, by data.aggregation
    quarantine: list[dict]     # file, line, rule, message, raw: one per problem
    report: dict               # validation.json: suite, quarantine, agreement, aggregation, withdrawals

    @property
    def quarantined_rows(self) -> int:
        return self.report["quarantine"]["rows"]

    @property
    def withdrawn(self) -> dict:
        return self.report["withdrawals"]

    def manifest_extra(self) -> dict:
        keys = ("quarantine", "unpaired", "agreement", "aggregation", "withdrawals", "reclassified", "source_notes", "app",
                "probes_held_out", "screened")
        return {"quarantined_rows": self.quarantined_rows, **{k: self.report[k] for k in keys}}

    def summary(self) -> str:
        q, a = self.report["quarantine"], self.report["aggregation"]
        return "\n".join([
            f"{self.report['suite']}: all {len(self.report['rules_checked'])} rules passed on "
            f"{self.report['n_rows']} kept judgements",
            f"quarantined: {q['rows']} of {q['source_rows']} source rows {q['by_rule']}",
            f"aggregation {a['rule']}: {a['kept']} of {a['items']} items kept, left out {a['left_out']}",
            f"Krippendorff's alpha: {alpha_text(self.report['agreement'])}",
            f"withdrawn: {self.withdrawn['judgements']} judgements",
            f"reclassified as negatives by policy rules: {self.report['reclassified'] or 'none'}",
        ])


def load_records(sources: str | Path | list, params: Params) -> LoadedSource:
    """Read, screen and aggregate sources. Row problems go to the quarantine; this raises
    (naming file, line and rule) only for file- or dataset-level problems, too many bad rows
    or an owner that policies.yaml does not know."""
    data, rules = params.data, params.validation
    policies = load_policies(params.tiers.policies)
    withdrawals = read_withdrawals(data.withdrawals)
    paths = sources if isinstance(sources, list) else [sources]
    read = read_sources(paths, data.policy_tier)
    judgements, withdrawn = withdraw(to_frame(read.records), withdrawals)
    judgements, app = cap_person_share(judgements, params.app.max_person_share)
    judgements = assign_tiers(judgements, policies, params.tiers.policies)
    judgements, probes_held_out = hold_out(assign_splits(judgements, data), policies, data)
    screened = screen(judgements, rules, read.rows, read.problems, paths)
    items, aggregation = aggregate(screened.kept, data.aggregation)
    items, reclassified = reclassify(items, policies)
    kept_items, screened_items = screen_owner_rows(items, policies, params)
    check_held_out(kept_items)
    agreement = measure(screened.kept)
    check_min_agreement(agreement, rules.min_agreement, paths)
    report = {
        **screened.report.to_dict(),
        "quarantine": summarise(screened.issues, read.rows),
        "unpaired": summarise(read.unpaired, read.rows),   # rows read soundly as unpaired records
        "agreement": agreement,
        "aggregation": aggregation,
        "withdrawals": withdrawn.as_dict(),
        "reclassified": reclassified,
        "source_notes": read.notes,   # what a source's reader resolved or left out (XSTest's oddities)
        "probes_held_out": probes_held_out,   # rows moved to the test split: their prompt is a policy probe
        "screened": screened_summary(screened_items, items, params),   # owner feedback against a rule above it
        "app": {**app, "quarantined_lines": sorted(i.line for i in screened.issues if i.file == str(APP_EXPORT))},
    }
    return LoadedSource(screened.kept, kept_items, [i.as_dict() for i in screened.issues], report)


def ingest(params: Params, source: str | Path | None = None, out_dir: Path = DATASET_DIR) -> dict:
    """Read, screen and write a content-hashed dataset version with its quarantine, validation
    report and data card, all at once: a failure leaves the previous version in place.
    Without ``source``, the params' sources: ``data.source``, ``data.owner_source`` and, with
    ``sandbox.enabled``, the rows the sandbox derived. The entry ``app:`` reads the app's export
    (written by the ``params`` stage), when it holds any row."""
    sources = [Path(source)] if source else [APP_EXPORT if s == APP_SOURCE else Path(s) for s in params.data.sources()]
    sources = [path for path in sources if path != APP_EXPORT or _has_rows(path)]
    if not source and params.sandbox.enabled:
        sources.append(sandbox_feedback())
    loaded = load_records(sources, params)
    manifest = build_manifest(loaded.judgements, loaded.items, sources, loaded.manifest_extra())
    files = {VALIDATION_REPORT: json.dumps(loaded.report, indent=2, sort_keys=True, default=str) + "\n",
             DATA_CARD: render_data_card(loaded.judgements, loaded.items, manifest)}
    write_dataset(out_dir, loaded.judgements, loaded.items, loaded.quarantine, manifest, files)
    return manifest


def _has_rows(export: Path) -> bool:
    if not export.is_file():
        raise UserError(f"{export}: no export of the app's feedback (data.source names {APP_SOURCE!r}); "
                        "run `alignpipe stage params` (or dvc repro) first")
    return export.stat().st_size > 0


def sandbox_feedback(sandbox_dir: Path = SANDBOX_DIR) -> Path:
    from components.sandbox.simulation import FEEDBACK_FILE

    return sandbox_dir / FEEDBACK_FILE


def simulate(params: Params, out_dir: Path = SANDBOX_DIR) -> dict:
    """The sandbox when it is part of the pipeline (``sandbox.enabled``); otherwise its folder is
    left as it is (a run of ``alignpipe simulate`` stays there, unused). ``stage.json`` says which."""
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = {"enabled": False}
    if params.sandbox.enabled:
        from components.sandbox.simulation import simulate as run_sandbox

        summary = {"enabled": True, **run_sandbox(params, out_dir)}
    _write_json(out_dir / SIMULATE_STAGE_FILE, summary)
    return summary


def global_items(items: pd.DataFrame) -> pd.DataFrame:
    """The rows that train and judge the base model: feedback without an owner. A deployer's
    or user's rows train only their own adapter (``alignpipe personalize``)."""
    return items[items["owner"].fillna("") == ""]


def owner_items(items: pd.DataFrame, owner: str) -> pd.DataFrame:
    return items[items["owner"].fillna("") == owner]


def reference_location(reference_dir: Path = REFERENCE_DIR) -> str:
    """Where the reference model lives: the folder itself, or the external model it points to."""
    pointer = reference_dir / REFERENCE_POINTER
    if pointer.exists():
        return json.loads(pointer.read_text())["model"]
    return str(reference_dir)


def write_loss_plot(step_log: StepLog, title: str, stem: Path, boundaries: list[tuple[int, str]] = ()) -> None:
    """``<stem>.csv`` (step, loss, learning_rate: a DVC plot) and ``<stem>.png``."""
    history = pd.DataFrame(step_log.history, columns=["step", "loss", "learning_rate"])
    stem.parent.mkdir(parents=True, exist_ok=True)
    history.to_csv(stem.with_suffix(".csv"), index=False)
    plot_training_loss(history, title, stem.with_suffix(".png"), boundaries)


def build_reference(params: Params, dataset_dir: Path = DATASET_DIR, out_dir: Path = REFERENCE_DIR,
                    plots_dir: Path = PLOTS_DIR / "reference") -> dict:
    """The tiny default: tokenizer + GPT-2-shaped model trained by SFT on the train split.
    A Hugging Face model: recorded by location, not copied (a 7B model stays where it is)."""
    ref = params.reference
    out_dir.mkdir(parents=True, exist_ok=True)
    plots_dir.mkdir(parents=True, exist_ok=True)  # stays empty for a model that is not trained here
    if ref.model != "tiny":
        model = load_model(ref.model, ref.trust_remote_code, ref.dtype, ref.allow_pickle)
        tokenizer = load_tokenizer(ref.model, ref.trust_remote_code)
        summary = {"model": ref.model, "parameters": sum(p.numel() for p in model.parameters()),
                   "vocab_size": len(tokenizer)}
        _write_json(out_dir / REFERENCE_POINTER, summary)
        return summary
    set_seed(params.seed)
    items, _ = read_items(dataset_dir)
    items = global_items(items)
    train = items[items["split"] == "train"]
    tokenizer = train_bpe_tokenizer((p + " " + r for p, r in zip(train["prompt"], train["response"])), ref.vocab_size)
    seq = params.sequence
    model = build_tiny_model(tokenizer, ref.tiny.n_layer, ref.tiny.n_embd, ref.tiny.n_head,
                             n_positions=seq.max_prompt_tokens + seq.max_response_tokens)
    sequences = [encode(tokenizer, p, r, seq.max_prompt_tokens, seq.max_response_tokens)
                 for p, r in zip(train["prompt"], train["response"])]
    metrics, step_log = supervised_finetune(model, tokenizer, sequences, ref.sft.steps, ref.sft.batch_size,
                                            ref.sft.learning_rate, ref.sft.warmup_steps, params.seed)
    write_loss_plot(step_log, "reference SFT", plots_dir / "sft_loss")
    save_model(model, tokenizer, out_dir)
    summary = {**metrics, "parameters": sum(p.numel() for p in model.parameters()), "vocab_size": len(tokenizer)}
    _write_json(out_dir / "sft.json", summary)
    return summary


def load_reference(params: Params, reference_dir: Path = REFERENCE_DIR):
    location = reference_location(reference_dir)
    trust = params.reference.trust_remote_code
    model = load_model(location, trust, params.reference.dtype, params.reference.allow_pickle)
    return model, load_tokenizer(location, trust)


def cycles_work(params: Params, manifest: dict, reference_dir: Path = REFERENCE_DIR,
                root: Path = CYCLES_WORK_DIR) -> WorkFolder:
    """The work folder of these inputs: the settings the result depends on, the dataset
    version and the reference's files (or the name of a model that is not a local folder)."""
    location = Path(reference_location(reference_dir))
    settings = {key: params.to_dict()[key] for key in ("seed", "sequence", "cycles", "compute", "gate", "reference")}
    return WorkFolder(root, {"params": settings, "dataset": manifest["version"],
                             "reference": folder_digest(location) if location.is_dir() else str(location)})


def cycles(params: Params, dataset_dir: Path = DATASET_DIR, reference_dir: Path = REFERENCE_DIR,
           out_dir: Path = POLICY_DIR, cycles_file: Path = CYCLES_FILE, plots_dir: Path = PLOTS_DIR / "cycles",
           work_dir: Path = CYCLES_WORK_DIR) -> dict:
    """Forget-and-relearn cycles from the reference; saves the final policy as safetensors,
    the per-cycle record, and plots of relearn loss per step and dev metrics per cycle.
    Killed, it resumes where it stopped when run again (``training/resume.py``)."""
    set_seed(params.seed)
    items, manifest = read_items(dataset_dir)
    items = global_items(items)
    reference, tokenizer = load_reference(params, reference_dir)
    train = items[items["split"] == "train"]
    dev_pairs = pairs(items[items["split"] == "dev"])
    step_log = StepLog("relearn")
    if not is_writer():   # several processes (compute.processes): the first logs and writes for all
        os.environ.pop(LIVE_RUN_VARIABLE, None)
    work = cycles_work(params, manifest, reference_dir, work_dir)
    policy, records = run_cycles(reference, tokenizer, train, dev_pairs, params, step_log=step_log, work=work)
    summary = {
        "accepted_cycles": sum(r.accepted for r in records),
        "cycles": [r.as_dict() for r in records],
        "dataset_version": manifest["version"],
    }
    if not is_writer():
        return summary
    steps = params.cycles.relearn.steps
    boundaries = [((r.cycle - 1) * steps, f"cycle {r.cycle} {'kept' if r.accepted else 'reverted'}") for r in records]
    write_loss_plot(step_log, f"relearn ({params.cycles.relearn.objective})", plots_dir / "relearn_loss", boundaries)
    plot_cycle_dev(pd.DataFrame([r.as_dict() for r in records]), plots_dir / "cycle_dev.png")
    with replaced_folder(out_dir) as staging:
        save_model(policy, tokenizer, staging)
    _write_json(cycles_file, summary)
    work.remove()
    return summary


def evaluate(params: Params, policy_location: str | Path, pairs_frame: pd.DataFrame,
             reference_dir: Path = REFERENCE_DIR, generation: bool = True) -> tuple[dict, pd.DataFrame]:
    """A policy (local directory) against the reference: per-pair evidence on ``pairs_frame``
    and, unless ``generation`` is off, sampling metrics (``kl_ref``, ``distinct_2``)."""
    set_seed(params.seed)
    reference, tokenizer = load_reference(params, reference_dir)
    policy = load_model(policy_location, params.reference.trust_remote_code, params.reference.dtype,
                        params.reference.allow_pickle)
    policy_tokenizer = load_tokenizer(policy_location, params.reference.trust_remote_code)
    if policy_tokenizer.get_vocab() != tokenizer.get_vocab():
        raise IncomparableModelError(f"{policy_location}: its tokenizer differs from the reference's; "
                                     "log-prob deltas would compare different token sequences")
    if generation:
        check_context(policy, params.sequence.max_prompt_tokens, params.evaluate.max_new_tokens, "evaluate.max_new_tokens")
    with torch.inference_mode():
        return evaluate_policy(policy, reference, tokenizer, pairs_frame, params.sequence, params.evaluate, params.seed,
                               generation)


class IncomparableModelError(UserError, ValueError):
    """A model cannot be scored against this reference (another tokenizer)."""


def summarize_evidence(params: Params, evidence: pd.DataFrame, generation: dict, quarantined_rows: int) -> dict:
    """metrics.json: every log-prob metric with its interval (n, B, seed), plus generation metrics."""
    settings = BootstrapSettings.from_gate(params.gate, params.seed)
    return {**flat_metrics(metric_intervals(evidence, settings)), **generation, "quarantined_rows": quarantined_rows}


def held_out_pairs(params: Params, items: pd.DataFrame) -> pd.DataFrame:
    """The test split's (chosen, rejected) pairs of ``items``, the first ``evaluate.max_pairs``
    when set: the one list both the candidate and the champion are judged on."""
    held_out = pairs(global_items(items)[lambda frame: frame["split"] == "test"])
    return held_out.head(params.evaluate.max_pairs) if params.evaluate.max_pairs else held_out


def evaluate_held_out(params: Params, dataset_dir: Path = DATASET_DIR, policy_dir: Path = POLICY_DIR,
                      reference_dir: Path = REFERENCE_DIR, metrics_file: Path = METRICS_FILE,
                      evidence_file: Path = EVIDENCE_FILE, plots_dir: Path = PLOTS_DIR / "evaluate") -> dict:
    items, manifest = read_items(dataset_dir)
    generation, evidence = evaluate(params, policy_dir, held_out_pairs(params, items), reference_dir)
    plot_reward_distributions(evidence, params.cycles.relearn.beta, plots_dir / "rewards.png")
    metrics = summarize_evidence(params, evidence, generation, int(manifest.get("quarantined_rows", 0)))
    evidence_file.parent.mkdir(parents=True, exist_ok=True)
    evidence.to_parquet(evidence_file, index=False)
    _write_json(metrics_file, metrics)
    return metrics
