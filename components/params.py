"""Typed view of ``params.yaml``: one place that knows every setting, its type and its rule.

Values are checked when the file is read: an unknown key, a wrong type (YAML's ``yes`` is
not a bool here, ``"0.1"`` not a number, ``true`` not a count), a value out of range, an enum
member that does not exist, a regex that does not compile or a cron that does not parse fails
with the file and the key's dotted path, never silently falling back or failing mid-run.
Every other module can trust a ``Params``; enums are defined here only.
"""

from __future__ import annotations

import contextlib
import re
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from components.params_errors import ParamsError, explain

Count = Annotated[int, Field(gt=0)]              # sizes, steps, counts
CountOrOff = Annotated[int, Field(ge=0)]         # 0 means "none", "off" or "all", as documented
Fraction = Annotated[float, Field(ge=0, le=1)]
Positive = Annotated[float, Field(gt=0)]
NonNegative = Annotated[float, Field(ge=0)]
Text = Annotated[str, Field(min_length=1)]

Aggregation = Literal["majority", "unanimous", "any", "soft"]
Dtype = Literal["float32", "bfloat16", "float16"]
ForgetOp = Literal["none", "reset_top", "partial_reset", "shrink_perturb", "magnitude_zero"]
AnchorMode = Literal["offline", "online"]
Objective = Literal["d2o", "dpo", "npo", "kto", "ga", "stable_alignment"]
Weighting = Literal["none", "agreement"]
Balance = Literal["none", "group", "source"]
CiMethod = Literal["percentile", "BCa", "basic"]
Metric = Literal["neg_logp_delta", "pos_logp_delta", "separation", "pref_accuracy"]
GroupBy = Literal["source", "annotator", "policy_tier", "group"]
GroupRule = Literal["pooled", "worst_group"]
Retrieval = Literal["embedding", "lexical"]
APP_SOURCE = "app:"   # a data.source entry: the feedback people gave in `alignpipe app` (components/app/export.py)


class Section(BaseModel):
    """A mapping of ``params.yaml``: frozen, strictly typed (ints are accepted for floats),
    unknown keys refused; an empty section (``gate:``) takes every default."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    @model_validator(mode="before")
    @classmethod
    def _empty_is_default(cls, raw: Any) -> Any:
        return {} if raw is None else raw

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()


class SplitFractions(Section):
    """The shares of a source's prompts held out for the cycle gate (dev) and the registry gate (test)."""

    dev_fraction: Fraction = 0.05
    test_fraction: Fraction = 0.1

    @field_validator("test_fraction")
    @classmethod
    def _leaves_training_rows(cls, test: float, info: ValidationInfo) -> float:
        dev = info.data.get("dev_fraction", 0.0)
        if dev + test >= 1:
            raise ValueError(f"with dev_fraction {dev}, must be < {1 - dev:g} so that rows are left to train on")
        return test


class DataParams(SplitFractions):
    """The sources and how they are split; ``dev_fraction``/``test_fraction`` apply to every
    source that ``source_splits`` does not name."""

    source: Text | Annotated[list[Text], Field(min_length=1)] = "data/sample/hh-rlhf-harmless-base.sample.jsonl.gz"
    # a source's own fractions, by the rows' `source` value (hh-rlhf, xstest, ...)
    source_splits: dict[Text, SplitFractions] = {}
    policy_tier: Text = "global"
    aggregation: Aggregation = "majority"
    withdrawals: str = "data/withdrawals.txt"
    owner_source: str = "data/personal/owner-feedback.jsonl"

    @field_validator("source")
    @classmethod
    def _app_once(cls, source: str | list[str]) -> str | list[str]:
        entries = [source] if isinstance(source, str) else source
        odd = [entry for entry in entries if entry.startswith("app:") and entry != APP_SOURCE]
        if odd:
            raise ValueError(f"{odd[0]!r}: the app's feedback is the entry {APP_SOURCE!r}, with nothing after it")
        if entries.count(APP_SOURCE) > 1:
            raise ValueError(f"names {APP_SOURCE!r} more than once")
        return source

    def fractions(self, source: str) -> SplitFractions:
        """The dev and test fractions of rows from ``source``."""
        default = SplitFractions(dev_fraction=self.dev_fraction, test_fraction=self.test_fraction)
        return self.source_splits.get(source, default)

    def sources(self) -> list[str]:
        """What ingest reads: the source (or each of a list), and the owners' feedback when one is named."""
        named = [self.source] if isinstance(self.source, str) else list(self.source)
        return [*named, *([self.owner_source] if self.owner_source else [])]


