"""Content fingerprints of the files and folders a run reads from outside the pipeline.

DVC only notices a change in what it is told to watch. The data source and a local
``reference.model`` folder are named in params, so the ``params`` stage fingerprints them on
every ``dvc repro`` into ``artifacts/inputs.json``, and the stages that read them declare
those fingerprints as params: weights rewritten in place make the reference stage stale.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

# Files above this size (model weights of a 7B model) are fingerprinted by size and
# modification time instead of content, so that `dvc repro` does not re-read gigabytes
# each time; rewriting such a file in place still changes its modification time.
CONTENT_HASH_LIMIT = 256 * 1024 * 1024


def _file_digest(path: Path, digest) -> None:
    stat = path.stat()
    if stat.st_size > CONTENT_HASH_LIMIT:
        digest.update(f"size={stat.st_size} mtime_ns={stat.st_mtime_ns}".encode())
        return
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)


def fingerprint(path: str | Path) -> str:
    """SHA-256 over a file's bytes, or over a folder's relative file names and their bytes."""
    path = Path(path)
    digest = hashlib.sha256()
    if path.is_dir():
        for file in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(file.relative_to(path).as_posix().encode() + b"\0")
            _file_digest(file, digest)
    else:
        _file_digest(path, digest)
    return digest.hexdigest()
