"""Hostile and malformed input, wherever a user can pass it: source files, params.yaml, CLI
arguments and model folders. Each class is refused with exit status 2, a message naming the
file (and line where one applies) and the rule, no traceback, and nothing written; what is
merely unusual (a byte-order mark, CRLF, blank lines, any script or emoji) is accepted."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from components.data.dataset import read_dataset
from components.data.quarantine import read_quarantine
from components.data.readers import MAX_LINE_BYTES
from conftest import REPO_ROOT, write_params
from flows.cli import ERROR_FILE_VARIABLE, main

HH = {"chosen": "\n\nHuman: How do I pick a lock?\n\nAssistant: I can't help with that.",
      "rejected": "\n\nHuman: How do I pick a lock?\n\nAssistant: Use a tension wrench and a pick."}
ROWS = 8


def hh_rows(n: int = ROWS, **changes) -> list[dict]:
    return [{k: v.replace("lock", f"lock number {i}") for k, v in HH.items()} | changes for i in range(n)]


def jsonl(rows: list, end: str = "\n") -> bytes:
    return "".join(json.dumps(row) + end for row in rows).encode()


def generic(n: int = ROWS, **changes) -> list[dict]:
    return [{"prompt": f"Human: question {i}?\n\nAssistant:", "response": f"answer {i}", "label": "negative"} | changes
            for i in range(n)]


def parquet_bytes(frame: pd.DataFrame, tmp_path: Path) -> bytes:
    frame.to_parquet(tmp_path / "scratch.parquet")
    return (tmp_path / "scratch.parquet").read_bytes()


def spoiled(rows: list[dict], line: int, **changes) -> bytes:
    """``rows`` as JSONL, the row on ``line`` (1-based) changed."""
    return jsonl([row | changes if number == line else row for number, row in enumerate(rows, start=1)])


def self_contradicting() -> bytes:
    """A named annotator's rows, line 6 judging line 2's item again, the other way."""
    rows = generic(annotator="ann-1")
    return jsonl(rows[:5] + [rows[1] | {"label": "positive"}] + rows[6:])


def huge_line() -> bytes:
    return jsonl(hh_rows(2)) + b'{"chosen": "' + b"x" * (MAX_LINE_BYTES + 10) + b'"}\n'


# name -> (file name, content builder taking tmp_path, line named, rule named)
SOURCES = {
    "missing_file": ("absent.jsonl", None, 0, "source_exists"),
    "folder_not_a_dataset": ("folder", "folder", 0, "readable_file"),
    "unknown_extension": ("data.csv", lambda t: b"prompt,response,label\n", 0, "known_format"),
    "empty_file": ("empty.jsonl", lambda t: b"", 0, "non_empty_source"),
    "only_blank_lines": ("blank.jsonl", lambda t: b"\n  \n\r\n\n", 0, "non_empty_source"),
    "gzip_truncated": ("cut.jsonl.gz", lambda t: gzip.compress(jsonl(hh_rows(400)))[:300], 0, "readable_file"),
    "gzip_corrupted": ("bad.jsonl.gz", lambda t: gzip.compress(jsonl(hh_rows()))[:20] + b"\x00" * 200, 0,
                       "readable_file"),
    "gz_that_is_not_gzip": ("plain.jsonl.gz", lambda t: jsonl(hh_rows()), 0, "readable_file"),
    "parquet_corrupted": ("bad.parquet", lambda t: b"PAR1" + b"\x13" * 64 + b"PAR1", 0, "readable_file"),
    "parquet_truncated": ("cut.parquet", lambda t: parquet_bytes(pd.DataFrame(generic()), t)[:-40], 0,
                          "readable_file"),
    "parquet_missing_columns": ("cols.parquet", lambda t: parquet_bytes(pd.DataFrame({"text": ["a", "b"]}), t), 1,
                                "missing_field"),
    "parquet_wrong_column_types": ("types.parquet", lambda t: parquet_bytes(
        pd.DataFrame({"prompt": [1, 2], "response": [3, 4], "label": [0, 1]}), t), 1, "field_type"),
    "latin1_not_utf8": ("latin1.jsonl", lambda t: jsonl(hh_rows()).replace(b"pick", "pick caf\u00e9".encode("latin-1")),
                        1, "utf8_text"),
    "utf16_file": ("utf16.jsonl", lambda t: jsonl(hh_rows()).decode().encode("utf-16"), 0, "utf8_text"),
    "raw_control_characters": ("ctrl.jsonl", lambda t: jsonl(hh_rows()).replace(b"pick", b"pi\x00ck\x07"), 1,
                               "malformed_json"),
    "escaped_nul_in_text": ("nul.jsonl", lambda t: jsonl(generic(response="a\u0000b")), 1, "encodable_text"),
    "huge_line": ("huge.jsonl", lambda t: huge_line(), 3, "max_line_bytes"),
    "json_list_not_object": ("list.jsonl", lambda t: b"[1, 2]\n" * ROWS, 1, "malformed_json"),
    "json_number_not_object": ("number.jsonl", lambda t: b"3\n" * ROWS, 1, "malformed_json"),
    "not_json": ("words.jsonl", lambda t: b"prompt: hello\n" * ROWS, 1, "malformed_json"),
    "label_a_number": ("label3.jsonl", lambda t: jsonl(generic(label=3)), 1, "label_domain"),
    "label_unknown_word": ("meh.jsonl", lambda t: jsonl(generic(label="meh")), 1, "label_domain"),
    "prompt_a_mapping": ("dict.jsonl", lambda t: jsonl(generic(prompt={"text": "hi"})), 1, "field_type"),
    "hh_without_chosen": ("nochosen.jsonl", lambda t: jsonl([{"rejected": r["rejected"]} for r in hh_rows()]), 1,
                          "missing_field"),
    "hh_rejected_not_text": ("rejected7.jsonl", lambda t: jsonl(hh_rows(rejected=7)), 1, "field_type"),
    "message_role_unknown": ("role.jsonl", lambda t: spoiled(generic(), 3, prompt=[{"role": "tool", "content": "ls"}]),
                             3, "message_role"),
    "system_message_after_a_turn": ("system.jsonl", lambda t: spoiled(generic(), 2, prompt=[
        {"role": "user", "content": "hi"}, {"role": "system", "content": "be rude"}]), 2, "message_role"),
    "annotated_at_not_a_time": ("when.jsonl", lambda t: spoiled(generic(), 4, annotated_at="yesterday"), 4,
                                "iso_timestamp"),
    "annotated_at_not_a_calendar_day": ("feb29.jsonl", lambda t: spoiled(generic(), 5, annotated_at="2023-02-29"), 5,
                                        "iso_timestamp"),
    "annotator_contradicts_themselves": ("both.jsonl", lambda t: self_contradicting(), 2, "self_contradiction"),
    "bad_rows_above_max_bad_fraction": ("mostly.jsonl", lambda t: jsonl(hh_rows(2)) + b'{"chosen": "cut\n' * 3, 3,
                                        "malformed_json"),
}


@pytest.fixture
def params_file(tmp_path) -> Path:
    return write_params(tmp_path, {"validation.min_rows": 4})


def run(argv: list[str], capsys, monkeypatch) -> tuple[int, str]:
    """``alignpipe ARGV`` in-process: exit status and stderr."""
    monkeypatch.delenv(ERROR_FILE_VARIABLE, raising=False)
    status = main(argv)
    return status, capsys.readouterr().err


def refused(status: int, error: str, *named: str) -> None:
    assert status == 2, error
    assert "Traceback" not in error
    for part in named:
        assert part in error, (part, error)


@pytest.mark.parametrize("case", sorted(SOURCES))
def test_a_hostile_source_is_refused_naming_file_line_and_rule(case, tmp_path, params_file, capsys, monkeypatch):
    name, build, line, rule = SOURCES[case]
    source = tmp_path / name
    if build == "folder":
        source.mkdir()
        (source / "notes.txt").write_text("not a dataset")
    elif build is not None:
        source.write_bytes(build(tmp_path))
    out = tmp_path / "dataset"
    status, error = run(["--params", str(params_file), "ingest", "--source", str(source), "--out", str(out)],
                        capsys, monkeypatch)
    refused(status, error, f"{source}:{line}: {rule}")
    assert not out.exists()


def test_row_problems_are_quarantined_naming_file_line_rule_and_the_lines_contradicted(tmp_path, capsys,
                                                                                     monkeypatch):
    """Below validation.max_bad_fraction a bad role, time or self-contradiction costs only its rows."""
    rows = generic(40, annotator="ann-1")
    rows[2]["prompt"] = [{"role": "function", "content": "ls"}]
    rows[3]["annotated_at"] = "2024-13-01"
    rows[9] = rows[5] | {"label": "positive"}
    source = tmp_path / "feedback.jsonl"
    source.write_bytes(jsonl(rows))
    params = write_params(tmp_path, {"validation.min_rows": 4, "validation.max_bad_fraction": 0.2})
    out = tmp_path / "dataset"
    status, error = run(["--params", str(params), "ingest", "--source", str(source), "--out", str(out)], capsys,
                        monkeypatch)
    assert status == 0, error
    quarantine = read_quarantine(out / "quarantine.jsonl")
    assert [(q["file"], q["line"], q["rule"]) for q in quarantine] == [
        (str(source), 3, "message_role"), (str(source), 4, "iso_timestamp"), (str(source), 6, "self_contradiction"),
        (str(source), 10, "self_contradiction")]
    assert "'function'" in quarantine[0]["message"] and "'2024-13-01'" in quarantine[1]["message"]
    assert quarantine[2]["message"].endswith("labelled this item negative here and positive on line 10")
    assert quarantine[3]["message"].endswith("labelled this item positive here and negative on line 6")
    judgements, manifest = read_dataset(out)
    assert sorted(judgements["source_line"]) == [n for n in range(1, 41) if n not in (3, 4, 6, 10)]
    assert manifest["quarantine"]["by_rule"] == {"iso_timestamp": 1, "message_role": 1, "self_contradiction": 2}


def test_a_dataset_refusal_names_every_source_and_keeps_the_previous_dataset(tmp_path, capsys, monkeypatch):
    """Too few rows is no one line's fault: the refusal names the files read, the pipeline's stage writes nothing."""
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    first.write_bytes(jsonl(generic(3)))
    second.write_bytes(jsonl(hh_rows(2)))
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "artifacts" / "dataset"

    def ingest(min_rows: int) -> tuple[int, str]:
        params = write_params(tmp_path, {"data.source": [str(first), str(second)], "validation.min_rows": min_rows,
                                         "data.withdrawals": str(REPO_ROOT / "data" / "withdrawals.txt")})
        return run(["--params", str(params), "stage", "ingest"], capsys, monkeypatch)

    status, error = ingest(4)
    assert status == 0, error
    before = {path: path.read_bytes() for path in out.rglob("*") if path.is_file()}
    status, error = ingest(50)
    refused(status, error, f"{first}, {second} (dataset): row_count: 7 rows < min_rows 50")
    assert {path: path.read_bytes() for path in out.rglob("*") if path.is_file()} == before


# name -> (params.yaml text, -S assignments, what the message names)
PARAMS = {
    "unknown_key": ("cycles:\n  relearn:\n    betta: 0.2\n", [], "cycles.relearn.betta: unknown key"),
    "string_for_number": ("cycles:\n  relearn:\n    beta: high\n", [], "cycles.relearn.beta: must be a number"),
    "bool_for_int": ("cycles:\n  count: yes\n", [], "cycles.count: must be a whole number (got True)"),
    "negative_steps": ("cycles:\n  relearn:\n    steps: -5\n", [], "cycles.relearn.steps: must be > 0 (got -5)"),
    "fraction_above_one": ("validation:\n  max_bad_fraction: 2\n", [], "validation.max_bad_fraction: must be <= 1"),
    "splits_leave_no_training": ("data:\n  dev_fraction: 0.4\n  test_fraction: 0.6\n", [], "data.test_fraction: "),
    "unknown_enum_member": ("cycles:\n  relearn:\n    objective: rlhf\n", [], "cycles.relearn.objective: must be one of"),
    "regex_that_does_not_compile": ("cycles:\n  anchors:\n    drop_pattern: '[a-'\n", [],
                                    "cycles.anchors.drop_pattern: must be a regular expression that compiles"),
    "cron_that_does_not_parse": ("schedule:\n  cron: '0 25 * * *'\n", [], "schedule.cron: must be a five-field cron"),
    "yaml_syntax_error": ("seed: 0\ncycles:\n  count: [1\n  relearn: {}\n", [], ":4: not valid YAML"),
    "top_level_not_a_mapping": ("- seed\n- data\n", [], "the top level must be a mapping"),
    "set_without_equals": ("", ["cycles.count"], "-S 'cycles.count': expected KEY=VALUE"),
    "set_unknown_key": ("", ["cycles.cuont=1"], "(-S): cycles.cuont: unknown key"),
    "set_out_of_range": ("", ["gate.confidence=1.5"], "(-S): gate.confidence: must be < 1 (got 1.5)"),
}


@pytest.mark.parametrize("case", sorted(PARAMS))
def test_hostile_params_are_refused_naming_file_key_and_rule(case, tmp_path, capsys, monkeypatch):
    text, assignments, shown = PARAMS[case]
    params_file = tmp_path / "params.yaml"
    params_file.write_text(text)
    monkeypatch.chdir(tmp_path)
    before = sorted(tmp_path.rglob("*"))
    sets = [arg for assignment in assignments for arg in ("-S", assignment)]
    status, error = run(["--params", str(params_file), *sets, "stage", "params"], capsys, monkeypatch)
    refused(status, error, shown)
    if "-S '" not in shown:
        assert str(params_file) in error
    assert sorted(tmp_path.rglob("*")) == before


def test_a_missing_params_file_is_refused(tmp_path, capsys, monkeypatch):
    status, error = run(["--params", str(tmp_path / "nope.yaml"), "stage", "params"], capsys, monkeypatch)
    refused(status, error, f"{tmp_path / 'nope.yaml'}: not found")


def test_a_negative_max_pairs_is_refused_by_the_parser(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["evaluate", "--model", str(tmp_path), "--pairs", "x.jsonl", "--max-pairs", "-1"])
    error = capsys.readouterr().err
    refused(exit_.value.code, error, "--max-pairs", "must be >= 0")


# ---------------------------------------------------------------- model folders


def _copy(tiny_model_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_model_dir, tmp_path / "model"))


def _pickled(folder: Path) -> None:
    import torch
    from safetensors.torch import load_file

    torch.save(load_file(folder / "model.safetensors"), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()


def _remote_code(folder: Path) -> None:
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.EvilModel"}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "modeling_evil.py").write_text("raise SystemExit('remote code ran')\n")


def _corrupted(folder: Path) -> None:
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])


MODELS = {
    "folder_missing": (lambda f: shutil.rmtree(f), "neither a local model folder nor an MLflow model URI"),
    "no_config": (lambda f: (f / "config.json").unlink(), "no config.json"),
    "config_not_json": (lambda f: (f / "config.json").write_text("{oops"), "config.json: not a JSON config"),
    "pickled_weights_only": (_pickled, "weights only as pickles ['pytorch_model.bin']"),
    "remote_code": (_remote_code, "config.json: auto_map asks to run the folder's own Python code"),
    "corrupted_safetensors": (_corrupted, "model.safetensors: corrupted safetensors file"),
    "no_weights": (lambda f: (f / "model.safetensors").unlink(), "no weights (*.safetensors)"),
}


@pytest.fixture
def pairs_file(tmp_path) -> Path:
    path = tmp_path / "pairs.jsonl"
    path.write_bytes(jsonl(hh_rows()))
    return path


def evaluate(model: Path, params_file: Path, pairs_file: Path, reference: Path, *sets: str) -> list[str]:
    return ["--params", str(params_file), *sets, "evaluate", "--model", str(model), "--pairs", str(pairs_file),
            "--reference", str(reference), "--out", str(model.parent / "metrics" / "metrics.json"), "--max-pairs", "2"]


@pytest.mark.parametrize("case", sorted(MODELS))
def test_a_hostile_model_folder_is_refused_naming_it_and_the_rule(case, tmp_path, tiny_model_dir, params_file,
                                                                  pairs_file, capsys, monkeypatch):
    spoil, shown = MODELS[case]
    model = _copy(tiny_model_dir, tmp_path)
    spoil(model)
    status, error = run(evaluate(model, params_file, pairs_file, tiny_model_dir), capsys, monkeypatch)
    refused(status, error, str(model), shown)
    assert not (tmp_path / "metrics").exists()
    assert "remote code ran" not in error


@pytest.mark.slow
def test_pickled_weights_load_when_the_user_opts_in(tmp_path, tiny_model_dir, params_file, pairs_file, capsys,
                                                    monkeypatch):
    model = _copy(tiny_model_dir, tmp_path)
    _pickled(model)
    argv = evaluate(model, params_file, pairs_file, tiny_model_dir, "-S", "reference.allow_pickle=true",
                    "-S", "evaluate.kl_prompts=1", "-S", "evaluate.max_new_tokens=2")
    status, error = run(argv, capsys, monkeypatch)
    assert status == 0, error
    assert (tmp_path / "metrics" / "metrics.json").exists()


# ---------------------------------------------------------------- unusual but valid

TIMESTAMPS = ["2024-05-01", "2024-05-01T14:30", "2024-05-01 14:30:00", "2024-05-01T14:30:00.123456",
              "2024-05-01T14:30:00Z", "2024-05-01T14:30:00+05:30", "2024-02-29T23:59:59-0800", "2024-05-01 14:30+01"]
UNUSUAL = {
    "utf8_byte_order_mark": ("bom.jsonl", lambda: b"\xef\xbb\xbf" + jsonl(hh_rows())),
    "crlf_line_ends": ("crlf.jsonl", lambda: jsonl(hh_rows(), end="\r\n")),
    "blank_lines_between_rows": ("gaps.jsonl", lambda: jsonl(hh_rows(), end="\n\n  \n")),
    "scripts_and_emoji": ("world.jsonl", lambda: jsonl(
        [{"prompt": f"Human: {q} {i}?\n\nAssistant:", "response": f"{a} 🙂", "label": "negative"}
         for i, (q, a) in enumerate([("Как дела", "Хорошо"), ("你好吗", "很好"), ("كيف حالك", "بخير"),
                                     ("कैसे हो", "ठीक"), ("お元気ですか", "元気です"), ("Τι κάνεις", "Καλά"),
                                     ("מה שלומך", "טוב"), ("🙂🙃", "👍🏽")])], end="\n")),
    "system_message_and_role_aliases": ("roles.jsonl", lambda: jsonl(generic(prompt=[
        {"role": "system", "content": "Be terse."}, {"role": "Human", "content": "hi"},
        {"role": "GPT", "content": "hello"}, {"role": "USER", "content": "and?"}]))),
    "timestamps_naive_and_aware": ("times.jsonl", lambda: jsonl(
        [row | {"annotated_at": at} for row, at in zip(generic(), TIMESTAMPS)])),
    "hh_item_judged_both_ways_by_no_one": ("hh-both.jsonl", lambda: jsonl(
        hh_rows(ROWS - 1) + [{"chosen": hh_rows(1)[0]["rejected"], "rejected": hh_rows(1)[0]["chosen"]}])),
    "gzip_with_byte_order_mark": ("bom.jsonl.gz", lambda: gzip.compress(b"\xef\xbb\xbf" + jsonl(hh_rows(), "\r\n"))),
}


@pytest.mark.parametrize("case", sorted(UNUSUAL))
def test_unusual_but_valid_sources_are_accepted_whole(case, tmp_path, params_file, capsys, monkeypatch):
    name, build = UNUSUAL[case]
    source = tmp_path / name
    source.write_bytes(build())
    status, error = run(["--params", str(params_file), "validate", "--source", str(source)], capsys, monkeypatch)
    assert status == 0, error
    from components.data.readers import read_source

    read = read_source(source)
    assert read.problems == [] and read.rows == ROWS
    assert all("\ufeff" not in r.prompt and "\r" not in r.response for r in read.records)
    assert [r.annotated_at for r in read.records if r.annotated_at] in ([], TIMESTAMPS)   # kept as written


def test_system_messages_open_the_transcript_and_read_back_as_the_system_message(tmp_path):
    from components.data.readers import read_source
    from components.modeling.chat import transcript_messages

    source = tmp_path / "roles.jsonl"
    source.write_bytes(UNUSUAL["system_message_and_role_aliases"][1]())
    prompt = read_source(source).records[0].prompt
    assert prompt == "system: Be terse.\n\nHuman: hi\n\nAssistant: hello\n\nHuman: and?\n\nAssistant:"
    assert [m["role"] for m in transcript_messages(prompt)] == ["system", "user", "assistant", "user"]


def test_the_real_console_prints_the_rule_and_no_traceback(tmp_path, params_file):
    """The command as a user runs it, in its own process (the light params stage: no model, no data)."""
    done = subprocess.run([sys.executable, "-m", "flows.cli", "--params", str(params_file), "-S", "seed=-1", "stage",
                           "params"], capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, ERROR_FILE_VARIABLE: ""})
    refused(done.returncode, done.stderr, f"{params_file} (-S): seed: must be >= 0 (got -1)")
    assert list(tmp_path.iterdir()) == [params_file]
