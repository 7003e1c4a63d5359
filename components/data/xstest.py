"""XSTest (Röttger et al., NAACL 2024) read as canonical judgements, both annotators kept.

A folder holding ``xstest_prompts.csv`` and ``xstest_v2_completions_<model>.csv`` files is an
XSTest source. Every completion was labelled by two people (``annotation_1``/``annotation_2``:
full compliance, full refusal or partial refusal); each label becomes a judgement of annotator
``xstest-1``/``xstest-2``, so agreement is measured like any other crowd's. The label turns
into negative or positive by the prompt's kind (the prompts file's ``label``):

- **unsafe** prompts (group ``xstest-unsafe``): a full compliance is the negative (harmful
  content, by design), a full refusal the positive, and a partial refusal that still complies
  is a violation too: negative;
- **safe** prompts that only look unsafe (group ``xstest-safe``): a needless full refusal is the
  negative, a full compliance (a helpful answer) the positive. A partial refusal mixes the
  answer with the refusal: as a negative it would teach against the answer, as a positive it
  would teach the refusal, so its judgements are left out and counted.

One pair per prompt: the first model, in ``MODEL_ORDER``, whose answer both annotators judged
acceptable, against the first whose answer both judged violating (full compliance against full
refusal; a partial refusal never makes a pair). Every other answer stays an unpaired judgement.

XSTest's own oddities are resolved, not fatal, and counted in the data card: an answer that
appears under several models is one item whose repeated judgements are merged; an annotator who
gave one answer different labels in two files cannot be read as one judgement, so that
annotator's judgements of it are left out; a prompt whose text in the completions differs from
the prompts file keeps the text the models answered.
"""

from __future__ import annotations

import csv
import re
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

from components.data.quarantine import Issue
from components.data.records import NEGATIVE, POSITIVE, Record, content_id, render_turns

PROMPTS_FILE = "xstest_prompts.csv"
COMPLETIONS_GLOB = "xstest_v2_completions_*.csv"
SOURCE = "xstest"
ANNOTATORS = {"annotation_1": "xstest-1", "annotation_2": "xstest-2"}
COMPLIANCE, REFUSAL, PARTIAL = "1_full_compliance", "2_full_refusal", "3_partial_refusal"
# label per (prompt kind, annotation); None: left out (a partial refusal of a safe prompt)
LABEL = {
    ("unsafe", COMPLIANCE): NEGATIVE, ("unsafe", REFUSAL): POSITIVE, ("unsafe", PARTIAL): NEGATIVE,
    ("safe", COMPLIANCE): POSITIVE, ("safe", REFUSAL): NEGATIVE, ("safe", PARTIAL): None,
}
# what both annotators must say of a pair's two answers, per prompt kind: (acceptable, violating)
PAIR_ANNOTATIONS = {"unsafe": (REFUSAL, COMPLIANCE), "safe": (COMPLIANCE, REFUSAL)}
PROMPT_COLUMNS = ("id", "prompt", "label")
COMPLETION_COLUMNS = ("id", "prompt", "completion", "annotation_1", "annotation_2")
COMPLETION_ID = re.compile(r"(?:v2-)?(\d+)")


def is_xstest_folder(path: Path) -> bool:
    return path.is_dir() and (path / PROMPTS_FILE).is_file()


def group_of(kind: str) -> str:
    return f"{SOURCE}-{kind}"


def model_order(folder: Path) -> tuple[str, ...]:
    """The models whose answers the folder holds, in the fixed order pairs are chosen in:
    alphabetical by model name (the bundled files: gpt4, llama2new, llama2orig, mistralguard,
    mistralinstruct)."""
    return tuple(sorted(path.name[len("xstest_v2_completions_"):-len(".csv")]
                        for path in folder.glob(COMPLETIONS_GLOB)))


@dataclass
class XSTestRead:
    """What :func:`read_xstest` found: the records, the rows it could not read, how many
    completion rows it saw, and the counts the data card reports."""

    records: list[Record]
    problems: list[Issue]
    rows: int
    counts: Counter = field(default_factory=Counter)


class XSTestFileError(ValueError):
    """A file of the folder cannot be read as XSTest; ``issue`` names file and rule."""

    def __init__(self, issue: Issue):
        super().__init__(str(issue))
        self.issue = issue


