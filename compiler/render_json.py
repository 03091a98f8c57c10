"""A NodePlan as libnftables JSON (``man libnftables-json``): the form the applier loads.

:func:`render_json` is one transaction that replaces table ``inet stockade``: ``add table``
(so the delete cannot fail on a node without it), ``delete table``, ``add table``, then every
object. libnftables applies a command list as one netlink batch, so the kernel sees the old
ruleset or the new one, never a mix, and loading the same document twice works.

Objects are created in dependency order: chains (empty), then sets and maps (map elements
name chains), then rules (rules name sets and chains). The builders here are shared with the
incremental path.
"""

from __future__ import annotations

from typing import Any

from compiler.ir import (
    AddrInSet,
    AddrIs,
    AddrPortSet,
    AddrSet,
    Chain,
    CtStateIn,
    DaddrProtoPortInSet,
    DportIn,
    FibSaddrIifMissing,
    Icmpv6TypeIn,
    IfnameAddrSet,
    IfnamePrefix,
    IifLoopback,
    IifnameSaddrInSet,
    Interval,
    IntervalSet,
    L4protoIn,
    MapEntry,
    Match,
    NodePlan,
    Notrack,
    PlanSet,
    PortRange,
    Rule,
    SaddrDaddrInSet,
    SelfPairSet,
    Verdict,
    VerdictMap,
    VmapLookup,
)
from compiler.naming import FAMILY, TABLE, addr_type, interface_wildcard, ip_keyword

Json = dict[str, Any]
JSON_SCHEMA_VERSION = 1


def _payload(protocol: str, field: str) -> Json:
    return {"payload": {"protocol": protocol, "field": field}}


def _eq(left: Json, right: Any, *, op: str = "==") -> Json:
    return {"match": {"op": op, "left": left, "right": right}}


def _port(r: PortRange) -> Any:
    return r.first if r.first == r.last else {"range": [r.first, r.last]}


def _one_or_set(values: list[Any]) -> Any:
    return values[0] if len(values) == 1 else {"set": values}


def match_json(m: Match) -> Json:
    if isinstance(m, AddrIs):
        return _eq(_payload(ip_keyword(m.family), m.field), m.address)
    if isinstance(m, AddrInSet):
        return _eq(_payload(ip_keyword(m.family), m.field), f"@{m.set_name}", op="!=" if m.negate else "==")
    if isinstance(m, DportIn):
        return _eq(_payload(m.protocol.lower(), "dport"), _one_or_set([_port(r) for r in m.ports]))
    if isinstance(m, L4protoIn):
        return _eq({"meta": {"key": "l4proto"}}, _one_or_set([p.lower() for p in m.protocols]))
    if isinstance(m, DaddrProtoPortInSet):
        key = {
            "concat": [
                _payload(ip_keyword(m.family), "daddr"),
                {"meta": {"key": "l4proto"}},
                _payload("th", "dport"),
            ]
        }
        return _eq(key, f"@{m.set_name}")
    if isinstance(m, SaddrDaddrInSet):
        ip = ip_keyword(m.family)
        return _eq({"concat": [_payload(ip, "saddr"), _payload(ip, "daddr")]}, f"@{m.set_name}")
    if isinstance(m, CtStateIn):
        states: Any = m.states[0] if len(m.states) == 1 else list(m.states)
        return _eq({"ct": {"key": "state"}}, states, op="in")
    if isinstance(m, IifLoopback):
        return _eq({"meta": {"key": "iiftype"}}, "loopback")
    if isinstance(m, IfnamePrefix):
        return _eq({"meta": {"key": m.key}}, interface_wildcard(m.prefix))
    if isinstance(m, IifnameSaddrInSet):
        key = {"concat": [{"meta": {"key": "iifname"}}, _payload(ip_keyword(m.family), "saddr")]}
        return _eq(key, f"@{m.set_name}")
    if isinstance(m, FibSaddrIifMissing):
        return _eq({"fib": {"result": "oif", "flags": ["saddr", "iif"]}}, False)
    if isinstance(m, Icmpv6TypeIn):
        return _eq(_payload("icmpv6", "type"), _one_or_set(list(m.types)))
    raise TypeError(f"unknown match {m!r}")


