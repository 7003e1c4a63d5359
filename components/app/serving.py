"""Which model answers whom, resolved per answer so a promotion shows without a restart.

The base is the first of ``tiers.base``'s aliases of ``registry.model_name`` that exists (the
champion; the challenger until one was promoted); a user is answered by their own adapter's
champion (``alignpipe-adapter-<user>``), else their deployer's, composed on the base version it
was gated on; a reviewer by their deployer's; an admin by the base. Aliases are looked up for
every answer; loaded models are cached by version, so moving an alias costs one load.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import asdict, dataclass

from components.app.schema import Account
from components.errors import UserError
from components.params import Params
from components.policy.policies import Policies

CACHED_MODELS = 2


class NoModel(UserError, LookupError):
    """Nothing registered to answer with yet."""


@dataclass(frozen=True)
class Served:
    """The versions that write an answer (stored with it, shown under it)."""

    model_name: str
    model_version: str
    adapter_name: str = ""
    adapter_version: str = ""

    @property
    def uri(self) -> str:
        name, version = (self.adapter_name, self.adapter_version) if self.adapter_name else (self.model_name, self.model_version)
        return f"models:/{name}/{version}"

    def columns(self) -> dict[str, str]:
        return asdict(self)


def adapter_owners(account: Account, policies: Policies) -> list[str]:
    """Whose adapters may answer ``account``, in order of preference."""
    if account.role == "user" and account.owner in policies.users:
        return [account.owner, policies.users[account.owner].deployer]
    return [account.owner] if account.role == "reviewer" else []


def resolve(params: Params, policies: Policies, account: Account) -> Served:
    """The versions that answer ``account`` now (registry reads only; nothing is loaded)."""
    from components.registry import registry
    from components.registry.adapters import STALE_TAG, adapter_model_name

    name = params.registry.model_name
    base = next((v for alias in params.tiers.base if (v := registry.version_by_alias(name, alias)) is not None), None)
    if base is None:
        raise NoModel(f"{name} has none of the aliases {params.tiers.base} yet: run `make run` (or alignpipe run) first")
    for owner in adapter_owners(account, policies):
        adapter = registry.champion(adapter_model_name(owner))
        if adapter is not None and STALE_TAG not in adapter.tags:
            return Served(name, adapter.tags.get("base_version", str(base.version)), adapter.name, str(adapter.version))
    return Served(name, str(base.version))


class ModelCache:
    """The last few loaded models by URI (a composed adapter version is one entry). A registered
    version never changes, so one cache serves every app in the process (:data:`MODELS`)."""

    def __init__(self, size: int = CACHED_MODELS):
        self._size, self._models, self._lock = size, OrderedDict(), threading.Lock()

    def get(self, uri: str):
        """``(model, tokenizer)`` of a registered version, loaded through its pyfunc (no pickle)."""
        with self._lock:
            if uri in self._models:
                self._models.move_to_end(uri)
                return self._models[uri]
        import mlflow

        generator = mlflow.pyfunc.load_model(uri).unwrap_python_model()
        with self._lock:
            self._models[uri] = (generator.model, generator.tokenizer)
            while len(self._models) > self._size:
                self._models.popitem(last=False)
            return self._models[uri]


MODELS = ModelCache()
