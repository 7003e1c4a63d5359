"""The people's app, below the web layer: accounts, the feedback database and its migrations,
the export of feedback for ingest, which model serves whom, and the generation queue.

Nothing here imports FastAPI or Prefect (``webapp/`` is the web layer, ``flows/app_commands.py``
the command). Importing this package is light: the params stage names :data:`EXPORT_NAME`.
"""

EXPORT_NAME = "app_feedback.jsonl"   # under artifacts/inputs/: what ingest reads for the data.source entry `app:`
SOURCE = "app"                        # the rows' `source`
EXPORT_TAG = "app.export"             # on registered versions: the sha256 of the app export their data held
LEFT_OUT_TAG = "app.left_out"         # ... and that export's lines ingest left out (over the cap, quarantined)
DATASET_TAG = "dataset_version"      # ... and the whole dataset's version (an adapter's tags name it too)
TAG_CHARS = 4000


def version_tags(manifest: dict) -> dict[str, str]:
    """What a registered version records of the app feedback its dataset held (none: no tags),
    so that a person can learn which versions used their rows (``provenance.py``)."""
    export = next((sha for path, sha in manifest.get("sources", {}).items() if path.endswith(EXPORT_NAME)), None)
    if export is None:
        return {}
    app = manifest.get("app", {})
    lines = ",".join(map(str, sorted({*app.get("over_cap_lines", []), *app.get("quarantined_lines", [])})))
    return {EXPORT_TAG: export, LEFT_OUT_TAG: lines if len(lines) <= TAG_CHARS else lines[:TAG_CHARS].rsplit(",", 1)[0] + ",...",
            DATASET_TAG: manifest["version"]}
