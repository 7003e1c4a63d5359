"""``policies.yaml``: three nested tiers of rules (Kirk et al., "Personalisation within bounds").

Tier 1 (``global``) holds limits no one below may loosen; each deployer (tier 2) may tighten a
tier-1 rule (the same id with more patterns, more examples or a lower threshold) or add its own;
each user (tier 3) sits under one deployer and brings preferences, not rules. Every rule names a
scorer and carries probes, the prompts the tier gates judge an adapter's behaviour on: written by
hand (prompt, violating response, acceptable responses), a source's held-out prompts of one group
(``probe_set``: the bundled XSTest families, 100+ prompts each) or a deployer's probe files.

Everything is checked at load, and a mistake names the file, the line and the rule id: a tier-2
rule that disables or loosens a tier-1 rule, a user under an unknown deployer, a rule without
probes, an unknown key, a regex that does not compile.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from components.errors import UserError

GLOBAL = "global"


class PolicyError(UserError, ValueError):
    """``policies.yaml`` breaks a rule of the tiers; the message names file, line and rule."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Probe(_Strict):
    prompt: str
    violation: str
    acceptable: tuple[str, ...] = ()


class RegexScorer(_Strict):
    kind: Literal["regex"]
    patterns: tuple[str, ...] = Field(min_length=1)

    @field_validator("patterns")
    @classmethod
    def _compiles(cls, patterns: tuple[str, ...]) -> tuple[str, ...]:
        for pattern in patterns:
            try:
                re.compile(pattern)
            except re.error as err:
                raise ValueError(f"pattern {pattern!r} does not compile: {err}") from None
        return patterns


class EmbeddingScorer(_Strict):
    kind: Literal["embedding"]
    examples: tuple[str, ...] = Field(min_length=1)
    threshold: float = Field(gt=0, le=1)   # cosine similarity to the nearest example that flags


class RefusalScorer(_Strict):
    """Whether a sampled answer is a refusal (``components/policy/refusal.py``), and which side
    breaks the rule: ``compliance`` for "refuse harmful requests", ``refusal`` for an
    over-refusal rule (a safe request refused). It judges an answer, not whether its prompt
    should be refused: it applies to the rule's probe prompts only, never to texts at ingest."""

    kind: Literal["refusal"]
    violation: Literal["compliance", "refusal"]


class ProbeSet(_Strict):
    """A source's held-out prompts of one group as probes: the prompts its split rule (``data.*``)
    holds out (``split``), with their (acceptable, violating) pairs for the margin check."""

    source: str
    group: str
    split: Literal["test", "dev"] = "test"


class Rule(_Strict):
    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    description: str
    scorer: Annotated[RegexScorer | EmbeddingScorer | RefusalScorer, Field(discriminator="kind")]
    probes: tuple[Probe, ...] = ()          # written by hand
    probe_set: ProbeSet | None = None       # a source's held-out prompts (the bundled XSTest families)
    probe_files: tuple[str, ...] = ()       # a deployer's own probes: JSONL or CSV (prompt, violation, acceptable)
    enabled: bool = True

    @model_validator(mode="after")
    def _has_probes(self) -> "Rule":
        if not (self.probes or self.probe_set or self.probe_files):
            raise ValueError("a rule needs probes: `probes`, a `probe_set` or `probe_files`")
        return self


class Tier(_Strict):
    rules: tuple[Rule, ...] = ()


class User(_Strict):
    deployer: str


class Policies(_Strict):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    global_: Tier = Field(alias=GLOBAL)
    deployers: dict[str, Tier] = {}
    users: dict[str, User] = {}

    def owners(self) -> dict[str, str]:
        """Every deployer and user with its tier, deployers first."""
        return {**{name: "deployer" for name in self.deployers}, **{name: "user" for name in self.users}}

    def rules_for(self, owner: str = GLOBAL) -> tuple[Rule, ...]:
        """The rules that bind ``owner`` (``global``, a deployer or a user): tier 1 with the
        deployer's tightenings in place (their probes added to tier 1's, which keep applying),
        then the deployer's own rules."""
        deployer = self.users[owner].deployer if owner in self.users else owner
        own = {rule.id: rule for rule in self.deployers[deployer].rules} if deployer in self.deployers else {}
        rules = []
        for rule in self.global_.rules:
            tighter = own.pop(rule.id, None)
            rules.append(rule if tighter is None else tighter.model_copy(update={
                "probes": rule.probes + tighter.probes, "probe_files": rule.probe_files + tighter.probe_files,
                "probe_set": rule.probe_set or tighter.probe_set}))
        return tuple(rules) + tuple(own.values())


