"""A versioned dataset: judgements and items in Parquet, the quarantine, and a manifest.

``records.parquet`` keeps every judgement (what people said); ``items.parquet`` one training
row per judged item (what the aggregation rule made of it); ``quarantine.jsonl`` the rows set
aside. The version is a hash of judgements and items, not of file bytes or a timestamp, so
re-ingesting the same data with the same rule gives the same version and DVC sees nothing new.
Splits are decided by a hash of the prompt, so a prompt's rows stay together and adding data
never moves an old row from train into test.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd

from components.atomic import replaced_folder
from components.data.aggregation import ITEM_COLUMNS
from components.data.quarantine import QUARANTINE_FILE, write_quarantine
from components.data.records import COLUMNS, LABELS
from components.params import DataParams

RECORDS_FILE = "records.parquet"
ITEMS_FILE = "items.parquet"
MANIFEST_FILE = "manifest.json"
SPLITS = ("train", "dev", "test")


def assign_splits(frame: pd.DataFrame, data: DataParams) -> pd.DataFrame:
    """Each prompt's split from a hash of its text and its source's fractions
    (``data.source_splits``, else ``data.dev_fraction``/``test_fraction``). A prompt found in
    several sources takes the fractions of the one that holds out most, so a prompt held out
    by any source is never trained on through another (or by an owner's adapter)."""
    fractions = frame["source"].map(lambda source: data.fractions(source))
    test = fractions.map(lambda f: f.test_fraction)
    dev = fractions.map(lambda f: f.dev_fraction)
    strictest = test.groupby(frame["prompt_id"]).idxmax()   # per prompt: the row whose source holds out most
    test = frame["prompt_id"].map(test[strictest.values].set_axis(strictest.index))
    dev = frame["prompt_id"].map(dev[strictest.values].set_axis(strictest.index))
    position = frame["prompt_id"].map(lambda pid: int(pid[:8], 16) / 16**8)
    split = pd.Series("train", index=frame.index)
    split[position < test + dev] = "dev"
    split[position < test] = "test"
    return frame.assign(split=split)


class HeldOutLeakError(AssertionError):
    """A prompt landed both in training and in a held-out split: every gate would be contaminated."""


def check_held_out(frame: pd.DataFrame) -> None:
    """Assert that no prompt is in more than one split (``frame`` has ``prompt_id`` and ``split``)."""
    splits = frame.groupby("prompt_id")["split"].nunique()
    if (splits > 1).any():
        leaked = ", ".join(splits[splits > 1].index[:5])
        raise HeldOutLeakError(f"{int((splits > 1).sum())} prompt(s) in more than one split (e.g. {leaked}): "
                               "a held-out prompt would be trained on")


def content_version(judgements: pd.DataFrame, items: pd.DataFrame) -> str:
    digest = hashlib.sha256()
    for frame, columns in ((judgements, COLUMNS), (items, ITEM_COLUMNS)):
        for row in frame.sort_values("id")[columns].itertuples(index=False):
            digest.update(json.dumps(list(row), default=str, ensure_ascii=False).encode("utf-8", "surrogatepass"))
    return digest.hexdigest()[:16]


def scope_versions(judgements: pd.DataFrame, items: pd.DataFrame) -> dict[str, str]:
    """A content version per scope: ``global`` (the base model's rows) and each owner's. A
    model is due again only when its own scope changed, not when another owner's feedback did."""
    def scope(frame: pd.DataFrame) -> pd.Series:
        return frame["owner"].fillna("").replace("", "global")

    return {name: content_version(judgements[scope(judgements) == name], items[scope(items) == name])
            for name in sorted(set(scope(items)))}


def source_sha256(path: Path) -> str:
    """SHA-256 of a source file's bytes, or of a folder's relative file names and bytes."""
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]:
        if path.is_dir():
            digest.update(file.relative_to(path).as_posix().encode() + b"\0")
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _counts(frame: pd.DataFrame) -> dict:
    return {"labels": {label: int((frame["label"] == label).sum()) for label in LABELS},
            "splits": {split: int((frame["split"] == split).sum()) for split in SPLITS}}


def build_manifest(judgements: pd.DataFrame, items: pd.DataFrame, sources: list[Path], extra: dict | None = None) -> dict:
    """Version and counts: ``n_rows``/``labels``/``splits`` count judgements, ``items`` the training rows.
    ``source``/``source_sha256`` name the first source; ``sources`` lists each with its hash."""
    return {
        "version": content_version(judgements, items),
        "scope_versions": scope_versions(judgements, items),
        "n_rows": len(judgements),
        **_counts(judgements),
        "items": {"n": len(items), **_counts(items)},
        "source": str(sources[0]),
        "source_sha256": source_sha256(Path(sources[0])),
        "sources": {str(path): source_sha256(Path(path)) for path in sources},
        "columns": COLUMNS,
        "item_columns": ITEM_COLUMNS,
        **(extra or {}),
    }


def write_dataset(out_dir: str | Path, judgements: pd.DataFrame, items: pd.DataFrame, quarantine: list[dict],
                  manifest: dict, files: dict[str, str] | None = None) -> None:
    """Write everything atomically: a half-written dataset never replaces a good one.
    ``files`` maps further file names (validation report, data card) to their text."""
    with replaced_folder(Path(out_dir)) as staging:
        judgements.sort_values("id").reset_index(drop=True)[COLUMNS].to_parquet(staging / RECORDS_FILE, index=False)
        items.sort_values("id").reset_index(drop=True)[ITEM_COLUMNS].to_parquet(staging / ITEMS_FILE, index=False)
        write_quarantine(quarantine, staging / QUARANTINE_FILE)
        for name, text in {MANIFEST_FILE: json.dumps(manifest, indent=2) + "\n", **(files or {})}.items():
            (staging / name).write_text(text)


def read_manifest(directory: str | Path) -> dict:
    """The dataset version's manifest (version, counts, quarantine, aggregation, ...)."""
    path = Path(directory) / MANIFEST_FILE
    if not path.exists():
        raise FileNotFoundError(f"{directory}: no {MANIFEST_FILE}; run `alignpipe ingest` first")
    return json.loads(path.read_text())


def _read(directory: str | Path, name: str) -> tuple[pd.DataFrame, dict]:
    manifest = read_manifest(directory)
    return pd.read_parquet(Path(directory) / name), manifest


def read_dataset(directory: str | Path) -> tuple[pd.DataFrame, dict]:
    """Every judgement kept (one row per annotator's label), and the manifest."""
    return _read(directory, RECORDS_FILE)


def read_items(directory: str | Path) -> tuple[pd.DataFrame, dict]:
    """The training rows (one per item, with its aggregated label and agreement), and the manifest."""
    return _read(directory, ITEMS_FILE)
