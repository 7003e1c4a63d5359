"""What ``alignpipe status`` prints: the registry's champion, challenger and newest versions,
and which DVC stages a run would redo, and why.

Read-only: nothing here changes the registry or the workspace. The registry view answers
"what serves, what waits, and why did the gate say so"; the stage view answers "what would
``alignpipe run`` rebuild" before anyone spends the time.
"""

from __future__ import annotations

import contextlib
import re
from datetime import UTC, datetime
from pathlib import Path

import yaml
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion

from components.errors import UserError
from components.params import Params, load_params
from components.redact import mask_credentials
from components.registry.registry import CHALLENGER, CHAMPION, HISTORY_TAG
from components.resolve import RESOLVED_PARAMS

CHECK_CHARS = 90
ABSENT = "—"
# The flow joins gate check lines with "; " (GateDecision.as_tags), and a line may itself
# contain "; ", so lines are split only where the next one starts with its verdict word.
CHECK_SEPARATOR = re.compile(r"\n|; (?=(?:PASS|FAIL|INFO) )")


def _first_failure(version: ModelVersion) -> str:
    """The first FAIL check (the gate lists the primary checks first), shortened to fit a line."""
    lines = CHECK_SEPARATOR.split(version.tags.get("gate.checks", ""))
    failure = next((line for line in lines if line.startswith("FAIL")), "")
    return failure if len(failure) <= CHECK_CHARS else failure[: CHECK_CHARS - 1] + "…"


