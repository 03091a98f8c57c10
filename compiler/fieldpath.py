"""Field paths in the API's spelling, and pydantic errors turned into (path, message) pairs.

A path reads like ``spec.ingress[0].from[1].ipBlock.cidr``; map keys render as
``metadata.labels[app]``, as Kubernetes' own field paths do. Messages are written for someone
editing a YAML file: a boolean where a string belongs says that YAML 1.1 turns unquoted
``yes``/``on``/``true`` into booleans, since that is nearly always how it happened.
"""

from __future__ import annotations

import datetime
import difflib
import json
import re
import types
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

Issue = tuple[str, str]
"""(field path, message)."""

# Fields whose values are maps keyed by user data: the next path element is a key, not a field.
_MAP_FIELDS = frozenset({"labels", "annotations", "matchLabels"})
# pydantic tags errors inside `int | str` unions with the member type; the API has one such field.
_UNION_FIELDS = frozenset({"port"})
_UNION_TAGS = frozenset({"int", "str"})


def child(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def index(path: str, i: int) -> str:
    return f"{path}[{i}]"


def key(path: str, k: object) -> str:
    return f"{path}[{k}]"


def quote(value: object) -> str:
    """A value as the API server quotes it in messages: ``"Bad_Name"``, ``80``."""
    return json.dumps(value, default=str)


def describe(value: object) -> str:
    """What a value is, for messages: ``a boolean (true)``, ``an integer (80)``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({'true' if value else 'false'})"
    if isinstance(value, int):
        return f"an integer ({value})"
    if isinstance(value, float):
        return f"a number ({value})"
    if isinstance(value, str):
        return f"a string ({quote(value)})"
    if isinstance(value, datetime.date):
        return f"a date ({value.isoformat()})"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list | tuple):
        return "a list"
    return type(value).__name__


def scalar_hint(value: object) -> str:
    """Why YAML produced a non-string where a string was written, and how to fix it."""
    if isinstance(value, bool):
        return (
            "; YAML reads unquoted y/n/yes/no/on/off/true/false as booleans: quote the value "
            '(e.g. "yes") if it is meant as text'
        )
    if isinstance(value, int | float | datetime.date) or value is None:
        return "; quote the value in YAML if it is meant as text"
    return ""


def render_loc(loc: Sequence[int | str]) -> tuple[str, bool]:
    """A pydantic ``loc`` as an API path; the flag says the error is about a map *key*."""
    path = ""
    prev: int | str | None = None
    is_key = False
    for part in loc:
        if part == "[key]":
            is_key = True
        elif isinstance(part, int) or prev in _MAP_FIELDS:
            path = key(path, part)
        elif prev in _UNION_FIELDS and part in _UNION_TAGS:
            continue
        else:
            path = child(path, part)
        prev = part
    return path, is_key


def _models_in(annotation: Any) -> Iterable[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
    origin = get_origin(annotation)
    if origin in (tuple, list, Union, types.UnionType):
        for arg in get_args(annotation):
            yield from _models_in(arg)


def _model_at(root: type[BaseModel], loc: Sequence[int | str]) -> type[BaseModel] | None:
    model = root
    for part in loc:
        if isinstance(part, int):
            continue
        fields = {f.alias or name: f for name, f in model.model_fields.items()}
        field = fields.get(part)
        found = next(iter(_models_in(field.annotation)), None) if field else None
        if found is None:
            return None
        model = found
    return model


def _suggestion(root: type[BaseModel], loc: Sequence[int | str]) -> str:
    model = _model_at(root, loc[:-1])
    if model is None:
        return ""
    names = [f.alias or name for name, f in model.model_fields.items()]
    close = difflib.get_close_matches(str(loc[-1]), names, n=1, cutoff=0.6)
    return f' (did you mean "{close[0]}"?)' if close else ""


def _supported(expected: str) -> str:
    return ", ".join(json.dumps(v) for v in re.findall(r"'([^']*)'", expected))


def pydantic_issues(error: ValidationError, root: type[BaseModel]) -> list[Issue]:
    """Every error of ``error`` as (API path, message); ``root`` is the model that was validated."""
    issues: list[Issue] = []
    for err in error.errors(include_url=False):
        loc = err["loc"]
        path, is_key = render_loc(loc)
        kind, value = err["type"], err.get("input")
        if is_key:
            message = f"map keys must be strings, got {describe(value)}{scalar_hint(value)}"
        elif kind == "missing":
            message = "required value"
        elif kind == "extra_forbidden":
            message = f"unknown field {json.dumps(str(loc[-1]))}{_suggestion(root, loc)}"
        elif kind == "string_type":
            message = f"must be a string, got {describe(value)}{scalar_hint(value)}"
        elif kind in ("int_type", "int_parsing", "int_from_float"):
            message = f"must be an integer, got {describe(value)}"
        elif kind == "literal_error":
            supported = _supported(str(err.get("ctx", {}).get("expected", "")))
            message = f"unsupported value {quote(value)}: supported values: {supported}"
        elif kind in ("model_type", "dict_type", "model_attributes_type"):
            message = f"must be an object (a mapping), got {describe(value)}"
        elif kind in ("tuple_type", "list_type"):
            message = f"must be a list, got {describe(value)}"
        elif kind in ("bool_type", "bool_parsing"):
            message = f"must be true or false, got {describe(value)}"
        else:
            message = err["msg"]
        issues.append((path, message))
    return issues
