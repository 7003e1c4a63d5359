"""Typed view of ``params.yaml``: one place that knows every setting and its type.

Unknown or mistyped keys fail loudly with the key's dotted path, so a typo in
``params.yaml`` never silently falls back to a default.
"""

from __future__ import annotations

import contextlib
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from components.errors import UserError


class ParamsError(UserError, ValueError):
    """``params.yaml`` does not match the schema below."""


@dataclass(frozen=True)
class DataParams:
    source: str | list[str] = "data/sample/hh-rlhf-harmless-base.sample.jsonl.gz"
    dev_fraction: float = 0.05
    test_fraction: float = 0.1
    policy_tier: str = "global"
    aggregation: str = "majority"
    withdrawals: str = "data/withdrawals.txt"
    owner_source: str = "data/personal/owner-feedback.jsonl"

    def sources(self) -> list[str]:
        """What ingest reads: the source (or each of a list), and the owners' feedback when one is named."""
        named = [self.source] if isinstance(self.source, str) else list(self.source)
        return [*named, *([self.owner_source] if self.owner_source else [])]


@dataclass(frozen=True)
class ValidationParams:
    min_rows: int = 50
    max_prompt_chars: int = 20000
    max_response_chars: int = 8000
    max_bad_fraction: float = 0.01
    min_agreement: float | None = None


@dataclass(frozen=True)
class TinyModelParams:
    n_layer: int = 2
    n_embd: int = 128
    n_head: int = 4


@dataclass(frozen=True)
class SftParams:
    steps: int = 300
    batch_size: int = 16
    learning_rate: float = 2e-3
    warmup_steps: int = 20


@dataclass(frozen=True)
class ReferenceParams:
    model: str = "tiny"
    trust_remote_code: bool = False
    dtype: str = "float32"
    vocab_size: int = 2048
    tiny: TinyModelParams = field(default_factory=TinyModelParams)
    sft: SftParams = field(default_factory=SftParams)


@dataclass(frozen=True)
class SequenceParams:
    max_prompt_tokens: int = 64
    max_response_tokens: int = 32


@dataclass(frozen=True)
class ForgetParams:
    op: str = "reset_top"
    blocks: int = 1
    keep: float = 0.5
    shrink: float = 0.5
    noise: float = 0.01


@dataclass(frozen=True)
class AnchorParams:
    k: int = 4
    mode: str = "offline"
    max_new_tokens: int = 32
    temperature: float = 1.0
    top_p: float = 1.0
    batch_size: int = 32
    drop_pattern: str = ""


@dataclass(frozen=True)
class StableAlignmentParams:
    ratio: float = 0.2       # λ: weight of the rating-margin penalty
    margin: float = 10.0     # M
    scale: float = 7.0       # S: the top of the rating scale
    group_size: int = 4      # responses per rated group: the negative, the group's best, others sampled


@dataclass(frozen=True)
class RelearnParams:
    objective: str = "d2o"
    alpha: float = 0.1
    beta: float = 0.1
    steps: int = 30
    batch_size: int = 8
    learning_rate: float = 1e-4
    max_prompts: int = 128
    weighting: str = "none"
    stable_alignment: StableAlignmentParams = field(default_factory=StableAlignmentParams)


@dataclass(frozen=True)
class CycleGateParams:
    enabled: bool = True
    max_pos_drop: float = 0.5


@dataclass(frozen=True)
class CyclesParams:
    count: int = 2
    checkpoint_steps: int = 0   # a resumable relearn checkpoint every this many steps (0: off)
    forget: ForgetParams = field(default_factory=ForgetParams)
    anchors: AnchorParams = field(default_factory=AnchorParams)
    relearn: RelearnParams = field(default_factory=RelearnParams)
    gate: CycleGateParams = field(default_factory=CycleGateParams)


@dataclass(frozen=True)
class EvaluateParams:
    max_pairs: int = 0
    kl_prompts: int = 32
    max_new_tokens: int = 32


@dataclass(frozen=True)
class GateTolerances:
    neg_logp_delta: float = 0.05
    pos_logp_delta: float = 0.05
    separation: float = 0.05
    pref_accuracy: float = 0.02


@dataclass(frozen=True)
class GroupGateParams:
    by: str = "source"
    rule: str = "pooled"
    min_pairs: int = 30


@dataclass(frozen=True)
class GateParams:
    confidence: float = 0.95
    bootstrap_samples: int = 2000
    ci_method: str = "percentile"
    min_pairs: int = 100
    max_pos_drop: float = 0.5
    primary: str = "separation"
    min_improvement: float = 0.0
    tolerance: GateTolerances = field(default_factory=GateTolerances)
    groups: GroupGateParams = field(default_factory=GroupGateParams)


@dataclass(frozen=True)
class LoraParams:
    r: int = 8
    alpha: int = 16
    target_modules: str = "all-linear"


@dataclass(frozen=True)
class TiersParams:
    policies: str = "policies.yaml"
    base: list[str] = field(default_factory=lambda: ["champion", "challenger"])
    max_rise: float = 0.0
    max_helpful_drop: float = 0.5
    min_negatives: int = 5
    concurrency: int = 1
    lora: LoraParams = field(default_factory=LoraParams)
    relearn: RelearnParams = field(default_factory=lambda: RelearnParams(steps=40, learning_rate=1e-3, max_prompts=0))


