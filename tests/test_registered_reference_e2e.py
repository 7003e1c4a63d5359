"""A registered version keeps the reference it was judged against: after the pipeline has run
again on other data (another tokenizer, so another reference), ``alignpipe evaluate`` of the
first version still scores it, with the figures it had when it was registered, on the same
pairs; the working tree's new reference would refuse it.

The first version is the shared trained project's (``trained_project.py``), scored in a copy of
that project, so that the run on other data changes no one else's workspace; that run
registers under a name of its own (``RERUN_NAME``), leaving the shared model's versions alone.
The other data comes through ``-S data.source``: params.yaml and the planted file stay as
they were."""

from __future__ import annotations

import json

import pytest

from e2e_project import alignpipe
from planted_data import planted_rows, write_planted
from trained_project import MODEL_NAME

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("on_shared_prefect")]
RERUN_NAME = "own-reference-policy"


@pytest.fixture(scope="module")
def first_run(trained, tmp_path_factory):
    """A project after one ``alignpipe run`` that registered ``MODEL_NAME`` v1, committed."""
    return trained.copy(tmp_path_factory.mktemp("own-reference") / "project")


def evaluate_v1(project, out: str, *extra: str):
    return alignpipe(project, "evaluate", "--model", f"models:/{MODEL_NAME}/1", "--pairs", "pairs.jsonl",
                     "--max-pairs", "40", "--out", out, *extra)


def metrics(path) -> dict:
    return {k: v for k, v in json.loads(path.read_text()).items() if k != "reference"}


def test_an_old_version_is_scored_against_its_own_reference_after_a_run_on_other_data(first_run):
    project = first_run
    write_planted(project / "pairs.jsonl")            # the pairs to score, kept apart from the pipeline's data
    then = evaluate_v1(project, "then.json", "--reference", "artifacts/reference")   # the tree's: v1's own, as yet
    assert then.returncode == 0, then.stderr[-3000:]

    write_planted(project / "data" / "other.jsonl", planted_rows(seed=1))   # other answers: another tokenizer
    again = alignpipe(project, "run", "-S", "data.source=data/other.jsonl", "-S", f"registry.model_name={RERUN_NAME}")
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert f"{RERUN_NAME} v1 registered" in again.stdout

    tree = evaluate_v1(project, "tree.json", "--reference", "artifacts/reference")
    assert tree.returncode == 2 and "tokenizer differs from the reference" in tree.stderr, tree.stderr[-3000:]
    now = evaluate_v1(project, "now.json")
    assert now.returncode == 0, now.stderr[-3000:]
    assert f"reference: the one models:/{MODEL_NAME}/1 was registered with" in now.stdout
    assert metrics(project / "now.json") == metrics(project / "then.json")
    assert json.loads((project / "now.json").read_text())["groups"]["rows"], "per-group intervals are reported"