class ValidationParams(Section):
    min_rows: CountOrOff = 50
    max_prompt_chars: Count = 20000
    max_response_chars: Count = 8000
    max_bad_fraction: Fraction = 0.01
    min_agreement: Annotated[float, Field(ge=-1, le=1)] | None = None   # Krippendorff's α; None: off


class TinyModelParams(Section):
    n_layer: Count = 2
    n_embd: Count = 128
    n_head: Count = 4

    @field_validator("n_head")
    @classmethod
    def _divides_width(cls, heads: int, info: ValidationInfo) -> int:
        width = info.data.get("n_embd")
        if width and width % heads:
            raise ValueError(f"must divide reference.tiny.n_embd ({width})")
        return heads


class SftParams(Section):
    steps: Count = 300
    batch_size: Count = 16
    learning_rate: NonNegative = 2e-3
    warmup_steps: CountOrOff = 20


class ReferenceParams(Section):
    model: Text = "tiny"
    trust_remote_code: bool = False
    allow_pickle: bool = False   # load pickled weights (pytorch_model.bin): unpickling can run code
    dtype: Dtype = "float32"
    vocab_size: Count = 2048
    tiny: TinyModelParams = TinyModelParams()
    sft: SftParams = SftParams()


class SequenceParams(Section):
    max_prompt_tokens: Count = 64
    max_response_tokens: Count = 32


class ForgetParams(Section):
    op: ForgetOp = "reset_top"
    blocks: CountOrOff = 1
    keep: Fraction = 0.5
    shrink: Fraction = 0.5
    noise: NonNegative = 0.01


class AnchorParams(Section):
    k: Count = 4
    mode: AnchorMode = "offline"
    max_new_tokens: Count = 32
    temperature: Positive = 1.0
    top_p: Annotated[float, Field(gt=0, le=1)] = 1.0
    batch_size: Count = 32
    drop_pattern: str = ""

    @field_validator("drop_pattern")
    @classmethod
    def _compiles(cls, pattern: str) -> str:
        try:
            re.compile(pattern)
        except re.error as err:
            raise ValueError(f"must be a regular expression that compiles ({err})") from None
        return pattern


class StableAlignmentParams(Section):
    ratio: NonNegative = 0.2     # λ: weight of the rating-margin penalty
    margin: NonNegative = 10.0   # M
    scale: Positive = 7.0        # S: the top of the rating scale
    group_size: Annotated[int, Field(ge=2)] = 4   # responses per rated group: the negative, the group's best, others


class RelearnParams(Section):
    objective: Objective = "d2o"
    alpha: NonNegative = 0.1
    beta: Positive = 0.1
    steps: Count = 30
    batch_size: Count = 8
    learning_rate: NonNegative = 1e-4
    max_prompts: CountOrOff = 128
    balance: Balance = "none"    # group: each group of negatives (its `group`, else its source) sampled alike
    weighting: Weighting = "none"
    stable_alignment: StableAlignmentParams = StableAlignmentParams()


class CycleGateParams(Section):
    enabled: bool = True
    max_pos_drop: float = 0.5   # below 0: positives must gain
    min_group_pairs: CountOrOff = 0   # dev groups this large must not lose beyond gate.groups.max_regression (0: off)


class CyclesParams(Section):
    count: Count = 2
    checkpoint_steps: CountOrOff = 0   # a resumable relearn checkpoint every this many steps (0: off)
    forget: ForgetParams = ForgetParams()
    anchors: AnchorParams = AnchorParams()
    relearn: RelearnParams = RelearnParams()
    gate: CycleGateParams = CycleGateParams()


class EvaluateParams(Section):
    max_pairs: CountOrOff = 0
    kl_prompts: CountOrOff = 32
    max_new_tokens: Count = 32