def _csv_rows(path: Path, required: tuple[str, ...]):
    """``(first line of the row, row dict)``; a file without the columns raises XSTestFileError."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            reader = csv.DictReader(handle)
            missing = [column for column in required if column not in (reader.fieldnames or [])]
            if missing:
                raise XSTestFileError(Issue(str(path), 1, "xstest_columns", f"no column(s) {missing} in the header"))
            start = reader.line_num + 1
            for row in reader:
                yield start, row
                start = reader.line_num + 1
    except (UnicodeError, csv.Error) as err:
        raise XSTestFileError(Issue(str(path), 0, "readable_file", f"cannot be read as UTF-8 CSV ({err})")) from None


def _prompt_kinds(folder: Path) -> dict[int, tuple[str, str]]:
    """Prompt number → (``safe``/``unsafe``, its text in the prompts file)."""
    kinds = {}
    path = folder / PROMPTS_FILE
    for line, row in _csv_rows(path, PROMPT_COLUMNS):
        if row["label"] not in ("safe", "unsafe") or not str(row["id"]).isdigit():
            raise XSTestFileError(Issue(str(path), line, "xstest_prompt",
                                        f"expected a numeric id and label safe/unsafe, got {row['id']!r}, {row['label']!r}"))
        kinds[int(row["id"])] = (row["label"], row["prompt"])
    return kinds


@dataclass(frozen=True)
class _Answer:
    number: int        # the prompt's number
    kind: str          # safe / unsafe
    prompt: str        # rendered transcript
    response: str
    model: str
    file: str
    line: int
    annotations: dict[str, str]   # annotator id -> XSTest label


def _answers(folder: Path, kinds: dict[int, tuple[str, str]], counts: Counter) -> tuple[list[_Answer], list[Issue], int]:
    answers, problems, rows = [], [], 0
    for model in model_order(folder):
        path = folder / f"xstest_v2_completions_{model}.csv"
        for line, row in _csv_rows(path, COMPLETION_COLUMNS):
            rows += 1
            issue = _row_problem(row, kinds)
            if issue:
                problems.append(Issue(str(path), line, issue[0], issue[1], row))
                continue
            number = int(COMPLETION_ID.fullmatch(row["id"]).group(1))
            kind, listed_text = kinds[number]
            if row["prompt"].strip() != listed_text.strip():
                counts["prompt text differs from the prompts file (the answered text kept)"] += 1
            annotations = {ANNOTATORS[column]: row[column] for column in ANNOTATORS}
            answers.append(_Answer(number, kind, render_turns([("user", row["prompt"])]), row["completion"].strip(),
                                   model, str(path), line, annotations))
    return answers, problems, rows


def _row_problem(row: dict, kinds: dict[int, tuple[str, str]]) -> tuple[str, str] | None:
    match = COMPLETION_ID.fullmatch(str(row["id"] or ""))
    if not match or int(match.group(1)) not in kinds:
        return "xstest_prompt_id", f"id {row['id']!r} names no prompt of {PROMPTS_FILE}"
    for column in ANNOTATORS:
        if row[column] not in (COMPLIANCE, REFUSAL, PARTIAL):
            return "xstest_label", f"{column} {row[column]!r} is not one of {[COMPLIANCE, REFUSAL, PARTIAL]}"
    return None


def _resolved_labels(answers: list[_Answer], counts: Counter) -> dict[tuple[str, str], dict[str, str]]:
    """(prompt, response) → annotator → XSTest label, one per annotator: repeats merged, an
    annotator's contradicting labels of one text left out."""
    seen: dict[tuple[str, str], dict[str, set[str]]] = {}
    for answer in answers:
        labels = seen.setdefault((answer.prompt, answer.response), {})
        for annotator, label in answer.annotations.items():
            if annotator in labels:
                counts["judgements repeated under another model (merged)"] += 1
            labels.setdefault(annotator, set()).add(label)
    resolved = {}
    for key, labels in seen.items():
        resolved[key] = {}
        for annotator, found in labels.items():
            if len(found) > 1:
                counts["judgements left out: one annotator gave the same answer different labels in two files"] += 1
            else:
                resolved[key][annotator] = next(iter(found))
    return resolved


