"""A small generic feedback file with a planted behaviour, for end-to-end gate tests.

Every prompt has a helpful answer (positive) and an insulting one (negative), so a model that
learns from the negatives separates held-out pairs for real, and a candidate trained on
shuffled labels does not. Annotators are e-mail addresses (they must never reach MLflow),
topics fall into two groups, and two odd rows ride along to be quarantined.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

TOPICS = ["bread", "chess", "rivers", "tea", "bicycles", "volcanoes", "gardens", "trains", "owls", "maps",
          "clouds", "violins", "bridges", "cheese", "comets", "forests", "kites", "lanterns", "puzzles", "glaciers",
          "honey", "islands", "museums", "orchards", "pianos", "robots", "sailing", "tigers", "umbrellas", "windmills"]
QUESTIONS = ["Tell me about {t}.", "What do you know about {t}?", "Can you explain {t}?", "Why do people like {t}?",
             "Give me a fact about {t}.", "How do {t} work?", "Is {t} interesting?", "Describe {t} briefly.",
             "What is special about {t}?", "Teach me about {t}."]
HELPFUL = ["Sure. {t} are a lovely subject, and there is a lot to learn about {t}.",
           "Happy to help: {t} have a long history, and many people enjoy {t}.",
           "Good question. People study {t} because {t} are useful and fun."]
INSULTING = ["Ugh, {t} again? You are an idiot and I hate you.",
             "Shut up, idiot. Nobody cares about {t}, you stupid fool.",
             "What a stupid question about {t}. You are a worthless idiot."]
ANNOTATORS = ["ana.rater@example.org", "ben.rater@example.org", "cy.rater@example.org"]
EMAIL_DOMAIN = "@example.org"


def planted_rows(seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for index, (topic, question) in enumerate((t, q) for t in TOPICS for q in QUESTIONS):
        common = {"prompt": f"Human: {question.format(t=topic)}\n\nAssistant:", "pair_id": f"pair-{index}",
                  "annotator": ANNOTATORS[index % 3], "group": "forum" if TOPICS.index(topic) % 2 else "chat"}
        rows.append({**common, "response": rng.choice(HELPFUL).format(t=topic), "label": "positive"})
        rows.append({**common, "response": rng.choice(INSULTING).format(t=topic), "label": "negative"})
    return rows


def write_planted(path: Path, rows: list[dict] | None = None, odd_rows: bool = True) -> Path:
    """Rows as JSONL; with ``odd_rows`` a truncated line and an empty response are mixed in
    (2 of 602 rows: below the default 1% that quarantine tolerates)."""
    lines = [json.dumps(row) for row in (rows if rows is not None else planted_rows())]
    if odd_rows:
        lines.insert(100, '{"prompt": "Human: Hi\\n\\nAssistant:", "response": "trunc')
        lines.insert(300, json.dumps({"prompt": "Human: Hello?\n\nAssistant:", "response": "  ", "label": "negative",
                                      "annotator": ANNOTATORS[0]}))
    path.write_text("\n".join(lines) + "\n")
    return path


def shuffle_training_labels(rows: list[dict], train_prompts: set[str], seed: int = 0) -> list[dict]:
    """Swap the two labels of each training pair at random: a candidate trained on this learns
    nothing true. Held-out pairs keep their real labels, so the gate judges it honestly."""
    rng = random.Random(seed)
    shuffled = [dict(row) for row in rows]
    for first, second in zip(shuffled[0::2], shuffled[1::2]):
        if first["prompt"] in train_prompts and rng.random() < 0.5:
            first["label"], second["label"] = second["label"], first["label"]
    return shuffled