def _version_line(version: ModelVersion, aliases: dict[str, str]) -> str:
    """``aliases`` maps alias to version (the registered model's; search results carry none)."""
    created = datetime.fromtimestamp(version.creation_timestamp / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")
    names = ",".join(sorted(a for a, v in aliases.items() if str(v) == str(version.version))) or ABSENT
    verdict = {"true": "PASSED", "false": "FAILED"}.get(version.tags.get("gate.passed", ""), ABSENT)
    data = version.tags.get("data_version", ABSENT)[:12]
    line = (f"v{version.version:<3} {created}  {names:<20} {verdict:<6}  data {data:<12}  "
            f"{version.tags.get('objective', ABSENT)}")
    return f"{line}  {_first_failure(version)}".rstrip()


def registry_overview(model_name: str, recent: int = 5) -> str:
    """Champion, challenger and the ``recent`` newest versions of ``model_name``, one line each.

    Aliases are read from the registered model, so one moved by hand in the MLflow UI shows
    too. MLflow records no time for an alias move: the champion line shows when its version
    was registered, and the history line the promotions that rollback follows.
    """
    client = MlflowClient()
    versions = client.search_model_versions(f"name='{model_name}'", max_results=recent,
                                            order_by=["version_number DESC"])
    if not versions:
        return f"no versions of {model_name} yet: run `alignpipe run`"
    model = client.get_registered_model(model_name)
    champion, challenger = model.aliases.get(CHAMPION), model.aliases.get(CHALLENGER)
    lines = [f"{model_name}:"]
    for alias, number in ((CHAMPION, champion), (CHALLENGER, challenger)):
        if number is None:
            line = ("none yet: no candidate has passed the gate (`alignpipe promote VERSION` promotes "
                    "one by hand)" if alias == CHAMPION else "none")
        elif alias == CHALLENGER and number == champion:
            line = f"v{number}, the champion: no candidate is waiting"
        else:
            line = _version_line(client.get_model_version(model_name, number), model.aliases)
        lines.append(f"  {alias + ':':<12}{line}")
    history = [v for v in model.tags.get(HISTORY_TAG, "").split(",") if v]
    if history:
        lines.append(f"  {'history:':<12}" + " -> ".join(f"v{v}" for v in history) + " (champions, oldest first)")
    lines.append("  newest versions:")
    lines += [f"    {_version_line(version, model.aliases)}" for version in versions]
    return "\n".join(lines)


def _changed_keys(prefix: str, old: object, new: object) -> list[str]:
    """Dotted keys whose values differ: DVC reports a whole params group (``cycles``) as
    modified when a stage depends on the group, which does not say what to look for."""
    if isinstance(old, dict) and isinstance(new, dict):
        keys = [*old, *(key for key in new if key not in old)]
        return [k for key in keys for k in _changed_keys(f"{prefix}.{key}", old.get(key), new.get(key))]
    return [prefix] if old != new else []


def _describe(stage, changes: list) -> str:
    """One line from DVC's status entries for ``stage``: strings ("always changed", "changed
    command") and ``{"changed deps" | "changed outs": {path: state}}``, where a params file's
    state is ``{param: state}``."""
    from dvc.dependency import ParamsDependency

    params_deps = {str(dep): dep for dep in stage.deps if isinstance(dep, ParamsDependency)}
    reasons = [change for change in changes if isinstance(change, str)]
    for kind, items in (item for change in changes if isinstance(change, dict) for item in change.items()):
        params, paths = [], []
        for path, state in items.items():
            if isinstance(state, str):
                paths.append(path if state == "modified" else f"{path} ({state})")
                continue
            locked, actual = params_deps[path].hash_info.value, params_deps[path].read_params()
            for param, param_state in state.items():
                if param_state == "modified":
                    params += _changed_keys(param, locked.get(param), actual.get(param)) or [param]
                else:
                    params.append(f"{param} ({param_state})")
        reasons += [f"changed params: {', '.join(params)}"] if params else []
        reasons += [f"{kind}: {', '.join(paths)}"] if paths else []
    if reasons == ["always changed"]:
        return "runs every time (always_changed)"
    return "stale: " + "; ".join(reasons)


def stage_status(root: Path) -> list[tuple[str, str]]:
    """``(stage, state)`` for each stage of ``root/dvc.yaml``, upstream stages first: "up to
    date", "not run yet" or "stale: " and DVC's reasons.

    A stage only reports its own changes: one downstream of a stale stage still reads "up to
    date" although ``dvc repro`` reruns it when the stale stage changes its outputs.
    """
    import networkx as nx
    from dvc.dvcfile import LOCK_FILE, PROJECT_FILE
    from dvc.repo import Repo

    root = Path(root).resolve()
    lock = root / LOCK_FILE
    ran = yaml.safe_load(lock.read_text()).get("stages", {}) if lock.exists() else {}
    # DVC resolves stage targets against the working directory, not the Repo's root
    with contextlib.chdir(root), Repo(str(root)) as repo:
        stages = list(repo.stage.collect(PROJECT_FILE))
        order = {stage: index for index, stage in enumerate(stages)}
        # the graph points from a stage to the stages it depends on; ties keep dvc.yaml's order
        pipeline = nx.lexicographical_topological_sort(repo.index.graph.subgraph(stages).reverse(), key=order.get)
        changes = repo.status(PROJECT_FILE)
        return [(stage.addressing, "not run yet" if stage.name not in ran else
                 _describe(stage, changes[stage.addressing]) if stage.addressing in changes else "up to date")
                for stage in pipeline]


def pending_changes(root: Path, params: Params) -> dict[str, list[str]]:
    """Settings that differ from what the last run resolved, by the stage that declares them.
    DVC compares stages with ``artifacts/params.yaml``, which only the next run rewrites, so
    an edit to params.yaml shows here and not yet in DVC's own status."""
    resolved = root / RESOLVED_PARAMS
    if not resolved.exists():
        return {}
    before, now = load_params(resolved).to_dict(), params.to_dict()
    pending = {}
    for name, stage in yaml.safe_load((root / "dvc.yaml").read_text()).get("stages", {}).items():
        for entry in stage.get("params", []):
            for key in entry.get(str(RESOLVED_PARAMS), []) if isinstance(entry, dict) else ():
                pending.setdefault(name, []).extend(_changed_keys(key, _lookup(before, key), _lookup(now, key)))
    return {name: keys for name, keys in pending.items() if keys}


def _lookup(tree: dict, dotted: str) -> object:
    for part in dotted.split("."):
        tree = tree.get(part) if isinstance(tree, dict) else None
    return tree


def adapter_overview(params: Params) -> list[str]:
    """One line per owner of policies.yaml, or why there are none to show."""
    from components.policy.policies import load_policies
    from components.registry.adapters import adapter_lines

    try:
        owners = load_policies(params.tiers.policies).owners()
    except UserError as err:
        return [f"cannot read the policies: {err}"]
    return adapter_lines(owners) or ["no deployers or users in the policies"]


def render_status(params: Params, root: Path, tracking_uri: str) -> str:
    """The whole ``alignpipe status`` text: tracking store, registry, pipeline stages.

    A folder DVC cannot read (no ``dvc init``, a broken dvc.yaml) gets one line saying so:
    the registry part is still worth seeing.
    """
    from dvc.exceptions import DvcException

    try:
        stages = stage_status(root)
    except DvcException as err:
        stages = [("cannot read the pipeline:", str(err))]
    pending = pending_changes(Path(root).resolve(), params)
    stages = [(name, f"stale: params changed since the last run: {', '.join(pending[name])}"
               if name in pending and state == "up to date" else state) for name, state in stages]
    width = max((len(name) for name, _ in stages), default=0)
    stage_lines = [f"  {name:<{width}}  {state}" for name, state in stages] or ["  no stages in dvc.yaml"]
    return "\n".join([
        f"MLflow tracking: {mask_credentials(tracking_uri)}",
        "",
        "Registry",
        *(f"  {line}" for line in registry_overview(params.registry.model_name).splitlines()),
        "",
        "Personal adapters (alignpipe personalize)",
        *(f"  {line}" for line in adapter_overview(params)),
        "",
        f"Pipeline stages (DVC, {Path(root).resolve()})",
        *stage_lines,
    ])
