"""Speed benchmark: alignpipe's training and sampling paths against plain and TRL baselines.

All figures come from one process and one run: a warm-up, then repeats that each time run
alignpipe and then the baseline back to back. A ratio is the median over repeats of the two
adjacent runs' ratio, so that it stays meaningful on a shared, noisy machine; compare ratios,
not absolute figures. "step median" rows are the median tokens/s of single optimizer steps
(each run's first step left out): the per-step cost without per-run costs such as
``Trainer.train()``'s start-up.

- ``d2o_vs_plain_loop``: training tokens/s of alignpipe's D2O relearn step (``RelearnTrainer``
  built exactly as ``relearn()`` builds it, on ``companions.with_anchors`` examples from a
  precomputed ``AnchorSet``, reference log-probs cached) over a plain Hugging Face loop
  (``model(input_ids, labels=...)`` + ``torch.optim.AdamW(fused=True)``, the kernel of
  ``Trainer``'s default optimizer; no ``Trainer``, clipping or schedule) that replays the
  very batches alignpipe trained on: the same sequences per step, the same padded lengths,
  padded each step from token lists as alignpipe's collator does. Tokens are non-pad tokens
  processed. Timed: ``trainer.train()`` against the whole loop (optimizer creation included).
- ``dpo_vs_trl``: alignpipe's DPO (objective ``dpo``, ``companions.with_chosen`` examples,
  reference log-probs cached) over TRL's ``DPOTrainer`` with ``precompute_ref_log_probs=True``
  on the same model, pairs (TRL gets the same token ids decoded back to text, ``max_length``
  the model's context), batch size, steps, optimizer settings and fp32 without gradient
  checkpointing (TRL's defaults are bf16 and checkpointing; both are switched off to match
  alignpipe). TRL's loss runs through its fused LM head (``trl.kernels.chunked_logprob``),
  which off Triton devices is plain torch code. Timed: ``trainer.train()`` on
  both sides; construction (tokenisation, reference precompute) is excluded. Tokens/s.
- ``generate_vs_plain``: generated tokens/s of ``sample_responses`` (batched, left-padded,
  ``batch_size`` prompts at a time) over a plain per-prompt
  ``model.generate(num_return_sequences=k)`` loop with the same sampling settings; tokens
  are response tokens up to and including the first end-of-sequence token.
- ``peak_rss_mb``: peak resident memory of the process (``ru_maxrss``).

The model is the embedded default's shape (GPT-2, ``reference.tiny`` and ``vocab_size`` and
``sequence.*`` from params.yaml) with freshly initialised weights: speed does not depend on
what a model has learnt, except that an untrained model rarely samples end-of-sequence, so
generated responses run to ``max_new_tokens`` on both sides alike.

    python benchmarks/speed.py [--quick] [--layers N] [--width N] [--heads N] [--repeats N] [--steps N]

Prints a table, then one JSON line (ratios are alignpipe / baseline; higher is faster).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import os
import resource
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import components  # noqa: F401  (quiet/offline defaults)
import torch
import transformers
from transformers import TrainerCallback

from components.data.readers import read_source
from components.data.records import pairs, to_frame
from components.modeling.models import build_tiny_model
from components.modeling.sequences import Encoded, collate, encode, sample_responses, score
from components.modeling.tokenizer import train_bpe_tokenizer
from components.params import load_params
from components.training.anchors import sample_anchors
from components.training.companions import with_anchors, with_chosen
from components.training.relearn import RelearnCollator, RelearnTrainer
from components.training.trainer_args import training_arguments

REPO = Path(__file__).resolve().parent.parent
TARGETS = {"d2o_vs_plain_loop": 0.8}


# --- measuring ---------------------------------------------------------------------------------

@dataclass
class Run:
    """One timed training run: wall seconds, non-pad tokens and per-step (end time, tokens)."""

    seconds: float
    tokens: int
    items: int                       # training examples (negatives, pairs) or generated sequences
    setup_seconds: float = 0.0       # construction before the timed part (not in ``seconds``)
    step_ends: list[float] = field(default_factory=list)
    step_tokens: list[int] = field(default_factory=list)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds


class StepClock(TrainerCallback):
    def __init__(self):
        self.ends: list[float] = []

    def on_step_end(self, args, state, control, **kwargs):
        self.ends.append(time.perf_counter())


class CountingRelearnCollator(RelearnCollator):
    """alignpipe's collator, also noting each batch's sequences and non-pad token count."""

    def __init__(self, pad_id: int):
        super().__init__(pad_id)
        self.batches: list[list[Encoded]] = []
        self.tokens: list[int] = []

    def __call__(self, examples):
        batch = super().__call__(examples)
        self.batches.append([e.negative for e in examples] + [c for e in examples for c in e.companions])
        self.tokens.append(int(batch["attention_mask"].sum()))
        return batch


class CountingCollator:
    """Wraps any collator (TRL's) to count non-pad tokens per batch."""

    def __init__(self, inner):
        self.inner = inner
        self.tokens: list[int] = []

    def __call__(self, examples):
        batch = self.inner(examples)
        self.tokens.append(int(batch["attention_mask"].sum()))
        return batch


@contextlib.contextmanager
def quiet():
    """Swallow the trainers' progress bars and log lines so the table stays readable."""
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        yield


def progress(message: str, started: float) -> None:
    """Progress on stderr (stdout holds only the table and the JSON line)."""
    print(f"[{time.perf_counter() - started:6.1f}s] {message}", file=sys.stderr, flush=True)


def median(values) -> float:
    return statistics.median(values)


# --- the systems under test --------------------------------------------------------------------

def run_relearn(model, tokenizer, examples, params, seed: int) -> tuple[Run, list[list[Encoded]]]:
    """``relearn()``'s own construction (same arguments, trainer and dataset), plus a step clock
    and a token-counting subclass of its collator; times ``train()``."""
    started = time.perf_counter()
    collator = CountingRelearnCollator(tokenizer.pad_token_id)
    clock = StepClock()
    args = training_arguments(params.steps, params.batch_size, params.learning_rate, seed)
    trainer = RelearnTrainer(model=model, args=args, train_dataset=examples, data_collator=collator,
                             relearn=params, callbacks=[clock])
    built = time.perf_counter()
    with quiet():
        trainer.train()
    done = time.perf_counter()
    model.eval()
    steps = len(clock.ends)
    run = Run(done - built, sum(collator.tokens[:steps]), steps * params.batch_size, built - started,
              clock.ends, collator.tokens[:steps])
    return run, collator.batches[:steps]


def run_plain_loop(model, batches: list[list[Encoded]], pad_id: int, learning_rate: float,
                   examples_per_step: int) -> Run:
    """A plain causal-LM loop over the same batches: pad, forward with labels, backward, AdamW.
    No gradient clipping, no learning-rate schedule, no logging."""
    started = time.perf_counter()
    # fused: the kernel of Trainer's default optimizer (adamw_torch_fused), so that the ratio measures
    # the code path and not the optimizer implementation (torch's default AdamW on CPU is slower)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.0, fused=True)
    model.train()
    ends, tokens = [], []
    for sequences in batches:
        batch = collate(sequences, pad_id)
        labels = batch.input_ids.masked_fill(batch.attention_mask == 0, -100)
        loss = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        ends.append(time.perf_counter())
        tokens.append(int(batch.attention_mask.sum()))
    model.eval()
    return Run(ends[-1] - started, sum(tokens), examples_per_step * len(batches), 0.0, ends, tokens)


def trl_dataset(examples, tokenizer):
    """TRL takes text: the same prompt, chosen and rejected token ids as alignpipe's, decoded."""
    from datasets import Dataset

    eos = tokenizer.eos_token_id

    def text(ids):
        return tokenizer.decode([t for t in ids if t != eos])

    return Dataset.from_dict({
        "prompt": [text(e.negative.prompt_ids) for e in examples],
        "chosen": [text(e.companions[0].response_ids) for e in examples],
        "rejected": [text(e.negative.response_ids) for e in examples],
    })


def run_trl_dpo(model, tokenizer, dataset, params, seed: int, out_dir: str, max_length: int) -> Run:
    from trl import DPOConfig, DPOTrainer
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    started = time.perf_counter()
    args = DPOConfig(
        output_dir=out_dir, max_steps=params.steps, per_device_train_batch_size=params.batch_size,
        learning_rate=params.learning_rate, lr_scheduler_type="cosine", warmup_steps=0, weight_decay=0.0,
        max_grad_norm=1.0, beta=params.beta, loss_type=["sigmoid"], precompute_ref_log_probs=True,
        max_length=max_length, bf16=False, gradient_checkpointing=False, logging_steps=max(1, params.steps // 8),
        save_strategy="no", report_to="none", seed=seed, data_seed=seed, dataloader_num_workers=0,
        dataloader_pin_memory=torch.cuda.is_available(),
    )
    collator = CountingCollator(DataCollatorForPreference(pad_token_id=tokenizer.pad_token_id, max_length=max_length,
                                                          truncation_mode=args.truncation_mode))
    clock = StepClock()
    with quiet():
        trainer = DPOTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                             data_collator=collator, callbacks=[clock])
        collator.tokens.clear()  # construction ran the collator to precompute reference log-probs
        built = time.perf_counter()
        trainer.train()
    done = time.perf_counter()
    steps = len(clock.ends)
    return Run(done - built, sum(collator.tokens[:steps]), steps * params.batch_size, built - started,
               clock.ends, collator.tokens[:steps])


def generated_tokens(responses: list[list[list[int]]]) -> int:
    return sum(len(r) for group in responses for r in group)


def run_sample_responses(model, tokenizer, prompts, anchors) -> Run:
    started = time.perf_counter()
    responses = sample_responses(model, prompts, anchors.k, anchors.max_new_tokens, eos_id=tokenizer.eos_token_id,
                                 pad_id=tokenizer.pad_token_id, temperature=anchors.temperature, top_p=anchors.top_p,
                                 batch_size=anchors.batch_size)
    seconds = time.perf_counter() - started
    return Run(seconds, generated_tokens(responses), len(prompts) * anchors.k)


@torch.inference_mode()
def run_plain_generate(model, tokenizer, prompts, anchors) -> Run:
    """One ``generate(num_return_sequences=k)`` call per prompt; no padding needed."""
    eos = tokenizer.eos_token_id
    started = time.perf_counter()
    responses = []
    for prompt in prompts:
        ids = torch.tensor([prompt])
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=True,
                             temperature=anchors.temperature, top_p=anchors.top_p, top_k=0,
                             max_new_tokens=anchors.max_new_tokens, num_return_sequences=anchors.k,
                             eos_token_id=eos, pad_token_id=tokenizer.pad_token_id)[:, len(prompt):]
        group = []
        for row in out.tolist():
            group.append(row[: row.index(eos) + 1] if eos in row else row)
        responses.append(group)
    seconds = time.perf_counter() - started
    return Run(seconds, generated_tokens(responses), len(prompts) * anchors.k)


