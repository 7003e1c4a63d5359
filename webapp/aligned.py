"""Who this model is aligned to: the data cards and gate lines of the versions that answer the
person, the project's newest data version, and which data versions their own feedback went into."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from markdown_it import MarkdownIt

from components.app import feedback as flags
from components.app.provenance import model_card, model_names, uses
from components.app.serving import NoModel, resolve
from webapp.pages import render, signed_in
from webapp.state import app_state

router = APIRouter()
# raw HTML in a card is shown as text, never run; tables as in the card's markdown
_markdown = MarkdownIt("commonmark", {"html": False}).enable("table")


def card_html(markdown: str) -> str:
    return _markdown.render(markdown)


@router.get("/aligned")
def aligned(request: Request):
    config = app_state(request).config
    with signed_in(request) as (db, me):
        try:
            served = resolve(config.params, config.policies, me)
        except NoModel as err:
            served, cards, missing = None, [], str(err)
        else:
            missing = ""
            cards = [model_card(served.model_name, served.model_version)]
            if served.adapter_name:
                cards.append(model_card(served.adapter_name, served.adapter_version))
        newest = Path(config.dataset_dir) / "data_card.md"
        rows = flags.listing(db, me)
        used = uses(db, rows, model_names(config.params, config.policies, me), config.dataset_dir)
        versions = sorted({use.text() for found in used.values() for use in found})
        return render(request, "aligned.html", me=me, served=served, missing=missing,
                      cards=[(card, card_html(card.card)) for card in cards],
                      newest=card_html(newest.read_text()) if newest.is_file() else "", versions=versions,
                      mine=sum(row.withdrawn_at is None for row in rows))
