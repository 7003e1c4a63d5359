"""Consent and provenance: withdrawals honoured, e-mail annotators pseudonymised everywhere."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from components.data import consent
from components.data.dataset import read_dataset, read_items
from conftest import write_params
from flows.cli import main

EMAIL = "Alice.Rater@Example.org"


def feedback_file(path: Path, extra: list[dict] | None = None) -> Path:
    """60 items, each judged by an annotator id and by an e-mail annotator."""
    rows = []
    for i in range(60):
        base = {"prompt": f"Human: request {i}?\n\nAssistant:", "response": f"reply {i}", "label": "negative"}
        rows += [{**base, "annotator": "rater-7"}, {**base, "annotator": EMAIL}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows + (extra or [])))
    return path


def ingest(tmp_path: Path, source: Path, withdrawals: list[str] | None = None, name: str = "dataset",
           **overrides) -> tuple[int, Path]:
    listed = tmp_path / f"{name}-withdrawals.txt"
    listed.write_text("# withdrawn\n" + "".join(f"{entry}  # asked on request\n" for entry in withdrawals or []))
    params = write_params(tmp_path, {"data.withdrawals": str(listed), **overrides})
    out = tmp_path / name
    return main(["--params", str(params), "ingest", "--source", str(source), "--out", str(out)]), out


def every_text(out: Path) -> str:
    """Everything a dataset version holds, as text: its files and its Parquet tables."""
    texts = [p.read_text() for p in out.iterdir() if p.suffix in (".json", ".jsonl", ".md")]
    texts += [read_dataset(out)[0].to_json(), read_items(out)[0].to_json()]
    return "\n".join(texts)


def test_email_annotators_are_pseudonymised_before_they_reach_the_dataset(tmp_path):
    broken = {"prompt": "Human: x?\n\nAssistant:", "response": "", "label": "negative", "annotator": EMAIL}
    status, out = ingest(tmp_path, feedback_file(tmp_path / "fb.jsonl", [broken]),
                         **{"validation.max_bad_fraction": 0.05})
    assert status == 0
    judged, _ = read_dataset(out)
    alias = consent.pseudonym(EMAIL)
    assert alias.startswith("anon-") and len(alias) == len("anon-") + 12
    assert set(judged["annotator"]) == {"rater-7", alias}
    text = every_text(out).lower()
    assert "example.org" not in text and "alice" not in text
    assert alias in (out / "data_card.md").read_text()
    [quarantined] = [json.loads(line) for line in (out / "quarantine.jsonl").read_text().splitlines()]
    assert quarantined["raw"]["annotator"] == alias  # set aside, still pseudonymous


def test_pseudonyms_are_stable_case_insensitive_and_leave_other_ids_alone():
    assert consent.pseudonym(EMAIL) == consent.pseudonym(EMAIL.lower()) == consent.pseudonym(f" {EMAIL} ")
    assert consent.pseudonym("rater-7") == "rater-7"
    assert consent.scrub(f"contact {EMAIL} now") == f"contact {consent.pseudonym(EMAIL)} now"


def test_the_salt_file_is_created_once_private_and_outside_the_repo(tmp_path, monkeypatch):
    salt_file = tmp_path / "config" / "pseudonym.salt"
    monkeypatch.delenv(consent.SALT_ENV)
    monkeypatch.setenv(consent.SALT_FILE_ENV, str(salt_file))
    first = consent._salt.__wrapped__()
    assert salt_file.exists() and stat.S_IMODE(salt_file.stat().st_mode) == 0o600
    assert len(first) == 64 and consent._salt.__wrapped__() == first


@pytest.mark.parametrize("withdrawn", ["rater-7", EMAIL.upper(), "judgement", "item"])
def test_withdrawals_are_honoured_counted_and_never_named(tmp_path, withdrawn):
    source = feedback_file(tmp_path / "fb.jsonl")
    status, before = ingest(tmp_path, source, name="before")
    assert status == 0
    judged, manifest = read_dataset(before)
    first = judged[judged["annotator"] == "rater-7"].iloc[0]
    entry = {"judgement": first["id"], "item": first["item_id"]}.get(withdrawn, withdrawn)
    expected = {"rater-7": (60, 1), EMAIL.upper(): (60, 1), "judgement": (1, 0), "item": (2, 0)}[withdrawn]

    status, after = ingest(tmp_path, source, [entry], name="after")
    assert status == 0
    kept, new_manifest = read_dataset(after)
    assert new_manifest["version"] != manifest["version"] and len(kept) == 120 - expected[0]
    assert new_manifest["withdrawals"] == {"listed": 1, "judgements": expected[0], "annotators": expected[1]}
    assert not kept["id"].isin(judged.loc[judged["annotator"] == entry, "id"]).any()
    card = (after / "data_card.md").read_text()
    assert f"Withdrawn (consent): {expected[0]} judgements, {expected[1]} annotator(s)" in card
    named = card + (after / "manifest.json").read_text() + (after / "validation.json").read_text()
    assert entry.lower() not in named.lower() and consent.pseudonym(entry) not in named


def test_a_missing_withdrawals_file_is_a_clear_user_error(tmp_path, capsys):
    params = write_params(tmp_path, {"data.withdrawals": str(tmp_path / "absent.txt")})
    source = feedback_file(tmp_path / "fb.jsonl")
    assert main(["--params", str(params), "ingest", "--source", str(source), "--out", str(tmp_path / "ds")]) == 2
    assert "withdrawals file not found (data.withdrawals)" in capsys.readouterr().err


def test_the_shipped_withdrawals_file_lists_nobody():
    assert consent.read_withdrawals(Path(__file__).resolve().parent.parent / "data" / "withdrawals.txt") == set()