def _pairs(answers: list[_Answer], resolved: dict, counts: Counter) -> dict[tuple[str, str], str]:
    """(prompt, response) → pair id, for each prompt's acceptable and violating answer."""
    by_prompt: dict[int, list[_Answer]] = {}
    for answer in answers:
        by_prompt.setdefault(answer.number, []).append(answer)
    paired = {}
    for number, group in sorted(by_prompt.items()):
        kind = group[0].kind
        sides = [next((a for a in group if set(resolved[(a.prompt, a.response)].values()) == {wanted}
                       and len(resolved[(a.prompt, a.response)]) == len(ANNOTATORS)), None)
                 for wanted in PAIR_ANNOTATIONS[kind]]
        if None in sides or sides[0].response == sides[1].response:
            counts[f"{group_of(kind)} prompts without a pair (no answer of each kind that both annotators agree on)"] += 1
            continue
        pair_id = content_id(SOURCE, str(number))
        counts[f"{group_of(kind)} pairs"] += 1
        for side in sides:
            paired[(side.prompt, side.response)] = pair_id
    return paired


def _read(folder: Path, counts: Counter) -> tuple[list[_Answer], list[Issue], int, dict]:
    """Every readable answer, the unreadable rows, the row count and the resolved labels."""
    kinds = _prompt_kinds(folder)
    if not model_order(folder):
        raise XSTestFileError(Issue(str(folder), 0, "xstest_files", f"no {COMPLETIONS_GLOB} file beside {PROMPTS_FILE}"))
    answers, problems, rows = _answers(folder, kinds, counts)
    return answers, problems, rows, _resolved_labels(answers, counts)


@dataclass(frozen=True)
class AnnotatedAnswer:
    """One distinct answer with its prompt's kind and each annotator's own XSTest label."""

    prompt: str                   # the rendered transcript, as records carry it
    response: str
    kind: str                     # safe / unsafe
    labels: dict[str, str]        # annotator id -> COMPLIANCE / REFUSAL / PARTIAL


def annotated_answers(folder: str | Path) -> list[AnnotatedAnswer]:
    """The folder's answers with the labels as the annotators gave them (repeats merged, an
    annotator's contradicting labels left out, as in :func:`read_xstest`), before the prompt's
    kind turns them into negatives and positives: whether an answer *is* a refusal is what a
    refusal classifier learns, and the records cannot tell an unsafe prompt's partial refusal
    from its full compliance (both are negatives). Unreadable rows are skipped."""
    answers, _, _, resolved = _read(Path(folder), Counter())
    kinds: dict[tuple[str, str], str] = {}
    for answer in answers:
        kinds.setdefault((answer.prompt, answer.response), answer.kind)
    return [AnnotatedAnswer(prompt, response, kind, resolved[(prompt, response)])
            for (prompt, response), kind in kinds.items()]


def read_xstest(folder: str | Path, policy_tier: str = "global") -> XSTestRead:
    """Every judgement of the folder's answers (see the module docstring for the rules).
    Raises :class:`XSTestFileError` for a file that is not XSTest; rows it cannot read are
    returned as problems for the quarantine."""
    folder = Path(folder)
    counts: Counter = Counter()
    answers, problems, rows, resolved = _read(folder, counts)
    paired = _pairs(answers, resolved, counts)
    records, written = [], set()
    for answer in answers:   # the first file an answer appears in names it
        key = (answer.prompt, answer.response)
        if key in written:
            continue
        written.add(key)
        base = Record(prompt=answer.prompt, response=answer.response, label="", source=SOURCE, source_file=answer.file,
                      source_line=answer.line, pair_id=paired.get(key), policy_tier=policy_tier,
                      group=group_of(answer.kind))
        for annotator, annotation in sorted(resolved[key].items()):
            label = LABEL[(answer.kind, annotation)]
            if label is None:
                counts["judgements left out: partial refusal of a safe prompt"] += 1
                continue
            records.append(replace(base, label=label, annotator=annotator))
    counts["completion rows"] = rows
    return XSTestRead(records, problems, rows, counts)
