"""Ingestion from every supported format; broken rows quarantined with file, line and rule,
or, above validation.max_bad_fraction, the whole run refused naming each of them."""

import gzip
import json
from pathlib import Path

import pandas as pd
import pytest

from components.data.dataset import read_dataset, read_items
from components.data.quarantine import read_quarantine
from components.data.readers import IngestError, read_source
from components.data.records import NEGATIVE, POSITIVE, pairs, to_frame
from conftest import SAMPLE, write_params
from flows.cli import main

HH_ROW = {"chosen": "\n\nHuman: How do I pick a lock?\n\nAssistant: I can't help with that.",
          "rejected": "\n\nHuman: How do I pick a lock?\n\nAssistant: Use a tension wrench and a pick."}


def hh_lines(n: int) -> list[str]:
    return [json.dumps({k: v.replace("lock", f"lock number {i}") for k, v in HH_ROW.items()}) for i in range(n)]


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def params_with(tmp_path, **overrides) -> Path:
    return write_params(tmp_path, {"validation.min_rows": 4, **overrides})


@pytest.fixture
def params_file(tmp_path) -> Path:
    return params_with(tmp_path)


def test_hh_rows_become_a_negative_and_a_positive_sharing_the_prompt(tmp_path):
    records = read_source(write_lines(tmp_path / "hh.jsonl", hh_lines(1))).records
    assert [r.label for r in records] == [NEGATIVE, POSITIVE]
    assert records[0].prompt == records[1].prompt == "Human: How do I pick a lock number 0?\n\nAssistant:"
    assert records[0].response == "Use a tension wrench and a pick."
    assert records[0].source_line == 1 and records[0].pair_id == records[1].pair_id
    paired = pairs(to_frame(records))
    assert paired.loc[0, "rejected"] == "Use a tension wrench and a pick."


def test_multi_turn_prompts_keep_their_turns(tmp_path):
    row = {"chosen": "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: insult me\n\nAssistant: No.",
           "rejected": "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: insult me\n\nAssistant: You fool."}
    record = read_source(write_lines(tmp_path / "multi.jsonl", [json.dumps(row)])).records[0]
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
    ids = [[(r.id, r.label, r.annotator, r.policy_tier) for r in read_source(p).records]
           for p in (jsonl, parquet, tmp_path / "generic_ds")]
    assert ids[0] == ids[1] == ids[2]
    assert ids[0][0][1:] == ("positive", "ann-1", "deployer") and ids[0][1][1] == "negative"


def test_bundled_sample_ingests_and_versions_deterministically(tmp_path, params_file):
    assert main(["--params", str(params_file), "ingest", "--source", str(SAMPLE), "--out", str(tmp_path / "a")]) == 0
    assert main(["--params", str(params_file), "ingest", "--source", str(SAMPLE), "--out", str(tmp_path / "b")]) == 0
    frame, manifest = read_dataset(tmp_path / "a")
    assert manifest["version"] == read_dataset(tmp_path / "b")[1]["version"]
    # 1,510 published rows, two records each, less the 4 empty chosen responses quarantined
    assert manifest["n_rows"] == 2 * 1510 - 4 and set(frame["split"]) == {"train", "dev", "test"}
    assert (tmp_path / "a" / "data_card.md").read_text().startswith("# Data card")
    # a prompt's rows never straddle splits
    assert frame.groupby("prompt_id")["split"].nunique().max() == 1


def test_bundled_sample_is_the_published_file(tmp_path):
    published = Path("/work/shared/data/hh-rlhf-harmless-base-test.sample.jsonl.gz")
    if published.exists():
        assert SAMPLE.read_bytes() == published.read_bytes()
    with gzip.open(SAMPLE, "rt") as lines:
        assert sum(1 for _ in lines) == 1510


