"""The ``personalize`` flow: a personal adapter per owner with new data or a moved base.

Deployers go first, then users (a user's adapter sits on its deployer's serving one). Each
owner is its own task: one owner's error is logged and reported, never stops the others.
Every adapter is gated against the tiers above it (``components/personal/tier_gate.py``);
only a passing one becomes ``champion``. When the base moved, a serving adapter is first
re-gated on the new base; failing that, retrained; failing that too, tagged stale and its
``champion`` alias removed. Scheduled after ``retrain`` (``alignpipe serve``).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import mlflow
from prefect import flow, get_run_logger, task, unmapped
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.events import DeploymentEventTrigger
from prefect.states import Failed

from components import stages
from components.app import version_tags
from components.data.dataset import read_items
from components.errors import UserError
from components.params import Params, load_params
from components.personal import personalize as steps
from components.policy.data_card import render_adapter_card
from components.policy.policies import Policies, load_policies
from components.policy.tiers import tier_of
from components.redact import mask_credentials
from components.registry import registry
from components.registry.adapters import adapter_dirs, adapter_model_name, log_adapter_model, mark_stale
from components.registry.tracking import ensure_experiment, log_finite_metrics, server_failure


@dataclass(frozen=True)
class OwnerOutcome:
    owner: str
    tier: str
    decision: str                 # one line: what happened to the owner's adapter
    failing: str = ""             # failed gate checks, comma-separated
    error: bool = False

    def line(self) -> str:
        return f"{self.owner} ({self.tier}): {self.decision}" + (f" [failing: {self.failing}]" if self.failing else "")


def _register(plan, base, decision, figures: dict, dirs: list[Path], manifest: dict, note: str) -> str:
    """Log the composed model and its evidence in an MLflow run; register it as challenger."""
    dataset_version = manifest["version"]
    card = render_adapter_card(plan.rows, plan.owner, plan.tier, plan.deployer, plan.identity["data_version"],
                               dataset_version)
    with mlflow.start_run(run_name=f"personalize {plan.owner}"):
        mlflow.set_tags({"owner": plan.owner, "tier": plan.tier, "mlflow.note.content": note + "\n\n" + card})
        log_finite_metrics(figures)
        with tempfile.TemporaryDirectory() as scratch:
            decision.evidence.to_parquet(Path(scratch) / "tier_evidence.parquet", index=False)
            (Path(scratch) / "data_card.md").write_text(card)
            mlflow.log_artifacts(scratch, artifact_path="evidence")
        model_uri = log_adapter_model(dirs, base.uri)
        tags = steps.tags_for(plan, base, decision, figures, dataset_version) | version_tags(manifest)
        # judged lines, the data card, then the underpowered rules' INFO lines: a version's
        # description holds 5,000 characters, and what is cut should be what decides nothing
        judged = [line for line in decision.checks if not line.startswith("INFO")]
        reported = [line for line in decision.checks if line.startswith("INFO")]
        description = "\n".join([note, "", *judged, "", card, "", *reported])
        return registry.register_candidate(model_uri, adapter_model_name(plan.owner), tags, description)


def _regate_serving(plan, serving, base, policies, items, params, manifest: dict) -> OwnerOutcome | None:
    """The serving adapter on the moved base: registered again (same weights, new base) and
    kept serving if it passes; None if it fails (then it is retrained)."""
    logger = get_run_logger()
    name = adapter_model_name(plan.owner)
    own = adapter_dirs(f"models:/{name}/{serving.version}")[-1]
    decision, dirs = steps.regate(plan, base, policies, items, params, own)
    logger.info("%s: v%s re-gated on %s: %s", plan.owner, serving.version, decision.against, "; ".join(decision.checks))
    if not decision.passed:
        return None
    note = f"PASSED tier gate: v{serving.version}'s adapter re-gated on {decision.against}"
    version = _register(plan, base, decision, {}, dirs, manifest, note)
    registry.promote(name, version, reason=note)
    return OwnerOutcome(plan.owner, plan.tier, f"v{serving.version} re-gated on base v{base.version}: champion v{version}")


def _retrain(plan, serving, base, policies, items, params, manifest: dict, why: str) -> OwnerOutcome:
    """A new adapter, gated: champion if it passes; else challenger, and if the serving one no
    longer fits the base either, that one is tagged stale and stops serving."""
    with tempfile.TemporaryDirectory() as scratch:
        decision, figures, dirs = steps.train_and_gate(plan, base, policies, items, params, Path(scratch) / plan.owner)
        repaired = (f"; repaired: the first adapter failed {figures['refused_first_by']}, so it was retrained with "
                    f"{figures['repair_rows']} tier-1 training rows (tiers.repair_share {params.tiers.repair_share})"
                    if figures.get("repaired") else "")
        note = f"{'PASSED' if decision.passed else 'FAILED'} tier gate on {decision.against} ({why}){repaired}"
        version = _register(plan, base, decision, figures, dirs, manifest, note)
    for check in decision.checks:
        get_run_logger().info("%s: %s", plan.owner, check)
    after = " after repair" if repaired else ""
    if decision.passed:
        registry.promote(adapter_model_name(plan.owner), version, reason="; ".join(decision.checks))
        return OwnerOutcome(plan.owner, plan.tier, f"v{version} promoted to champion{after}")
    stale = ""
    if serving is not None and serving.tags.get("base_version") != base.version:
        reason = f"failed its tier gate on base v{base.version}, and so did its retrained v{version}"
        stale = f"; v{mark_stale(plan.owner, reason)} tagged stale, no champion"
    return OwnerOutcome(plan.owner, plan.tier, f"v{version} registered as challenger, gate FAILED{after}{stale}",
                        ",".join(decision.failing))


@task(cache_policy=NO_CACHE, task_run_name="personalize {owner}")
def personalize_owner(owner: str, params: Params, policies: Policies, base: steps.Base, items, manifest: dict
                      ) -> OwnerOutcome:
    """One owner, start to finish; any error becomes this owner's outcome, not the flow's."""
    tier = tier_of(policies, owner)
    if refused := steps.screened_out(owner, manifest, params):
        get_run_logger().warning("%s (%s): %s", owner, tier, refused)
        return OwnerOutcome(owner, tier, refused, "screening")
    try:
        plan = steps.plan_owner(owner, items, manifest["scope_versions"], policies, base, params)
        why = steps.work_needed(plan)
        if not why:
            return OwnerOutcome(owner, tier, "no feedback rows" if plan.rows.empty else "up to date")
        get_run_logger().info("%s (%s): %s", owner, tier, why)
        serving = registry.champion(adapter_model_name(owner))
        if serving is not None and serving.tags.get("base_version") != base.version:
            outcome = _regate_serving(plan, serving, base, policies, items, params, manifest)
            if outcome is not None:
                return outcome
        return _retrain(plan, serving, base, policies, items, params, manifest, why)
    except Exception as err:  # one owner's failure never stops the others
        if (failure := server_failure(err)) is not None:
            get_run_logger().error("%s: %s", owner, failure)
            return OwnerOutcome(owner, tier, f"error: {failure}", error=True)
        get_run_logger().exception("%s: personalisation failed", owner)
        return OwnerOutcome(owner, tier, f"error: {mask_credentials(str(err))}", error=True)


def summary_markdown(outcomes: list[OwnerOutcome], base: steps.Base) -> str:
    lines = [f"# alignpipe personalize on {base.name} v{base.version} ({base.alias})", "",
             "| owner | tier | decision | failing checks |", "|---|---|---|---|"]
    lines += [f"| {o.owner} | {o.tier} | {o.decision.replace('|', '/')} | {o.failing or '-'} |" for o in outcomes]
    return "\n".join(lines) + "\n"


@flow(name="personalize", log_prints=True)
def personalize(root: str = ".", params_file: str = "params.yaml", overrides: dict | None = None,
                owner: str | None = None):
    """Adapters for every owner of policies.yaml (or only ``owner``), deployers before users."""
    logger = get_run_logger()
    root = Path(root).resolve()
    try:
        params = load_params(root / params_file if not Path(params_file).is_absolute() else params_file, overrides)
        policies = load_policies(root / params.tiers.policies)
        owners = [*policies.deployers, *policies.users]
        if owner is not None and owner not in owners:
            raise UserError(f"unknown owner {owner!r}; policies.yaml names {owners}")
        ensure_experiment(params.registry.experiment)
        base = steps.resolve_base(params)
        items, manifest = read_items(root / stages.DATASET_DIR)
    except (UserError, FileNotFoundError) as err:
        logger.error("%s", err)
        return Failed(message=str(err))
    except Exception as err:
        if (failure := server_failure(err)) is None:
            raise
        logger.error("%s", failure)
        return Failed(message=str(failure))
    logger.info("adapters sit on %s v%s (alias %s)", base.name, base.version, base.alias)
    outcomes = []
    for wave in (list(policies.deployers), list(policies.users)):
        chosen = [o for o in wave if owner in (None, o)]
        futures = personalize_owner.map(chosen, unmapped(params), unmapped(policies), unmapped(base), unmapped(items),
                                        unmapped(manifest))
        outcomes += [future.result() for future in futures]
    for outcome in outcomes:
        logger.info("%s", outcome.line())
    create_markdown_artifact(key="personalize-summary", markdown=summary_markdown(outcomes, base),
                             description=f"adapters on {base.name} v{base.version}")
    return outcomes


def deployment(root: str = ".", params_file: str = "params.yaml", overrides: dict | None = None):
    """``personalize`` for every owner, triggered whenever a ``retrain`` flow run completes."""
    root_path = Path(root).resolve()
    parameters = {"root": str(root_path), "params_file": params_file, "overrides": overrides or {}}
    trigger = DeploymentEventTrigger(expect={"prefect.flow-run.Completed"},
                                     match_related={"prefect.resource.role": "flow", "prefect.resource.name": "retrain"},
                                     parameters=parameters)
    return personalize.to_deployment(name="personalize-after-retrain", triggers=[trigger], parameters=parameters)
