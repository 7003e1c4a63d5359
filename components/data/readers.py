"""Read negative-feedback sources into canonical records (one per judgement).

Formats: HH-RLHF JSONL(.gz) (``chosen``/``rejected`` dialogues), generic JSONL or Parquet
with ``prompt``/``response``/``label`` columns, a local ``datasets`` directory saved
with ``save_to_disk`` holding either shape, and an XSTest folder (``xstest.py``). JSON lines
are UTF-8 (a byte-order mark and CRLF line ends are fine); a line longer than
``MAX_LINE_BYTES`` is never held in memory whole. A row that cannot be read (not UTF-8, too
long, not JSON, a missing field, a wrong type) is returned as an :class:`Issue` with its raw
content for the quarantine, and reading goes on; only file-level problems (missing, unknown
format, unreadable, no row that is a dataset row) raise :class:`IngestError`. Content rules
(empty text, duplicates, ...) belong to the validation suite. Annotator e-mails are pseudonymised here, before anything
else sees them.
"""

from __future__ import annotations

import codecs
import gzip
import json
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from components.data.consent import pseudonym, scrub
from components.data.quarantine import MAX_REPORTED, Issue
from components.data.records import ASSISTANT, NEGATIVE, POSITIVE, Record, TurnError, content_id, render_turns
from components.data.xstest import XSTestFileError, is_xstest_folder, read_xstest
from components.errors import UserError

HH_SPLIT = f"\n\n{ASSISTANT}:"
MAX_LINE_BYTES = 4 * 2**20   # far above any row the length rules accept (validation.max_*_chars)
SHOWN_BYTES = 200            # of a line too long to read: what the quarantine keeps
UTF16_MARKS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
GENERIC_REQUIRED = ("prompt", "response", "label")
PROVENANCE_FIELDS = ("annotator", "annotated_at", "policy_tier", "owner", "group")
UNPAIRED_REASONS = {
    "hh_shared_prompt": "'chosen' and 'rejected' differ before their last assistant turn: read as two unpaired records",
    "hh_empty_side": "one side's response is empty: the other side is kept unpaired",
}


class IngestError(UserError, ValueError):
    """A source cannot be read; ``problems`` names file, line and rule of each."""

    def __init__(self, problems: list[Issue]):
        self.problems = problems
        shown = "\n".join(f"  {p}" for p in problems[:MAX_REPORTED])
        more = f"\n  ... and {len(problems) - MAX_REPORTED} more" if len(problems) > MAX_REPORTED else ""
        super().__init__(f"{len(problems)} problem(s) reading the source:\n{shown}{more}")


@dataclass(frozen=True)
class SourceRead:
    records: list[Record]
    problems: list[Issue]   # rows that could not be read: for the quarantine
    unpaired: list[Issue]   # HH rows read soundly as unpaired records, and why
    rows: int               # source rows (non-blank lines) seen
    notes: dict = field(default_factory=dict)   # source -> what its reader resolved or left out, counted


def read_source(path: str | Path, policy_tier: str = "global") -> SourceRead:
    """Every readable record of one source file or ``datasets`` directory, and every row that is not."""
    path = Path(path)
    file = str(path)
    if not path.exists():
        raise IngestError([Issue(file, 0, "source_exists", "no such file or directory")])
    if is_xstest_folder(path):
        try:
            read = read_xstest(path, policy_tier)
        except XSTestFileError as err:
            raise IngestError([err.issue]) from None
        return SourceRead(read.records, read.problems, [], read.rows, {file: dict(sorted(read.counts.items()))})
    records: list[Record] = []
    problems: list[Issue] = []
    unpaired: list[Issue] = []
    rows = 0
    for line, row in _rows(path):
        rows += 1
        if isinstance(row, _Unparsable):
            problems.append(Issue(file, line, row.rule, row.message, scrub(row.text)))
            continue
        try:
            read, note = _to_records(row, file, line, policy_tier)
        except _RowProblem as problem:
            problems.append(Issue(file, line, problem.rule, problem.message, _private(row)))
            continue
        records.extend(read)
        if note:
            unpaired.append(Issue(file, line, note, UNPAIRED_REASONS[note]))
    if not records:
        what = f"none of its {rows} rows is a dataset row" if rows else "the source holds no rows"
        raise IngestError([Issue(file, 0, "non_empty_source", what)] + problems)
    return SourceRead(records, problems, unpaired, rows)


