"""A registered version keeps the reference it was judged against: after the pipeline has run
again on other data (another tokenizer, so another reference), ``alignpipe evaluate`` of the
first version still scores it, with the figures it had when it was registered, on the same
pairs; the working tree's new reference would refuse it.

It needs one project after one ``alignpipe run`` (``first_run``): a project shared with other
tests fits, if this test runs after them, since it reruns the pipeline on other data (through
``-S data.source``: params.yaml and the planted file stay as they were)."""

from __future__ import annotations

import json
import subprocess

import pytest

from e2e_project import BIN, SMALLEST, commit, make_project, merge
from planted_data import planted_rows, write_planted

pytestmark = pytest.mark.slow
MODEL_NAME = "own-reference-policy"
# the tiny default itself (tokenizer and SFT from the data: other data, another reference), shrunk
TINY = {"reference": {"model": "tiny", "vocab_size": 400, "tiny": {"n_layer": 1, "n_embd": 32, "n_head": 2},
                      "sft": {"steps": 12, "batch_size": 8}},
        "registry": {"experiment": "own-reference", "model_name": MODEL_NAME}}


def alignpipe(project, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "alignpipe"), *args], cwd=project, capture_output=True, text=True)


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    project = make_project(tmp_path_factory.mktemp("own-reference-project"), merge(SMALLEST, TINY))
    done = alignpipe(project, "run")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert f"{MODEL_NAME} v1 registered" in done.stdout
    commit(project, "first run")
    return project


def evaluate_v1(project, out: str, *extra: str) -> subprocess.CompletedProcess:
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
    again = alignpipe(project, "run", "-S", "data.source=data/other.jsonl")
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert f"{MODEL_NAME} v2 registered" in again.stdout

    tree = evaluate_v1(project, "tree.json", "--reference", "artifacts/reference")
    assert tree.returncode == 2 and "tokenizer differs from the reference" in tree.stderr, tree.stderr[-3000:]
    now = evaluate_v1(project, "now.json")
    assert now.returncode == 0, now.stderr[-3000:]
    assert f"reference: the one models:/{MODEL_NAME}/1 was registered with" in now.stdout
    assert metrics(project / "now.json") == metrics(project / "then.json")
    assert json.loads((project / "now.json").read_text())["groups"]["rows"], "per-group intervals are reported"
