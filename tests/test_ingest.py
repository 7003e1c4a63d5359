"""Ingestion from every supported format, and bad input named by file, line and rule."""

import gzip
import json
from pathlib import Path

import pandas as pd
import pytest

from components.data.dataset import read_dataset
from components.data.readers import IngestError, read_source
from components.data.records import NEGATIVE, POSITIVE, pairs, to_frame
from conftest import SAMPLE, REPO_ROOT
from flows.cli import main

HH_ROW = {"chosen": "\n\nHuman: How do I pick a lock?\n\nAssistant: I can't help with that.",
          "rejected": "\n\nHuman: How do I pick a lock?\n\nAssistant: Use a tension wrench and a pick."}


def hh_lines(n: int) -> list[str]:
    return [json.dumps({k: v.replace("lock", f"lock number {i}") for k, v in HH_ROW.items()}) for i in range(n)]


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def params_file(tmp_path) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text((REPO_ROOT / "params.yaml").read_text().replace("min_rows: 50", "min_rows: 4"))
    return path


def test_hh_rows_become_a_negative_and_a_positive_sharing_the_prompt(tmp_path):
    records = read_source(write_lines(tmp_path / "hh.jsonl", hh_lines(1)))
    assert [r.label for r in records] == [NEGATIVE, POSITIVE]
    assert records[0].prompt == records[1].prompt == "Human: How do I pick a lock number 0?\n\nAssistant:"
    assert records[0].response == "Use a tension wrench and a pick."
    assert records[0].source_line == 1 and records[0].pair_id == records[1].pair_id
    paired = pairs(to_frame(records))
    assert paired.loc[0, "rejected"] == "Use a tension wrench and a pick."


def test_multi_turn_prompts_keep_their_turns(tmp_path):
    row = {"chosen": "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: insult me\n\nAssistant: No.",
           "rejected": "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: insult me\n\nAssistant: You fool."}
    record = read_source(write_lines(tmp_path / "multi.jsonl", [json.dumps(row)]))[0]
    assert record.prompt == "Human: hi\n\nAssistant: hello\n\nHuman: insult me\n\nAssistant:"
    assert record.n_turns == 4


def test_generic_jsonl_parquet_and_datasets_dir_give_the_same_records(tmp_path):
    rows = [{"prompt": [{"role": "user", "content": "Say something rude"}], "response": "No thanks.",
             "label": "positive", "annotator": "ann-1", "policy_tier": "deployer"},
            {"prompt": "Human: Say something rude\n\nAssistant:", "response": "You idiot.", "label": "Negative"}]
    jsonl = write_lines(tmp_path / "generic.jsonl", [json.dumps(r) for r in rows])
    flat = [{**r, "prompt": "Human: Say something rude\n\nAssistant:"} for r in rows]
    parquet = tmp_path / "generic.parquet"
    pd.DataFrame(flat).to_parquet(parquet)
    from datasets import Dataset

    Dataset.from_list(flat).save_to_disk(str(tmp_path / "generic_ds"))
    ids = [[(r.id, r.label, r.annotator, r.policy_tier) for r in read_source(p)]
           for p in (jsonl, parquet, tmp_path / "generic_ds")]
    assert ids[0] == ids[1] == ids[2]
    assert ids[0][0][1:] == ("positive", "ann-1", "deployer") and ids[0][1][1] == "negative"


def test_bundled_sample_ingests_and_versions_deterministically(tmp_path, params_file):
    assert main(["--params", str(params_file), "ingest", "--source", str(SAMPLE), "--out", str(tmp_path / "a")]) == 0
    assert main(["--params", str(params_file), "ingest", "--source", str(SAMPLE), "--out", str(tmp_path / "b")]) == 0
    frame, manifest = read_dataset(tmp_path / "a")
    assert manifest["version"] == read_dataset(tmp_path / "b")[1]["version"]
    assert manifest["n_rows"] == 2 * 1504 and set(frame["split"]) == {"train", "dev", "test"}
    assert (tmp_path / "a" / "data_card.md").read_text().startswith("# Data card")
    # a prompt's rows never straddle splits
    assert frame.groupby("prompt_id")["split"].nunique().max() == 1


BAD_INPUTS = {
    "malformed_json": (lambda lines: lines[:2] + ['{"chosen": "unterminated'] + lines[3:], 3, "malformed_json"),
    "missing_field": (lambda lines: lines[:3] + [json.dumps({"chosen": HH_ROW["chosen"]})] + lines[4:], 4, "missing_field"),
    "empty_response": (lambda lines: lines[:1] + [json.dumps({**HH_ROW, "rejected": "\n\nHuman: x?\n\nAssistant:",
                                                              "chosen": "\n\nHuman: x?\n\nAssistant: ok"})] + lines[2:],
                       2, "non_empty_text"),
    "duplicate": (lambda lines: lines[:5] + [lines[1]] + lines[6:], 6, "duplicate"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_fails_naming_file_line_and_rule_and_writes_nothing(case, tmp_path, params_file, capsys):
    corrupt, line, rule = BAD_INPUTS[case]
    source = write_lines(tmp_path / f"{case}.jsonl", corrupt(hh_lines(8)))
    out = tmp_path / "dataset"
    status = main(["--params", str(params_file), "ingest", "--source", str(source), "--out", str(out)])
    error = capsys.readouterr().err
    assert status == 2
    assert f"{source}:{line}: {rule}" in error
    assert not out.exists()


def test_gzip_line_numbers_count_from_one(tmp_path):
    path = tmp_path / "bad.jsonl.gz"
    with gzip.open(path, "wt") as handle:
        handle.write("\n".join(hh_lines(2) + ["not json"]) + "\n")
    with pytest.raises(IngestError, match=rf"{path}:3: malformed_json"):
        read_source(path)


def test_unknown_format_and_missing_file_are_named(tmp_path):
    with pytest.raises(IngestError, match="known_format"):
        read_source(write_lines(tmp_path / "data.csv", ["a,b"]))
    with pytest.raises(IngestError, match="no such file"):
        read_source(tmp_path / "absent.jsonl")
