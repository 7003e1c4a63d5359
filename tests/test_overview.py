"""``alignpipe status``'s text: the registry as a user checks it, and DVC's stale stages.

Registry tests register the session's one logged policy under a fresh ``model_name`` (see
conftest.py); stage tests build a throwaway two-stage DVC project in ``tmp_path``.
"""

from __future__ import annotations

import contextlib
import shutil

import subprocess
import sys
from pathlib import Path

import pytest

from components.overview import pending_changes, registry_overview, render_status, stage_status
from components.params import Params, RegistryParams
from components.redact import mask_credentials
from components.resolve import INPUTS_DIR, RESOLVED_PARAMS
from conftest import REPO_ROOT
from components.registry import registry

DATA_VERSION = "abc123def4567890"
PASSED_CHECKS = ("PASS held-out pairs: 120 >= gate.min_pairs 50; "
                 "PASS separation 0.0300 [0.0100, 0.0500]: lower bound > 0")
# the flow joins check lines with "; ", and a line may contain "; " itself
FAILED_CHECKS = ("PASS held-out pairs: 120 >= gate.min_pairs 50; "
                 "FAIL separation vs champion v1: candidate 0.0100, champion 0.0300; paired improvement "
                 "-0.0200 [-0.0400, -0.0010]: lower bound > 0.0 (gate.min_improvement); "
                 "FAIL pos_logp_delta -0.3 [-0.5, -0.1]: lower bound >= -0.2 (gate.max_pos_drop)")


def _register(logged_policy, model_name, **tags) -> str:
    return registry.register_candidate(logged_policy["model_uri"], model_name, tags, "test candidate")


def _line(text: str, start: str) -> str:
    """The one line of ``text`` that starts (after indentation) with ``start``."""
    [line] = [line.strip() for line in text.splitlines() if line.strip().startswith(start)]
    return line


def test_no_versions_says_how_to_make_one(model_name):
    assert registry_overview(model_name) == f"no versions of {model_name} yet: run `alignpipe run`"


def test_champion_challenger_and_newest_versions(logged_policy, model_name):
    _register(logged_policy, model_name, **{"gate.passed": "true", "gate.checks": PASSED_CHECKS,
                                            "data_version": DATA_VERSION, "objective": "d2o"})
    registry.promote(model_name, "1", reason="gate passed")
    _register(logged_policy, model_name, **{"gate.passed": "false", "gate.checks": FAILED_CHECKS,
                                            "data_version": DATA_VERSION, "objective": "dpo"})
    _register(logged_policy, model_name, objective="d2o")  # registered without a gate verdict

    text = registry_overview(model_name, recent=2)

    champion = _line(text, "champion:")
    assert champion.startswith("champion:   v1 ") and " PASSED " in champion and "data abc123def456 " in champion
    assert "FAIL" not in champion
    assert _line(text, "challenger:").startswith("challenger: v3 ")
    assert _line(text, "history:").startswith("history:    v1 ")
    newest, older = [line.split() for line in text.split("newest versions:\n")[1].splitlines()]
    assert newest[0] == "v3" and newest[4:9] == ["challenger", "—", "data", "—", "d2o"]
    assert older[0] == "v2" and older[4:9] == ["—", "FAILED", "data", "abc123def456", "dpo"]
    failed = _line(text, "v2 ")
    # only the first FAIL line (which itself contains "; "), shortened to 90 characters
    assert "FAIL separation vs champion v1: candidate 0.0100, champion 0.0300; paired" in failed
    assert "pos_logp_delta" not in failed and failed.endswith("…")
    assert len(failed[failed.index("FAIL "):]) == 90


def test_challenger_that_was_promoted_is_not_shown_as_waiting(logged_policy, model_name):
    _register(logged_policy, model_name, **{"gate.passed": "true", "gate.checks": PASSED_CHECKS})
    registry.promote(model_name, "1", reason="gate passed")

    text = registry_overview(model_name)

    assert _line(text, "challenger:") == "challenger: v1, the champion: no candidate is waiting"
    assert "challenger,champion" in _line(text, "v1 ")


def test_no_champion_says_so(logged_policy, model_name):
    checks = "PASS held-out pairs: 120\nFAIL separation 0.0010 [-0.0020, 0.0040]: lower bound > 0"  # newline-joined
    _register(logged_policy, model_name, **{"gate.passed": "false", "gate.checks": checks})

    text = registry_overview(model_name)

    assert _line(text, "champion:").startswith("champion:   none yet")
    assert "history:" not in text
    assert _line(text, "challenger:").endswith("FAILED  data —             —  FAIL separation 0.0010 "
                                               "[-0.0020, 0.0040]: lower bound > 0")


