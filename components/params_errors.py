"""What is wrong with ``params.yaml``, in words: one line per offending dotted key.

pydantic reports errors as locations and codes meant for programs (and links to its docs);
a user needs ``params.yaml: cycles.relearn.beta: must be > 0 (got -1)``.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError

from components.errors import UserError

MAX_SHOWN_CHARS = 80

RULES = {
    "int_type": "must be a whole number",
    "float_type": "must be a number",
    "bool_type": "must be true or false",
    "string_type": "must be text",
    "list_type": "must be a list",
    "model_type": "must be a mapping (a section of keys)",
    "dict_type": "must be a mapping (a section of keys)",
    "too_short": "must not be empty",
    "string_too_short": "must not be empty",
}
BOUNDS = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}


class ParamsError(UserError, ValueError):
    """``params.yaml`` (or a ``-S`` override) breaks a rule of the schema."""


def explain(error: ValidationError, root: type[BaseModel], where: str, overridden: set[str]) -> ParamsError:
    """One line per dotted key, ``WHERE: KEY: RULE (got VALUE)``; a key set by ``-S`` says so."""
    broken: dict[str, list[str]] = {}   # key: its rules (a union's branches give several)
    shown: dict[str, Any] = {}
    for item in error.errors(include_url=False):
        key = dotted_key(item["loc"], root, unknown=item["type"] == "extra_forbidden")
        rules = broken.setdefault(key, [])
        if (rule := _rule(item, key, root)) not in rules:
            rules.append(rule)
        shown.setdefault(key, item["input"])
    lines = [f"{where}{' (-S)' if key in overridden else ''}: {key}: {', or '.join(rules)} (got {_shown(shown[key])})"
             for key, rules in broken.items()]
    return ParamsError("\n".join(lines))


def dotted_key(loc: tuple, root: type[BaseModel], unknown: bool = False) -> str:
    """``cycles.relearn.beta`` or ``tiers.base[0]`` from pydantic's location, leaving out the
    names it gives the branches of a union (``str``, ``list[str]``)."""
    model: Any = root
    parts: list[str] = []
    for index, part in enumerate(loc):
        last = index == len(loc) - 1
        if isinstance(part, int):
            parts[-1] += f"[{part}]"
        elif part in _fields(model) or (unknown and last):
            parts.append(part)
            model = _fields(model)[part].annotation if part in _fields(model) else None
    return ".".join(parts) or "the top level"


def _fields(model: Any) -> dict:
    return model.model_fields if isinstance(model, type) and issubclass(model, BaseModel) else {}


def _rule(item: dict, key: str, root: type[BaseModel]) -> str:
    kind, context = item["type"], item.get("ctx", {})
    if kind == "extra_forbidden":
        section = key.rpartition(".")[0]
        model = root
        for part in filter(None, section.split(".")):
            model = _fields(model)[part].annotation
        return f"unknown key; {section or 'the top level'} knows {sorted(_fields(model))}"
    if kind in BOUNDS:
        return f"must be {BOUNDS[kind]} {next(iter(context.values())):g}"
    if kind == "literal_error":
        return f"must be one of {context['expected']}"
    if kind == "value_error":
        return str(context["error"])
    return RULES.get(kind, item["msg"])


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= MAX_SHOWN_CHARS else text[: MAX_SHOWN_CHARS - 1] + "…"
