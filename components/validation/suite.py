"""The data contract for canonical records, as one Great Expectations suite.

Every rule is a GX expectation in the suite ``canonical_records``; this module runs it on a
records DataFrame and turns GX's row indices back into ``FILE:LINE`` failures, so a bad
example is reported where a person can fix it. GX does not raise on failed data, so callers
decide with :func:`raise_for_failures`.
"""

from __future__ import annotations

import logging
import re
from dataclasses import asdict, dataclass

import pandas as pd

from components.data.quarantine import dataset_location
from components.data.records import LABELS, NEGATIVE, POSITIVE, UNKNOWN_ANNOTATOR
from components.errors import UserError
from components.params import ValidationParams

# GX logs INFO/DEBUG chatter while importing, and some of its modules pin their own logger
# to INFO; keep all of it to warnings (before the import, and again after it).
logging.getLogger("great_expectations").setLevel(logging.WARNING)
import great_expectations as gx  # noqa: E402
from great_expectations.data_context.types.base import ProgressBarsConfig  # noqa: E402
from great_expectations.expectations.row_conditions import Column  # noqa: E402

for _name in list(logging.root.manager.loggerDict):
    if _name.startswith("great_expectations."):
        logging.getLogger(_name).setLevel(logging.WARNING)

SUITE_NAME = "canonical_records"
RULES = (
    "required_field",
    "non_empty_text",
    "max_length",
    "duplicate",
    "label_domain",
    "row_count",
    "encodable_text",
    "rating_range",
    "iso_timestamp",
    "self_contradiction",
)
REQUIRED_COLUMNS = ("id", "item_id", "prompt_id", "prompt", "response", "label", "source", "source_file", "source_line")
TEXT_COLUMNS = ("prompt", "response")
MAX_FAILURES_PER_RULE = 1000  # per expectation: a huge bad file must not blow up memory or the report
MAX_VALUE_CHARS = 80  # offending values are quoted, never whole texts

# Only row indices come back from GX (it would otherwise echo whole texts into the result).
_RESULT_FORMAT = {
    "result_format": "SUMMARY",
    "partial_unexpected_count": MAX_FAILURES_PER_RULE,
    "exclude_unexpected_values": True,
    "return_unexpected_index_query": False,
}
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
# annotated_at: an ISO-8601 calendar date, or date and time ('T', or the space Python and SQL
# write), to the minute or finer, naive or with Z / ±HH[:MM]; kept as written, never reformatted
ISO_TIMESTAMP = (r"^\d{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01])"           # date
                 r"(?:[T ](?:[01]\d|2[0-3]):[0-5]\d(?::[0-5]\d(?:\.\d+)?)?"         # time
                 r"(?:Z|[+-](?:[01]\d|2[0-3])(?::?[0-5]\d)?)?)?\Z")                # zone
GIVEN_TIME = Column("annotated_at") != ""   # an empty annotated_at: the row gives no time
NAMED_ANNOTATOR = Column("annotator").is_not_in([UNKNOWN_ANNOTATOR, ""])   # HH-RLHF rows name no one
OPPOSITE = {NEGATIVE: POSITIVE, POSITIVE: NEGATIVE}


@dataclass(frozen=True)
class RuleFailure:
    """One broken rule on one source line (or on the whole dataset when source_file is None)."""

    rule: str
    column: str | None
    source_file: str | None
    source_line: int | None  # 1-based line in source_file
    detail: str
    row: int | None = None   # position in the validated frame (not reported: it names no source)

    def location(self, dataset: str = "(dataset)") -> str:
        if self.source_file is None:
            return dataset
        return f"{self.source_file}:{self.source_line if self.source_line is not None else '?'}"


@dataclass(frozen=True)
class ValidationReport:
    """What the suite found; ``to_dict()`` is the report file, ``summary()`` the log lines."""

    success: bool
    n_rows: int
    failures: tuple[RuleFailure, ...]
    rules_checked: tuple[str, ...]
    sources: tuple[str, ...] = ()   # the files validated together: what a dataset-wide failure names

    def to_dict(self) -> dict:
        return {
            "suite": SUITE_NAME,
            "success": self.success,
            "n_rows": self.n_rows,
            "n_failures": len(self.failures),
            "rules_checked": list(self.rules_checked),
            "failures": [{k: v for k, v in asdict(f).items() if k != "row"} for f in self.failures],
        }

    def summary(self, limit: int = 20) -> str:
        """One ``FILE:LINE: rule (column): detail`` line per failure, the first ``limit`` of them."""
        if self.success:
            return f"{SUITE_NAME}: all {len(self.rules_checked)} rules passed on {self.n_rows} rows"
        lines = [f"{SUITE_NAME}: {len(self.failures)} failure(s) in {self.n_rows} rows"]
        for f in self.failures[:limit]:
            column = f" ({f.column})" if f.column else ""
            lines.append(f"{f.location(dataset_location(self.sources))}: {f.rule}{column}: {f.detail}")
        if len(self.failures) > limit:
            lines.append(f"... and {len(self.failures) - limit} more")
        return "\n".join(lines)


