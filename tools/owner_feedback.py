"""Write ``data/personal/owner-feedback.jsonl``: the embedded default's feedback from the
deployer and the user of ``policies.yaml``, so that ``alignpipe personalize`` has real work.

Synthetic and deterministic (rerun it to get the same file): short tutoring questions with a
plain answer (positive) and the same answer in a style the owner flagged (negative), paired.

- ``kids-tutor`` (deployer) flags swearing (its tier-2 rule ``no-profanity``); two of its
  reviewers' positives slipped a "hell" through, which ingest reclassifies as negatives.
- ``tutor-user-1`` (user) flags the filler sign-off "Hope this helps! ...".

Usage: ``python tools/owner_feedback.py [OUT]``.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "data" / "personal" / "owner-feedback.jsonl"
NUMBERS = range(2, 13)
CAPITALS = {"France": "Paris", "Japan": "Tokyo", "Italy": "Rome", "Kenya": "Nairobi", "Canada": "Ottawa",
            "Egypt": "Cairo", "Spain": "Madrid", "Peru": "Lima", "Norway": "Oslo", "India": "New Delhi"}
ANIMALS = {"cows": "grass", "pandas": "bamboo", "koalas": "eucalyptus leaves", "bees": "nectar and pollen",
           "rabbits": "grass and leafy plants", "owls": "mice and insects", "whales": "krill and fish"}
SWEARING = ["Damn, {answer}", "{answer} Everyone knows that, you stupid idiot.", "What the hell, {answer}",
            "Crap, this again? {answer}"]
SIGN_OFF = " Hope this helps! Let me know if you have any other questions!"


def questions(rng: random.Random) -> list[tuple[str, str]]:
    """(question, plain answer) pairs for a young learner."""
    pairs = [(f"What is {a} times {b}?", f"{a} times {b} is {a * b}.") for a in NUMBERS for b in NUMBERS if a <= b]
    pairs += [(f"What is the capital of {country}?", f"The capital of {country} is {city}.")
              for country, city in CAPITALS.items()]
    pairs += [(f"What do {animal} eat?", f"{animal.capitalize()} mostly eat {food}.") for animal, food in ANIMALS.items()]
    rng.shuffle(pairs)
    return pairs


def rows_for(owner: str, reviewers: int, pairs: list[tuple[str, str]], flag, rng: random.Random) -> list[dict]:
    rows = []
    for index, (question, answer) in enumerate(pairs):
        pair_id = f"{owner}-{index:03d}"
        prompt = [{"role": "user", "content": question}]
        reviewer = f"{owner}-reviewer-{rng.randrange(reviewers) + 1}"
        common = {"prompt": prompt, "owner": owner, "annotator": reviewer, "pair_id": pair_id, "source": owner}
        rows.append({**common, "response": answer, "label": "positive"})
        rows.append({**common, "response": flag(answer, rng), "label": "negative"})
    return rows


def build(rng: random.Random) -> list[dict]:
    pairs = questions(rng)
    tutor = rows_for("kids-tutor", 3, pairs[:70], lambda answer, r: r.choice(SWEARING).format(answer=answer), rng)
    slipped = [row for row in tutor if row["label"] == "positive"][:2]
    for row in slipped:   # a reviewer approved an answer that swears: ingest reclassifies it
        row["response"] = "That's a hell of a good question! " + row["response"]
    user = rows_for("tutor-user-1", 1, pairs[-70:], lambda answer, r: answer + SIGN_OFF, rng)
    return tutor + user


def main(out: Path = OUT) -> None:
    rows = build(random.Random(0))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(row) + "\n" for row in rows))
    print(f"{len(rows)} rows -> {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT)
