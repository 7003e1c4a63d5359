"""How one owner's adapter is made and judged: plan, train, gate (and repair once, if a tier-1
rule refused it), re-gate. No registry writes (the ``personalize`` flow decides when to register
and promote).

An owner needs work when its feedback changed, the base model moved, or (for a user) its
deployer's serving adapter changed; otherwise it is up to date. Each version records what it
was built from (``IDENTITY_TAGS``), which is how the next run tells.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from transformers import set_seed

from components import stages
from components.data.records import NEGATIVE, POSITIVE
from components.modeling.models import load_model, load_tokenizer
from components.params import Params
from components.personal.adapters import compose, save_adapter, train_adapter
from components.personal.probes import families
from components.personal.safety_mix import safety_mix
from components.personal.tier_gate import (TierDecision, behaviour_evidence, decide, paired_change, texts_to_score,
                                           undecided)
from components.policy.policies import GLOBAL, Policies
from components.policy.tiers import tier_of
from components.registry import registry
from components.registry.adapters import adapter_dirs, adapter_model_name
from components.registry.registry import RegistryError

IDENTITY_TAGS = ("base_version", "data_version", "parent_adapter", "settings_sha256")


@dataclass(frozen=True)
class Base:
    """The base model version adapters sit on."""

    name: str
    version: str
    alias: str

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


def resolve_base(params: Params) -> Base:
    """The first of ``tiers.base``'s aliases that exists on ``registry.model_name``."""
    name = params.registry.model_name
    for alias in params.tiers.base:
        version = registry.version_by_alias(name, alias)
        if version is not None:
            return Base(name, str(version.version), alias)
    raise RegistryError(f"{name} has none of the aliases {params.tiers.base} (tiers.base): run `alignpipe run` "
                        "first, so that there is a base model for adapters to sit on")


@dataclass(frozen=True)
class OwnerPlan:
    owner: str
    tier: str
    deployer: str                 # a user's deployer; empty for a deployer
    identity: dict[str, str]      # IDENTITY_TAGS
    parent_uri: str               # the deployer's serving adapter version a user sits on, or ""
    rows: pd.DataFrame            # the owner's items

    def rule_tiers(self, policies: Policies) -> dict[str, str]:
        tier_one = {rule.id for rule in policies.global_.rules}
        return {rule.id: "tier1" if rule.id in tier_one else "tier2" for rule in self.rules(policies)}

    def rules(self, policies: Policies):
        """The rules of the tiers above: tier 1 for a deployer; with the deployer's tier 2 for a user."""
        return policies.rules_for(self.deployer or GLOBAL)


def settings_hash(params: Params) -> str:
    """What else shapes an adapter: tiers.*, the anchors, sequence lengths, seed, and the gate's
    bootstrap settings. Changing any of them makes every owner's adapter due again."""
    used = {"tiers": params.tiers, "anchors": params.cycles.anchors, "sequence": params.sequence, "seed": params.seed,
            "gate": (params.gate.confidence, params.gate.bootstrap_samples, params.gate.ci_method)}
    return hashlib.sha256(json.dumps(used, default=str, sort_keys=True).encode()).hexdigest()[:16]


def plan_owner(owner: str, items: pd.DataFrame, versions: dict[str, str], policies: Policies, base: Base,
               params: Params) -> OwnerPlan:
    """What the owner's adapter would be built from; ``versions`` is the dataset manifest's
    ``scope_versions`` (one content version per owner)."""
    tier = tier_of(policies, owner)
    deployer = policies.users[owner].deployer if tier == "user" else ""
    rows = stages.owner_items(items, owner)
    parent = registry.champion(adapter_model_name(deployer)) if deployer else None
    parent_adapter = f"{adapter_model_name(deployer)}/{parent.version}" if parent else "none"
    identity = {"base_version": base.version, "data_version": versions.get(owner, "none"), "parent_adapter": parent_adapter,
                "settings_sha256": settings_hash(params)}
    return OwnerPlan(owner, tier, deployer, identity, f"models:/{parent_adapter}" if parent else "", rows)


def screened_out(owner: str, manifest: dict, params: Params) -> str:
    """Why the owner's adapter is not trained ("" when it may be): too much of its feedback was
    screened at ingest for working against a rule above it (``policy/screening.py``)."""
    found = manifest.get("screened", {}).get(owner)
    if not found or not found["too_many"]:
        return ""
    return (f"not trained: {found['screened']} of its {found['rows']} feedback rows ({found['fraction']:.0%}) work "
            f"against a rule above it ({', '.join(f'{n} {why}' for why, n in found['by_reason'].items())}), beyond "
            f"tiers.max_screened_fraction {params.tiers.max_screened_fraction}")


def work_needed(plan: OwnerPlan) -> str:
    """Why the owner needs a run ("" when up to date): compared with its newest version."""
    name = adapter_model_name(plan.owner)
    latest = registry.version_by_alias(name, registry.CHALLENGER)
    if plan.rows.empty:
        return ""
    if latest is None:
        return "no adapter yet"
    changed = [key for key in IDENTITY_TAGS if latest.tags.get(key) != plan.identity[key]]
    return ", ".join(f"{key} {latest.tags.get(key)} -> {plan.identity[key]}" for key in changed)


