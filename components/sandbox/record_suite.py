"""The contract of interaction records, as a Great Expectations suite run before anything uses them.

Records are flattened to one row per rating (a record without ratings keeps one row, and fails
``has_ratings``); every failure names the file, the line and the rule, like the canonical
records' suite. Nothing is derived from a log that breaks it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from components.errors import UserError
from components.validation.suite import gx, quiet_context, tagged

SUITE_NAME = "sandbox_interactions"
REQUIRED = ("run_id", "round", "agent", "question_id", "question", "draft", "revision", "rater", "feedback",
            "before_score", "after_score", "seed")
SCORES = ("score", "before_score", "after_score")
EXPECTED = ("expected", "before_expected", "after_expected")
ENTROPIES = ("entropy", "before_entropy", "after_entropy")


class RecordError(UserError, ValueError):
    """Interaction records break their contract; the message names file, line and rule."""


def flatten(records: list[dict], file: str) -> pd.DataFrame:
    rows = []
    for line, record in enumerate(records, start=1):
        base = {k: record.get(k) for k in ("run_id", "round", "agent", "question_id", "question", "draft", "revision", "seed")}
        for side in ("before", "after"):
            observed = record.get(f"observer_{side}") or {}
            base |= {f"{side}_{k}": observed.get(k) for k in ("score", "expected", "entropy")}
        base |= {"n_ratings": len(record.get("ratings") or []), "source_file": file, "source_line": line}
        for rating in record.get("ratings") or [{}]:
            rows.append(base | {k: rating.get(k) for k in ("rater", "score", "expected", "entropy", "feedback")})
    return pd.DataFrame(rows)


def expectations() -> list:
    E = gx.expectations
    return [
        *(tagged("required_field", E.ExpectColumnValuesToNotBeNull, column=c) for c in REQUIRED),
        tagged("has_ratings", E.ExpectColumnValuesToBeBetween, column="n_ratings", min_value=1),
        *(tagged("score_range", E.ExpectColumnValuesToBeInSet, column=c, value_set=list(range(1, 8))) for c in SCORES),
        *(tagged("expected_range", E.ExpectColumnValuesToBeBetween, column=c, min_value=1, max_value=7) for c in EXPECTED),
        *(tagged("entropy_range", E.ExpectColumnValuesToBeBetween, column=c, min_value=0, max_value=math.log(7) + 1e-6)
          for c in ENTROPIES),
        tagged("duplicate", E.ExpectCompoundColumnsToBeUnique, column_list=["run_id", "round", "agent", "rater"]),
    ]


def validate(records: list[dict], file: str) -> None:
    """Raise :class:`RecordError` listing every broken rule with its line; return quietly if all hold."""
    frame = flatten(records, file)
    context = quiet_context()
    batch = context.data_sources.add_pandas("sandbox").add_dataframe_asset(SUITE_NAME).add_batch_definition_whole_dataframe("all")
    suite = gx.ExpectationSuite(name=SUITE_NAME)
    for expectation in expectations():
        suite.add_expectation(expectation)
    suite = context.suites.add(suite)
    definition = context.validation_definitions.add(gx.ValidationDefinition(data=batch, suite=suite, name=SUITE_NAME))
    result = definition.run(batch_parameters={"dataframe": frame},
                            result_format={"result_format": "COMPLETE", "exclude_unexpected_values": True})
    problems = []
    for outcome in result.results:
        if outcome.success:
            continue
        config = outcome.expectation_config
        what = config.kwargs.get("column") or ",".join(config.kwargs.get("column_list", []))
        rows = outcome.result.get("unexpected_index_list") or []
        lines = sorted({int(frame.at[row, "source_line"]) for row in rows}) or [0]
        problems += [f"{file}:{line}: {config.meta['rule']} ({what})" for line in lines]
    if problems:
        shown = "\n  ".join(sorted(set(problems))[:20])
        raise RecordError(f"{len(set(problems))} problem(s) in the interaction records (suite {SUITE_NAME}):\n  {shown}")


def read_records(path: Path) -> list[dict]:
    """Every record of a JSONL log; a line that is not a JSON object is an error naming it."""
    records = []
    for line, text in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        try:
            record = json.loads(text)
        except json.JSONDecodeError as err:
            raise RecordError(f"{path}:{line}: malformed_json: {err.msg}") from None
        if not isinstance(record, dict):
            raise RecordError(f"{path}:{line}: malformed_json: expected an object")
        records.append(record)
    return records
