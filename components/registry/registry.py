"""Registry actions: log a policy, register it as the challenger, promote, roll back.

The Prefect flow and the CLI change the MLflow model registry only through these functions,
so the aliases keep one meaning everywhere:

- ``challenger``: the newest registered candidate, waiting for the evaluation gate;
- ``champion``: the version that serves; every promotion is appended to the registered
  model's ``champion_history`` tag (comma-separated versions, newest last), which is what
  makes ``rollback`` possible.

The tracking/registry URI comes from the environment (``MLFLOW_TRACKING_URI``).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

from components.errors import UserError
from components.redact import mask_credentials
from components.registry.tracking import server_failure

TEXT_GENERATOR_PATH = Path(__file__).with_name("text_generator.py")
REFERENCE_ARTIFACT = "reference_dir"   # the reference a policy version was judged against (log_policy_model)
CHALLENGER = "challenger"
CHAMPION = "champion"
HISTORY_TAG = "champion_history"
REASON_TAG = "promoted_reason"
REGISTRATION_TAG = "registration"   # pending until the challenger alias is set, then complete
PENDING, COMPLETE = "pending", "complete"
# The smallest registry tag limit across MLflow's SQL backends (registered-model tags are
# VARCHAR(5000)); sqlite does not enforce it, PostgreSQL/MySQL do.
TAG_VALUE_LIMIT = 5000
# What text_generator.py imports at load time, pinned to the versions that logged it.
RUNTIME_PACKAGES = ("mlflow", "torch", "transformers", "tokenizers", "safetensors", "pandas")

SIGNATURE = ModelSignature(
    inputs=Schema([ColSpec("string")]),
    outputs=Schema([ColSpec("string")]),
    params=ParamSchema(
        [
            ParamSpec("max_new_tokens", "long", 48),
            ParamSpec("temperature", "double", 0.0),
            ParamSpec("seed", "long", 0),
        ]
    ),
)


class RegistryError(UserError, RuntimeError):
    """A registry action that cannot be done; nothing was changed."""


def pinned_requirements(packages: tuple[str, ...] = RUNTIME_PACKAGES) -> list[str]:
    """``pkg==version`` for the generator's runtime, read locally (MLflow's inference is slow)."""
    return [f"{name}=={metadata.version(name).split('+')[0]}" for name in packages]


def log_policy_model(model_dir: Path, name: str = "policy", reference_dir: Path | None = None) -> str:
    """Log a ``save_pretrained`` folder as a models-from-code pyfunc in the active run.

    The weights go in as plain artifacts (safetensors) and the wrapper as source code, so
    loading the model never unpickles anything. Returns the logged model's URI.

    ``reference_dir``, the reference the policy was trained and judged against, goes in as a
    second artifact of the same model, ``reference_dir``, so that the version can be scored
    months later whatever the working tree's reference has become (:func:`local_model`). In
    the version rather than registered as a model of its own: one download brings both, the
    version alone says what it was judged against, and no second model's versions, aliases
    or deletions have to be kept in step. It costs the tiny default's reference (~3 MB) per
    version; a model that is not trained here is recorded by its pointer (``reference.json``:
    its name or path, the weights stay where they are). The pyfunc never loads it.
    """
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise RegistryError(f"{model_dir}: not a save_pretrained model folder (no config.json)")
    artifacts = {"model_dir": str(model_dir)}
    if reference_dir is not None:
        if not Path(reference_dir).is_dir():
            raise RegistryError(f"{reference_dir}: no reference folder to log with the policy")
        artifacts[REFERENCE_ARTIFACT] = str(reference_dir)
    return log_generator(name, artifacts)


def log_generator(name: str, artifacts: dict[str, str], model_config: dict | None = None,
                  packages: tuple[str, ...] = RUNTIME_PACKAGES) -> str:
    """``text_generator.py`` as a pyfunc in the active run, with ``artifacts`` and
    ``model_config`` (what it loads), pinned to the local versions of ``packages``."""
    if mlflow.active_run() is None:
        raise RegistryError("logging a model needs an active MLflow run (mlflow.start_run())")
    with warnings.catch_warnings():
        # The signature is explicit; an input example would only add a model load + generate.
        warnings.filterwarnings("ignore", message=".*An input example was not provided")
        info = mlflow.pyfunc.log_model(
            name=name,
            python_model=str(TEXT_GENERATOR_PATH),
            artifacts=artifacts,
            model_config=model_config,
            signature=SIGNATURE,
            pip_requirements=pinned_requirements(packages),
        )
    return info.model_uri


def _tag_value(value: object) -> str:
    text = str(value)
    return text if len(text) <= TAG_VALUE_LIMIT else text[: TAG_VALUE_LIMIT - 3] + "..."


def register_candidate(model_uri: str, model_name: str, tags: dict[str, str], description: str) -> str:
    """Register ``model_uri`` as a new version of ``model_name`` and point ``challenger`` at it.

    Returns the new version. Tag values are stringified and truncated to the registry limit.
    The version is created with every tag in one request, marked ``pending`` until its
    alias is set: if the server goes away in between, :func:`repair_registrations` finishes
    or removes it before anything else reads the registry.
    """
    client = MlflowClient()
    tags = {key: _tag_value(value) for key, value in tags.items()} | {REGISTRATION_TAG: PENDING}
    version = mlflow.register_model(model_uri, model_name, tags=tags).version
    if description:
        client.update_model_version(model_name, version, description=_tag_value(description))
    client.set_registered_model_alias(model_name, CHALLENGER, version)
    client.set_model_version_tag(model_name, version, REGISTRATION_TAG, COMPLETE)
    return str(version)


def set_version_tags(model_name: str, version: str, tags: dict[str, str]) -> None:
    """Replace tags of a registered version (a gate decided again)."""
    client = MlflowClient()
    for key, value in tags.items():
        client.set_model_version_tag(model_name, version, key, _tag_value(value))


def repair_registrations(model_name: str) -> list[str]:
    """Finish or remove versions a lost server left ``pending``: one holding the challenger
    alias only lacks its final tag; one without it is deleted. Returns what was done."""
    client = MlflowClient()
    repaired = []
    for version in client.search_model_versions(f"name = '{model_name}' and tag.`{REGISTRATION_TAG}` = '{PENDING}'"):
        current = _alias_version(client, model_name, CHALLENGER)
        if current is not None and current.version == version.version:
            client.set_model_version_tag(model_name, version.version, REGISTRATION_TAG, COMPLETE)
            repaired.append(f"v{version.version}: registration completed (its alias was set)")
        else:
            client.delete_model_version(model_name, version.version)
            repaired.append(f"v{version.version}: deleted (registration interrupted before its alias was set)")
    return repaired


IDENTITY_TAGS = ("data_version", "params_sha256", "code_commit")


def identical_version(model_name: str, identity: dict[str, str]) -> tuple[ModelVersion, str] | None:
    """The champion or challenger whose data version, params and code commit all equal
    ``identity`` (the ``IDENTITY_TAGS``), with its alias; None when there is none.

    Registering such a candidate again would only add an identical version, so the flow
    skips it. A work tree with uncommitted changes never matches by accident: its commit
    carries a hash of the diff (see ``flows.retrain.git_commit``).
    """
    client = MlflowClient()
    for alias in (CHAMPION, CHALLENGER):
        version = _alias_version(client, model_name, alias)
        if version is not None and all(version.tags.get(k) == identity[k] for k in IDENTITY_TAGS):
            return version, alias
    return None


def _alias_version(client: MlflowClient, model_name: str, alias: str) -> ModelVersion | None:
    try:
        return client.get_model_version_by_alias(model_name, alias)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


def champion(model_name: str) -> ModelVersion | None:
    """The serving version, or None when the model or its ``champion`` alias does not exist."""
    return version_by_alias(model_name, CHAMPION)


def version_by_alias(model_name: str, alias: str) -> ModelVersion | None:
    """The version ``alias`` points at, or None when the model or the alias does not exist."""
    return _alias_version(MlflowClient(), model_name, alias)


def _version_exists(client: MlflowClient, model_name: str, version: str) -> bool:
    try:
        client.get_model_version(model_name, version)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return False
        raise
    return True


def _history(client: MlflowClient, model_name: str) -> list[str]:
    """Past and present champions, oldest first, ending at the current champion.

    If the alias was moved outside these functions, the current champion is appended so that
    a rollback returns to the version that was really serving before.
    """
    tags = client.get_registered_model(model_name).tags
    history = [v for v in tags.get(HISTORY_TAG, "").split(",") if v]
    current = _alias_version(client, model_name, CHAMPION)
    if current is not None and (not history or history[-1] != str(current.version)):
        history.append(str(current.version))
    return history


def _save_history(client: MlflowClient, model_name: str, history: list[str]) -> None:
    while history and len(",".join(history)) > TAG_VALUE_LIMIT:
        history = history[1:]  # forget the oldest champions first
    client.set_registered_model_tag(model_name, HISTORY_TAG, ",".join(history))


class ChampionMoved(RuntimeError):
    """The champion changed since the gate compared against it: gate again, never promote blind."""


ANY = object()  # promote's ``expected_champion`` when the caller compared against nothing


def promote(model_name: str, version: str, reason: str, expected_champion: str | None | object = ANY) -> None:
    """Point ``champion`` at ``version``, record it in the history and tag the reason.

    Raises RegistryError, changing nothing, if the model or version does not exist. With
    ``expected_champion`` (a version, or None for "no champion"), compare-and-set: raises
    :class:`ChampionMoved`, changing nothing, when the champion is no longer that one. (The
    registry has no transactions: the check and the move are two requests, milliseconds
    apart; the project lock keeps one project's runs from racing there.)
    """
    client = MlflowClient()
    version = str(version)
    if not _version_exists(client, model_name, version):
        raise RegistryError(f"cannot promote {model_name!r} version {version!r}: no such model version")
    if expected_champion is not ANY:
        current = _alias_version(client, model_name, CHAMPION)
        found = str(current.version) if current else None
        if found != expected_champion:
            raise ChampionMoved(f"{model_name}@champion is v{found}, not v{expected_champion} as when gated")
    history = _history(client, model_name)
    if not history or history[-1] != version:
        history.append(version)
    client.set_model_version_tag(model_name, version, REASON_TAG, _tag_value(reason))
    client.set_registered_model_alias(model_name, CHAMPION, version)
    _save_history(client, model_name, history)


def rollback(model_name: str) -> str:
    """Point ``champion`` back at the previous champion and return that version.

    Versions deleted since they served are skipped. Raises RegistryError, changing nothing,
    when there is no previous champion to return to.
    """
    client = MlflowClient()
    try:
        history = _history(client, model_name)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            raise RegistryError(f"cannot roll back {model_name!r}: no such registered model") from exc
        raise
    previous = history[:-1]
    while previous and not _version_exists(client, model_name, previous[-1]):
        previous.pop()
    if not previous:
        why = f"version {history[-1]} is its first champion" if history else "it has no champion"
        raise RegistryError(f"cannot roll back {model_name!r}: no previous champion ({why})")
    target = previous[-1]
    client.set_registered_model_alias(model_name, CHAMPION, target)
    _save_history(client, model_name, previous)
    return target


def download(model_uri: str) -> tuple[Path, dict]:
    """A logged model's local folder and its pyfunc flavor (``artifacts``, ``config``).
    A server that does not answer or refuses is reported as such, with credentials masked."""
    try:
        root = Path(mlflow.artifacts.download_artifacts(artifact_uri=str(model_uri)))
    except MlflowException as err:
        raise server_failure(err) or RegistryError(
            f"{model_uri}: cannot be downloaded from the registry ({mask_credentials(err.message)})") from None
    return root, mlflow.models.Model.load(root / "MLmodel").flavors["python_function"]


@dataclass(frozen=True)
class LocalModel:
    """A policy as local folders: its ``save_pretrained`` weights, and the reference it was
    registered with (None for a plain folder, or a version logged before references were)."""

    model_dir: Path
    reference_dir: Path | None = None


def local_model(model: str | Path) -> LocalModel:
    """``model`` as local folders: a local folder as is, or an MLflow model URI
    (``models:/alignpipe-policy@champion``, ``runs:/...``) downloaded and unpacked to the
    folder the pyfunc serves from, with the reference logged beside it."""
    if Path(model).is_dir():
        return LocalModel(Path(model))
    if not str(model).startswith(("models:/", "runs:/", "file:", "mlflow-artifacts:")):
        raise RegistryError(f"{model}: neither a local model folder nor an MLflow model URI")
    root, flavor = download(str(model))
    artifacts = flavor.get("artifacts", {})
    if "model_dir" not in artifacts:
        raise RegistryError(f"{model}: not an alignpipe policy model (no 'model_dir' artifact)")
    reference = artifacts.get(REFERENCE_ARTIFACT)
    return LocalModel(root / artifacts["model_dir"]["path"], root / reference["path"] if reference else None)


def local_model_dir(model: str | Path) -> Path:
    """The ``save_pretrained`` folder of ``model`` (see :func:`local_model`)."""
    return local_model(model).model_dir
