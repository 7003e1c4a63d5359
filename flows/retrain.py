"""The ``retrain`` flow: stages through DVC, then track, gate, register and promote.

DVC decides which stages are stale and runs them (``alignpipe stage NAME``), so a flow
run, a scheduled run and a plain ``dvc repro`` execute the same code and write the same
artifacts. Only this flow (and the ``promote``/``rollback`` commands) changes the registry.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from prefect.states import Failed

from components import stages
from components.app import version_tags
from components.data.dataset import read_items, read_manifest
from components.errors import UserError
from components.evaluation.gate import GateDecision, decide
from components.evaluation.plots import plot_group_intervals
from components.evaluation.report import decision_markdown, metric_lines
from components.params import Params, load_params
from components.project_lock import ProjectBusy, project_lock
from components.registry import registry
from components.registry.run_record import log_dataset_input, log_outputs, plot_files
from components.registry.tracking import ensure_experiment, log_finite_metrics, server_failure
from components.resolve import RESOLVED_PARAMS
from flows.stage_runs import run_stage

STAGE_ORDER = ("simulate", "ingest", "reference", "cycles", "evaluate")
DATASET_FILES = [stages.DATASET_DIR / name for name in ("manifest.json", stages.VALIDATION_REPORT, stages.DATA_CARD)]
REFERENCE_FILES = [stages.REFERENCE_DIR / "sft.json", stages.REFERENCE_DIR / stages.REFERENCE_POINTER]
# each stage's JSON output, whose numbers become the stage run's metrics (files go to the parent run)
STAGE_SUMMARIES = {
    "simulate": stages.SANDBOX_DIR / stages.SIMULATE_STAGE_FILE,
    "ingest": DATASET_FILES[0],
    "reference": REFERENCE_FILES[0],
    "cycles": stages.CYCLES_FILE,
    "evaluate": stages.METRICS_FILE,
}
STOPPED = "nothing registered, no alias moved"
PROMOTION_ATTEMPTS = 3   # gate again at most this often when the champion moves meanwhile


@dataclass(frozen=True)
class RetrainResult:
    version: str | None            # None when nothing was registered
    promoted: bool
    champion: str | None
    metrics: dict
    gate: GateDecision | None      # None when nothing was registered
    run_id: str
    skipped: str = ""              # why nothing was registered
    cycles: str = ""               # "1 of 2 cycles accepted", or that none was
    model_name: str = ""           # the registered model, from the params the run used

    def outcome(self) -> str:
        """One line: what this run did to the registry."""
        if self.gate is None:
            return self.skipped
        verdict = "gate PASSED: promoted to champion" if self.promoted else "gate FAILED: champion unchanged"
        return f"{self.model_name} v{self.version} registered (alias 'challenger'); {verdict}"


def cycles_line(root: Path) -> str:
    """How many forget-and-relearn cycles passed the dev gate; none means the candidate is the
    reference itself, which a reader should not have to infer from zeros."""
    records = json.loads((root / stages.CYCLES_FILE).read_text())["cycles"]
    accepted = sum(record["accepted"] for record in records)
    line = f"{accepted} of {len(records)} cycles accepted by the dev gate"
    return line + (": the candidate is the reference itself" if accepted == 0 else "")


def stage_summary(stage: str, root: Path) -> str:
    """What a stage produced, in one line for the flow's log."""
    if stage == "simulate":
        found = json.loads((root / STAGE_SUMMARIES["simulate"]).read_text())
        if not found["enabled"]:
            return "sandbox disabled (sandbox.enabled: false)"
        return f"sandbox run {found['run_id']}: {found['drafts']} drafts, {found['derived_rows']} training rows for ingest"
    if stage == "ingest":
        manifest = read_manifest(root / stages.DATASET_DIR)
        return (f"dataset {manifest['version']}: {manifest['n_rows']} judgements, {manifest['items']['n']} items, "
                f"{manifest.get('quarantined_rows', 0)} rows quarantined")
    if stage == "reference":
        sft = root / stages.REFERENCE_DIR / "sft.json"
        return (f"SFT loss {json.loads(sft.read_text())['sft_train_loss']:.4f}" if sft.exists()
                else f"reference {stages.reference_location(root / stages.REFERENCE_DIR)}")
    if stage == "cycles":
        return cycles_line(root)
    return "; ".join(metric_lines(json.loads((root / stages.METRICS_FILE).read_text()))[:1])