def verdict_json(v: Verdict) -> Json:
    if v.kind == "jump":
        return {"jump": {"target": v.target}}
    return {v.kind: None}


def rule_json(chain: str, rule: Rule) -> Json:
    expr: list[Json] = [match_json(m) for m in rule.matches]
    if rule.counter:
        expr.append({"counter": None})
    if isinstance(rule.action, VmapLookup):
        a = rule.action
        expr.append({"vmap": {"key": _payload(ip_keyword(a.family), a.field), "data": f"@{a.map_name}"}})
    elif isinstance(rule.action, Notrack):
        expr.append({"notrack": None})
    else:
        expr.append(verdict_json(rule.action))
    return {"rule": {"family": FAMILY, "table": TABLE, "chain": chain, "expr": expr, "comment": rule.comment}}


def chain_json(chain: Chain) -> Json:
    body: Json = {"family": FAMILY, "table": TABLE, "name": chain.name}
    if chain.hook is not None:
        body |= {
            "type": "filter",
            "hook": chain.hook.hook,
            "prio": chain.hook.priority,
            "policy": chain.hook.policy,
        }
    return {"chain": body}


def _interval(i: Interval) -> Any:
    if i.prefix_len is not None:
        return {"prefix": {"addr": i.first, "len": i.prefix_len}}
    return {"range": [i.first, i.last]}


def set_elements(s: PlanSet) -> list[Any]:
    if isinstance(s, AddrSet):
        return list(s.elements)
    if isinstance(s, IntervalSet):
        return [_interval(i) for i in s.elements]
    if isinstance(s, SelfPairSet):
        return [{"concat": [a, a]} for a in s.elements]
    if isinstance(s, IfnameAddrSet):
        return [{"concat": [e.ifname, e.address]} for e in s.elements]
    return [{"concat": [e.address, e.protocol.lower(), e.port]} for e in s.elements]


def set_json(s: PlanSet) -> Json:
    body: Json = {"family": FAMILY, "table": TABLE, "name": s.name}
    if isinstance(s, AddrPortSet):
        body["type"] = [addr_type(s.family), "inet_proto", "inet_service"]
    elif isinstance(s, SelfPairSet):
        body["type"] = [addr_type(s.family), addr_type(s.family)]
    elif isinstance(s, IfnameAddrSet):
        body["type"] = ["ifname", addr_type(s.family)]
    else:
        body["type"] = addr_type(s.family)
    if isinstance(s, IntervalSet):
        body["flags"] = ["interval"]
    elements = set_elements(s)
    if elements:
        body["elem"] = elements
    return {"set": body}


def map_entry_json(e: MapEntry) -> list[Any]:
    return [e.address, verdict_json(e.verdict)]


def map_json(m: VerdictMap) -> Json:
    body: Json = {
        "family": FAMILY,
        "table": TABLE,
        "name": m.name,
        "type": addr_type(m.family),
        "map": "verdict",
    }
    if m.entries:
        body["elem"] = [map_entry_json(e) for e in m.entries]
    return {"map": body}


def table_json() -> Json:
    return {"table": {"family": FAMILY, "name": TABLE}}


def ref_json(kind: str, name: str) -> Json:
    """An object by name alone (``chain``, ``set`` or ``map``): what flush and delete take."""
    return {kind: {"family": FAMILY, "table": TABLE, "name": name}}


def elements_cmd(verb: str, name: str, elem: list[Any]) -> Json:
    """Add or delete elements of a set or map. A map element is deleted by its key alone: pass
    ``map_entry_json(e)[0]``."""
    return {verb: {"element": {"family": FAMILY, "table": TABLE, "name": name, "elem": elem}}}


def render_json(plan: NodePlan) -> dict[str, Any]:
    """The plan as one libnftables transaction that replaces table ``inet stockade``."""
    commands: list[Json] = [
        {"metainfo": {"json_schema_version": JSON_SCHEMA_VERSION}},
        {"add": table_json()},
        {"delete": table_json()},
        {"add": table_json()},
    ]
    commands += [{"add": chain_json(c)} for c in plan.chains]
    commands += [{"add": set_json(s)} for s in plan.sets]
    commands += [{"add": map_json(m)} for m in plan.maps]
    commands += [{"add": rule_json(c.name, r)} for c in plan.chains for r in c.rules]
    return {"nftables": commands}
