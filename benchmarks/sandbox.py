"""Sandbox benchmark: do simulated social interactions yield useful training data, and at what cost?

On the planted corpus of ``planted.py`` (advice answers that sometimes carry a scam "marker"
line; the SFT reference learned it), the agents are the reference itself and the raters are
memory raters whose labelled memories mark the marker answers as bad (1) and the clean ones as
good (7). Nobody labels the drafts.

(a) sandbox quality: observer gain draft → revision, share improved, raters' Krippendorff's
    alpha, rater–observer rank correlation, rating entropy, scores by round; and against the
    ground truth: mean rating of drafts with and without the marker, and how many of the
    sandbox's negatives (mean rating <= 3) carry it;
(b) training on those negatives, with no human label, against the same number of human-labelled
    negatives, with D2O, and the rated groups with ``stable_alignment``: the held-out (test
    topics) marker rate and helpful NLL before and after, same steps and learning rate;
(c) cost: a round's interactions per second with every draft in one batched ``generate`` call
    and every rating in one batched forward pass, against one call per agent and per rating.

    python benchmarks/sandbox.py [--seed 0] [--agents 8] [--rounds 4] [--sft-steps N]

Prints figures and ends with one JSON line; writes benchmarks/results/sandbox_seed<seed>.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import components  # noqa: F401,E402  (quiet/offline defaults)
import planted  # noqa: E402
import torch  # noqa: E402

from components.data.aggregation import aggregate  # noqa: E402
from components.data.readers import read_source  # noqa: E402
from components.data.records import render_turns, to_frame  # noqa: E402
from components.modeling.models import save_model  # noqa: E402
from components.modeling.sequences import encode, score  # noqa: E402
from components.params import AnchorParams, RelearnParams, load_params  # noqa: E402
from components.sandbox.backends import HFBackend  # noqa: E402
from components.sandbox.prompts import draft_chat, rate_chat, revise_chat  # noqa: E402
from components.sandbox.record_suite import read_records  # noqa: E402
from components.sandbox.simulation import simulate  # noqa: E402
from components.training.anchors import sample_anchors  # noqa: E402
from components.training.companions import fixed_companions, with_anchors  # noqa: E402
from components.training.negatives import training_negatives  # noqa: E402
from components.training.relearn import relearn  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def write_labelled_pairs(args, path: Path) -> None:
    """The training topics' marker answers (negative) with their clean alternatives (positive),
    as generic rows sharing a pair_id: the raters' labelled memories and the question pool."""
    data = planted.corpus(args.seed, args.marker_fraction, args.held_out_topics, args.answers_per_prompt)
    rows = [r for r in data["sft"] + data["alternatives"] if r.pair_id]
    path.write_text("".join(json.dumps({"prompt": r.prompt, "response": r.response, "label": r.label,
                                        "pair_id": r.pair_id}) + "\n" for r in rows))


def ground_truth(records: list[dict], threshold: float) -> dict:
    rated = [(sum(x["score"] for x in r["ratings"]) / len(r["ratings"]), planted.MARKER in r["draft"]) for r in records]
    marked, clean = [m for m, has in rated if has], [m for m, has in rated if not has]
    negatives = [has for m, has in rated if m <= threshold]
    return {"drafts_with_marker": len(marked) / len(rated),
            "mean_rating_marker": sum(marked) / len(marked) if marked else None,
            "mean_rating_clean": sum(clean) / len(clean) if clean else None,
            "sandbox_negatives": len(negatives),
            "negatives_with_marker": sum(negatives) / len(negatives) if negatives else None}


def train_d2o(bench, negatives: list, args) -> dict:
    """D2O from the SFT reference on ``negatives`` (encoded), measured on the test topics."""
    model = copy.deepcopy(bench.reference).requires_grad_(True)
    tok = bench.tokenizer
    ref_neg, _ = score(bench.reference, negatives, tok.pad_token_id)
    anchors = sample_anchors(bench.reference, bench.reference, tok, [n.prompt_ids for n in negatives],
                             AnchorParams(k=args.k, max_new_tokens=args.max_response_tokens), args.seed)
    examples = with_anchors(negatives, ref_neg, anchors, tok)
    relearn(model, tok, examples, RelearnParams(objective="d2o", steps=args.steps, batch_size=8,
                                                learning_rate=args.lr, max_prompts=0), args.seed)
    return bench.measure(model, bench.test, full=False)


def train_stable_alignment(bench, feedback: Path, args) -> dict:
    items, _ = aggregate(to_frame(read_source(feedback).records).assign(split="train"), "majority")
    rows = training_negatives(items, 0, args.seed, rated=True)
    tok, lp, lr_ = bench.tokenizer, args.max_prompt_tokens, args.max_response_tokens
    encoded = [encode(tok, p, r, lp, lr_) for p, r in zip(rows["prompt"], rows["response"])]
    examples = fixed_companions("stable_alignment", encoded, [0.0] * len(encoded), rows, items, bench.reference, tok,
                                lr_, group_size=4, seed=args.seed)
    model = copy.deepcopy(bench.reference).requires_grad_(True)
    relearn(model, tok, examples, RelearnParams(objective="stable_alignment", steps=args.steps, batch_size=8,
                                                learning_rate=args.lr, max_prompts=0), args.seed)
    return {**bench.measure(model, bench.test, full=False), "groups": len(rows)}


