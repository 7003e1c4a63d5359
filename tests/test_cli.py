"""The command line's own contract, without running a pipeline: where --params and -S may
go, what they mean, --version, and the ``params`` stage that hands them to DVC."""

from __future__ import annotations

import json
from importlib.metadata import version

import pytest
import yaml

from components.environment import params_choice
from components.params import ParamsError, parse_assignments
from components.resolve import link_inputs, resolve_params
from flows.cli import build_parser, main
from conftest import REPO_ROOT, write_params


@pytest.mark.parametrize("argv", [
    ["--params", "alt.yaml", "-S", "cycles.count=1", "status"],
    ["status", "--params", "alt.yaml", "-S", "cycles.count=1"],
    ["--params", "alt.yaml", "status", "-S", "cycles.count=1"],
])
def test_params_and_overrides_mean_the_same_before_or_after_the_command(argv, monkeypatch):
    monkeypatch.delenv("ALIGNPIPE_PARAMS", raising=False)
    monkeypatch.delenv("ALIGNPIPE_SET", raising=False)
    args = build_parser().parse_args(argv)
    assert params_choice(args.params, args.set) == ("alt.yaml", {"cycles.count": 1})


def test_the_environment_names_the_file_when_no_flag_does(monkeypatch):
    """How the flow tells the `params` stage, run by DVC, which file and overrides the user gave."""
    monkeypatch.setenv("ALIGNPIPE_PARAMS", "alt.yaml")
    monkeypatch.setenv("ALIGNPIPE_SET", json.dumps(["seed=3"]))
    implicit = build_parser().parse_args(["stage", "params"])
    assert params_choice(implicit.params, implicit.set) == ("alt.yaml", {"seed": 3})
    explicit = build_parser().parse_args(["--params", "other.yaml", "stage", "ingest", "-S", "seed=4"])
    assert params_choice(explicit.params, explicit.set) == ("other.yaml", {"seed": 4})


def test_assignments_read_values_as_yaml_like_dvc():
    assert parse_assignments(["cycles.count=1", "cycles.relearn.learning_rate=3e-4", "gate.groups.by=source",
                              "validation.min_agreement=null", "cycles.gate.enabled=false"]) == {
        "cycles.count": 1, "cycles.relearn.learning_rate": 3e-4, "gate.groups.by": "source",
        "validation.min_agreement": None, "cycles.gate.enabled": False}
    with pytest.raises(ParamsError, match="expected KEY=VALUE"):
        parse_assignments(["cycles.count"])


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"alignpipe {version('alignpipe')}"


def test_a_mistyped_override_exits_2_naming_the_key(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(REPO_ROOT)
    assert main(["stage", "params", "--params", str(write_params(tmp_path)), "-S", "cycles.relearn.stpes=3"]) == 2
    assert "cycles.relearn.stpes" in capsys.readouterr().err


def test_the_params_stage_resolves_file_and_overrides_and_links_the_inputs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data/feedback.jsonl").write_text("{}\n")
    (tmp_path / "data/withdrawals.txt").write_text("# none\n")
    model = tmp_path / "my-model"
    model.mkdir()
    (model / "model.safetensors").write_bytes(b"weights")
    params_file = write_params(tmp_path, {"data.source": "data/feedback.jsonl", "reference.model": str(model)})
    assert main(["--params", str(params_file), "stage", "params", "-S", "seed=5"]) == 0
    resolved = yaml.safe_load((tmp_path / "artifacts/params.yaml").read_text())
    assert resolved["seed"] == 5 and resolved["data"]["source"] == "data/feedback.jsonl"
    assert (tmp_path / "artifacts/inputs/reference_model").resolve() == model.resolve()
    assert (tmp_path / "artifacts/inputs/data_source").read_text() == "{}\n"


def test_a_list_of_sources_is_linked_as_one_folder_dvc_hashes_through(tmp_path, monkeypatch):
    from components.params import load_params

    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    for name in ("human.jsonl", "more.jsonl", "withdrawals.txt"):
        (tmp_path / "data" / name).write_text("{}\n")
    params = load_params(write_params(tmp_path), {"data.source": ["data/human.jsonl", "data/more.jsonl"]})
    assert params.data.sources() == ["data/human.jsonl", "data/more.jsonl"]
    link_inputs(params, tmp_path / "inputs")
    linked = sorted((tmp_path / "inputs" / "data_source").iterdir())
    assert [p.name for p in linked] == ["0-human.jsonl", "1-more.jsonl"]
    assert [p.resolve() for p in linked] == [(tmp_path / "data" / n).resolve() for n in ("human.jsonl", "more.jsonl")]
    with pytest.raises(ParamsError, match=r"data.source\[1\]: data/gone.jsonl not found"):
        link_inputs(load_params(write_params(tmp_path), {"data.source": ["data/human.jsonl", "data/gone.jsonl"]}),
                    tmp_path / "inputs")


def test_a_missing_data_source_stops_the_params_stage_naming_the_setting(tmp_path, monkeypatch):
    from components.params import load_params

    monkeypatch.chdir(tmp_path)
    params = load_params(write_params(tmp_path), {"data.source": "data/nowhere.jsonl"})
    with pytest.raises(ParamsError, match="data.source: data/nowhere.jsonl not found"):
        link_inputs(params, tmp_path / "inputs")


def test_a_hub_model_id_is_an_input_by_name(tmp_path, monkeypatch):
    from components.params import load_params

    monkeypatch.chdir(REPO_ROOT)
    params = load_params(write_params(tmp_path), {"reference.model": "Qwen/Qwen2-0.5B"})
    resolve_params(params, "params.yaml", {}, tmp_path / "params.yaml", tmp_path / "inputs")
    assert (tmp_path / "inputs/reference_model").read_text() == "Qwen/Qwen2-0.5B\n"