@task(cache_policy=NO_CACHE, task_run_name="record run")
def record_run(params: Params, root: Path) -> None:
    """The parent run as a reviewer's record: dataset input, dataset files, params used,
    metrics with intervals, per-pair evidence, cycles and every plot."""
    log_dataset_input(root / stages.DATASET_DIR, params.data.sources()[0])  # the manifest lists every source
    log_outputs(root, {"dataset": DATASET_FILES, "reference": REFERENCE_FILES, "evidence": [stages.EVIDENCE_FILE],
                       "": [RESOLVED_PARAMS, stages.METRICS_FILE, stages.CYCLES_FILE]})
    for plot in plot_files(root / stages.PLOTS_DIR):
        mlflow.log_artifact(str(plot), artifact_path="plots")


@task(cache_policy=NO_CACHE, task_run_name="score champion")
def champion_evidence(params: Params, root: Path) -> tuple[pd.DataFrame | None, str, str, str | None]:
    """The current champion scored on the candidate's held-out pairs: ``(evidence, name,
    why_not, version)``. When it cannot be scored there (another tokenizer, a missing model),
    the reason comes back instead, and the gate fails closed on it."""
    current = registry.champion(params.registry.model_name)
    if current is None:
        return None, "", "", None
    name = f"champion v{current.version}"
    try:
        model_dir = registry.local_model_dir(f"models:/{params.registry.model_name}@{registry.CHAMPION}")
        held_out = stages.held_out_pairs(params, read_items(root / stages.DATASET_DIR)[0])
        _, evidence = stages.evaluate(params, model_dir, held_out, root / stages.REFERENCE_DIR, generation=False)
    except UserError as err:
        get_run_logger().warning("%s cannot be scored on the same pairs (%s): the candidate will not be promoted",
                                 name, err)
        return None, name, str(err), str(current.version)
    return evidence, name, "", str(current.version)


@task(cache_policy=NO_CACHE, task_run_name="record gate evidence")
def record_evidence(decision: GateDecision, params: Params, champion: pd.DataFrame | None) -> None:
    """The gate's figures, the champion's per-pair evidence on the same pairs and the
    per-group plot, in the active MLflow run."""
    log_finite_metrics(decision.figures)
    mlflow.set_tags({**decision.as_tags(), "gate.primary": params.gate.primary, "gate.groups.by": params.gate.groups.by,
                     # the run's description in the MLflow UI: the decision, first thing on the page
                     "mlflow.note.content": decision_markdown(decision, params.gate.primary, params.gate.groups.by)})
    with tempfile.TemporaryDirectory() as scratch:
        if champion is not None:
            champion.to_parquet(Path(scratch) / "champion_evidence.parquet", index=False)
            mlflow.log_artifact(str(Path(scratch) / "champion_evidence.parquet"), artifact_path="evidence")
        plot = plot_group_intervals(decision.groups, params.gate.groups.by, params.gate.primary,
                                    Path(scratch) / "group_intervals.png", subtitle=decision.against)
        mlflow.log_artifact(str(plot), artifact_path="plots")


def gate_candidate(params: Params, root: Path) -> tuple[GateDecision, str | None]:
    """Score the champion as it is now, decide, record the evidence: ``(decision, the champion
    version it compared against)``, which promotion must still find in place."""
    champion, champion_name, why_not, version = champion_evidence(params, root)
    candidate = pd.read_parquet(root / stages.EVIDENCE_FILE)
    gate = decide(candidate, params.gate, params.seed, champion, champion_name, why_not)
    record_evidence(gate, params, champion)
    for check in gate.checks:
        get_run_logger().info("gate: %s", check)
    return gate, version


@task(cache_policy=NO_CACHE, task_run_name="register")
def register(params: Params, root: Path, metrics: dict, gate: GateDecision, identity: dict[str, str]) -> str:
    data_card = (root / stages.DATASET_DIR / stages.DATA_CARD).read_text()
    model_uri = registry.log_policy_model(root / stages.POLICY_DIR, reference_dir=root / stages.REFERENCE_DIR)
    tags = {
        **identity,
        "params": json.dumps(params.flat(), sort_keys=True),
        "objective": params.cycles.relearn.objective,
        "mlflow_run_id": mlflow.active_run().info.run_id,
        **{f"metric.{k}": f"{v:.6g}" if isinstance(v, float) else str(v) for k, v in metrics.items()},
        **gate.as_tags(),
        **version_tags(read_manifest(root / stages.DATASET_DIR)),   # which app feedback it learned from
    }
    description = decision_markdown(gate, params.gate.primary, params.gate.groups.by) + "\n\n" + data_card
    return registry.register_candidate(model_uri, params.registry.model_name, tags, description=description)