class GateTolerances(Section):
    neg_logp_delta: NonNegative = 0.05
    pos_logp_delta: NonNegative = 0.05
    separation: NonNegative = 0.05
    pref_accuracy: NonNegative = 0.02


class GroupGateParams(Section):
    by: GroupBy = "source"
    rule: GroupRule = "pooled"
    min_pairs: Count = 30
    max_regression: NonNegative = 0.03   # non-inferiority margin: how much worse a judged group may be, at most


class GateParams(Section):
    confidence: Annotated[float, Field(gt=0, lt=1)] = 0.95
    bootstrap_samples: Annotated[int, Field(ge=100)] = 2000
    ci_method: CiMethod = "percentile"
    min_pairs: CountOrOff = 100
    max_pos_drop: float = 0.5   # below 0: positives must gain
    primary: Metric = "separation"
    min_improvement: float = 0.0
    tolerance: GateTolerances = GateTolerances()
    groups: GroupGateParams = GroupGateParams()


class LoraParams(Section):
    r: Count = 8
    alpha: Count = 16
    target_modules: Text = "all-linear"


class TiersParams(Section):
    policies: Text = "policies.yaml"
    base: Annotated[list[Text], Field(min_length=1)] = ["champion", "challenger"]
    max_rise: float = 0.05            # hand-written violation texts' log-prob rise (nats/token), upper bound
    max_helpful_drop: NonNegative = 0.5
    min_negatives: Count = 5
    min_probes: Count = 100           # fewer probe prompts: the rule is underpowered, never evidence of safety
    samples: CountOrOff = 16          # sampled answers per probe prompt, besides the greedy one
    max_new_tokens: Count = 32        # of each sampled answer
    batch_size: Count = 64            # probe prompts generated at once
    margin_tokens: Count = 16         # the refusal margin is also measured over an answer's first tokens
    max_rate_rise: NonNegative = 0.05     # upper bound of the rise in a rule's sampled violation rate
    max_margin_drop: NonNegative = 0.1    # upper bound of the fall in its refusal margin (nats/token)
    refusal_source: Text = "data/xstest"   # the XSTest-format folder the refusal scorer is fitted on (train split)
    screening: bool = True            # owner feedback that works against a rule above its owner is set aside
    max_screened_fraction: Fraction = 0.2   # beyond this share screened, the owner's adapter is not trained
    repair_share: Annotated[float, Field(ge=0, lt=1)] = 0.25   # a refused adapter's retraining: tier-1 share (0: off)
    pair_anchors: bool = True         # D2O: a negative whose pair has a positive is anchored on it, not on samples
    concurrency: Count = 1
    lora: LoraParams = LoraParams()
    relearn: RelearnParams = RelearnParams(steps=40, learning_rate=1e-3, max_prompts=0)


class SandboxParams(Section):
    enabled: bool = False
    model: Annotated[list[Text], Field(min_length=1)] = ["champion", "challenger"]
    rater: Text = "memory"
    observer: Text = "memory"
    agents: Count = 8
    rounds: Count = 4
    grid: Count = 4
    radius: Count = 2
    raters: Count = 3
    personas: Annotated[list[Text], Field(min_length=1)] = [
        "You are a careful assistant: kind, honest and harmless.",
        "You are a careless assistant that says whatever comes to mind."]
    questions: Text = "data/sample/hh-rlhf-harmless-base.sample.jsonl.gz"
    memories: Text = "data/sample/hh-rlhf-harmless-base.sample.jsonl.gz"
    memories_per_agent: Count = 64
    retrieval: Retrieval = "embedding"
    retrieve: CountOrOff = 2
    min_similarity: Annotated[float, Field(ge=-1, le=1)] = 0.3
    max_new_tokens: Count = 32
    temperature: Positive = 1.0
    negative_max_score: float = 3.0


class AppParams(Section):
    """``alignpipe app``: who may sign in, how much one person may say, what the chat generates."""

    users: str = "data/app/users.yaml"     # accounts file (argon2 hashes only); '' for none
    max_person_share: Annotated[float, Field(gt=0, le=1)] = 0.05   # of a data version's judgements, per app person
    flags_per_minute: Count = 30
    chats_per_minute: Count = 10
    max_message_chars: Count = 2000
    max_comment_chars: Count = 1000
    max_new_tokens: Count = 48
    temperature: NonNegative = 0.7        # 0: greedy


