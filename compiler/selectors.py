"""Label selectors: matching, a canonical form, and a human description.

The canonical form is what identical-selector sharing keys on: ``matchLabels`` are folded into
``In`` requirements with one value, values are sorted and de-duplicated, requirements sorted, so
two selectors that select the same objects by construction get the same text.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from compiler.model import LabelSelector

Requirement = tuple[str, str, tuple[str, ...]]


def requirements(selector: LabelSelector) -> tuple[Requirement, ...]:
    """The selector as sorted, de-duplicated (key, operator, values) requirements."""
    reqs: set[Requirement] = {(k, "In", (v,)) for k, v in selector.match_labels.items()}
    for expr in selector.match_expressions:
        values = tuple(sorted(set(expr.values))) if expr.operator in ("In", "NotIn") else ()
        reqs.add((expr.key, expr.operator, values))
    return tuple(sorted(reqs))


def matches(selector: LabelSelector, labels: Mapping[str, str]) -> bool:
    """Whether ``labels`` satisfy every requirement (an empty selector matches everything)."""
    for key, value in selector.match_labels.items():
        if labels.get(key) != value:
            return False
    for expr in selector.match_expressions:
        present = expr.key in labels
        if expr.operator == "In":
            if not present or labels[expr.key] not in expr.values:
                return False
        elif expr.operator == "NotIn":
            # Upstream: NotIn matches objects that lack the key.
            if present and labels[expr.key] in expr.values:
                return False
        elif expr.operator == "Exists":
            if not present:
                return False
        elif present:  # DoesNotExist
            return False
    return True


def canonical(selector: LabelSelector) -> str:
    """Deterministic text of the selector; equal for selectors that are equal by construction."""
    return json.dumps(requirements(selector), separators=(",", ":"))


def describe(selector: LabelSelector) -> str:
    """A short human text: ``pod=a, tier in (db,web)``; ``all`` for the empty selector."""
    parts: list[str] = []
    for key, op, values in requirements(selector):
        if op == "In" and len(values) == 1:
            parts.append(f"{key}={values[0]}")
        elif op == "In":
            parts.append(f"{key} in ({','.join(values)})")
        elif op == "NotIn":
            parts.append(f"{key} notin ({','.join(values)})")
        elif op == "Exists":
            parts.append(key)
        else:
            parts.append(f"!{key}")
    return ", ".join(parts) if parts else "all"
