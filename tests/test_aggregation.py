"""Every voice kept: judgements aggregated by a recorded rule, agreement measured and reported."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from components.data.aggregation import aggregate
from components.data.dataset import read_dataset, read_items
from components.data.records import NEGATIVE, POSITIVE, Record, pairs, to_frame
from components.params import ParamsError, load_params
from components.validation.agreement import AgreementError, check_min_agreement, krippendorff_alpha, measure, votes
from conftest import write_params
from flows.cli import main

N, P = NEGATIVE, POSITIVE
# item -> labels of its judgements, one annotator each
VOTES = {"A": [N, N, N], "B": [N, N, P], "C": [N, P], "D": [P, P, N], "E": [P]}


def judgements(votes: dict[str, list[str]]) -> pd.DataFrame:
    records = [Record(prompt=f"Human: {item}?\n\nAssistant:", response=f"answer {item}", label=label, source="test",
                      source_file="votes.jsonl", source_line=i, annotator=f"ann-{k}", pair_id=f"pair-{item}")
               for i, (item, labels) in enumerate(votes.items()) for k, label in enumerate(labels)]
    frame = to_frame(records)
    return frame.assign(split="train")


def by_item(items: pd.DataFrame) -> dict[str, tuple[str, float]]:
    return {prompt.split(": ")[1][0]: (label, round(agreement, 4))
            for prompt, label, agreement in zip(items["prompt"], items["label"], items["agreement"])}


@pytest.mark.parametrize("rule, expected, left_out", [
    ("majority", {"A": (N, 1.0), "B": (N, 0.6667), "D": (P, 0.6667), "E": (P, 1.0)}, {"tie": 1}),
    ("unanimous", {"A": (N, 1.0), "E": (P, 1.0)}, {"disagreement": 3}),
    ("any", {"A": (N, 1.0), "B": (N, 0.6667), "C": (N, 0.5), "D": (N, 0.3333), "E": (P, 1.0)}, {}),
    ("soft", {"A": (N, 1.0), "B": (N, 0.6667), "C": (N, 0.5), "D": (P, 0.6667), "E": (P, 1.0)}, {}),
])
def test_each_rule_gives_the_expected_labels_and_agreement(rule, expected, left_out):
    items, counts = aggregate(judgements(VOTES), rule)
    assert by_item(items) == expected
    assert counts == {"rule": rule, "judgements": 12, "items": 5, "kept": len(expected), "left_out": left_out}
    assert set(items["n_judgements"]) <= {1, 2, 3} and items["annotator"].isin(["several", "ann-0"]).all()
    assert items["id"].is_unique and (items["agreement"] > 0).all() and (items["agreement"] <= 1).all()


def test_an_unknown_rule_is_a_params_error(tmp_path):
    with pytest.raises(ParamsError, match="data.aggregation: must be one of 'majority'"):
        load_params(write_params(tmp_path, {"data.aggregation": "plurality"}))


def test_items_take_the_first_pair_id_and_pairs_carry_group_columns_from_the_rejected_side():
    frame = judgements({"A": [N], "B": [P]})
    frame.loc[frame["label"] == P, ["pair_id", "group"]] = ["pair-A", "crowd"]
    frame.loc[frame["label"] == N, "group"] = "experts"
    items, _ = aggregate(frame, "majority")
    [pair] = pairs(items).to_dict("records")
    assert pair["pair_id"] == "pair-A" and pair["chosen"] == "answer B" and pair["rejected"] == "answer A"
    assert (pair["group"], pair["annotator"], pair["source"]) == ("experts", "ann-0", "test")
    assert pair["prompt_id"] == items.loc[items["label"] == N, "prompt_id"].item()


def test_alpha_matches_hand_computed_values():
    # A: 3 neg; B: 2 neg 1 pos; C: 3 pos. Coincidences o_nn=4, o_np=o_pn=1, o_pp=3, n=9:
    # D_o = 2/9, D_e = 2*5*4/(9*8) = 5/9, alpha = 1 - 2/5 = 0.6
    assert krippendorff_alpha(votes(judgements({"A": [N, N, N], "B": [N, N, P], "C": [P, P, P]}))) == \
        pytest.approx(0.6)
    # VOTES (E has one judgement and does not count): o_nn=4, o_pp=1, o_np=o_pn=3, n=11:
    # D_o = 6/11, D_e = 2*7*4/(11*10), alpha = 1 - 60/56 = -1/14
    assert krippendorff_alpha(votes(judgements(VOTES))) == pytest.approx(-1 / 14)


def test_alpha_is_undefined_without_items_judged_twice_and_passes_any_threshold():
    agreement = measure(judgements({"A": [N], "B": [P]}))
    assert agreement["krippendorff_alpha"] is None and agreement["distribution"] == {"1/1": 2}
    check_min_agreement(agreement, 0.9)


def test_distribution_and_min_agreement():
    agreement = measure(judgements(VOTES))
    assert agreement["distribution"] == {"3/3": 1, "2/3": 2, "1/2": 1, "1/1": 1}
    assert agreement["items_judged_twice_or_more"] == 4
    check_min_agreement(agreement, None)
    with pytest.raises(AgreementError, match=r"min_agreement: Krippendorff's alpha -0.071 < validation.min_agreement 0.5"):
        check_min_agreement(agreement, 0.5)


def three_annotator_file(path: Path, n_items: int = 40) -> Path:
    """Three annotators judge the same responses; they disagree on every fourth item."""
    rows = []
    for i in range(n_items):
        for k in range(3):
            label = "positive" if (i % 4 == 0 and k == 2) or i % 10 == 9 else "negative"
            rows.append({"prompt": f"Human: request {i}?\n\nAssistant:", "response": f"reply {i}", "label": label,
                         "annotator": f"rater-{k}", "group": "panel-a" if k < 2 else "panel-b"})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_three_disagreeing_annotators_are_ingested_with_alpha_and_rule_in_the_data_card(tmp_path):
    source = three_annotator_file(tmp_path / "panel.jsonl")
    params = write_params(tmp_path, {"data.aggregation": "majority"})
    out = tmp_path / "dataset"
    assert main(["--params", str(params), "ingest", "--source", str(source), "--out", str(out)]) == 0
    judged, manifest = read_dataset(out)
    items, _ = read_items(out)
    assert len(judged) == 120 and judged["item_id"].nunique() == 40 and len(items) == 40
    assert set(judged["annotator"]) == {"rater-0", "rater-1", "rater-2"}
    assert (items["n_judgements"] == 3).all() and (items["annotator"] == "several").all()
    assert sorted(items["agreement"].round(4).unique()) == [0.6667, 1.0]
    alpha = manifest["agreement"]["krippendorff_alpha"]
    assert alpha == pytest.approx(krippendorff_alpha(votes(judged)), abs=1e-6) and 0 < alpha < 1
    card = (out / "data_card.md").read_text()
    assert "Aggregation rule: **majority**" in card and f"**{alpha:.3f}**" in card
    assert "| 3/3 |" in card and "| 2/3 | 10 |" in card and "| several |" not in card
    report = json.loads((out / "validation.json").read_text())
    assert report["agreement"]["krippendorff_alpha"] == alpha and report["aggregation"]["rule"] == "majority"


def test_min_agreement_fails_the_dataset_and_writes_nothing(tmp_path, capsys):
    source = three_annotator_file(tmp_path / "panel.jsonl")
    params = write_params(tmp_path, {"validation.min_agreement": 0.99})
    out = tmp_path / "dataset"
    assert main(["--params", str(params), "ingest", "--source", str(source), "--out", str(out)]) == 2
    assert f"{source} (dataset): min_agreement" in capsys.readouterr().err and not out.exists()
