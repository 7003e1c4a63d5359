"""Row rules quarantine, dataset rules fail: the suite run until the kept rows pass it whole.

A row that breaks a row rule (empty text, too long, duplicate judgement, label domain,
unencodable text, missing value, a time that is not ISO 8601, an annotator contradicting
themselves) is set aside with its file, line, rule and record; the
suite then runs again on the kept rows, so the written dataset passes every rule. Rules on
the whole dataset (row count after quarantine, a missing column) always fail, and so does
a share of affected source rows above ``validation.max_bad_fraction``; such a failure names
every source file read, since no one line is to blame.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from components.data.quarantine import Issue, check_bad_fraction
from components.params import ValidationParams
from components.validation.suite import RuleFailure, ValidationReport, raise_for_failures, validate_records


@dataclass(frozen=True)
class Screened:
    kept: pd.DataFrame
    issues: list[Issue]          # the reader's problems and every row failure of the suite
    report: ValidationReport     # the last run, on the kept rows: it passed


def screen(frame: pd.DataFrame, rules: ValidationParams, source_rows: int, known: list[Issue],
           sources: Sequence[str | Path] = ()) -> Screened:
    """Quarantine row failures until the suite passes; raise for dataset failures (naming
    ``sources``, the files read) or too many bad rows."""
    issues = list(known)
    check_bad_fraction(issues, source_rows, rules.max_bad_fraction)
    frame = frame.reset_index(drop=True)
    while True:
        report = validate_records(frame, rules, tuple(map(str, sources)))
        located = [f for f in report.failures if f.row is not None]
        if not located:  # only dataset-wide failures, if any, are left
            raise_for_failures(report)
            return Screened(frame, issues, report)
        issues += [_issue(f, frame) for f in located]
        check_bad_fraction(issues, source_rows, rules.max_bad_fraction)
        # a rule capped at MAX_FAILURES_PER_RULE lists the rest on the next run
        frame = frame.drop(index=sorted({f.row for f in located})).reset_index(drop=True)


def _issue(failure: RuleFailure, frame: pd.DataFrame) -> Issue:
    column = f"({failure.column}) " if failure.column else ""
    record = {k: (None if pd.isna(v) else v) for k, v in frame.iloc[failure.row].to_dict().items()}
    return Issue(failure.source_file or "?", failure.source_line or 0, failure.rule, column + failure.detail, record)