@pytest.mark.parametrize(("uri", "shown"), [
    ("postgresql://bob:s3cr3t@db:5432/mlflow", "postgresql://bob:***@db:5432/mlflow"),
    ("https://user:p%40ss@mlflow.example.com", "https://user:***@mlflow.example.com"),
    ("https://mlflow.example.com:5000", "https://mlflow.example.com:5000"),
    ("sqlite:////home/me/.alignpipe/mlflow.db", "sqlite:////home/me/.alignpipe/mlflow.db"),
])
def test_tracking_uri_password_is_masked(uri, shown):
    assert mask_credentials(uri) == shown


PREPARE = "import pathlib, yaml\nsize = yaml.safe_load(open('params.yaml'))['prepare']['size']\n" \
          "pathlib.Path('data.txt').write_text('x' * size)\n"
TRAIN = "import pathlib, yaml\nlr = yaml.safe_load(open('params.yaml'))['train']['lr']\n" \
        "pathlib.Path('model.txt').write_text(pathlib.Path('data.txt').read_text() + str(lr))\n"
# train comes first in the file: the status must still list prepare, which it depends on, first
DVC_YAML = f"""stages:
  train:
    cmd: {sys.executable} train.py
    deps: [data.txt, train.py]
    params: [train]
    outs: [model.txt]
  prepare:
    cmd: {sys.executable} prepare.py
    deps: [prepare.py]
    params: [prepare.size]
    outs: [data.txt]
"""


def _dvc(root: Path, *args: str) -> None:
    subprocess.run([str(Path(sys.executable).with_name("dvc")), *args], cwd=root, check=True, capture_output=True)


@pytest.fixture
def dvc_project(tmp_path) -> Path:
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    _dvc(tmp_path, "init", "-q")
    (tmp_path / "prepare.py").write_text(PREPARE)
    (tmp_path / "train.py").write_text(TRAIN)
    (tmp_path / "params.yaml").write_text("prepare: {size: 3}\ntrain: {lr: 0.1, epochs: 2}\n")
    (tmp_path / "dvc.yaml").write_text(DVC_YAML)
    return tmp_path


def test_stage_status_names_what_made_a_stage_stale(dvc_project):
    assert stage_status(dvc_project) == [("prepare", "not run yet"), ("train", "not run yet")]

    _dvc(dvc_project, "repro", "-q")
    assert stage_status(dvc_project) == [("prepare", "up to date"), ("train", "up to date")]

    (dvc_project / "params.yaml").write_text("prepare: {size: 3}\ntrain: {lr: 0.2, epochs: 2}\n")
    assert stage_status(dvc_project) == [("prepare", "up to date"), ("train", "stale: changed params: train.lr")]

    (dvc_project / "prepare.py").write_text(PREPARE + "# edited\n")
    (dvc_project / "model.txt").unlink()
    assert stage_status(dvc_project) == [
        ("prepare", "stale: changed deps: prepare.py"),
        ("train", "stale: changed params: train.lr; changed outs: model.txt (deleted)"),
    ]


def test_render_status_has_every_part(dvc_project, logged_policy, model_name):
    _register(logged_policy, model_name, **{"gate.passed": "true", "gate.checks": PASSED_CHECKS})

    text = render_status(_params(model_name), dvc_project, "http://admin:hunter2@mlflow:5000")

    assert "MLflow tracking: http://admin:***@mlflow:5000" in text and "hunter2" not in text
    assert "\nRegistry\n" in text and _line(text, "challenger:").startswith("challenger: v1 ")
    assert f"Pipeline stages (DVC, {dvc_project.resolve()})" in text
    assert _line(text, "prepare").split() == ["prepare", "not", "run", "yet"]
    # the bundled policies' owners
    assert "\nPersonal adapters (alignpipe personalize)\n" in text
    assert _line(text, "kids-tutor").startswith("kids-tutor (deployer): alignpipe-adapter-kids-tutor champion ")


def test_render_status_outside_a_dvc_project(tmp_path, model_name):
    text = render_status(_params(model_name), tmp_path, "sqlite:///mlflow.db")

    assert f"no versions of {model_name} yet" in text
    assert "cannot read the pipeline:" in text


def _params(model_name: str) -> Params:
    return Params().model_copy(update={"registry": RegistryParams(model_name=model_name)})


def test_an_edit_not_yet_resolved_names_the_stages_it_will_make_stale(tmp_path):
    """DVC sees an edit to params.yaml only after the next run resolves it; status says it before."""
    from components.resolve import resolve_params

    shutil.copy(REPO_ROOT / "dvc.yaml", tmp_path / "dvc.yaml")
    with contextlib.chdir(REPO_ROOT):  # data paths in the default params are relative to the repo
        resolve_params(Params(), "params.yaml", {}, tmp_path / RESOLVED_PARAMS, tmp_path / INPUTS_DIR)
        assert pending_changes(tmp_path, Params()) == {}
        edited = Params().model_copy(update={"seed": 1, "cycles": Params().cycles.model_copy(update={"count": 3})})
        pending = pending_changes(tmp_path, edited)
    assert pending == {"simulate": ["seed"], "reference": ["seed"], "cycles": ["seed", "cycles.count"],
                       "evaluate": ["seed"]}
