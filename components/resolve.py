"""What a run uses: its params resolved into one file, and links to the inputs they name.

The ``params`` stage of ``dvc.yaml`` writes both on every ``dvc repro``; the other stages read
and declare only these, so DVC reruns a stage exactly when something it uses changed, whether
the params came from ``params.yaml``, another file (``alignpipe --params``) or ``-S`` overrides.

The entry ``app:`` of ``data.source`` is exported here from the app's feedback database to
``artifacts/inputs/app_feedback.jsonl`` (``components/app/export.py``): the file changes exactly
when the rows that are not withdrawn do, so DVC reruns ingest then, whichever database holds them.

The data sources, the withdrawals list, ``policies.yaml`` and a local ``reference.model`` folder
live wherever the params say; ``artifacts/inputs/`` holds a symlink to each, and the stages name those links as
dependencies. DVC follows the links and hashes what they point at, so ``dvc status`` sees a
model folder whose weights were rewritten in place. Kept free of heavy imports: it runs
before every pipeline.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from components.app import EXPORT_NAME
from components.params import APP_SOURCE, Params, ParamsError

RESOLVED_PARAMS = Path("artifacts") / "params.yaml"
INPUTS_DIR = Path("artifacts") / "inputs"
APP_EXPORT = INPUTS_DIR / EXPORT_NAME


def _replace(path: Path) -> Path:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)
    return path


def link_files(named: dict[str, tuple[str, str]], inputs_dir: Path) -> dict[str, str]:
    """``inputs_dir/NAME`` → each file ``named`` maps to ``(setting, location)``; a missing one
    stops the run naming its setting."""
    links = {}
    for name, (key, location) in named.items():
        if not Path(location).exists():
            raise ParamsError(f"{key}: {location} not found (paths are relative to the project folder)")
        _replace(inputs_dir / name).symlink_to(Path(location).resolve())
        links[name] = str(Path(location).resolve())
    return links


def link_inputs(params: Params, inputs_dir: Path = INPUTS_DIR) -> dict[str, str]:
    """Point ``inputs_dir/{data_source,owner_source,withdrawals,policies,reference_model}`` at
    what the params name (``data_source`` a folder of links when ``data.source`` is a list). A
    reference that is not a local folder (``tiny``, a hub id) becomes a file holding its name,
    and no owner source a file saying so, so that changing either still changes the dependency."""
    inputs_dir.mkdir(parents=True, exist_ok=True)
    named = {}
    export = export_app_feedback(params, inputs_dir / EXPORT_NAME)
    if isinstance(params.data.source, str):
        named["data_source"] = ("data.source", export or params.data.source)
    else:   # a list: a folder of numbered links, which DVC hashes through
        folder = _replace(inputs_dir / "data_source")
        folder.mkdir()
        for index, location in enumerate(params.data.source):
            location = export if location == APP_SOURCE else location
            named[f"data_source/{index}-{Path(location).name}"] = (f"data.source[{index}]", location)
    named |= {"withdrawals": ("data.withdrawals", params.data.withdrawals), "policies": ("tiers.policies", params.tiers.policies)}
    if params.data.owner_source:
        named["owner_source"] = ("data.owner_source", params.data.owner_source)
    else:
        _replace(inputs_dir / "owner_source").write_text("none\n")
    links = link_files(named, inputs_dir)
    links.update(link_sandbox(params, inputs_dir))
    reference = params.reference.model
    if Path(reference).is_dir():
        _replace(inputs_dir / "reference_model").symlink_to(Path(reference).resolve())
        links["reference_model"] = str(Path(reference).resolve())
    else:
        _replace(inputs_dir / "reference_model").write_text(reference + "\n")
        links["reference_model"] = reference
    return links


def export_app_feedback(params: Params, path: Path) -> str:
    """The app's feedback written to ``path`` when ``data.source`` names ``app:`` (its path), else ''."""
    sources = [params.data.source] if isinstance(params.data.source, str) else params.data.source
    if APP_SOURCE not in sources:
        return ""
    from components.app.export import export_from_database   # SQLAlchemy: only when the app is a source

    export_from_database(params, path)
    return str(path)


def link_sandbox(params: Params, inputs_dir: Path) -> dict[str, str]:
    """The sandbox's inputs when it is a pipeline stage (``sandbox.enabled``): its question and
    memory sources, and the agents' model as the version an alias points at now, so that a
    moved champion makes the next simulation due. Disabled, each is a file saying so."""
    if not params.sandbox.enabled:
        for name in ("sandbox_questions", "sandbox_memories", "sandbox_model"):
            _replace(inputs_dir / name).write_text("disabled\n")
        return {}
    from components.sandbox.simulation import agent_model   # reads the registry: only when enabled

    links = link_files({"sandbox_questions": ("sandbox.questions", params.sandbox.questions),
                        "sandbox_memories": ("sandbox.memories", params.sandbox.memories)}, inputs_dir)
    links["sandbox_model"] = agent_model(params)
    _replace(inputs_dir / "sandbox_model").write_text(links["sandbox_model"] + "\n")
    return links


def resolve_params(params: Params, named: str, overrides: dict, out: Path = RESOLVED_PARAMS,
                   inputs_dir: Path = INPUTS_DIR) -> dict:
    """Write every setting the run uses (defaults included) to ``out`` and link the inputs;
    returns where each came from."""
    header = (f"Resolved by `alignpipe stage params` from {named}" + (f" with -S {overrides}" if overrides else "")
              + ".\nThe stages read this file: edit params.yaml (or pass --params/-S), not this.")
    links = link_inputs(params, inputs_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(params.to_yaml(header))
    return {"params": named, "overrides": overrides, **links}
