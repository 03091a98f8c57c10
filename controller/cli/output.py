"""How the offline commands print: text for terminals, JSON for machines.

Everything here returns strings; nothing writes. A command builds its whole output before printing
anything, so a failure half-way never leaves a partial answer on stdout.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Literal

import yaml

from compiler.diff import ConnectivityDiff, PairChange
from compiler.matrix import Matrix, Probe
from compiler.semantics import Family, Side, Verdict

ALLOWED_MARK = "+"
BLOCKED_MARK = "-"
SELF_MARK = "."


class _Dumper(yaml.SafeDumper):
    """Quotes ``y``, ``Y``, ``n`` and ``N``: kubectl's decoder (YAML 1.1 by go-yaml v2) and Stockade's
    read them as booleans, so a plain ``y`` (a namespace, say) would not read back as the string."""

    def resolve(self, kind: Any, value: Any, implicit: Any) -> Any:
        if kind is yaml.ScalarNode and implicit[0] and value in ("y", "Y", "n", "N"):
            return "tag:yaml.org,2002:bool"
        return super().resolve(kind, value, implicit)  # type: ignore[no-untyped-call]


def dumps(value: object, fmt: Literal["json", "yaml"] = "json") -> str:
    """JSON (indented) or YAML (block style) as the commands print it: keys in the order built,
    ending in a newline."""
    if fmt == "yaml":
        return yaml.dump(value, Dumper=_Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True)
    return json.dumps(value, indent=2) + "\n"


# --- explain ------------------------------------------------------------------------------------------


def verdict_json(verdict: Verdict) -> dict[str, Any]:
    return {
        "allowed": verdict.allowed,
        "from": verdict.src,
        "to": verdict.dst,
        "protocol": verdict.protocol,
        "port": verdict.port,
        "family": verdict.family,
        "egress": _side_json(verdict.egress),
        "ingress": _side_json(verdict.ingress),
        "explanation": verdict.explain(),
    }


def _side_json(side: Side) -> dict[str, Any]:
    return {
        "direction": side.direction,
        "subject": side.subject,
        "allowed": side.allowed,
        "isolated": side.isolated,
        "isolating": list(side.isolating),
        "allowed_by": [
            {"policy": ref.policy, "direction": ref.direction, "index": ref.index} for ref in side.allowed_by
        ],
        "exempt": side.exempt,
        "hints": list(side.hints),
    }


# --- matrix -------------------------------------------------------------------------------------------


def _marks(cell: tuple[bool, ...] | None, count: int) -> str:
    if cell is None:
        return SELF_MARK * count
    return "".join(ALLOWED_MARK if ok else BLOCKED_MARK for ok in cell)


def matrix_text(matrix: Matrix, *, width: int) -> str:
    """Rows are sources, columns destinations; one mark per probe in each cell.

    Columns carry the full ``namespace/name`` when the table fits in ``width`` characters, else
    numbers, with the rows numbered alike as the legend.
    """
    keys = matrix.names()
    plain = any(pod.workload is None for pod in matrix.pods)
    probes = " ".join(str(p) for p in matrix.probes)
    lines = [
        f"Connectivity (IPv{matrix.family}): rows are sources, columns destinations.",
        f"Each cell has one mark per port, in this order: {probes}",
        f"  {ALLOWED_MARK} allowed   {BLOCKED_MARK} blocked"
        + (f"   {SELF_MARK} a pod to itself (never leaves it)" if plain else ""),
    ]
    if any(pod.workload for pod in matrix.pods):
        lines.append(
            "  [Kind] a workload template: it stands for every replica; its diagonal is replica to replica"
        )
    lines.append("")
    if not keys:
        lines.append("(no pods)")
        return "\n".join(lines) + "\n"
    rows = [pod.key + (f" [{pod.workload.partition('/')[0]}]" if pod.workload else "") for pod in matrix.pods]
    count = len(matrix.probes)
    row_width = max(len(r) for r in rows)
    full_width = row_width + sum(2 + max(len(k), count) for k in keys)
    if full_width <= width:
        headers = list(keys)
        row_labels = rows
    else:
        headers = [str(i) for i in range(1, len(keys) + 1)]
        number_width = len(headers[-1])
        row_labels = [f"{i:>{number_width}}  {r}" for i, r in enumerate(rows, start=1)]
        lines.insert(-1, "  Columns are numbered as the rows.")
    label_width = max(len(r) for r in row_labels)
    widths = [max(len(h), count) for h in headers]
    header = " " * label_width + "".join(f"  {h:<{w}}" for h, w in zip(headers, widths, strict=True))
    lines.append(header.rstrip())
    for label, src in zip(row_labels, keys, strict=True):
        cells = [_marks(matrix.cell(src, dst), count) for dst in keys]
        line = f"{label:<{label_width}}" + "".join(f"  {c:<{w}}" for c, w in zip(cells, widths, strict=True))
        lines.append(line.rstrip())
    allowed, total = matrix.counts()
    lines.append("")
    lines.append(f"{allowed} of {total} (pair, port) combinations allowed.")
    return "\n".join(lines) + "\n"


def matrix_json(matrix: Matrix) -> dict[str, Any]:
    """``allowed[src][dst][probe]``; a plain pod's pair with itself is absent."""
    allowed: dict[str, dict[str, dict[str, bool]]] = {}
    for src in matrix.names():
        row: dict[str, dict[str, bool]] = {}
        for dst in matrix.names():
            cell = matrix.cell(src, dst)
            if cell is not None:
                row[dst] = {str(p): ok for p, ok in zip(matrix.probes, cell, strict=True)}
        allowed[src] = row
    return {
        "family": matrix.family,
        "ports": [str(p) for p in matrix.probes],
        "pods": [
            {"name": pod.key, "workload": pod.workload, "ips": list(pod.ips), "node": pod.node}
            for pod in matrix.pods
        ],
        "allowed": allowed,
    }


