"""params.yaml: typed loading with loud errors, and the CLI's registry commands that read it."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest
import yaml
from pydantic import BaseModel

from components.params import Params, ParamsError, load_params
from components.registry import registry
from flows.cli import main

REPO_PARAMS = Path(__file__).resolve().parent.parent / "params.yaml"


def _write(tmp_path: Path, tree: dict, name: str = "params.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(tree))
    return path


def _flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


# ---------------------------------------------------------------- load_params


def test_repo_params_load_with_the_documented_values():
    params = load_params(REPO_PARAMS)
    assert isinstance(params, Params)
    assert params.seed == 0
    assert params.cycles.count == 2
    assert params.cycles.relearn.objective == "d2o"
    assert params.cycles.relearn.beta == 0.1
    assert params.reference.model == "tiny"
    assert params.reference.tiny.n_embd == 128
    assert params.reference.sft.learning_rate == pytest.approx(2e-3)
    assert (params.gate.confidence, params.gate.bootstrap_samples, params.gate.min_pairs) == (0.95, 2000, 100)
    assert params.gate.primary == "separation" and params.gate.groups.rule == "worst_group"
    assert (params.gate.groups.by, params.gate.groups.max_regression) == ("group", 0.03)
    assert params.data.source[1] == "data/xstest" and params.data.fractions("xstest").test_fraction == 0.55
    assert params.data.fractions("hh-rlhf") == params.data.fractions("anything else")
    assert params.data.aggregation == "majority" and params.validation.max_bad_fraction == 0.01
    assert params.validation.min_agreement is None
    assert params.registry.model_name == "alignpipe-policy"
    assert params.schedule.cron == "0 3 * * 1"


def test_repo_params_round_trip_every_key():
    """Every key of params.yaml is read as written, and the file sets every key there is."""
    written = _flatten(yaml.safe_load(REPO_PARAMS.read_text()))
    flat = load_params(REPO_PARAMS).flat()
    assert flat == written
    assert {k: type(v) for k, v in flat.items()} == {k: type(v) for k, v in written.items()}


def test_to_dict_written_back_loads_to_the_same_params(tmp_path):
    params = load_params(REPO_PARAMS)
    assert load_params(_write(tmp_path, params.to_dict())) == params


def test_unknown_key_names_its_path_and_the_file(tmp_path):
    path = _write(tmp_path, {"cycles": {"relearn": {"betta": 0.2}}})
    with pytest.raises(ParamsError) as err:
        load_params(path)
    message = str(err.value)
    assert str(path) in message
    assert "cycles.relearn" in message and "betta" in message
    assert "beta" in message.replace("betta", "")     # lists the known keys, so the typo is visible


def test_unknown_top_level_key_is_an_error(tmp_path):
    with pytest.raises(ParamsError, match="sede"):
        load_params(_write(tmp_path, {"sede": 1}))


@pytest.mark.parametrize(
    ("tree", "path", "shown"),
    [
        ({"cycles": {"count": "two"}}, "cycles.count", "'two'"),
        ({"cycles": {"count": 2.5}}, "cycles.count", "2.5"),
        ({"cycles": {"count": True}}, "cycles.count", "True"),           # a bool is not an int
        ({"cycles": {"relearn": {"beta": "0.1"}}}, "cycles.relearn.beta", "'0.1'"),
        ({"reference": {"trust_remote_code": "yes"}}, "reference.trust_remote_code", "'yes'"),
        ({"gate": 0.5}, "gate", "0.5"),                                   # a section must be a mapping
    ],
)
def test_wrong_type_names_the_dotted_path(tmp_path, tree, path, shown):
    params_file = _write(tmp_path, tree)
    with pytest.raises(ParamsError) as err:
        load_params(params_file)
    message = str(err.value)
    assert str(params_file) in message
    assert f"{path}:" in message
    assert shown in message


def test_ints_are_accepted_for_float_fields(tmp_path):
    params = load_params(_write(tmp_path, {"cycles": {"relearn": {"beta": 1, "learning_rate": 0}}, "gate": {"max_pos_drop": 2}}))
    assert params.cycles.relearn.beta == 1.0 and isinstance(params.cycles.relearn.beta, float)
    assert isinstance(params.cycles.relearn.learning_rate, float)
    assert params.gate.max_pos_drop == 2.0 and isinstance(params.gate.max_pos_drop, float)


def test_missing_keys_and_empty_sections_take_the_defaults(tmp_path):
    params = load_params(_write(tmp_path, {"seed": 7, "gate": None}))
    assert params.seed == 7
    assert params.gate == Params().gate
    assert params.cycles == Params().cycles
    (tmp_path / "empty.yaml").write_text("")
    assert load_params(tmp_path / "empty.yaml") == Params()


def test_dotted_overrides_apply(tmp_path):
    path = _write(tmp_path, {"cycles": {"count": 2, "relearn": {"beta": 0.1}}})
    params = load_params(path, {"cycles.count": 1, "cycles.relearn.beta": 0.5, "gate.min_improvement": 0.01, "seed": 3})
    assert params.cycles.count == 1
    assert params.cycles.relearn.beta == 0.5
    assert params.gate.min_improvement == 0.01      # a section the file does not have
    assert params.seed == 3
    assert params.cycles.relearn.alpha == 0.1       # untouched siblings keep their values
    assert load_params(path).cycles.count == 2      # the file itself is not changed


def test_overrides_are_checked_like_the_file(tmp_path):
    path = _write(tmp_path, {})
    with pytest.raises(ParamsError, match="betta"):
        load_params(path, {"cycles.relearn.betta": 0.5})
    with pytest.raises(ParamsError, match="cycles.count"):
        load_params(path, {"cycles.count": "one"})


@pytest.mark.parametrize(
    ("tree", "key", "rule"),
    [
        ({"cycles": {"relearn": {"beta": -1}}}, "cycles.relearn.beta", "must be > 0 (got -1)"),
        ({"cycles": {"relearn": {"steps": 0}}}, "cycles.relearn.steps", "must be > 0 (got 0)"),
        ({"evaluate": {"max_pairs": -1}}, "evaluate.max_pairs", "must be >= 0 (got -1)"),   # 0 is "all"
        ({"validation": {"max_bad_fraction": 1.5}}, "validation.max_bad_fraction", "must be <= 1 (got 1.5)"),
        ({"cycles": {"forget": {"keep": -0.1}}}, "cycles.forget.keep", "must be >= 0 (got -0.1)"),
        ({"cycles": {"forget": {"noise": -0.01}}}, "cycles.forget.noise", "must be >= 0 (got -0.01)"),
        ({"cycles": {"forget": {"shrink": 1.1}}}, "cycles.forget.shrink", "must be <= 1 (got 1.1)"),
        ({"cycles": {"forget": {"blocks": -1}}}, "cycles.forget.blocks", "must be >= 0 (got -1)"),
        ({"data": {"dev_fraction": 0.5, "test_fraction": 0.5}}, "data.test_fraction", "must be < 0.5"),
        ({"gate": {"confidence": 95}}, "gate.confidence", "must be < 1 (got 95)"),
        ({"gate": {"bootstrap_samples": 10}}, "gate.bootstrap_samples", "must be >= 100 (got 10)"),
        ({"cycles": {"relearn": {"objective": "sft"}}}, "cycles.relearn.objective", "must be one of 'd2o'"),
        ({"cycles": {"forget": {"op": "prune"}}}, "cycles.forget.op", "'magnitude_zero'"),
        ({"cycles": {"anchors": {"mode": "live"}}}, "cycles.anchors.mode", "must be one of 'offline' or 'online'"),
        ({"data": {"aggregation": "mean"}}, "data.aggregation", "must be one of 'majority'"),
        ({"reference": {"dtype": "int8"}}, "reference.dtype", "must be one of 'float32'"),
        ({"gate": {"primary": "accuracy"}}, "gate.primary", "must be one of 'neg_logp_delta'"),
        ({"gate": {"ci_method": "bca"}}, "gate.ci_method", "'BCa'"),
        ({"gate": {"groups": {"by": "country"}}}, "gate.groups.by", "'policy_tier'"),
        ({"gate": {"groups": {"rule": "nash"}}}, "gate.groups.rule", "'worst_group'"),
        ({"sandbox": {"retrieval": "bm25"}}, "sandbox.retrieval", "'lexical'"),
        ({"cycles": {"relearn": {"weighting": "votes"}}}, "cycles.relearn.weighting", "'agreement'"),
        ({"cycles": {"anchors": {"drop_pattern": "(unclosed"}}}, "cycles.anchors.drop_pattern",
         "must be a regular expression that compiles"),
        ({"schedule": {"cron": "61 3 * * 1"}}, "schedule.cron", "must be a five-field cron expression"),
        ({"schedule": {"cron": "every monday"}}, "schedule.cron", "must be a five-field cron expression"),
        ({"reference": {"tiny": {"n_embd": 100, "n_head": 3}}}, "reference.tiny.n_head", "must divide"),
        ({"tiers": {"base": []}}, "tiers.base", "must not be empty"),
        ({"tiers": {"base": ["champion", 3]}}, "tiers.base[1]", "must be text (got 3)"),
        ({"data": {"source": 7}}, "data.source", "must be text, or must be a list (got 7)"),
    ],
)
def test_values_out_of_their_rule_name_file_key_rule_and_value(tmp_path, tree, key, rule):
    params_file = _write(tmp_path, tree)
    with pytest.raises(ParamsError) as err:
        load_params(params_file)
    message = str(err.value)
    assert f"{params_file}: {key}: " in message and rule in message
    assert "pydantic" not in message and "http" not in message


def test_every_offending_key_is_named_at_once(tmp_path):
    params_file = _write(tmp_path, {"seed": -1, "cycles": {"count": 0, "relearn": {"beta": "high"}}})
    with pytest.raises(ParamsError) as err:
        load_params(params_file)
    lines = str(err.value).splitlines()
    assert [line.split(": ")[1] for line in lines] == ["seed", "cycles.count", "cycles.relearn.beta"]
    assert all(line.startswith(f"{params_file}: ") for line in lines)


def test_an_override_that_breaks_a_rule_says_it_came_from_s(tmp_path):
    with pytest.raises(ParamsError, match=r"\(-S\): cycles\.forget\.shrink: must be <= 1 \(got 2\)"):
        load_params(_write(tmp_path, {}), {"cycles.forget.shrink": 2})


@pytest.mark.parametrize(
    ("content", "shown"),
    [
        (b"cycles:\n  count: 2\n  relearn: [beta: 0.1\nseed: 0\n", ":4: not valid YAML"),   # the line named
        (b"seed: 0\n\tdata: {}\n", ":2: not valid YAML"),                                    # a tab indents
        (b"- seed\n- 0\n", "the top level must be a mapping of sections"),
        (b"just words\n", "the top level must be a mapping of sections"),
        ("registry: {model_name: caf\u00e9}\n".encode("latin-1"), "not UTF-8 text (byte 0xe9"),
    ],
)
def test_a_file_that_is_not_a_yaml_mapping_is_refused_naming_it(tmp_path, content, shown):
    params_file = tmp_path / "params.yaml"
    params_file.write_bytes(content)
    with pytest.raises(ParamsError) as err:
        load_params(params_file)
    assert str(err.value).startswith(str(params_file)) and shown in str(err.value)


def test_unusual_but_valid_files_load(tmp_path):
    """A byte-order mark, CRLF line ends and a non-Latin model name are not errors."""
    params_file = tmp_path / "params.yaml"
    params_file.write_bytes("\ufeffseed: 3\r\nregistry:\r\n  model_name: 政策-🙂\r\n".encode())
    params = load_params(params_file)
    assert params.seed == 3 and params.registry.model_name == "政策-🙂"


def test_a_folder_named_as_params_is_refused(tmp_path):
    with pytest.raises(ParamsError, match="is a folder, not a file"):
        load_params(tmp_path)


def test_missing_file_is_a_params_error_naming_it(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ParamsError, match="nope.yaml.*not found"):
        load_params(missing)


def test_flat_gives_dotted_keys_with_leaf_values():
    params = Params()
    flat = params.flat()
    assert flat["cycles.relearn.beta"] == params.cycles.relearn.beta
    assert flat["reference.tiny.n_layer"] == params.reference.tiny.n_layer
    assert flat["seed"] == 0
    assert not any(isinstance(v, dict) for v in flat.values())
    leaves = sum(1 for _ in _leaf_fields(Params))
    assert len(flat) == leaves


def _leaf_fields(cls):
    """One leaf per field; a mapping of sections (data.source_splits) adds one per entry, and
    its default holds none."""
    for name, field in cls.model_fields.items():
        if isinstance(field.default, BaseModel):
            yield from _leaf_fields(type(field.default))
        elif not isinstance(field.default, dict):
            yield name


# ---------------------------------------------------------------- CLI: promote / rollback


@pytest.fixture
def cli_params(tmp_path, model_name) -> Path:
    """A params file whose registry.model_name is this test's own."""
    return _write(tmp_path, {"registry": {"model_name": model_name}})


