"""Progress for long work: bars on a terminal, plain ordered lines in a log.

One rule for every loop (SFT, relearn, sampling, scoring): a tqdm bar when stderr is a
terminal; otherwise no carriage returns, only a few complete lines a log file can keep.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def interactive() -> bool:
    """True when a person watches a terminal (bars); False when output goes to a file or pipe."""
    return sys.stderr.isatty()


def progress(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """``items`` with a bar on a terminal, silently otherwise (callers log their own summary)."""
    return iter(tqdm(items, desc=description, total=total, disable=not interactive(), leave=False))