def git_commit(root: Path) -> str:
    """The code commit; with uncommitted changes, ``-dirty.`` and a hash of the diff, so two
    different dirty trees never count as the same code. Pipeline outputs committed beside the
    code (dvc.lock, artifacts/) are not code: their changes leave the identity alone."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True).stdout.strip()

    commit = git("rev-parse", "HEAD") or "unknown"
    diff = git("diff", "HEAD", "--", ".", ":(exclude)artifacts", ":(exclude)dvc.lock")
    return f"{commit}-dirty.{hashlib.sha256(diff.encode()).hexdigest()[:12]}" if diff else commit


def candidate_identity(params: Params, root: Path) -> dict[str, str]:
    """What makes two candidates the same: the version of the data the base learns from (global
    rows: owners' feedback trains only their adapters), params and code commit."""
    manifest = read_manifest(root / stages.DATASET_DIR)
    params_json = json.dumps(params.flat(), sort_keys=True, default=str)
    return {"data_version": manifest["scope_versions"]["global"], "params_sha256": hashlib.sha256(params_json.encode()).hexdigest(),
            "code_commit": git_commit(root)}


def summary_markdown(result: RetrainResult, params: Params, stages_ran: dict[str, bool]) -> str:
    name = params.registry.model_name
    ran = ", ".join(f"{s}: {'ran' if r else 'cached'}" for s, r in stages_ran.items())
    metrics = "\n".join(f"- {line}" for line in metric_lines(result.metrics))
    if result.gate is None:
        headline, body = f"# alignpipe retrain: nothing registered for `{name}`", result.skipped
    else:
        verdict = f"promoted to `{name}@champion`" if result.promoted else "not promoted (champion unchanged)"
        headline = f"# alignpipe retrain: `{name}` v{result.version} {verdict}"
        body = decision_markdown(result.gate, params.gate.primary, params.gate.groups.by)
    return f"""{headline}

Stages (DVC): {ran}. Cycles: {result.cycles}.

Held-out metrics (candidate against the reference):
{metrics}

{body}

Champion now: {f'v{result.champion}' if result.champion else 'none'}. MLflow run `{result.run_id}`.
"""


def report_outcome(flow, flow_run, state) -> None:
    """One line per finished run, on the console of `alignpipe run` or `alignpipe serve`."""
    result = state.result(raise_on_failure=False) if state.is_completed() else None
    print(f"retrain run {flow_run.name!r}: {state.name}: "
          f"{result.outcome() if isinstance(result, RetrainResult) else state.message}", flush=True)


@flow(name="retrain", log_prints=True, on_completion=[report_outcome], on_failure=[report_outcome])
def retrain(root: str = ".", params_file: str = "params.yaml", overrides: dict | None = None, wait_s: float = 0):
    """Stages → skip if identical → gate on intervals → register (challenger) → promote if passed.

    ``params_file`` (relative to ``root``) and ``overrides`` (dotted keys) reach every stage
    through the ``params`` stage. A user error (bad params or data) ends the run Failed with
    the error logged once and nothing registered. One run per project at a time: another
    one waits up to ``wait_s`` seconds for the project lock, then stops naming its holder."""
    logger = get_run_logger()
    root = Path(root).resolve()
    overrides = overrides or {}
    params_path = Path(params_file) if Path(params_file).is_absolute() else root / params_file
    try:
        params = load_params(params_path, overrides)
    except UserError as err:
        logger.error("%s", err)
        return Failed(message=f"params: {STOPPED}")
    try:
        with project_lock(root, wait_s, f"retrain flow run {flow_run.name!r}", say=logger.info):
            return tracked_run(params, root, params_path, overrides)
    except ProjectBusy as err:
        logger.error("%s", err)
        return Failed(message=f"{err}: {STOPPED}")
    except Exception as err:
        if (failure := server_failure(err)) is None:
            raise
        retries = os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES")
        message = (f"{failure}, after {retries} retries with backoff per request: the run stopped; no alias was moved "
                   "without its gate, and the next run finishes or removes a registration this one interrupted")
        logger.error("%s", message)
        return Failed(message=message)


def tracked_run(params: Params, root: Path, params_path: Path, overrides: dict):
    """The flow's work once it holds the project: stages, identity, gate, register, promote."""
    logger = get_run_logger()
    ensure_experiment(params.registry.experiment)
    name = params.registry.model_name
    for line in registry.repair_registrations(name):
        logger.warning("registry repair: %s", line)
    with mlflow.start_run(run_name="retrain") as run:
        mlflow.log_params(params.flat())
        mlflow.set_tags({"params_file": str(params_path), "overrides": json.dumps(overrides),
                         "prefect.flow_run_id": str(flow_run.id), "prefect.flow_run_name": str(flow_run.name)})
        stages_ran = {}
        for stage in STAGE_ORDER:
            outcome = run_stage(stage, root, params, str(params_path), overrides, run.info.run_id,
                                STAGE_SUMMARIES[stage], upstream=stage == STAGE_ORDER[0])
            if outcome.error:
                mlflow.set_tag("error", f"stage {stage}: {outcome.error}"[:5000])
                mlflow.end_run(status="FAILED")
                return Failed(message=f"stage {stage!r} stopped on the error above: {STOPPED}")
            stages_ran[stage] = outcome.ran
            logger.info("stage %s: %s in %.0f s: %s", stage, "ran" if outcome.ran else "up to date",
                        outcome.seconds, stage_summary(stage, root))
        record_run(params, root)
        metrics = json.loads((root / stages.METRICS_FILE).read_text())
        log_finite_metrics(metrics)
        identity = candidate_identity(params, root)
        mlflow.set_tags(identity)
        twin = registry.identical_version(name, identity)
        version, gate, skipped = None, None, ""
        if twin is not None:
            skipped = (f"nothing registered: the candidate equals {name} v{twin[0].version} ('{twin[1]}'): same "
                       f"data version {identity['data_version']}, params and code commit {identity['code_commit'][:12]}")
            logger.info(skipped)
            mlflow.set_tags({"registered": "false", "mlflow.note.content": skipped})
        else:
            gate, gated_against = gate_candidate(params, root)
            version = register(params, root, metrics, gate, identity)
            for _ in range(PROMOTION_ATTEMPTS):
                if not gate.passed:
                    break
                try:
                    registry.promote(name, version, reason="; ".join(gate.checks), expected_champion=gated_against)
                    break
                except registry.ChampionMoved as moved:  # compare-and-set: gate again against the new one
                    logger.warning("%s: gating v%s again before any promotion", moved, version)
                    gate, gated_against = gate_candidate(params, root)
                    registry.set_version_tags(name, version, gate.as_tags())
            else:
                gate = gate.refused(f"the champion kept moving while gating ({PROMOTION_ATTEMPTS} attempts)")
                registry.set_version_tags(name, version, gate.as_tags())
        current = registry.champion(name)
        result = RetrainResult(version, bool(gate and gate.passed), str(current.version) if current else None,
                               metrics, gate, run.info.run_id, skipped, cycles_line(root), name)
    create_markdown_artifact(key="retrain-summary", markdown=summary_markdown(result, params, stages_ran),
                             description=f"{name} v{result.version}" if result.version else f"{name}: nothing registered")
    if any(stages_ran.values()):
        logger.info("to version this pipeline state with git (dvc metrics diff and plots diff compare against it): "
                    "git add dvc.lock artifacts/.gitignore artifacts/params.yaml artifacts/cycles.json "
                    "artifacts/metrics.json artifacts/plots")
    return result


def deployment(root: str = ".", params_file: str = "params.yaml", overrides: dict | None = None):
    """The scheduled deployment of ``retrain`` (cron from the params it runs with)."""
    root_path = Path(root).resolve()
    params_path = Path(params_file) if Path(params_file).is_absolute() else root_path / params_file
    params = load_params(params_path, overrides)
    return retrain.to_deployment(name="retrain-scheduled", cron=params.schedule.cron,
                                 parameters={"root": str(root_path), "params_file": str(params_path),
                                             "overrides": overrides or {}})
