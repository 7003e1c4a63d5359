"""What a run uses: its params resolved into one file, and fingerprints of the inputs they name.

The ``params`` stage of ``dvc.yaml`` writes both on every ``dvc repro``; the other stages read
and declare only these, so DVC reruns a stage exactly when something it uses changed, whether
the params came from ``params.yaml``, another file (``alignpipe --params``) or ``-S`` overrides.
Kept free of heavy imports: it runs before every pipeline.
"""

from __future__ import annotations

import json
from pathlib import Path

from components.fingerprint import fingerprint
from components.params import Params

RESOLVED_PARAMS = Path("artifacts") / "params.yaml"
INPUTS_FILE = Path("artifacts") / "inputs.json"


def input_fingerprints(params: Params) -> dict[str, str]:
    """The data source, the withdrawals list and a local reference model folder, by content;
    a hub model id stands for itself (nothing is downloaded to fingerprint it)."""
    data, withdrawals, reference = Path(params.data.source), Path(params.data.withdrawals), params.reference.model
    return {
        "data_source": fingerprint(data) if data.exists() else "missing",
        "withdrawals": fingerprint(withdrawals) if withdrawals.is_file() else "missing",
        "reference_model": fingerprint(reference) if Path(reference).is_dir() else reference,
    }


def resolve_params(params: Params, named: str, overrides: dict, out: Path = RESOLVED_PARAMS,
                   inputs_file: Path = INPUTS_FILE) -> dict:
    """Write every setting the run uses (defaults included) to ``out`` and the input
    fingerprints to ``inputs_file``; returns both in short."""
    header = (f"Resolved by `alignpipe stage params` from {named}" + (f" with -S {overrides}" if overrides else "")
              + ".\nThe stages read this file: edit params.yaml (or pass --params/-S), not this.")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(params.to_yaml(header))
    inputs = input_fingerprints(params)
    inputs_file.write_text(json.dumps(inputs, indent=2, sort_keys=True) + "\n")
    return {"params": named, "overrides": overrides, **inputs}