def test_published_sample_quarantines_empty_sides_and_reads_differing_prompts_unpaired(tmp_path, params_file):
    out = tmp_path / "dataset"
    assert main(["--params", str(params_file), "ingest", "--source", str(SAMPLE), "--out", str(out)]) == 0
    judgements, manifest = read_dataset(out)
    by_line = judgements.groupby("source_line")
    # 4 rows with an empty chosen response: quarantined, their rejected sides kept unpaired
    quarantine = read_quarantine(out / "quarantine.jsonl")
    assert [(q["file"], q["line"], q["rule"]) for q in quarantine] == [
        (str(SAMPLE), line, "non_empty_text") for line in (56, 325, 588, 715)]
    assert all(q["raw"]["response"] == "" and q["raw"]["label"] == POSITIVE for q in quarantine)
    for line in (56, 325, 588, 715):
        kept = by_line.get_group(line)
        assert list(kept["label"]) == [NEGATIVE] and kept["pair_id"].isna().all()
    # 2 rows whose sides differ before the last turn: 4 unpaired records, none dropped
    for line in (811, 1336):
        kept = by_line.get_group(line)
        assert sorted(kept["label"]) == [NEGATIVE, POSITIVE] and kept["pair_id"].isna().all()
        assert kept["prompt"].nunique() == 2
    assert manifest["quarantined_rows"] == 4 and manifest["quarantine"]["by_rule"] == {"non_empty_text": 4}
    card = (out / "data_card.md").read_text()
    assert manifest["unpaired"]["by_rule"] == {"hh_empty_side": 4, "hh_shared_prompt": 2}
    assert "Read as unpaired records: 6 source rows (4 hh_empty_side, 2 hh_shared_prompt)" in card
    assert "Quarantined: 4 of 1510 source rows" in card and "| non_empty_text | 4 |" in card
    report = json.loads((out / "validation.json").read_text())
    assert report["success"] and report["quarantine"]["rows"] == 4
    items, _ = read_items(out)
    # two refusals quote the request ("... make a bomb ..."): the tier-1 regex reclassifies the
    # positive, and a pair of two negatives is no pair (a measured false positive, README)
    assert manifest["reclassified"] == {"no-weapon-instructions": 2}
    assert len(pairs(items)) == 1510 - 6 - 2