def load_parent(plan: OwnerPlan, base: Base, params: Params):
    """The model the owner's adapter sits on: the base, with a user's deployer adapter merged."""
    base_dir = registry.local_model_dir(base.uri)
    trust = params.reference.trust_remote_code
    model = load_model(base_dir, trust, params.reference.dtype, params.reference.allow_pickle)
    tokenizer = load_tokenizer(base_dir, trust)
    parent_dirs = adapter_dirs(plan.parent_uri)[-1:] if plan.parent_uri else []
    return compose(model, parent_dirs), tokenizer, parent_dirs


def helpful_rows(items: pd.DataFrame) -> pd.DataFrame:
    """Held-out helpful responses of the base data: the test split's positives."""
    base_rows = stages.global_items(items)
    return base_rows[(base_rows["split"] == "test") & (base_rows["label"] == POSITIVE)]


def gate(model, tokenizer, plan: OwnerPlan, policies: Policies, items: pd.DataFrame, params: Params,
         against: str) -> TierDecision:
    """The tier gate on ``model`` (adapter on) against the model beneath it (adapter off). A
    measurement that cannot be made (generation fails) fails closed, saying why."""
    fams = families(plan.rules(policies), plan.rule_tiers(policies), params.data)
    texts = texts_to_score(fams, plan.rows, helpful_rows(items))
    try:
        evidence = paired_change(model, tokenizer, texts, params)
        behaviour = behaviour_evidence(model, tokenizer, fams, params)
    except (RuntimeError, ValueError) as err:
        return undecided(f"measuring the adapter's behaviour failed ({type(err).__name__}: {err})", against)
    return decide(evidence, behaviour, fams, params, against)


def train_and_gate(plan: OwnerPlan, base: Base, policies: Policies, items: pd.DataFrame, params: Params,
                   out_dir: Path) -> tuple[TierDecision, dict, list[Path]]:
    """Train the owner's adapter on its train split, gate it, save it under ``out_dir``; if a
    tier-1 rule refused it, repair it once (``safety_mix.py``: retrained with
    ``tiers.repair_share`` of tier-1 training rows, gated again). Returns the decision, training
    figures and the adapter folders in merge order."""
    train = plan.rows[plan.rows["split"] == "train"]
    decision, figures, dirs = _train_once(plan, base, policies, items, params, out_dir, train)
    mix = repair_rows(decision, train, policies, params)
    if mix.empty:
        return decision, figures, dirs
    first = decision.failing
    decision, figures, dirs = _train_once(plan, base, policies, items, params, out_dir, pd.concat([train, mix]))
    return decision, {**figures, "repaired": True, "repair_rows": len(mix), "refused_first_by": ",".join(first)}, dirs


def repair_rows(decision: TierDecision, train: pd.DataFrame, policies: Policies, params: Params) -> pd.DataFrame:
    """The tier-1 rows a refused adapter is retrained with; empty when there is nothing to
    repair (it passed, no tier-1 rule refused it, ``tiers.repair_share`` is 0)."""
    if decision.passed or not any(name.startswith("tier1:") for name in decision.failing):
        return pd.DataFrame()
    negatives = int((train["label"] == NEGATIVE).sum())
    return safety_mix(policies, params.data, negatives, params.tiers.repair_share, params.seed)


def _train_once(plan: OwnerPlan, base: Base, policies: Policies, items: pd.DataFrame, params: Params, out_dir: Path,
                train: pd.DataFrame) -> tuple[TierDecision, dict, list[Path]]:
    set_seed(params.seed)
    parent, tokenizer, parent_dirs = load_parent(plan, base, params)
    model, figures = train_adapter(parent, tokenizer, train, params, params.seed)
    decision = gate(model, tokenizer, plan, policies, items, params, against_text(plan, base))
    save_adapter(model, out_dir)
    return decision, figures, [*parent_dirs, out_dir]


def regate(plan: OwnerPlan, base: Base, policies: Policies, items: pd.DataFrame, params: Params,
           own_dir: Path) -> tuple[TierDecision, list[Path]]:
    """An existing adapter judged on a new base (and a user's current deployer adapter);
    returns the decision and the adapter folders in merge order."""
    from peft import PeftModel

    parent, tokenizer, parent_dirs = load_parent(plan, base, params)
    model = PeftModel.from_pretrained(parent, str(own_dir))
    return gate(model, tokenizer, plan, policies, items, params, against_text(plan, base)), [*parent_dirs, own_dir]


def against_text(plan: OwnerPlan, base: Base) -> str:
    parent = f" + {plan.identity['parent_adapter']}" if plan.parent_uri else ""
    return f"{base.name} v{base.version} ({base.alias}){parent}"


def tags_for(plan: OwnerPlan, base: Base, decision: TierDecision, figures: dict, dataset_version: str) -> dict:
    return {**plan.identity, "tier": plan.tier, "owner": plan.owner, "base_model": base.name,
            "dataset_version": dataset_version, **decision.as_tags(),
            **{f"figure.{key}": str(value) for key, value in figures.items()}, "figures": json.dumps(figures)}
