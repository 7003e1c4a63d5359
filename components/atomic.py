"""Files and folders written whole or not at all.

A stage killed mid-write (``kill -9``, a full disk) must never leave a half-written output
that a later run or stage reads as good: everything is written beside its target under a
temporary name, then renamed over it, which the file system does in one step.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


def write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    staging.write_text(text)
    os.replace(staging, path)


@contextlib.contextmanager
def replaced_folder(out_dir: Path) -> Iterator[Path]:
    """Yield an empty staging folder beside ``out_dir``; when the block ends without an error,
    it replaces ``out_dir``. A kill in between leaves the old folder, or none, never a mix."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if out_dir.exists():
        shutil.rmtree(out_dir)
    staging.rename(out_dir)
