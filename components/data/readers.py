"""Read negative-feedback sources into canonical records.

Formats: HH-RLHF JSONL(.gz) (``chosen``/``rejected`` dialogues), generic JSONL or Parquet
with ``prompt``/``response``/``label`` columns, and a local ``datasets`` directory saved
with ``save_to_disk`` holding either shape. Structural problems (a line that is not JSON,
a missing field) are collected and raised together, each naming file, line and rule;
content rules (empty text, duplicates, ...) belong to the validation suite.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from components.data.records import ASSISTANT, NEGATIVE, POSITIVE, Record, content_id, render_turns
from components.errors import UserError

HH_SPLIT = f"\n\n{ASSISTANT}:"
GENERIC_REQUIRED = ("prompt", "response", "label")
PROVENANCE_FIELDS = ("annotator", "annotated_at", "policy_tier")
MAX_REPORTED = 50


@dataclass(frozen=True)
class SourceProblem:
    file: str
    line: int
    rule: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.rule}: {self.message}"


class IngestError(UserError, ValueError):
    """A source cannot be read; ``problems`` lists every offending line (file, line, rule)."""

    def __init__(self, problems: list[SourceProblem]):
        self.problems = problems
        shown = "\n".join(f"  {p}" for p in problems[:MAX_REPORTED])
        more = f"\n  ... and {len(problems) - MAX_REPORTED} more" if len(problems) > MAX_REPORTED else ""
        super().__init__(f"{len(problems)} problem(s) reading the source:\n{shown}{more}")


def read_source(path: str | Path, policy_tier: str = "global") -> list[Record]:
    """All records of one source file or ``datasets`` directory, or an ``IngestError``."""
    path = Path(path)
    if not path.exists():
        raise IngestError([SourceProblem(str(path), 0, "source_exists", "no such file or directory")])
    problems: list[SourceProblem] = []
    records: list[Record] = []
    for line, row in _rows(path, problems):
        try:
            records.extend(_to_records(row, str(path), line, policy_tier))
        except _RowProblem as problem:
            problems.append(SourceProblem(str(path), line, problem.rule, problem.message))
    if problems:
        raise IngestError(problems)
    if not records:
        raise IngestError([SourceProblem(str(path), 0, "non_empty_source", "the source holds no rows")])
    return records


class _RowProblem(Exception):
    def __init__(self, rule: str, message: str):
        super().__init__(message)
        self.rule, self.message = rule, message


def _rows(path: Path, problems: list[SourceProblem]) -> Iterator[tuple[int, Any]]:
    """``(1-based line or row number, parsed row)``; unparsable lines go to ``problems``."""
    if path.is_dir():
        from datasets import load_from_disk

        for index, row in enumerate(load_from_disk(str(path))):
            yield index + 1, row
    elif path.name.endswith(".parquet"):
        import pyarrow.parquet as pq

        for index, row in enumerate(pq.read_table(path).to_pylist()):
            yield index + 1, row
    elif path.name.endswith((".jsonl", ".jsonl.gz", ".json", ".json.gz")):
        opener = gzip.open if path.name.endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8", errors="surrogateescape") as lines:
            for number, text in enumerate(lines, start=1):
                if not text.strip():
                    continue
                try:
                    yield number, json.loads(text)
                except json.JSONDecodeError as err:
                    problems.append(SourceProblem(str(path), number, "malformed_json", f"not a JSON object ({err.msg})"))
    else:
        raise IngestError([SourceProblem(str(path), 0, "known_format",
                                         "expected .jsonl, .jsonl.gz, .parquet or a datasets directory")])


def _to_records(row: Any, file: str, line: int, policy_tier: str) -> list[Record]:
    if not isinstance(row, dict):
        raise _RowProblem("malformed_json", f"expected a JSON object, got {type(row).__name__}")
    if "chosen" in row or "rejected" in row:
        return _hh_records(row, file, line, policy_tier)
    return [_generic_record(row, file, line, policy_tier)]


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


def _hh_records(row: dict, file: str, line: int, policy_tier: str) -> list[Record]:
    chosen, rejected = _require_text(row, "chosen"), _require_text(row, "rejected")
    prompt, negative = _split_hh(rejected, "rejected")
    chosen_prompt, positive = _split_hh(chosen, "chosen")
    if chosen_prompt != prompt:
        raise _RowProblem("hh_shared_prompt", "'chosen' and 'rejected' differ before their last assistant turn")
    common = dict(prompt=prompt, source="hh-rlhf", source_file=file, source_line=line,
                  pair_id=content_id(chosen, rejected), policy_tier=policy_tier)
    return [Record(response=negative, label=NEGATIVE, **common), Record(response=positive, label=POSITIVE, **common)]


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
    return Record(
        prompt=prompt.strip(),
        response=_require_text(row, "response").strip(),
        label=str(label),
        source=str(row.get("source") or "generic"),
        source_file=file,
        source_line=line,
        pair_id=str(row["pair_id"]) if row.get("pair_id") is not None else None,
        **provenance,
    )


def _render_messages(messages: list) -> str:
    turns = []
    for message in messages:
        if not isinstance(message, dict) or "content" not in message or "role" not in message:
            raise _RowProblem("field_type", "'prompt' messages need 'role' and 'content'")
        turns.append((str(message["role"]), str(message["content"])))
    return render_turns(turns)