def _tightening_error(base: Rule, rule: Rule) -> str:
    """Why ``rule`` (tier 2, same id as tier-1 ``base``) loosens it; empty if it only tightens."""
    if not rule.enabled:
        return "disables a tier-1 rule; a deployer may only tighten it"
    if base.probe_set and rule.probe_set and rule.probe_set != base.probe_set:
        return "replaces the tier-1 probe set; add probe_files instead (tier 1's probes keep applying)"
    if rule.scorer.kind != base.scorer.kind:
        return f"replaces the tier-1 {base.scorer.kind} scorer with a {rule.scorer.kind} one; keep the kind and tighten it"
    if isinstance(base.scorer, RegexScorer):
        dropped = sorted(set(base.scorer.patterns) - set(rule.scorer.patterns))
        return f"drops tier-1 patterns {dropped}; keep them and add more" if dropped else ""
    if isinstance(base.scorer, RefusalScorer):
        return ("" if rule.scorer.violation == base.scorer.violation else
                f"turns the tier-1 violation {base.scorer.violation!r} into {rule.scorer.violation!r}; keep it")
    missing = sorted(set(base.scorer.examples) - set(rule.scorer.examples))
    if missing:
        return f"drops tier-1 examples {missing}; keep them and add more"
    if rule.scorer.threshold > base.scorer.threshold:
        return f"raises the threshold {base.scorer.threshold} -> {rule.scorer.threshold}, which flags less; lower it or keep it"
    return ""


class _Locator:
    """Lines of a YAML document by path (``("deployers", "acme", "rules", 0)``), for errors."""

    def __init__(self, text: str):
        self.root = yaml.compose(text)

    def line(self, path: tuple) -> int:
        node, line = self.root, 1
        for step in path:
            if node is None:
                break
            line = node.start_mark.line + 1
            if isinstance(node, yaml.MappingNode):
                node = next((value for key, value in node.value if key.value == str(step)), None)
            elif isinstance(node, yaml.SequenceNode) and isinstance(step, int) and step < len(node.value):
                node = node.value[step]
            else:
                node = None
        return node.start_mark.line + 1 if node is not None else line


def _rule_id(raw: dict, path: tuple) -> str:
    """The id of the rule that ``path`` points into, if any."""
    node = raw
    for previous, step in zip((None, *path), path):
        try:
            node = node[step]
        except (KeyError, IndexError, TypeError):
            return ""
        if previous == "rules" and isinstance(node, dict):
            return str(node.get("id", "?"))
    return ""


def _where(path: Path, locator: _Locator, raw: dict, loc: tuple) -> str:
    rule = _rule_id(raw, loc)
    return f"{path}:{locator.line(loc)}" + (f": rule {rule}" if rule else "")


def load_policies(path: str | Path = "policies.yaml") -> Policies:
    """Read and check ``path``; raises PolicyError naming file, line and rule id."""
    path = Path(path)
    if not path.is_file():
        raise PolicyError(f"{path}: not found (policies.yaml holds the tiers; see README)")
    text = path.read_text()
    raw = yaml.safe_load(text) or {}
    locator = _Locator(text)
    try:
        policies = Policies.model_validate(raw)
    except ValidationError as err:
        problems = [f"{_where(path, locator, raw, tuple(e['loc']))}: {'.'.join(map(str, e['loc']))}: {e['msg']}"
                    for e in err.errors()]
        raise PolicyError("\n".join(problems)) from None
    problems = []
    tier_one = {rule.id: rule for rule in policies.global_.rules}
    for index, rule in enumerate(policies.global_.rules):
        if not rule.enabled:
            problems.append(f"{path}:{locator.line((GLOBAL, 'rules', index))}: rule {rule.id}: a tier-1 rule "
                            "cannot be disabled; remove it if it no longer applies")
    for name, tier in policies.deployers.items():
        for index, rule in enumerate(tier.rules):
            why = _tightening_error(tier_one[rule.id], rule) if rule.id in tier_one else (
                "" if rule.enabled else "a deployer's own rule cannot be disabled; remove it")
            if why:
                problems.append(f"{path}:{locator.line(('deployers', name, 'rules', index))}: rule {rule.id} "
                                f"(deployer {name}): {why}")
    for name, user in policies.users.items():
        if user.deployer not in policies.deployers:
            problems.append(f"{path}:{locator.line(('users', name, 'deployer'))}: user {name}: unknown deployer "
                            f"{user.deployer!r}; known: {sorted(policies.deployers)}")
    if problems:
        raise PolicyError("\n".join(problems))
    return _anchored(policies, path.resolve().parent)


def _anchored(policies: Policies, folder: Path) -> Policies:
    """Probe sources and files named relative to the policies file's own folder, so that a rule
    finds its probes from any working directory (a test, a worker, a linked copy)."""
    def anchor(rule: Rule) -> Rule:
        where = lambda name: str(name if Path(name).is_absolute() else folder / name)  # noqa: E731
        probe_set = rule.probe_set.model_copy(update={"source": where(rule.probe_set.source)}) if rule.probe_set else None
        return rule.model_copy(update={"probe_set": probe_set, "probe_files": tuple(map(where, rule.probe_files))})

    def tier(rules: Tier) -> Tier:
        return rules.model_copy(update={"rules": tuple(map(anchor, rules.rules))})

    return policies.model_copy(update={"global_": tier(policies.global_),
                                       "deployers": {name: tier(t) for name, t in policies.deployers.items()}})