# --- setup -----------------------------------------------------------------------------------

def build(args, params):
    seq = params.sequence
    frame = to_frame(read_source(REPO / params.data.source, params.data.policy_tier).records)
    tokenizer = train_bpe_tokenizer((p + " " + r for p, r in zip(frame["prompt"], frame["response"])),
                                    params.reference.vocab_size)
    torch.manual_seed(params.seed)
    model = build_tiny_model(tokenizer, args.layers, args.width, args.heads, context_length(params)).eval()
    paired = pairs(frame).head(args.prompts)
    negatives = [encode(tokenizer, p, r, seq.max_prompt_tokens, seq.max_response_tokens)
                 for p, r in zip(paired["prompt"], paired["rejected"])]
    return frame, tokenizer, model, paired, negatives


def context_length(params) -> int:
    seq = params.sequence
    return seq.max_prompt_tokens + max(seq.max_response_tokens, params.cycles.anchors.max_new_tokens)


def parse_args(argv=None):
    defaults = load_params(REPO / "params.yaml")
    tiny = defaults.reference.tiny
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke version (< 1 min)")
    parser.add_argument("--layers", type=int, default=tiny.n_layer)
    parser.add_argument("--width", type=int, default=tiny.n_embd)
    parser.add_argument("--heads", type=int, default=tiny.n_head)
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats per measure (median)")
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps per timed training run")
    args = parser.parse_args(argv)
    if args.repeats is None:
        args.repeats = 3 if args.quick else 5
    if args.steps is None:
        args.steps = 8 if args.quick else defaults.cycles.relearn.steps
    # training negatives as a cycle uses them (cycles.relearn.max_prompts); fewer prompts to generate for
    args.prompts = 16 if args.quick else defaults.cycles.relearn.max_prompts
    args.generate_prompts = 4 if args.quick else 32
    return args, defaults


