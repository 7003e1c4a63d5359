"""The canonical_records suite, run for real: each rule names its rule, column, file and line."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from components.data.records import Record, to_frame
from components.params import ValidationParams

FILE = "data/raw/feedback.jsonl"
RULES = ValidationParams(min_rows=5, max_prompt_chars=200, max_response_chars=100)


@pytest.fixture(scope="module")
def suite():
    """Imports Great Expectations once for the module (it takes seconds)."""
    from components.validation import suite

    return suite


def records(n: int = 6) -> list[Record]:
    """``n`` valid records on lines 1..n of FILE."""
    return [
        Record(
            prompt=f"Human: question {i}?\n\nAssistant:",
            response=f"answer {i}",
            label="negative" if i % 2 else "positive",
            source="test",
            source_file=FILE,
            source_line=i + 1,
        )
        for i in range(n)
    ]


def test_valid_frame_passes(suite):
    report = suite.validate_records(to_frame(records()), RULES)
    assert report.success, report.summary()
    assert report.failures == ()
    assert report.n_rows == 6
    assert set(report.rules_checked) == {
        "required_field", "non_empty_text", "max_length", "duplicate", "label_domain", "row_count", "encodable_text",
        "rating_range", "iso_timestamp", "self_contradiction",
    }
    suite.raise_for_failures(report)  # no-op


def _null_response(frame):
    frame.loc[2, "response"] = None


def _blank_response(frame):
    frame.loc[2, "response"] = " \n\t "


def _long_prompt(frame):
    frame.loc[2, "prompt"] = "Human: " + "x" * 500 + "\n\nAssistant:"


def _neutral_label(frame):
    frame.loc[2, "label"] = "neutral"


def _nul_in_response(frame):
    frame.loc[2, "response"] = "ans\x00wer"


@pytest.mark.parametrize(
    "break_row, rule, column",
    [
        (_null_response, "required_field", "response"),
        (_blank_response, "non_empty_text", "response"),
        (_long_prompt, "max_length", "prompt"),
        (_neutral_label, "label_domain", "label"),
        (_nul_in_response, "encodable_text", "response"),
    ],
)
def test_row_rule_names_rule_column_and_source_line(suite, break_row, rule, column):
    frame = to_frame(records())
    break_row(frame)
    report = suite.validate_records(frame, RULES)
    assert not report.success
    assert [(f.rule, f.column, f.source_file, f.source_line) for f in report.failures] == [(rule, column, FILE, 3)]
    assert f"{FILE}:3: {rule} ({column})" in report.summary()


def test_details_quote_values_truncated(suite):
    frame = to_frame(records())
    frame.loc[1, "prompt"] = "Human: " + "y" * 5000 + "\n\nAssistant:"
    frame.loc[2, "label"] = "neutral"
    details = {f.rule: f.detail for f in suite.validate_records(frame, RULES).failures}
    assert "'neutral'" in details["label_domain"]
    assert details["max_length"].startswith("5019 chars > max 200")
    assert "y" * 200 not in details["max_length"]


def test_lone_surrogate_is_reported_not_crashing(suite):
    # pandas' Arrow strings cannot hold lone surrogates, so such text only arrives in object columns.
    frame = to_frame(records())
    frame["response"] = frame["response"].astype(object)
    frame.loc[4, "response"] = "bad \udcff byte"
    [failure] = suite.validate_records(frame, RULES).failures
    assert (failure.rule, failure.column, failure.source_line) == ("encodable_text", "response", 5)
    assert "surrogate" in failure.detail
    assert "\\udcff" in failure.detail


def test_rating_outside_the_scale_is_reported_and_a_missing_one_is_fine(suite):
    frame = to_frame(records())
    frame.loc[1, "rating"] = 5.0
    frame.loc[3, "rating"] = 8.0   # the official sandbox's "unparseable" sentinel
    [failure] = suite.validate_records(frame, RULES).failures
    assert (failure.rule, failure.column, failure.source_line) == ("rating_range", "rating", 4)
    assert "8 not within [1, 7]" in failure.detail


GOOD_TIMES = ["", "2024-05-01", "2024-05-01T14:30", "2024-05-01 14:30:00", "2024-05-01T14:30:00.123456Z",
              "2024-05-01T14:30:00+05:30", "2024-02-29T23:59:59-0800", "1999-12-31T23:59+01"]
BAD_TIMES = ["yesterday", "2024-13-01", "2023-02-29", "2024-05-01T24:00", "1714572000", "01/05/2024",
             "2024-05-01T14:30+5", " 2024-05-01", "2024-05-01\n", "2024-05-01T14", "2024-05-01T14:30:00+25:00"]


def test_annotated_at_must_be_an_iso_date_or_date_time_naive_or_aware(suite):
    frame = to_frame(records(len(GOOD_TIMES) + len(BAD_TIMES)))
    frame["annotated_at"] = GOOD_TIMES + BAD_TIMES
    failures = suite.validate_records(frame, RULES).failures
    assert [(f.rule, f.column, f.source_line) for f in failures] == [
        ("iso_timestamp", "annotated_at", line) for line in range(len(GOOD_TIMES) + 1, len(frame) + 1)]
    assert f"{BAD_TIMES[0]!r} is not an ISO-8601 date or date-time" in failures[0].detail


def judged(annotator: str, label: str, line: int, file: str = FILE, **more) -> Record:
    """A judgement of one fixed item (question 0 / answer 0)."""
    return Record(prompt="Human: question 0?\n\nAssistant:", response="answer 0", label=label, source="test",
                  source_file=file, source_line=line, annotator=annotator, **more)


def test_an_annotator_labelling_an_item_both_ways_is_named_on_every_line(suite):
    rows = records()[1:] + [judged("ann-1", "negative", 7), judged("ann-1", "positive", 8),
                            judged("ann-1", "positive", 3, file="other.jsonl")]
    failures = suite.validate_records(to_frame(rows), RULES).failures
    assert [(f.rule, f.source_file, f.source_line, f.detail) for f in failures] == [
        ("self_contradiction", FILE, 7, "annotator 'ann-1' labelled this item negative here and positive on line 8, "
                                        "other.jsonl:3"),
        ("self_contradiction", FILE, 8, "annotator 'ann-1' labelled this item positive here and negative on line 7"),
        ("duplicate", "other.jsonl", 3, f"same annotator, text and label as {FILE}:8"),   # and a contradiction too
        ("self_contradiction", "other.jsonl", 3, f"annotator 'ann-1' labelled this item positive here and negative on "
                                                 f"{FILE}:7"),
    ]


def test_people_who_disagree_rows_naming_no_one_and_two_pairs_are_not_self_contradictions(suite):
    rows = records()[1:] + [
        judged("unknown", "negative", 7), judged("unknown", "positive", 8),   # HH-RLHF rows name no annotator
        judged("", "negative", 9), judged("", "positive", 10),
        judged("ann-1", "negative", 11), judged("ann-2", "positive", 12),      # two people disagreeing
        judged("ann-3", "negative", 13), judged("ann-3", "positive", 14, owner="kids-tutor"),   # two items
        judged("ann-4", "negative", 15, pair_id="p1"), judged("ann-4", "positive", 16, pair_id="p2"),  # lost, won
    ]
    assert suite.validate_records(to_frame(rows), RULES).success


def test_a_repeated_judgement_is_a_duplicate_not_a_contradiction(suite):
    rows = records()[1:] + [judged("ann-1", "negative", 7), judged("ann-1", "negative", 8)]
    failures = suite.validate_records(to_frame(rows), RULES).failures
    assert [(f.rule, f.source_line) for f in failures] == [("duplicate", 8)]


def test_duplicate_names_both_lines(suite):
    rows = records()
    rows[4] = Record(prompt=rows[1].prompt, response=rows[1].response, label=rows[1].label, source="test",
                     source_file=FILE, source_line=5)  # same annotator, text and label as line 2
    report = suite.validate_records(to_frame(rows), RULES)
    [failure] = report.failures
    assert (failure.rule, failure.column, failure.source_file, failure.source_line) == ("duplicate", "id", FILE, 5)
    assert "line 2" in failure.detail and failure.row == 4
    assert "row" not in report.to_dict()["failures"][0]


def test_another_annotator_or_label_on_the_same_text_is_data_not_a_duplicate(suite):
    rows = records()
    same_text = dict(prompt=rows[1].prompt, response=rows[1].response, source="test", source_file=FILE)
    rows[4] = Record(**same_text, label=rows[1].label, annotator="ann-2", source_line=5)
    rows[5] = Record(**same_text, label="positive", source_line=6)
    assert suite.validate_records(to_frame(rows), RULES).success


def test_screen_quarantines_row_failures_until_the_kept_rows_pass(suite):
    from components.data.quarantine import Issue
    from components.validation.screen import screen

    frame = to_frame(records(200))
    frame.loc[2, "response"] = " "
    frame.loc[7, "label"] = "neutral"
    reader_problem = Issue(FILE, 300, "malformed_json", "not a JSON object", "{")
    rules = ValidationParams(min_rows=5, max_bad_fraction=0.02)
    screened = screen(frame, rules, source_rows=201, known=[reader_problem])
    assert [(i.line, i.rule) for i in screened.issues] == [(300, "malformed_json"), (3, "non_empty_text"),
                                                           (8, "label_domain")]
    assert screened.issues[2].raw["label"] == "neutral" and screened.issues[2].raw["source_line"] == 8
    assert len(screened.kept) == 198 and screened.report.success


def test_screen_fails_above_max_bad_fraction_and_on_dataset_rules(suite):
    from components.data.quarantine import TooManyBadRowsError
    from components.validation.screen import screen

    frame = to_frame(records(20))
    frame.loc[[2, 5], "response"] = ""
    with pytest.raises(TooManyBadRowsError, match=rf"2 of 20 source rows(.|\n)*{FILE}:3: non_empty_text"):
        screen(frame, ValidationParams(min_rows=5, max_bad_fraction=0.05), source_rows=20, known=[])
    with pytest.raises(suite.DataValidationError, match="row_count"):  # 18 rows kept < 19
        screen(frame, ValidationParams(min_rows=19, max_bad_fraction=0.5), source_rows=20, known=[])


def test_a_dataset_failure_names_every_source_read(suite):
    from components.validation.screen import screen

    frame = to_frame(records(4))
    with pytest.raises(suite.DataValidationError) as caught:
        screen(frame, RULES, source_rows=4, known=[], sources=[FILE, "data/raw/more.parquet"])
    assert f"\n{FILE}, data/raw/more.parquet (dataset): row_count: 4 rows < min_rows 5" in str(caught.value)


def test_too_few_rows_is_a_dataset_failure(suite):
    report = suite.validate_records(to_frame(records(3)), RULES)
    [failure] = report.failures
    assert (failure.rule, failure.column, failure.source_file, failure.source_line) == ("row_count", None, None, None)
    assert "3 rows < min_rows 5" in failure.detail


def test_missing_column_fails_instead_of_crashing(suite):
    frame = to_frame(records()).drop(columns=["label"])
    failures = suite.validate_records(frame, RULES).failures
    assert {(f.rule, f.column, f.detail) for f in failures} == {
        ("required_field", "label", "column missing"), ("label_domain", "label", "column missing"),
    }


def test_rows_map_to_lines_whatever_the_index(suite):
    frame = to_frame(records()).set_index(pd.Index([10, 20, 30, 40, 50, 60]))
    frame.loc[40, "label"] = "neutral"
    [failure] = suite.validate_records(frame, RULES).failures
    assert failure.source_line == 4


def test_summary_error_and_report_file(suite):
    frame = to_frame(records(30))
    frame["label"] = "neutral"
    report = suite.validate_records(frame, RULES)
    summary = report.summary(limit=5)
    assert f"{FILE}:1: label_domain (label): " in summary
    assert "... and 25 more" in summary
    with pytest.raises(suite.DataValidationError) as caught:
        suite.raise_for_failures(report)
    assert caught.value.report is report
    assert f"{FILE}:1: label_domain (label)" in str(caught.value)
    as_dict = json.loads(json.dumps(report.to_dict()))
    assert as_dict["success"] is False
    assert as_dict["failures"][0] == {
        "rule": "label_domain", "column": "label", "source_file": FILE, "source_line": 1,
        "detail": "'neutral' not in ['negative', 'positive']",
    }


def test_failures_per_rule_are_capped(suite):
    frame = to_frame(records(suite.MAX_FAILURES_PER_RULE + 5))
    frame["label"] = "neutral"
    failures = suite.validate_records(frame, RULES).failures
    assert len(failures) == suite.MAX_FAILURES_PER_RULE + 1
    assert failures[0].source_file is None and "5 more row(s)" in failures[0].detail