def _champion(model_name: str) -> str:
    return str(mlflow.MlflowClient().get_model_version_by_alias(model_name, "champion").version)


def _register(logged_policy, model_name) -> str:
    return registry.register_candidate(logged_policy["model_uri"], model_name, {}, "")


def test_cli_promote_then_rollback(logged_policy, model_name, cli_params, capsys):
    v1, v2 = _register(logged_policy, model_name), _register(logged_policy, model_name)

    assert main(["--params", str(cli_params), "promote", v1]) == 0
    assert _champion(model_name) == v1
    assert main(["--params", str(cli_params), "promote", v2, "--reason", "better held-out"]) == 0
    assert _champion(model_name) == v2
    assert mlflow.MlflowClient().get_model_version(model_name, v2).tags["promoted_reason"] == "better held-out"
    assert f"{model_name}@champion -> v{v2}" in capsys.readouterr().out

    assert main(["--params", str(cli_params), "rollback"]) == 0
    assert _champion(model_name) == v1
    assert f"{model_name}@champion -> v{v1}" in capsys.readouterr().out


def test_cli_promote_unknown_version_exits_2_and_keeps_the_champion(logged_policy, model_name, cli_params, capsys):
    v1 = _register(logged_policy, model_name)
    assert main(["--params", str(cli_params), "promote", v1]) == 0
    capsys.readouterr()

    assert main(["--params", str(cli_params), "promote", "99"]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("alignpipe promote: error:")
    assert model_name in captured.err and "'99'" in captured.err and "no such model version" in captured.err
    assert "Traceback" not in captured.err
    assert _champion(model_name) == v1


def test_cli_rollback_without_history_exits_2(logged_policy, model_name, cli_params, capsys):
    v1 = _register(logged_policy, model_name)
    assert main(["--params", str(cli_params), "rollback"]) == 2        # never promoted
    assert "no previous champion" in capsys.readouterr().err

    assert main(["--params", str(cli_params), "promote", v1]) == 0
    assert main(["--params", str(cli_params), "rollback"]) == 2        # only one champion so far
    assert "no previous champion" in capsys.readouterr().err
    assert _champion(model_name) == v1


def test_cli_with_bad_params_file_exits_2(tmp_path, capsys):
    assert main(["--params", str(tmp_path / "missing.yaml"), "rollback"]) == 2
    assert "missing.yaml" in capsys.readouterr().err
    typo = _write(tmp_path, {"registry": {"model_nme": "x"}})
    assert main(["--params", str(typo), "promote", "1"]) == 2
    err = capsys.readouterr().err
    assert "registry" in err and "model_nme" in err


def test_dvc_exp_run_set_param_changes_only_the_line_it_sets(tmp_path):
    """`dvc exp run -S` rewrites params.yaml through DVC's YAML round trip; the comments and
    layout that document every setting must survive it."""
    from dvc.utils.hydra import apply_overrides  # what `dvc exp run -S` calls

    copy = tmp_path / "params.yaml"
    original = REPO_PARAMS.read_text()
    copy.write_text(original)
    apply_overrides(str(copy), ["evaluate.kl_prompts=8", "cycles.relearn.beta=0.2"])
    changed = [(before, after) for before, after in zip(original.splitlines(), copy.read_text().splitlines())
               if before != after]
    assert [after.split("#")[0].strip() for _, after in changed] == ["beta: 0.2", "kl_prompts: 8"]
    assert len(copy.read_text().splitlines()) == len(original.splitlines())
    assert load_params(copy).evaluate.kl_prompts == 8