BAD_INPUTS = {
    "malformed_json": (lambda lines: lines[:2] + ['{"chosen": "unterminated'] + lines[3:], 3, "malformed_json"),
    "missing_field": (lambda lines: lines[:3] + [json.dumps({"chosen": HH_ROW["chosen"]})] + lines[4:], 4, "missing_field"),
    "empty_response": (lambda lines: lines[:1] + [json.dumps({**HH_ROW, "rejected": "\n\nHuman: x?\n\nAssistant:",
                                                              "chosen": "\n\nHuman: x?\n\nAssistant: ok"})] + lines[2:],
                       2, "non_empty_text"),
    "duplicate": (lambda lines: lines[:5] + [lines[1]] + lines[6:], 6, "duplicate"),
    "wrong_type": (lambda lines: lines[:6] + [json.dumps({**HH_ROW, "rejected": 7})] + lines[7:], 7, "field_type"),
    "hh_format": (lambda lines: lines[:4] + [json.dumps({**HH_ROW, "rejected": "no turns"})] + lines[5:], 5, "hh_format"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_rows_above_max_bad_fraction_fail_naming_file_line_and_rule_and_write_nothing(case, tmp_path,
                                                                                         params_file, capsys):
    corrupt, line, rule = BAD_INPUTS[case]  # 1 bad row in 8 is 12.5%, above the default 1%
    source = write_lines(tmp_path / f"{case}.jsonl", corrupt(hh_lines(8)))
    out = tmp_path / "dataset"
    status = main(["--params", str(params_file), "ingest", "--source", str(source), "--out", str(out)])
    error = capsys.readouterr().err
    assert status == 2
    assert f"{source}:{line}: {rule}" in error
    assert not out.exists()


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_rows_within_max_bad_fraction_are_quarantined_and_the_rest_ingested(case, tmp_path):
    corrupt, line, rule = BAD_INPUTS[case]
    source = write_lines(tmp_path / f"{case}.jsonl", corrupt(hh_lines(8)))
    out = tmp_path / "dataset"
    params = params_with(tmp_path, **{"validation.max_bad_fraction": 0.2})
    assert main(["--params", str(params), "ingest", "--source", str(source), "--out", str(out)]) == 0
    entries = read_quarantine(out / "quarantine.jsonl")  # a duplicated HH row: both its records
    assert {(e["file"], e["line"], e["rule"]) for e in entries} == {(str(source), line, rule)}
    assert all(e["raw"] is not None and e["message"] for e in entries)
    judgements, manifest = read_dataset(out)
    assert manifest["quarantined_rows"] == 1 and manifest["quarantine"]["by_rule"] == {rule: len(entries)}
    assert f"| {rule} | {len(entries)} |" in (out / "data_card.md").read_text()
    assert line not in set(judgements["source_line"]) or rule == "non_empty_text"  # its sound side stays


def test_the_written_dataset_passes_the_whole_suite(tmp_path):
    from components.params import load_params
    from components.validation.suite import validate_records

    corrupt, _, _ = BAD_INPUTS["duplicate"]
    source = write_lines(tmp_path / "dup.jsonl", corrupt(hh_lines(8)))
    params = params_with(tmp_path, **{"validation.max_bad_fraction": 0.2})
    assert main(["--params", str(params), "ingest", "--source", str(source), "--out", str(tmp_path / "ds")]) == 0
    judgements, _ = read_dataset(tmp_path / "ds")
    assert validate_records(judgements, load_params(params).validation).success


def test_malformed_lines_are_returned_with_their_raw_text_and_gzip_lines_count_from_one(tmp_path):
    path = tmp_path / "bad.jsonl.gz"
    with gzip.open(path, "wt") as handle:
        handle.write("\n".join(hh_lines(2) + ["not json"]) + "\n")
    read = read_source(path)
    assert len(read.records) == 4 and read.rows == 3
    [problem] = read.problems
    assert str(problem).startswith(f"{path}:3: malformed_json") and problem.raw == "not json"


def test_truncated_gzip_is_a_file_level_failure(tmp_path, params_file, capsys):
    whole = gzip.compress(("\n".join(hh_lines(200)) + "\n").encode())
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(IngestError, match="readable_file"):
        read_source(path)
    out = tmp_path / "dataset"
    assert main(["--params", str(params_file), "ingest", "--source", str(path), "--out", str(out)]) == 2
    assert f"{path}:0: readable_file" in capsys.readouterr().err and not out.exists()


def test_a_file_with_no_dataset_row_fails_whole(tmp_path):
    path = write_lines(tmp_path / "other.jsonl", [json.dumps({"name": f"x{i}"}) for i in range(5)])
    with pytest.raises(IngestError, match="non_empty_source: none of its 5 rows is a dataset row"):
        read_source(path)


def test_unknown_format_and_missing_file_are_named(tmp_path):
    with pytest.raises(IngestError, match="known_format"):
        read_source(write_lines(tmp_path / "data.csv", ["a,b"]))
    with pytest.raises(IngestError, match="no such file"):
        read_source(tmp_path / "absent.jsonl")


def test_same_annotator_text_and_label_twice_is_a_duplicate_other_annotators_are_data(tmp_path):
    rows = [{"prompt": f"Human: q{i}?\n\nAssistant:", "response": f"a{i}", "label": "negative", "annotator": "ann-1"}
            for i in range(200)]
    rows += [{**rows[0], "annotator": "ann-2"}, {**rows[1], "annotator": "ann-2", "label": "positive"}, rows[2]]
    source = write_lines(tmp_path / "votes.jsonl", [json.dumps(r) for r in rows])
    out = tmp_path / "dataset"
    assert main(["--params", str(params_with(tmp_path)), "ingest", "--source", str(source), "--out", str(out)]) == 0
    [entry] = read_quarantine(out / "quarantine.jsonl")
    assert (entry["line"], entry["rule"]) == (203, "duplicate") and "line 3" in entry["message"]
    judgements, manifest = read_dataset(out)
    assert len(judgements) == 202 and judgements["item_id"].nunique() == 200
    assert manifest["aggregation"]["left_out"] == {"tie": 1}  # q1: one negative, one positive
