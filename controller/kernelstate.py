"""What ``nft -j list table inet stockade`` shows, read back into the plan diff's terms.

:func:`read_listing` turns a listing into a :class:`compiler.plandiff.TableState` in the form
the JSON renderer writes, so the applier can compare the kernel with a plan object by object
and diff from what the kernel really holds (adoption on start, drift repair) with
:func:`compiler.plandiff.diff_states`. The kernel's listing differs from what was loaded only
in ways that carry no meaning for us, and those are undone here:

- every object has a ``handle``; it is dropped;
- a rule's counter lists its values (``{"counter": {"packets": 3, "bytes": 180}}``); it becomes
  ``{"counter": null}`` and the values go to :attr:`KernelTable.counters`;
- an interval set lists a one-address interval as the bare address; it becomes the ``/32``
  (``/128``) prefix the renderer writes.

Anything else the table holds that a plan never has (flowtables, named counters, quotas, table
flags) is reported in :attr:`KernelTable.foreign`: such a table cannot be reached by a diff and
is replaced whole.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from compiler.plandiff import ChainState, Container, TableState, canonical

Json = dict[str, Any]

# A rule comment written by compiler.naming.rule_comment: "ns/name ingress[3]".
_RULE_COMMENT = re.compile(
    r"^(?P<namespace>[^/]*)/(?P<policy>.*) (?P<direction>ingress|egress)\[(?P<index>\d+)\]$"
)


# RuleKey.index of a per-pod chain's isolation drop: what no rule of the pod's policies allowed.
ISOLATION = -1


@dataclass(frozen=True, order=True)
class RuleKey:
    """Which policy rule a kernel rule enforces, from its comment; ``index`` :data:`ISOLATION`
    for the drop of the pods the policy isolates."""

    namespace: str
    policy: str
    direction: str
    index: int


@dataclass(frozen=True)
class RuleCounter:
    chain: str
    comment: str
    packets: int
    bytes: int


@dataclass(frozen=True)
class KernelTable:
    state: TableState
    counters: tuple[RuleCounter, ...]
    foreign: tuple[str, ...]


def _strip_handle(body: Json) -> Json:
    return {k: v for k, v in body.items() if k != "handle"}


def _full_prefix(element: Any, addr_type: Any) -> Any:
    if isinstance(element, str):
        return {"prefix": {"addr": element, "len": 32 if addr_type == "ipv4_addr" else 128}}
    return element


def _container(kind: str, body: Json) -> Container:
    declaration = _strip_handle(body)
    elements = declaration.pop("elem", [])
    if kind == "map":
        return Container("map", declaration, {canonical(e[0]): e for e in elements})
    if "interval" in declaration.get("flags", []):
        elements = [_full_prefix(e, declaration.get("type")) for e in elements]
    return Container("set", declaration, {canonical(e): e for e in elements})


def _rule(body: Json) -> tuple[Json, RuleCounter | None]:
    rule = _strip_handle(body)
    rule.setdefault("comment", "")
    counter = None
    expr = []
    for e in rule.get("expr", []):
        if isinstance(e, dict) and "counter" in e:
            values = e["counter"] or {}
            counter = RuleCounter(
                chain=str(rule.get("chain")),
                comment=str(rule["comment"]),
                packets=int(values.get("packets", 0)),
                bytes=int(values.get("bytes", 0)),
            )
            expr.append({"counter": None})
        else:
            expr.append(e)
    rule["expr"] = expr
    return {"rule": rule}, counter


def read_listing(doc: Json) -> KernelTable:
    """A listing of table ``inet stockade`` (``{"nftables": [...]}``) as a table state."""
    declarations: dict[str, Json] = {}
    rules: dict[str, list[Json]] = {}
    containers: dict[str, Container] = {}
    counters: list[RuleCounter] = []
    foreign: list[str] = []
    for obj in doc.get("nftables", []):
        ((kind, body),) = obj.items()
        if kind == "metainfo":
            continue
        if kind == "table":
            if body.get("flags"):
                foreign.append(f"table flags {body['flags']}")
        elif kind == "chain":
            declarations[body["name"]] = _strip_handle(body)
        elif kind in ("set", "map"):
            containers[body["name"]] = _container(kind, body)
        elif kind == "rule":
            rule, counter = _rule(body)
            rules.setdefault(str(body["chain"]), []).append(rule)
            if counter is not None:
                counters.append(counter)
        else:
            foreign.append(f"{kind} {body.get('name', '?')}")
    chains = {name: ChainState(d, tuple(rules.get(name, ()))) for name, d in declarations.items()}
    return KernelTable(TableState(chains=chains, containers=containers), tuple(counters), tuple(foreign))


def differences(kernel: TableState, plan: TableState) -> tuple[str, ...]:
    """What differs between the kernel and the plan, one line per object, for logs and reports."""
    out: list[str] = []
    for name in sorted(kernel.chains.keys() | plan.chains.keys()):
        k, p = kernel.chains.get(name), plan.chains.get(name)
        if k is None:
            out.append(f"chain {name}: missing")
        elif p is None:
            out.append(f"chain {name}: not in the plan")
        elif k.declaration != p.declaration:
            out.append(f"chain {name}: declaration differs")
        elif k.rules != p.rules:
            out.append(f"chain {name}: rules differ ({len(k.rules)} in the kernel, {len(p.rules)} planned)")
    for name in sorted(kernel.containers.keys() | plan.containers.keys()):
        kc, pc = kernel.containers.get(name), plan.containers.get(name)
        if kc is None:
            out.append(f"{pc.kind if pc else 'set'} {name}: missing")
        elif pc is None:
            out.append(f"{kc.kind} {name}: not in the plan")
        elif (kc.kind, kc.declaration) != (pc.kind, pc.declaration):
            out.append(f"{kc.kind} {name}: declaration differs")
        elif kc.elements != pc.elements:
            gone = len(pc.elements.keys() - kc.elements.keys())
            extra = len(kc.elements.keys() - pc.elements.keys())
            out.append(f"{kc.kind} {name}: {gone} elements missing, {extra} extra, or differing")
    return tuple(out)


def isolation_keys(comment: str, isolating: tuple[str, ...]) -> list[RuleKey]:
    """For the isolation drop of a per-pod chain (comment ``<direction> isolation: ...``, written
    by compiler.chains), one key per policy that isolates the chain's pods; else none."""
    direction, sep, _ = comment.partition(" isolation: ")
    if not sep or direction not in ("ingress", "egress"):
        return []
    out = []
    for key in isolating:
        namespace, _, policy = key.partition("/")
        out.append(RuleKey(namespace, policy, direction, ISOLATION))
    return out


def rule_key(comment: str) -> RuleKey | None:
    """The policy rule a comment names, or None for Stockade's own rules (base chains, isolation)."""
    m = _RULE_COMMENT.match(comment)
    if m is None:
        return None
    return RuleKey(m["namespace"], m["policy"], m["direction"], int(m["index"]))
