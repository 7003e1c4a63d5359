"""The ``retrain`` flow: stages through DVC, then track, gate, register and promote.

DVC decides which stages are stale and runs them (``alignpipe stage NAME``), so a flow
run, a scheduled run and a plain ``dvc repro`` execute the same code and write the same
artifacts. Only this flow (and the ``promote``/``rollback`` commands) changes the registry.
"""

from __future__ import annotations

import contextlib
import json
import logging
import subprocess
from dataclasses import dataclass
from pathlib import Path

import mlflow
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from components import stages
from components.data.dataset import read_dataset
from components.data.records import pairs
from components.evaluation.gate import GateDecision, decide
from components.params import Params, load_params
from components.registry import registry
from components.registry.tracking import ensure_experiment, log_finite_metrics

STAGE_ORDER = ("ingest", "reference", "cycles", "evaluate")
STAGE_PARAMS = {"ingest": ("data", "validation"), "reference": ("seed", "reference", "sequence"),
                "cycles": ("cycles",), "evaluate": ("evaluate",)}
STAGE_FILES = {
    "ingest": (stages.DATASET_DIR / "manifest.json", stages.DATASET_DIR / stages.VALIDATION_REPORT,
               stages.DATASET_DIR / stages.DATA_CARD),
    "reference": (stages.REFERENCE_DIR / "sft.json", stages.REFERENCE_DIR / stages.REFERENCE_POINTER),
    "cycles": (stages.CYCLES_FILE,),
    "evaluate": (stages.METRICS_FILE,),
}


@dataclass(frozen=True)
class RetrainResult:
    version: str
    promoted: bool
    champion: str | None
    metrics: dict
    gate: GateDecision
    run_id: str


@task(cache_policy=NO_CACHE)
def reproduce(stage: str, root: Path) -> bool:
    """Run ``stage`` (and anything stale upstream) through DVC; True if it ran."""
    from dvc.repo import Repo

    logging.getLogger("dvc").propagate = False  # DVC prints its own progress; don't echo it twice
    # DVC resolves stage targets against the working directory, not the Repo's root
    with contextlib.chdir(root), Repo(str(root)) as repo:
        ran = repo.reproduce(stage)
    names = {s.addressing for s in ran}
    get_run_logger().info("dvc: %s %s", stage, "ran" if stage in names else "up to date (cached)")
    return stage in names


@task(cache_policy=NO_CACHE)
def track_stage(stage: str, ran: bool, params: Params, root: Path) -> None:
    """A nested MLflow run per stage: its params, metrics and small output files."""
    flat = params.flat()
    with mlflow.start_run(run_name=stage, nested=True):
        mlflow.set_tag("dvc.ran", str(ran).lower())
        mlflow.log_params({k: v for k, v in flat.items() if k.split(".")[0] in STAGE_PARAMS[stage]})
        for relative in STAGE_FILES[stage]:
            path = root / relative
            if not path.exists():
                continue
            mlflow.log_artifact(str(path))
            if path.suffix == ".json":
                payload = json.loads(path.read_text())
                log_finite_metrics(payload)
                for record in payload.get("cycles", []):
                    log_finite_metrics({f"cycle.{k}": v for k, v in record.items()}, step=record["cycle"])


@task(cache_policy=NO_CACHE)
def champion_metrics(params: Params, root: Path) -> tuple[dict | None, str]:
    """The current champion scored on the same held-out pairs as the candidate."""
    current = registry.champion(params.registry.model_name)
    if current is None:
        return None, ""
    name = f"champion v{current.version}"
    frame, _ = read_dataset(root / stages.DATASET_DIR)
    model_dir = registry.local_model_dir(f"models:/{params.registry.model_name}@{registry.CHAMPION}")
    try:
        return stages.evaluate(params, model_dir, pairs(frame[frame["split"] == "test"]),
                               root / stages.REFERENCE_DIR), name
    except stages.IncomparableModelError as err:
        get_run_logger().warning("%s; judging the candidate against the reference only", err)
        return None, ""