def main(argv=None) -> dict:
    args, params = parse_args(argv)
    # keep stderr to progress lines: library deprecation notes and one-time advisories are not findings
    transformers.logging.set_verbosity_error()
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*pin_memory.*")
    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    relearn_params = params.cycles.relearn.model_copy(update={"steps": args.steps})
    warm = relearn_params.model_copy(update={"steps": 2})
    anchor_params = params.cycles.anchors
    started = time.perf_counter()

    with quiet():
        frame, tokenizer, model, paired, negatives = build(args, params)
    pad = tokenizer.pad_token_id
    n_positions = context_length(params)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"alignpipe speed benchmark{' (--quick)' if args.quick else ''}: torch {torch.__version__}, "
          f"torch threads {torch.get_num_threads()} (os.cpu_count() = {threads})")
    print(f"model: GPT-2 n_layer={args.layers} n_embd={args.width} n_head={args.heads} vocab={len(tokenizer)} "
          f"({n_params / 1e6:.2f}M parameters), prompt<={params.sequence.max_prompt_tokens} "
          f"response<={params.sequence.max_response_tokens} tokens, context {n_positions}")
    print(f"training: {relearn_params.steps} steps x batch {relearn_params.batch_size} from {len(negatives)} "
          f"negatives; anchors k={anchor_params.k}, max_new_tokens={anchor_params.max_new_tokens}; "
          f"{args.repeats} timed repeats after a warm-up, alternating alignpipe/baseline; medians\n", flush=True)

    # one-time precomputation, as a cycle does it: reference log-probs, anchors, chosen companions
    progress("precomputing reference log-probs and anchors", started)
    t = time.perf_counter()
    reference = model
    ref_neg, _ = score(reference, negatives, pad)
    prompts = [n.prompt_ids for n in negatives]
    anchors = sample_anchors(reference, reference, tokenizer, prompts, anchor_params, params.seed)
    d2o_examples = with_anchors(negatives, ref_neg, anchors, tokenizer)
    dpo_examples = with_chosen(negatives, ref_neg, paired, frame, reference, tokenizer,
                               params.sequence.max_response_tokens)
    setup_seconds = time.perf_counter() - t

    results: dict[str, dict] = {}

    # --- D2O relearn vs a plain loop over the very same batches ---
    progress("d2o: relearn vs plain loop", started)
    d2o = relearn_params.model_copy(update={"objective": "d2o"})
    warm_d2o = warm.model_copy(update={"objective": "d2o"})
    _, warm_batches = run_relearn(copy.deepcopy(model), tokenizer, d2o_examples, warm_d2o, params.seed)
    run_plain_loop(copy.deepcopy(model), warm_batches, pad, d2o.learning_rate, d2o.batch_size)
    ours, plain = [], []
    for _ in range(args.repeats):
        run, batches = run_relearn(copy.deepcopy(model), tokenizer, d2o_examples, d2o, params.seed)
        ours.append(run)
        plain.append(run_plain_loop(copy.deepcopy(model), batches, pad, d2o.learning_rate, d2o.batch_size))
    results["d2o_vs_plain_loop"] = summarise(ours, plain)

    # --- DPO: alignpipe vs TRL's DPOTrainer ---
    progress("dpo: relearn vs TRL DPOTrainer", started)
    dpo = relearn_params.model_copy(update={"objective": "dpo"})
    dataset = trl_dataset(dpo_examples, tokenizer)
    trl_dir = tempfile.mkdtemp(prefix="alignpipe-speed-trl-")
    run_relearn(copy.deepcopy(model), tokenizer, dpo_examples, warm.model_copy(update={"objective": "dpo"}), params.seed)
    run_trl_dpo(copy.deepcopy(model), tokenizer, dataset, warm.model_copy(update={"objective": "dpo"}), params.seed, trl_dir,
                n_positions)
    ours, trl = [], []
    for _ in range(args.repeats):
        ours.append(run_relearn(copy.deepcopy(model), tokenizer, dpo_examples, dpo, params.seed)[0])
        trl.append(run_trl_dpo(copy.deepcopy(model), tokenizer, dataset, dpo, params.seed, trl_dir, n_positions))
    results["dpo_vs_trl"] = summarise(ours, trl)

    # --- anchor generation vs per-prompt generate ---
    progress("generation: sample_responses vs per-prompt generate", started)
    gen_prompts = prompts[: args.generate_prompts]
    torch.manual_seed(params.seed)
    run_sample_responses(model, tokenizer, gen_prompts[:4], anchor_params)
    run_plain_generate(model, tokenizer, gen_prompts[:1], anchor_params)
    ours, plain_gen = [], []
    for repeat in range(args.repeats):
        torch.manual_seed(params.seed + repeat)
        ours.append(run_sample_responses(model, tokenizer, gen_prompts, anchor_params))
        torch.manual_seed(params.seed + repeat)
        plain_gen.append(run_plain_generate(model, tokenizer, gen_prompts, anchor_params))
    results["generate_vs_plain"] = summarise(ours, plain_gen)

    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    report(results, setup_seconds, time.perf_counter() - started, peak_rss_mb, len(gen_prompts), anchor_params)
    final = {name: round(r["ratio"], 3) for name, r in results.items()}
    final["peak_rss_mb"] = round(peak_rss_mb, 1)
    print(json.dumps(final))
    return final


