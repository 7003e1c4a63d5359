"""Personal adapters in the registry: one registered model per owner, ``alignpipe-adapter-<owner>``.

Each version is a pyfunc that loads the base version it was trained on (by URI, never copied),
merges its deployer's adapter and its own, and generates. Aliases mean what they mean for the
base model (``challenger``: newest candidate; ``champion``: serving, with history and
rollback); an adapter that no longer fits its base is tagged ``stale`` and loses ``champion``.
"""

from __future__ import annotations

from pathlib import Path

import mlflow
from mlflow import MlflowClient

from components.registry import registry
from components.registry.registry import RUNTIME_PACKAGES, RegistryError

PREFIX = "alignpipe-adapter-"
STALE_TAG = "stale"


def adapter_model_name(owner: str) -> str:
    return f"{PREFIX}{owner}"


def log_adapter_model(adapter_dirs: list[Path], base_model_uri: str) -> str:
    """Log a composed model in the active run: ``base_model_uri`` (a registered base version)
    with ``adapter_dirs`` merged in order. Returns the logged model's URI."""
    # each folder is named after its owner: MLflow keeps artifacts under their folder names
    artifacts = {f"adapter_{index}": str(path) for index, path in enumerate(adapter_dirs)}
    return registry.log_generator("adapter", artifacts, {"base_model_uri": base_model_uri, "adapters": list(artifacts)},
                                  packages=(*RUNTIME_PACKAGES, "peft"))


def adapter_dirs(model_uri: str) -> list[Path]:
    """The adapter folders of a registered adapter version, in merge order (its own last)."""
    root, flavor = registry.download(model_uri)
    names = (flavor.get("config") or {}).get("adapters", [])
    if not names:
        raise RegistryError(f"{model_uri}: not an alignpipe adapter model (no adapters in its model_config)")
    return [root / flavor["artifacts"][name]["path"] for name in names]


def mark_stale(owner: str, reason: str) -> str | None:
    """Tag the owner's champion ``stale`` with ``reason`` and remove the ``champion`` alias;
    returns the version that stopped serving (None when there was none)."""
    name = adapter_model_name(owner)
    current = registry.champion(name)
    if current is None:
        return None
    client = MlflowClient()
    client.set_model_version_tag(name, current.version, STALE_TAG, reason[: registry.TAG_VALUE_LIMIT])
    client.delete_registered_model_alias(name, registry.CHAMPION)
    return str(current.version)


def adapter_rows(owners: dict[str, str]) -> list[dict]:
    """One row per owner (``{owner: tier}``) for ``alignpipe adapter list``: champion and challenger with
    the base version each sits on, its gate verdict, and why it went stale if it did."""
    rows = []
    for owner, tier in owners.items():
        name = adapter_model_name(owner)
        row = {"owner": owner, "tier": tier, "model": name}
        for alias in (registry.CHAMPION, registry.CHALLENGER):
            version = registry.version_by_alias(name, alias)
            tags = version.tags if version else {}
            row[alias] = (f"v{version.version} (base v{tags.get('base_version', '?')}, gate "
                          f"{'passed' if tags.get('gate.passed') == 'true' else 'failed'})" if version else "-")
        stale = [v for v in _versions(name) if STALE_TAG in v.tags]
        row["stale"] = f"v{stale[-1].version}: {stale[-1].tags[STALE_TAG]}" if stale else ""
        rows.append(row)
    return rows


def adapter_lines(owners: dict[str, str]) -> list[str]:
    """``alignpipe adapter list`` and ``alignpipe status``: one line per owner."""
    lines = []
    for row in adapter_rows(owners):
        stale = f"; stale {row['stale']}" if row["stale"] else ""
        lines.append(f"{row['owner']} ({row['tier']}): {row['model']} champion {row['champion']}, "
                     f"challenger {row['challenger']}{stale}")
    return lines


def _versions(name: str) -> list:
    try:
        return sorted(MlflowClient().search_model_versions(f"name = '{name}'"), key=lambda v: int(v.version))
    except mlflow.MlflowException:
        return []