class DataValidationError(UserError, ValueError):
    """The records broke the data contract; ``.report`` holds every failure."""

    def __init__(self, report: ValidationReport) -> None:
        super().__init__(report.summary())
        self.report = report


def raise_for_failures(report: ValidationReport) -> None:
    """GX only reports; stopping the pipeline on bad data is this call's job."""
    if not report.success:
        raise DataValidationError(report)


def build_suite(rules: ValidationParams) -> gx.ExpectationSuite:
    """The suite itself: every rule as GX expectations tagged with ``meta={"rule": ...}``."""
    E = gx.expectations
    max_chars = {"prompt": rules.max_prompt_chars, "response": rules.max_response_chars}
    expectations = [
        *(tagged("required_field", E.ExpectColumnValuesToNotBeNull, column=c) for c in REQUIRED_COLUMNS),
        *(tagged("non_empty_text", E.ExpectColumnValuesToMatchRegex, column=c, regex=r"\S") for c in TEXT_COLUMNS),
        *(
            tagged("max_length", E.ExpectColumnValueLengthsToBeBetween, column=c, max_value=max_chars[c])
            for c in TEXT_COLUMNS
        ),
        tagged("duplicate", E.ExpectColumnValuesToBeUnique, column="id"),
        tagged("label_domain", E.ExpectColumnValuesToBeInSet, column="label", value_set=list(LABELS)),
        tagged("row_count", E.ExpectTableRowCountToBeBetween, min_value=rules.min_rows),
        # _holdable turns lone surrogates into NUL, so this one pattern catches both.
        *(
            tagged("encodable_text", E.ExpectColumnValuesToNotMatchRegex, column=c, regex=r"\x00")
            for c in TEXT_COLUMNS
        ),
        # a rating is optional (null passes); one that is there lies on the 1..7 scale
        tagged("rating_range", E.ExpectColumnValuesToBeBetween, column="rating", min_value=1, max_value=7),
        # the shape by pattern, then the calendar (no 2023-02-29) by dateutil; empty passes
        tagged("iso_timestamp", E.ExpectColumnValuesToMatchRegex, column="annotated_at", regex=ISO_TIMESTAMP,
               row_condition=GIVEN_TIME),
        tagged("iso_timestamp", E.ExpectColumnValuesToBeDateutilParseable, column="annotated_at",
               row_condition=GIVEN_TIME),
        # a named annotator judges an item once, or once per pair (a pair's labels say which of
        # two is better: a response may win one pair and lose another); _failures reports the
        # groups holding both labels (a repeat of one label is the duplicate rule's)
        tagged("self_contradiction", E.ExpectCompoundColumnsToBeUnique,
               column_list=["annotator", "item_id", "pair_id"], row_condition=NAMED_ANNOTATOR),
    ]
    suite = gx.ExpectationSuite(name=SUITE_NAME)
    for expectation in expectations:
        suite.add_expectation(expectation)
    return suite


def tagged(rule: str, expectation: type, **kwargs) -> gx.expectations.Expectation:
    """An expectation that carries the rule it checks, so a failure can name the rule."""
    return expectation(meta={"rule": rule}, **kwargs)


def quiet_context():
    """A fresh in-memory GX context without progress bars (cheap; nothing piles up)."""
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    return context


def validate_records(frame: pd.DataFrame, rules: ValidationParams, sources: tuple[str, ...] = ()) -> ValidationReport:
    """Run the suite on ``frame`` in a fresh in-memory GX context (cheap, and nothing piles up);
    ``sources``, the files read into it, are what a failure of the whole dataset names."""
    frame = frame.reset_index(drop=True)  # GX reports index labels; make them row positions
    context = quiet_context()
    batch = (
        context.data_sources.add_pandas("records")
        .add_dataframe_asset("canonical_records")
        .add_batch_definition_whole_dataframe("all_rows")
    )
    suite = context.suites.add(build_suite(rules))
    definition = context.validation_definitions.add(gx.ValidationDefinition(data=batch, suite=suite, name=SUITE_NAME))
    results = definition.run(batch_parameters={"dataframe": _holdable(frame)}, result_format=_RESULT_FORMAT)

    failures = [f for result in results.results if not result.success for f in _failures(result, frame)]
    failures = sorted(dict.fromkeys(failures), key=_order)   # once per row, where two expectations check one rule
    return ValidationReport(success=not failures, n_rows=len(frame), failures=tuple(failures), rules_checked=RULES,
                            sources=tuple(map(str, sources)))


def _order(failure: RuleFailure) -> tuple:
    """Dataset-wide failures first, then by file, line and rule."""
    located = failure.source_file is not None
    return (located, failure.source_file or "", failure.source_line or 0, RULES.index(failure.rule))


def _holdable(frame: pd.DataFrame) -> pd.DataFrame:
    """Lone UTF-16 surrogates → NUL in object columns.

    Arrow-backed strings (and GX's batch fingerprint, which builds them) cannot hold lone
    surrogates and would crash the run; NUL keeps the row failing ``encodable_text``.
    """
    objects = [c for c in frame.columns if frame[c].dtype == object]
    if not objects:
        return frame
    safe = frame.copy()
    for column in objects:
        safe[column] = safe[column].map(lambda v: _LONE_SURROGATE.sub("\x00", v) if isinstance(v, str) else v)
    return safe