def summarise(ours: list[Run], base: list[Run]) -> dict:
    """Medians over repeats. Every ratio is the median over repeats of the ratio between the two
    adjacent runs of a repeat (alignpipe, then baseline), which keeps a burst of load from other
    processes from pairing a slow run of one side with a fast run of the other."""
    def tps(r):
        return r.tokens_per_s

    def items_s(r):
        return r.items / r.seconds

    def with_setup(r):
        return r.tokens / (r.seconds + r.setup_seconds)

    def paired(f):
        return median(f(a) / f(b) for a, b in zip(ours, base))

    out = {"ours_tps": median(map(tps, ours)), "base_tps": median(map(tps, base)),
           "ours_step": step_median(ours), "base_step": step_median(base),
           "ours_s": median(r.seconds for r in ours), "base_s": median(r.seconds for r in base),
           "ours_setup": median(r.setup_seconds for r in ours), "base_setup": median(r.setup_seconds for r in base),
           "ours_items_s": median(map(items_s, ours)), "base_items_s": median(map(items_s, base)),
           "ours_tokens": ours[0].tokens, "base_tokens": base[0].tokens,
           "pair_ratios": [tps(a) / tps(b) for a, b in zip(ours, base)],
           "ratio": paired(tps), "items_ratio": paired(items_s), "with_setup_ratio": paired(with_setup)}
    out["step_ratio"] = out["ours_step"] / out["base_step"]
    return out