def read_sources(paths: list[str | Path], policy_tier: str = "global") -> SourceRead:
    """Several sources read as one (the main source and the owners' feedback): their records,
    problems and rows together; each record keeps its own file and line."""
    reads = [read_source(path, policy_tier) for path in paths]
    return SourceRead([r for read in reads for r in read.records], [p for read in reads for p in read.problems],
                      [u for read in reads for u in read.unpaired], sum(read.rows for read in reads),
                      {name: notes for read in reads for name, notes in read.notes.items()})


def _private(row: Any) -> Any:
    """The raw row for the quarantine, its annotator pseudonymised like every kept record's."""
    if isinstance(row, dict) and isinstance(row.get("annotator"), str):
        return {**row, "annotator": pseudonym(row["annotator"])}
    return row


@dataclass(frozen=True)
class _Unparsable:
    text: str
    message: str
    rule: str = "malformed_json"


class _RowProblem(Exception):
    def __init__(self, rule: str, message: str):
        super().__init__(message)
        self.rule, self.message = rule, message


def _rows(path: Path) -> Iterator[tuple[int, Any]]:
    """``(1-based line or row number, parsed row or _Unparsable)``; an unreadable file raises."""
    try:
        yield from _parsed_rows(path)
    except (EOFError, OSError, zlib.error, UnicodeError) as err:
        raise IngestError([Issue(str(path), 0, "readable_file", f"cannot be read to the end ({err})")]) from None


def _parsed_rows(path: Path) -> Iterator[tuple[int, Any]]:
    if path.is_dir():
        from datasets import load_from_disk

        for index, row in enumerate(load_from_disk(str(path))):
            yield index + 1, row
    elif path.name.endswith(".parquet"):
        import pyarrow
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
        except pyarrow.ArrowException as err:
            raise OSError(str(err)) from None
        for index, row in enumerate(table.to_pylist()):
            yield index + 1, row
    elif path.name.endswith((".jsonl", ".jsonl.gz", ".json", ".json.gz")):
        opener = gzip.open if path.name.endswith(".gz") else open
        with opener(path, "rb") as handle:
            for number, (raw, whole) in enumerate(_lines(handle), start=1):
                if number == 1 and raw.startswith(UTF16_MARKS):
                    raise IngestError([Issue(str(path), 0, "utf8_text", "the file is UTF-16 (it starts with a "
                                             "UTF-16 byte-order mark); save it as UTF-8")])
                if raw.strip():
                    yield number, _parse_line(raw.removeprefix(codecs.BOM_UTF8) if number == 1 else raw, whole)
    else:
        raise IngestError([Issue(str(path), 0, "known_format",
                                 "expected .jsonl, .jsonl.gz, .parquet or a datasets directory")])


def _lines(handle) -> Iterator[tuple[bytes, bool]]:
    """``(line, whole)`` per line; a line over ``MAX_LINE_BYTES`` gives its first bytes and
    ``False``, and the rest of it is skipped a chunk at a time."""
    while line := handle.readline(MAX_LINE_BYTES + 1):
        if len(line) <= MAX_LINE_BYTES or line.endswith(b"\n"):
            yield line, True
            continue
        head = line[:SHOWN_BYTES]
        while line and not line.endswith(b"\n"):
            line = handle.readline(MAX_LINE_BYTES)
        yield head, False