def _failures(result, frame: pd.DataFrame) -> list[RuleFailure]:
    """One failed expectation result → RuleFailures naming the offending source lines."""
    config = result.expectation_config
    rule, column = config.meta["rule"], config.kwargs.get("column")
    found = result.result

    if rule == "row_count":
        detail = f"{found.get('observed_value', len(frame))} rows < min_rows {config.kwargs['min_value']}"
        return [RuleFailure(rule, None, None, None, detail)]
    if "partial_unexpected_index_list" not in found:  # GX raised instead of checking
        missing = set(config.kwargs.get("column_list") or [column]) - set(frame.columns)
        detail = "column missing" if missing else "could not be checked"
        return [RuleFailure(rule, column, None, None, detail)]

    rows = found["partial_unexpected_index_list"]
    if rule == "self_contradiction":
        return _contradictions(frame, rows)
    first_row = frame.index.to_series().groupby(frame[column]).transform("min") if rule == "duplicate" else None
    failures = []
    for row in rows:
        if rule == "duplicate":
            if first_row[row] == row:
                continue  # the first occurrence is fine; its later copies name it
            detail = f"same annotator, text and label as {_where(frame, int(first_row[row]), relative_to=row)}"
        else:
            detail = _detail(rule, frame.at[row, column], config.kwargs)
        failures.append(RuleFailure(rule, column, *_source(frame, row), detail, row=int(row)))
    unlisted = found["unexpected_count"] - len(rows)
    if unlisted > 0:
        failures.append(RuleFailure(rule, column, None, None, f"{unlisted} more row(s) fail; only {len(rows)} listed"))
    return failures


def _detail(rule: str, value, kwargs: dict) -> str:
    if rule == "required_field":
        return "missing value"
    if rule == "non_empty_text":
        return f"empty or whitespace-only: {_quote(value)}"
    if rule == "max_length":
        return f"{len(value)} chars > max {kwargs['max_value']}: {_quote(value)}"
    if rule == "rating_range":
        return f"{float(value):g} not within [1, 7]"
    if rule == "label_domain":
        return f"{_quote(value)} not in {list(LABELS)}"
    if rule == "iso_timestamp":
        return f"{_quote(value)} is not an ISO-8601 date or date-time (2024-05-01, 2024-05-01T14:30:00Z)"
    if rule == "encodable_text":
        what = "a lone UTF-16 surrogate (not writable as UTF-8)" if _LONE_SURROGATE.search(value) else "a NUL character"
        return f"contains {what}: {_quote(value)}"
    raise ValueError(f"no detail for rule {rule!r}")


def _contradictions(frame: pd.DataFrame, rows: list[int]) -> list[RuleFailure]:
    """Every judgement of the listed rows' (annotator, item, pair) groups whose annotator also
    gave the item the opposite label, naming the line(s) it contradicts. Whole groups: a group
    cut by MAX_FAILURES_PER_RULE must not leave one side behind."""
    if not {"label", "pair_id"} <= set(frame.columns):  # reported by the rules on those columns
        return []
    pair_ids = frame["pair_id"].where(frame["pair_id"].notna(), None)
    keys = list(zip(frame["annotator"], frame["item_id"], pair_ids))
    listed = {keys[row] for row in rows}
    groups: dict[tuple, list[int]] = {}
    for row, key in enumerate(keys):
        if key in listed:
            groups.setdefault(key, []).append(row)
    failures = []
    for members in groups.values():
        for row in members:
            label = frame.at[row, "label"]
            against = [other for other in members if frame.at[other, "label"] == OPPOSITE.get(label)]
            if against:
                where = ", ".join(_where(frame, other, relative_to=row) for other in against)
                detail = (f"annotator {_quote(frame.at[row, 'annotator'])} labelled this item {label} here and "
                          f"{OPPOSITE[label]} on {where}")
                failures.append(RuleFailure("self_contradiction", None, *_source(frame, row), detail, row=row))
    return failures


def _source(frame: pd.DataFrame, row: int) -> tuple[str | None, int | None]:
    source_file = frame.at[row, "source_file"] if "source_file" in frame.columns else None
    source_line = frame.at[row, "source_line"] if "source_line" in frame.columns else None
    return (
        None if pd.isna(source_file) else str(source_file),
        None if pd.isna(source_line) else int(source_line),
    )


def _where(frame: pd.DataFrame, row: int, relative_to: int) -> str:
    """``line 3``, or ``other.jsonl:3`` when the row came from a different file."""
    source_file, source_line = _source(frame, row)
    if source_file == _source(frame, relative_to)[0]:
        return f"line {source_line}"
    return f"{source_file}:{source_line}"


def _quote(value) -> str:
    """``repr`` (escapes NUL, newlines, surrogates) cut to MAX_VALUE_CHARS."""
    text = repr(value)
    return text if len(text) <= MAX_VALUE_CHARS else text[: MAX_VALUE_CHARS - 1] + "…"
