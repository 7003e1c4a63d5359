"""Who a model is aligned to, and where a person's feedback went.

A registered version carries its gate lines and its data card (a base version's dataset card,
an adapter's card of whose feedback it learned from), and, when its data held app feedback,
the sha256 of that export and the export's lines ingest left out (``version_tags``). The
export's ledger (``Snapshot``) maps each line back to a feedback row, so for every row we can
say which data and model versions used it. Reads only: the registry and the ledger.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.orm import Session

from components.app import DATASET_TAG, EXPORT_NAME, EXPORT_TAG, LEFT_OUT_TAG
from components.app.schema import Account, Feedback, Snapshot
from components.app.serving import adapter_owners
from components.params import Params
from components.policy.policies import Policies

CARD_ARTIFACTS = ("dataset/data_card.md", "evidence/data_card.md")   # a base version's run, an adapter's
CHECK = re.compile(r"; (?=(?:PASS|FAIL|INFO) )")


@dataclass(frozen=True)
class Use:
    """A data version that held a feedback row, and the model version built on it ('' for the
    project's newest dataset, which no registered version may use yet)."""

    data_version: str
    model_name: str = ""
    model_version: str = ""

    def text(self) -> str:
        if not self.model_name:
            return f"data version {self.data_version} (the project's newest dataset, in no registered model yet)"
        return f"{self.model_name} v{self.model_version} (data version {self.data_version})"


@dataclass(frozen=True)
class ModelCard:
    name: str
    version: str
    aliases: tuple[str, ...]
    gate_passed: bool
    gate_against: str
    gate_lines: tuple[str, ...]
    card: str    # markdown


def gate_lines(checks: str) -> tuple[str, ...]:
    """A version's ``gate.checks`` tag as its lines."""
    return tuple(line for line in CHECK.split(checks or "") if line)


@functools.lru_cache(maxsize=64)
def _card(run_id: str, description: str) -> str:
    import mlflow

    for path in CARD_ARTIFACTS:
        try:
            return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path)).read_text()
        except Exception:   # not this kind of run, or the artifact is gone: try the next
            continue
    return description


def model_card(name: str, version: str) -> ModelCard:
    from mlflow import MlflowClient

    found = MlflowClient().get_model_version(name, version)
    tags = found.tags
    return ModelCard(name, str(found.version), tuple(found.aliases), tags.get("gate.passed") == "true",
                     tags.get("gate.against", ""), gate_lines(tags.get("gate.checks", "")),
                     _card(found.run_id, found.description or ""))


def model_names(params: Params, policies: Policies, account: Account) -> list[str]:
    """The models a person's rows can train: the base (through an admin's review) and the
    adapters of the owners their rows are routed to."""
    from components.registry.adapters import adapter_model_name

    return [params.registry.model_name, *(adapter_model_name(owner) for owner in adapter_owners(account, policies))]


def _registered(names: list[str]) -> list[tuple[str, str, str, str, set[int], bool, str]]:
    """``(export sha, name, version, data version, left-out lines, list complete, dataset
    version)`` of every version of ``names`` whose data held app feedback."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    found = []
    for name in names:
        try:
            versions = MlflowClient().search_model_versions(f"name = '{name}'")
        except MlflowException:
            continue
        for version in versions:
            sha = version.tags.get(EXPORT_TAG)
            if sha:
                listed = version.tags.get(LEFT_OUT_TAG, "")
                left_out = {int(line) for line in listed.split(",") if line.isdigit()}
                found.append((sha, name, str(version.version), version.tags.get("data_version", "?"), left_out,
                              not listed.endswith("..."), version.tags.get(DATASET_TAG, "")))
    return found


def newest_dataset(dataset_dir: Path) -> tuple[str, str, set[int]] | None:
    """``(version, export sha, left-out lines)`` of the project's newest dataset, if it held app feedback."""
    manifest_file = dataset_dir / "manifest.json"
    if not manifest_file.is_file():
        return None
    manifest = json.loads(manifest_file.read_text())
    sha = next((sha for path, sha in manifest.get("sources", {}).items() if path.endswith(EXPORT_NAME)), None)
    if sha is None:
        return None
    app = manifest.get("app", {})
    return manifest["version"], sha, {*app.get("over_cap_lines", []), *app.get("quarantined_lines", [])}


def uses(session: Session, rows: list[Feedback], names: list[str], dataset_dir: Path) -> dict[int, list[Use]]:
    """For each feedback row (by id): the data and model versions that used it."""
    wanted = {row.id for row in rows}
    registered = _registered(names)
    candidates = [(sha, Use(data, name, version), left_out, complete)
                  for sha, name, version, data, left_out, complete, _dataset in registered]
    newest = newest_dataset(dataset_dir)
    if newest is not None and newest[0] not in {found[-1] for found in registered}:
        candidates.append((newest[1], Use(newest[0]), newest[2], True))
    lines_of: dict[str, dict[int, list[int]]] = {}
    for sha in {candidate[0] for candidate in candidates}:
        snapshot = session.get(Snapshot, sha)
        by_row: dict[int, list[int]] = {}
        for line, feedback_id, _owner in (snapshot.lines if snapshot else []):
            if feedback_id in wanted:
                by_row.setdefault(feedback_id, []).append(line)
        lines_of[sha] = by_row
    found: dict[int, list[Use]] = {row.id: [] for row in rows}
    for sha, use, left_out, complete in candidates:
        for feedback_id, lines in lines_of[sha].items():
            if not complete or any(line not in left_out for line in lines):
                found[feedback_id].append(use)
    return found