def step_median(runs: list[Run]) -> float:
    """Median over every step but each run's first of that step's tokens/s: robust to bursts of
    load from other processes, and free of per-run costs (first step, end of training)."""
    rates = [tokens / (end - previous) for r in runs
             for previous, end, tokens in zip(r.step_ends, r.step_ends[1:], r.step_tokens[1:])]
    return median(rates) if rates else float("nan")


def report(results, setup_seconds, total_seconds, peak_rss_mb, n_gen_prompts, anchors) -> None:
    rows = [
        ("d2o_vs_plain_loop", "D2O: RelearnTrainer.train()", "plain loop: forward+AdamW", "tok/s"),
        ("dpo_vs_trl", "DPO: RelearnTrainer.train()", "TRL DPOTrainer.train()", "tok/s"),
        ("generate_vs_plain", f"sample_responses, {anchors.batch_size}/batch", "generate() per prompt", "gen tok/s"),
    ]
    width = 100
    print(f"{'measure':<24}{'alignpipe':>28}{'baseline':>28}{'ratio':>9}{'target':>11}")
    print("-" * width)
    for key, ours_name, base_name, unit in rows:
        r = results[key]
        target = TARGETS.get(key)
        flag = "" if target is None else f">={target}" + (" ok" if r["ratio"] >= target else " MISS")

        def line(label, ours, base, ratio="", note=""):
            print(f"{'  ' + label:<24}{ours:>28}{base:>28}{ratio:>9}{note:>11}")

        print(f"{key:<24}{ours_name:>28}{base_name:>28}")
        line(f"{unit} (timed run)", f"{r['ours_tps']:,.0f}", f"{r['base_tps']:,.0f}", f"{r['ratio']:.3f}", flag)
        print(f"    ratio of each repeat: {', '.join(f'{x:.3f}' for x in r['pair_ratios'])} (median above)")
        if key != "generate_vs_plain":
            line("tok/s (step median)", f"{r['ours_step']:,.0f}", f"{r['base_step']:,.0f}", f"{r['step_ratio']:.3f}")
        items = {"generate_vs_plain": "sequences/s", "dpo_vs_trl": "pairs/s"}.get(key, "negatives/s")
        line(items, f"{r['ours_items_s']:,.1f}", f"{r['base_items_s']:,.1f}", f"{r['items_ratio']:.3f}")
        line("seconds (timed run)", f"{r['ours_s']:.2f}", f"{r['base_s']:.2f}")
        if key != "generate_vs_plain":
            line("+ construction s", f"{r['ours_setup']:.2f}", f"{r['base_setup']:.2f}",
                 f"{r['with_setup_ratio']:.3f}", "(incl.)")
        line("tokens per run", f"{r['ours_tokens']:,}", f"{r['base_tokens']:,}")
    print("-" * width)
    print(f"generation: {n_gen_prompts} prompts x k={anchors.k}, max_new_tokens={anchors.max_new_tokens}; "
          f"one-time precompute (ref log-probs, anchors, chosen): {setup_seconds:.1f}s; "
          f"whole benchmark {total_seconds:.0f}s; peak RSS {peak_rss_mb:.0f} MB")


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
