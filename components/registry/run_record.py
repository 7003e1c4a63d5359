"""What the parent MLflow run of a retrain holds, so that a reviewer finds it in one place:
the dataset (as an MLflow dataset input), its data card, validation report and manifest, the
params actually used, held-out metrics with intervals, per-pair evidence and every plot."""

from __future__ import annotations

import warnings
from pathlib import Path

import mlflow

from components.data.dataset import read_items


def log_dataset_input(dataset_dir: Path, source: str) -> None:
    """The training items as an MLflow dataset: its digest is the dataset's content version,
    its source the file it was ingested from (shown under "Datasets" on the run page)."""
    items, manifest = read_items(dataset_dir)
    with warnings.catch_warnings():
        # MLflow registers its local-file source class twice and warns that the choice is ambiguous
        warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted")
        # ...and hints that integer columns cannot hold missing values: these are counts, never missing
        warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer column")
        dataset = mlflow.data.from_pandas(items, source=str(Path(source).resolve()), name=Path(source).name,
                                          digest=manifest["version"])
        mlflow.log_input(dataset, context="training", tags={"data_version": manifest["version"],
                                                             "quarantined_rows": str(manifest.get("quarantined_rows", 0))})


def log_outputs(root: Path, files: dict[str, list[Path]]) -> None:
    """Each existing file under ``root`` in its artifact folder (``{"dataset": [...]}``)."""
    for folder, paths in files.items():
        for path in paths:
            if (root / path).is_file():
                mlflow.log_artifact(str(root / path), artifact_path=folder or None)


def plot_files(plots_dir: Path) -> list[Path]:
    return sorted(plots_dir.rglob("*.png")) if plots_dir.is_dir() else []
