"""A versioned dataset: canonical records in Parquet plus a manifest with a content hash.

The version is a hash of the records' content, not of the file bytes or a timestamp, so
re-ingesting the same data gives the same version and DVC sees nothing new. Splits are
decided by a hash of the prompt, so a prompt's rows stay together and adding data never
moves an old row from train into test.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path

import pandas as pd

from components.data.records import COLUMNS, LABELS

RECORDS_FILE = "records.parquet"
MANIFEST_FILE = "manifest.json"
SPLITS = ("train", "dev", "test")


def assign_splits(frame: pd.DataFrame, dev_fraction: float, test_fraction: float) -> pd.DataFrame:
    if not (0 <= dev_fraction and 0 <= test_fraction and dev_fraction + test_fraction < 1):
        raise ValueError("data.dev_fraction and data.test_fraction must be >= 0 and sum below 1")
    position = frame["prompt_id"].map(lambda pid: int(pid[:8], 16) / 16**8)
    split = pd.Series("train", index=frame.index)
    split[position < test_fraction + dev_fraction] = "dev"
    split[position < test_fraction] = "test"
    return frame.assign(split=split)


def content_version(frame: pd.DataFrame) -> str:
    digest = hashlib.sha256()
    for row in frame.sort_values("id")[COLUMNS].itertuples(index=False):
        digest.update(json.dumps(list(row), default=str, ensure_ascii=False).encode("utf-8", "surrogatepass"))
    return digest.hexdigest()[:16]


def file_sha256(path: Path) -> str:
    if path.is_dir():
        return "directory"
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_dataset(frame: pd.DataFrame, out_dir: str | Path, source: str | Path, extra: dict | None = None) -> dict:
    """Write records and manifest atomically: a half-written dataset never replaces a good one."""
    out_dir = Path(out_dir)
    frame = frame.sort_values("id").reset_index(drop=True)[COLUMNS]
    manifest = {
        "version": content_version(frame),
        "n_rows": len(frame),
        "labels": {label: int((frame["label"] == label).sum()) for label in LABELS},
        "splits": {split: int((frame["split"] == split).sum()) for split in SPLITS},
        "source": str(source),
        "source_sha256": file_sha256(Path(source)),
        "columns": COLUMNS,
        **(extra or {}),
    }
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    frame.to_parquet(staging / RECORDS_FILE, index=False)
    (staging / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
    if out_dir.exists():
        shutil.rmtree(out_dir)
    staging.rename(out_dir)
    return manifest


def read_dataset(directory: str | Path) -> tuple[pd.DataFrame, dict]:
    directory = Path(directory)
    if not (directory / MANIFEST_FILE).exists():
        raise FileNotFoundError(f"{directory}: no {MANIFEST_FILE}; run `alignpipe ingest` first")
    manifest = json.loads((directory / MANIFEST_FILE).read_text())
    return pd.read_parquet(directory / RECORDS_FILE), manifest