@task(cache_policy=NO_CACHE)
def register(params: Params, root: Path, metrics: dict, gate: GateDecision) -> str:
    manifest = json.loads((root / stages.DATASET_DIR / "manifest.json").read_text())
    data_card = (root / stages.DATASET_DIR / stages.DATA_CARD).read_text()
    model_uri = registry.log_policy_model(root / stages.POLICY_DIR)
    tags = {
        "data_version": manifest["version"],
        "code_commit": git_commit(root),
        "params": json.dumps(params.flat(), sort_keys=True),
        "objective": params.cycles.relearn.objective,
        "mlflow_run_id": mlflow.active_run().info.run_id,
        **{f"metric.{k}": f"{v:.6g}" if isinstance(v, float) else str(v) for k, v in metrics.items()},
        **gate.as_tags(),
    }
    return registry.register_candidate(model_uri, params.registry.model_name, tags, description=data_card)


def git_commit(root: Path) -> str:
    """The code commit, marked ``-dirty`` when the work tree has uncommitted changes."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True).stdout.strip()

    commit = git("rev-parse", "HEAD") or "unknown"
    return commit + ("-dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


def summary_markdown(result: RetrainResult, params: Params, stages_ran: dict[str, bool]) -> str:
    name = params.registry.model_name
    rows = "\n".join(f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |"
                     for k, v in result.metrics.items())
    checks = "\n".join(f"- {c}" for c in result.gate.checks)
    ran = ", ".join(f"{s}: {'ran' if r else 'cached'}" for s, r in stages_ran.items())
    verdict = f"promoted to `{name}@champion`" if result.promoted else "not promoted (champion unchanged)"
    return f"""# alignpipe retrain: `{name}` v{result.version} {verdict}

Stages (DVC): {ran}

| held-out metric | value |
|---|---|
{rows}

Gate against {result.gate.against}: **{'PASS' if result.gate.passed else 'FAIL'}**
{checks}

Champion now: {f'v{result.champion}' if result.champion else 'none'}. MLflow run `{result.run_id}`.
"""


@flow(name="retrain", log_prints=True)
def retrain(root: str = ".") -> RetrainResult:
    """Stages → gate against the champion → register (challenger) → promote if the gate passes."""
    root = Path(root).resolve()
    params = load_params(root / "params.yaml")
    ensure_experiment(params.registry.experiment)
    with mlflow.start_run(run_name="retrain") as run:
        mlflow.log_params(params.flat())
        stages_ran = {}
        for stage in STAGE_ORDER:
            stages_ran[stage] = reproduce(stage, root)
            track_stage(stage, stages_ran[stage], params, root)
        metrics = json.loads((root / stages.METRICS_FILE).read_text())
        log_finite_metrics(metrics)
        baseline, baseline_name = champion_metrics(params, root)
        gate = decide(metrics, params.gate, baseline, baseline_name)
        if baseline:
            log_finite_metrics({f"champion.{k}": v for k, v in baseline.items()})
        mlflow.set_tags(gate.as_tags())
        version = register(params, root, metrics, gate)
        if gate.passed:
            registry.promote(params.registry.model_name, version, reason="; ".join(gate.checks))
        current = registry.champion(params.registry.model_name)
        result = RetrainResult(version, gate.passed, str(current.version) if current else None,
                               metrics, gate, run.info.run_id)
    create_markdown_artifact(key="retrain-summary", markdown=summary_markdown(result, params, stages_ran),
                             description=f"{params.registry.model_name} v{version}")
    return result


def deployment(root: str = "."):
    """The scheduled deployment of ``retrain`` (cron from ``params.yaml``)."""
    params = load_params(Path(root) / "params.yaml")
    return retrain.to_deployment(name="retrain-scheduled", cron=params.schedule.cron,
                                 parameters={"root": str(Path(root).resolve())})