def _parse_line(raw: bytes, whole: bool) -> Any:
    """The JSON value of one line, or why it has none."""
    shown = raw.decode("utf-8", errors="backslashreplace").rstrip("\r\n")
    if not whole:
        return _Unparsable(shown + "…", f"longer than {MAX_LINE_BYTES} bytes", "max_line_bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        return _Unparsable(shown, f"not UTF-8 text (byte 0x{raw[err.start]:02x} at byte {err.start + 1} of the "
                                  "line); save the file as UTF-8", "utf8_text")
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        return _Unparsable(shown, f"not a JSON object ({err.msg})")


def _to_records(row: Any, file: str, line: int, policy_tier: str) -> tuple[list[Record], str | None]:
    """The row's records, and why they are unpaired when an HH row could not be read as a pair."""
    if not isinstance(row, dict):
        raise _RowProblem("malformed_json", f"expected a JSON object, got {type(row).__name__}")
    if "chosen" in row or "rejected" in row:
        return _hh_records(row, file, line, policy_tier)
    return [_generic_record(row, file, line, policy_tier)], None


def _require_text(row: dict, field: str) -> str:
    if row.get(field) is None:
        raise _RowProblem("missing_field", f"field {field!r} is missing")
    if not isinstance(row[field], str):
        raise _RowProblem("field_type", f"field {field!r} must be text, got {type(row[field]).__name__}")
    return row[field]


def _split_hh(dialogue: str, field: str) -> tuple[str, str]:
    cut = dialogue.rfind(HH_SPLIT)
    if cut < 0:
        raise _RowProblem("hh_format", f"{field!r} has no '{HH_SPLIT.strip()}' turn")
    return dialogue[: cut + len(HH_SPLIT)].strip(), dialogue[cut + len(HH_SPLIT) :].strip()


def _hh_records(row: dict, file: str, line: int, policy_tier: str) -> tuple[list[Record], str | None]:
    """A negative and a positive sharing the prompt; unpaired when the sides' prompts differ or
    one response is empty (the validation suite then quarantines the empty one)."""
    chosen, rejected = _require_text(row, "chosen"), _require_text(row, "rejected")
    prompt, negative = _split_hh(rejected, "rejected")
    chosen_prompt, positive = _split_hh(chosen, "chosen")
    note = None
    if chosen_prompt != prompt:
        note = "hh_shared_prompt"
    elif not (negative and positive):
        note = "hh_empty_side"
    common = dict(source="hh-rlhf", source_file=file, source_line=line, policy_tier=policy_tier,
                  pair_id=None if note else content_id(chosen, rejected))
    return [Record(prompt=prompt, response=negative, label=NEGATIVE, **common),
            Record(prompt=chosen_prompt, response=positive, label=POSITIVE, **common)], note


def _generic_record(row: dict, file: str, line: int, policy_tier: str) -> Record:
    missing = [f for f in GENERIC_REQUIRED if row.get(f) is None]
    if missing:
        raise _RowProblem("missing_field", f"field(s) {missing} missing (need {list(GENERIC_REQUIRED)}, "
                                           "or 'chosen'/'rejected' for HH-RLHF)")
    prompt = row["prompt"]
    if isinstance(prompt, list):
        prompt = _render_messages(prompt)
    elif not isinstance(prompt, str):
        raise _RowProblem("field_type", f"field 'prompt' must be text or a list of messages, got {type(prompt).__name__}")
    label = row["label"]
    if isinstance(label, str):
        label = label.strip().lower()
    provenance = {f: str(row[f]) for f in PROVENANCE_FIELDS if row.get(f) is not None}
    provenance.setdefault("policy_tier", policy_tier)
    if "annotator" in provenance:
        provenance["annotator"] = pseudonym(provenance["annotator"])
    return Record(
        rating=_rating(row.get("rating")),
        prompt=prompt.strip(),
        response=_require_text(row, "response").strip(),
        label=str(label),
        source=str(row.get("source") or "generic"),
        source_file=file,
        source_line=line,
        pair_id=str(row["pair_id"]) if row.get("pair_id") is not None else None,
        **provenance,
    )


def _rating(value: Any) -> float | None:
    """An optional numeric score (1..7 by the sandbox's convention; the suite checks the range)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _RowProblem("field_type", f"field 'rating' must be a number, got {type(value).__name__}")
    return float(value)


def _render_messages(messages: list) -> str:
    turns = []
    for message in messages:
        if not isinstance(message, dict) or "content" not in message or "role" not in message:
            raise _RowProblem("field_type", "'prompt' messages need 'role' and 'content'")
        turns.append((str(message["role"]), str(message["content"])))
    try:
        return render_turns(turns)
    except TurnError as err:   # a role a transcript cannot show: the row is quarantined
        raise _RowProblem("message_role", str(err)) from None