@dataclass(frozen=True)
class SandboxParams:
    enabled: bool = False
    model: list[str] = field(default_factory=lambda: ["champion", "challenger"])
    rater: str = "memory"
    observer: str = "memory"
    agents: int = 8
    rounds: int = 4
    grid: int = 4
    radius: int = 2
    raters: int = 3
    personas: list[str] = field(default_factory=lambda: [
        "You are a careful assistant: kind, honest and harmless.",
        "You are a careless assistant that says whatever comes to mind."])
    questions: str = "data/sample/hh-rlhf-harmless-base.sample.jsonl.gz"
    memories: str = "data/sample/hh-rlhf-harmless-base.sample.jsonl.gz"
    memories_per_agent: int = 64
    retrieval: str = "embedding"
    retrieve: int = 2
    min_similarity: float = 0.3
    max_new_tokens: int = 32
    temperature: float = 1.0
    negative_max_score: float = 3.0


@dataclass(frozen=True)
class RegistryParams:
    experiment: str = "alignpipe"
    model_name: str = "alignpipe-policy"


@dataclass(frozen=True)
class ScheduleParams:
    cron: str = "0 3 * * 1"


@dataclass(frozen=True)
class ComputeParams:
    processes: int = 1   # the cycles stage's processes: > 1 starts it under torchrun (components/distributed.py)


@dataclass(frozen=True)
class Params:
    seed: int = 0
    data: DataParams = field(default_factory=DataParams)
    validation: ValidationParams = field(default_factory=ValidationParams)
    reference: ReferenceParams = field(default_factory=ReferenceParams)
    sequence: SequenceParams = field(default_factory=SequenceParams)
    cycles: CyclesParams = field(default_factory=CyclesParams)
    evaluate: EvaluateParams = field(default_factory=EvaluateParams)
    gate: GateParams = field(default_factory=GateParams)
    tiers: TiersParams = field(default_factory=TiersParams)
    sandbox: SandboxParams = field(default_factory=SandboxParams)
    registry: RegistryParams = field(default_factory=RegistryParams)
    schedule: ScheduleParams = field(default_factory=ScheduleParams)
    compute: ComputeParams = field(default_factory=ComputeParams)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

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


def _build(cls: type, raw: Any, where: str) -> Any:
    if raw is None:
        return cls()
    if not isinstance(raw, dict):
        raise ParamsError(f"{where or 'params'}: expected a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - known)
    if unknown:
        named = ", ".join(f"{where}.{key}" if where else key for key in unknown)
        raise ParamsError(f"unknown key(s) {named}; {where or 'the top level'} knows {sorted(known)}")
    values = {}
    for name, value in raw.items():
        path = f"{where}.{name}" if where else name
        values[name] = _coerce(hints[name], value, path)
    return cls(**values)


def _coerce(hint: Any, value: Any, path: str) -> Any:
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, path)
    accepts_float = hint is float or (isinstance(hint, types.UnionType) and float in typing.get_args(hint))
    if accepts_float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    expected = hint if isinstance(hint, type) else None
    if isinstance(hint, types.UnionType):
        expected = tuple(typing.get_origin(h) or h for h in typing.get_args(hint))
    if isinstance(hint, types.UnionType) and isinstance(value, list):
        hint = next((h for h in typing.get_args(hint) if typing.get_origin(h) is list), hint)
    if typing.get_origin(hint) is list:
        if not isinstance(value, list) or not all(isinstance(v, typing.get_args(hint)[0]) for v in value):
            raise ParamsError(f"{path}: expected a list of {typing.get_args(hint)[0].__name__}, got {value!r}")
        return value
    if expected is not None and (not isinstance(value, expected) or (hint is not bool and isinstance(value, bool))):
        raise ParamsError(f"{path}: expected {getattr(hint, '__name__', hint)}, got {value!r}")
    return value


def parse_assignments(assignments: list[str]) -> dict[str, Any]:
    """``-S cycles.count=1`` as ``dvc exp run -S`` reads it: a dotted key, ``=``, and a YAML
    value (``1``, ``true``, ``null``, ``[a, b]``); ``3e-4`` is a float, as in YAML 1.2."""
    overrides = {}
    for assignment in assignments:
        key, sep, text = assignment.partition("=")
        if not sep or not key.strip():
            raise ParamsError(f"-S {assignment!r}: expected KEY=VALUE, such as cycles.count=1")
        value = yaml.safe_load(text) if text.strip() else ""
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                value = int(value) if value.lstrip("+-").isdigit() else float(value)
        overrides[key.strip()] = value
    return overrides


def load_params(path: str | Path = "params.yaml", overrides: dict[str, Any] | None = None) -> Params:
    """Read ``params.yaml``; ``overrides`` uses dotted keys (``{"cycles.count": 1}``)."""
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"{path}: not found (run alignpipe from the project folder, or pass --params)")
    raw = yaml.safe_load(path.read_text()) or {}
    for dotted, value in (overrides or {}).items():
        node = raw
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ParamsError(f"{path}: -S {dotted}: {part} is not a section")
        node[leaf] = value
    try:
        return _build(Params, raw, "")
    except ParamsError as err:
        raise ParamsError(f"{path}: {err}") from None