# --- diff ---------------------------------------------------------------------------------------------


def diff_text(
    conn: ConnectivityDiff,
    *,
    probes: Sequence[Probe],
    families: Sequence[Family],
    node: str | None,
    ruleset: str | None,
    ruleset_note: str = "",
) -> str:
    """The connectivity change (``+``/``-`` lines), added and removed pods, the ruleset diff, a summary."""
    fams = ", ".join(f"IPv{f}" for f in families)
    lines = [f"Connectivity ({fams}; ports {' '.join(str(p) for p in probes)}):"]
    changes = [c.describe("+") for c in conn.gained] + [c.describe("-") for c in conn.lost]
    lines.extend(f"  {c}" for c in changes)
    if not changes:
        lines.append("  no pair gained or lost access")
    if conn.added_pods:
        lines.append(f"Pods added (not compared): {', '.join(conn.added_pods)}")
    if conn.removed_pods:
        lines.append(f"Pods removed (not compared): {', '.join(conn.removed_pods)}")
    lines.append("")
    if node is None:
        lines.append(f"Ruleset: not compared ({ruleset_note})" if ruleset_note else "Ruleset: not compared")
    elif ruleset:
        lines.append(f"Ruleset of node {node}:")
        lines.append(ruleset.rstrip("\n"))
    else:
        lines.append(f"Ruleset of node {node}: unchanged")
    lines.append("")
    lines.append(_summary(conn, node=node, ruleset_changed=bool(ruleset)))
    return "\n".join(lines) + "\n"


def _summary(conn: ConnectivityDiff, *, node: str | None, ruleset_changed: bool) -> str:
    parts = [
        f"{len(conn.gained)} gained",
        f"{len(conn.lost)} lost",
        f"{len(conn.added_pods)} pods added",
        f"{len(conn.removed_pods)} removed",
    ]
    if node is not None:
        parts.append(f"ruleset of {node} {'changed' if ruleset_changed else 'unchanged'}")
    return "Summary: " + ", ".join(parts) + "."


def _change_json(change: PairChange) -> dict[str, Any]:
    return {
        "from": change.src,
        "to": change.dst,
        "protocol": change.protocol,
        "port": change.port,
        "family": change.family,
        "address": change.address or None,
        "reason": change.reason,
    }


def diff_json(
    conn: ConnectivityDiff,
    *,
    probes: Sequence[Probe],
    families: Sequence[Family],
    node: str | None,
    ruleset: str | None,
) -> dict[str, Any]:
    return {
        "ports": [str(p) for p in probes],
        "families": list(families),
        "connectivity": {
            "gained": [_change_json(c) for c in conn.gained],
            "lost": [_change_json(c) for c in conn.lost],
            "added_pods": list(conn.added_pods),
            "removed_pods": list(conn.removed_pods),
        },
        "ruleset": {"node": node, "changed": bool(ruleset), "diff": ruleset or ""},
        "widened": conn.widened,
        "changed": conn.changed or bool(ruleset),
    }