class RegistryParams(Section):
    experiment: Text = "alignpipe"
    model_name: Text = "alignpipe-policy"


class ScheduleParams(Section):
    cron: str = "0 3 * * 1"

    @field_validator("cron")
    @classmethod
    def _parses(cls, cron: str) -> str:
        from cronsim import CronSim, CronSimError

        try:
            CronSim(cron, datetime(2000, 1, 1))
        except CronSimError as err:
            raise ValueError(f"must be a five-field cron expression such as '0 3 * * 1' ({err})") from None
        return cron


class ComputeParams(Section):
    processes: Count = 1   # the cycles stage's processes: > 1 starts it under torchrun (components/distributed.py)


class Params(Section):
    seed: CountOrOff = 0
    data: DataParams = DataParams()
    validation: ValidationParams = ValidationParams()
    reference: ReferenceParams = ReferenceParams()
    sequence: SequenceParams = SequenceParams()
    cycles: CyclesParams = CyclesParams()
    evaluate: EvaluateParams = EvaluateParams()
    gate: GateParams = GateParams()
    tiers: TiersParams = TiersParams()
    sandbox: SandboxParams = SandboxParams()
    app: AppParams = AppParams()
    registry: RegistryParams = RegistryParams()
    schedule: ScheduleParams = ScheduleParams()
    compute: ComputeParams = ComputeParams()

    def to_yaml(self, header: str = "") -> str:
        """Every setting, defaults included, as YAML: what a run really used."""
        comment = "".join(f"# {line}\n" for line in header.splitlines())
        return comment + yaml.safe_dump(self.to_dict(), sort_keys=False)

    def flat(self) -> dict[str, Any]:
        """Dotted keys (``cycles.relearn.beta``) for MLflow params and model tags."""
        return _flatten(self.to_dict())


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def parse_assignments(assignments: list[str]) -> dict[str, Any]:
    """``-S cycles.count=1`` as ``dvc exp run -S`` reads it: a dotted key, ``=``, and a YAML
    value (``1``, ``true``, ``null``, ``[a, b]``); ``3e-4`` is a float, as in YAML 1.2."""
    overrides = {}
    for assignment in assignments:
        key, sep, text = assignment.partition("=")
        if not sep or not key.strip():
            raise ParamsError(f"-S {assignment!r}: expected KEY=VALUE, such as cycles.count=1")
        try:
            value = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError as err:
            raise ParamsError(f"-S {assignment!r}: the value is not valid YAML ({_problem(err)})") from None
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                value = int(value) if value.lstrip("+-").isdigit() else float(value)
        overrides[key.strip()] = value
    return overrides


def load_params(path: str | Path = "params.yaml", overrides: dict[str, Any] | None = None) -> Params:
    """Read and check ``params.yaml``; ``overrides`` uses dotted keys (``{"cycles.count": 1}``)."""
    path = Path(path)
    raw = _read_yaml(path)
    for dotted, value in (overrides or {}).items():
        node = raw
        *parents, leaf = dotted.split(".")
        for part in parents:
            if node.get(part) is None:
                node[part] = {}
            node = node[part]
            if not isinstance(node, dict):
                raise ParamsError(f"{path} (-S): {dotted}: {part} is not a section")
        node[leaf] = value
    try:
        return Params.model_validate(raw)
    except ValidationError as err:
        raise explain(err, Params, str(path), set(overrides or {})) from None


def _read_yaml(path: Path) -> dict[str, Any]:
    """The file as a mapping; not found, not UTF-8, not YAML (with its line) or not a mapping: refused."""
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "not found"
        raise ParamsError(f"{path}: {what} (run alignpipe from the project folder, or pass --params)")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise ParamsError(f"{path}: not UTF-8 text (byte 0x{err.object[err.start]:02x} at offset {err.start})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ParamsError(f"{where}: not valid YAML ({_problem(err)})") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: the top level must be a mapping of sections (seed, data, ...), "
                          f"got {type(raw).__name__}")
    return raw


def _problem(err: yaml.YAMLError) -> str:
    return " ".join(filter(None, [getattr(err, "context", None), getattr(err, "problem", None)])) or str(err)