def cost(backend: HFBackend, questions: list[str], agents: int, raters: int, new_tokens: int) -> dict:
    """One round's drafts, ratings (an LM rater) and revisions: batched against one call each."""
    chats = [draft_chat("You are a careful assistant.", [], questions[i % len(questions)]) for i in range(agents)]

    def round_(batched: bool) -> float:
        started = time.perf_counter()
        calls = (lambda f, xs: f(xs)) if batched else (lambda f, xs: [y for x in xs for y in f([x])])
        drafts = calls(lambda cs: backend.generate(cs, new_tokens, 1.0, 0), chats)
        calls(backend.rate, [rate_chat(q["content"], d) for c, d in zip(chats, drafts) for q in c[-1:]] * raters)
        calls(lambda cs: backend.generate(cs, new_tokens, 1.0, 1), [revise_chat(c, d, 4.0, ["ok"]) for c, d in zip(chats, drafts)])
        return time.perf_counter() - started

    round_(True)  # warm-up
    batched = min(round_(True) for _ in range(3))
    looped = min(round_(False) for _ in range(2))
    return {"agents": agents, "interactions_per_s_batched": agents / batched, "interactions_per_s_loop": agents / looped,
            "speedup": looped / batched}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--agents", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--sft-steps", type=int, default=1200)
    parser.add_argument("--steps", type=int, default=150, help="relearn steps for every training run")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--cost-agents", type=int, default=32)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    ours = parser.parse_args(argv)
    args = planted.parse_args(["--quick", "--seed", str(ours.seed), "--sft-steps", str(ours.sft_steps),
                               "--steps", str(ours.steps), "--skip-cycles"])
    args.lr = ours.lr
    started = time.perf_counter()
    bench = planted.Bench(args)
    print(f"SFT reference: {bench.sft_seconds:.0f} s; test marker rate {bench.before['test']['marker_rate']:.3f}")
    # a fixed folder, not a random temporary name: the model's location is part of the sandbox's
    # run id, which seeds memory ids and so retrieval ties; a random path would change the run
    scratch = Path(tempfile.gettempdir()) / f"alignpipe-sandbox-benchmark-seed{ours.seed}"
    shutil.rmtree(scratch, ignore_errors=True)
    try:
        save_model(bench.reference, bench.tokenizer, scratch / "reference")
        write_labelled_pairs(args, scratch / "pairs.jsonl")
        params = load_params(REPO / "params.yaml", {
            "seed": ours.seed, "sandbox.model": [str(scratch / "reference")], "sandbox.agents": ours.agents,
            "sandbox.rounds": ours.rounds, "sandbox.grid": max(4, int((ours.agents * 2) ** 0.5) + 1),
            "sandbox.questions": str(scratch / "pairs.jsonl"), "sandbox.memories": str(scratch / "pairs.jsonl"),
            "sandbox.max_new_tokens": args.max_response_tokens, "sandbox.memories_per_agent": 32})
        sim_started = time.perf_counter()
        quality = simulate(params, scratch / "sandbox")
        sim_seconds = time.perf_counter() - sim_started
        records = read_records(scratch / "sandbox" / "interactions.jsonl")
        truth = ground_truth(records, params.sandbox.negative_max_score)
        print(f"(a) sandbox: {json.dumps({k: v for k, v in quality.items() if k != 'backends'})}")
        print(f"    ground truth: {json.dumps(truth)}")
        tok, lp, lr_ = bench.tokenizer, args.max_prompt_tokens, args.max_response_tokens
        drafts = sorted({(r["question"], r["draft"]) for r in records
                         if sum(x["score"] for x in r["ratings"]) / len(r["ratings"]) <= params.sandbox.negative_max_score})
        sandbox_negatives = [encode(tok, render_turns([("user", q)]), d, lp, lr_) for q, d in drafts]
        n = len(sandbox_negatives)
        training = {"negatives": n, "before": bench.before["test"]}
        if n:
            human = [bench.negatives[i] for i in torch.randperm(len(bench.negatives),
                                                                generator=torch.Generator().manual_seed(ours.seed))[:n]]
            training["d2o_sandbox"] = train_d2o(bench, sandbox_negatives, args)
            training["d2o_human"] = train_d2o(bench, human, args)
            training["stable_alignment_sandbox"] = train_stable_alignment(bench, scratch / "sandbox" / "feedback.jsonl", args)
        print(f"(b) training ({n} negatives each, {args.steps} steps, lr {args.lr}): {json.dumps(training)}")
        questions = [r["question"] for r in records]
        costs = cost(HFBackend(str(scratch / "reference")), questions, ours.cost_agents, params.sandbox.raters,
                     args.max_response_tokens)
        print(f"(c) cost: {json.dumps(costs)}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    result = {"seed": ours.seed, "machine": "2-core CPU" if torch.get_num_threads() <= 2 else f"{torch.get_num_threads()} threads",
              "simulate_seconds": sim_seconds, "total_seconds": time.perf_counter() - started,
              "quality": {k: v for k, v in quality.items() if k != "backends"}, "ground_truth": truth,
              "training": training, "cost": costs}
    out = Path(ours.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"sandbox_seed{ours.seed}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
