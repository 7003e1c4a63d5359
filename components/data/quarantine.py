"""Quarantine: row-level problems set aside with file, line, rule and the raw row.

Real feedback files hold a few broken rows (a malformed line, an empty response). Refusing the
whole file for them loses every good row; silently dropping them loses the bad ones. Instead
each problem becomes one line of ``quarantine.jsonl`` inside the dataset version, and ingest
goes on while the share of affected source rows stays at most ``validation.max_bad_fraction``.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from components.errors import UserError

QUARANTINE_FILE = "quarantine.jsonl"
MAX_REPORTED = 50


@dataclass(frozen=True)
class Issue:
    """One problem (or, for rows read as unpaired records, one note) at FILE:LINE."""

    file: str
    line: int
    rule: str
    message: str
    raw: Any = None   # the source row, line text or canonical record: nothing is lost

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.rule}: {self.message}"

    def as_dict(self) -> dict:
        return asdict(self)


class TooManyBadRowsError(UserError, ValueError):
    """More of the source's rows are broken than ``validation.max_bad_fraction`` allows."""

    def __init__(self, entries: list[Issue], source_rows: int, max_fraction: float):
        self.entries = entries
        shown = "\n".join(f"  {e}" for e in entries[:MAX_REPORTED])
        more = f"\n  ... and {len(entries) - MAX_REPORTED} more" if len(entries) > MAX_REPORTED else ""
        super().__init__(f"{affected_rows(entries)} of {source_rows} source rows have problems, more than "
                         f"validation.max_bad_fraction {max_fraction}:\n{shown}{more}")


def dataset_location(files: Sequence[str | Path] = ()) -> str:
    """Where a problem of the whole dataset lies: every source read into it (``a.jsonl,
    b.jsonl (dataset)``), so the user knows which files to look at."""
    return ", ".join([*map(str, files), "(dataset)"]).replace(", (dataset)", " (dataset)")


def affected_rows(entries: list[Issue]) -> int:
    """Distinct source rows with a problem (an HH row gives two records, yet is one row)."""
    return len({(e.file, e.line) for e in entries})


def check_bad_fraction(entries: list[Issue], source_rows: int, max_fraction: float) -> None:
    if entries and affected_rows(entries) > max_fraction * source_rows:
        raise TooManyBadRowsError(sorted(entries, key=lambda e: (e.file, e.line)), source_rows, max_fraction)


def summarise(entries: list[Issue], source_rows: int) -> dict:
    """What the report, manifest and card say: rows affected, their share, counts per rule."""
    return {
        "rows": affected_rows(entries),
        "entries": len(entries),
        "source_rows": source_rows,
        "fraction": round(affected_rows(entries) / source_rows, 6) if source_rows else 0.0,
        "by_rule": dict(sorted(Counter(e.rule for e in entries).items())),
    }


def write_quarantine(entries: list[dict], path: Path) -> None:
    """One JSON line per entry (``Issue.as_dict()``), ordered by file, line and rule."""
    with open(path, "w", encoding="utf-8") as handle:
        for entry in sorted(entries, key=lambda e: (e["file"], e["line"], e["rule"])):
            # ASCII escapes: lone surrogates in broken text survive the round trip
            handle.write(json.dumps(entry, default=str) + "\n")


def read_quarantine(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]
