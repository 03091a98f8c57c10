"""A NodePlan as nft text: the same ruleset as :func:`compiler.render_json.render_json`, for people
and for ``nft -f``.

Same idiom as the JSON: ``table inet stockade {}`` (creates it if missing), ``delete table inet
stockade``, then the full table; ``nft -f`` runs a file as one transaction. Inside the table,
sets and maps come first, then chains in creation order (regular chains before the base chains
that jump into them). Every word comes from the plan: object names from :mod:`compiler.naming`
(never API text), comments already sanitized there; the ``#`` lines are for readers only and
go through the same sanitizer, so no API value can end a line or a string.
"""

from __future__ import annotations

from collections.abc import Sequence

from compiler import naming
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

_PER_LINE = 8


def _port(r: PortRange) -> str:
    return str(r.first) if r.first == r.last else f"{r.first}-{r.last}"


def _one_or_set(values: Sequence[str]) -> str:
    return values[0] if len(values) == 1 else "{ " + ", ".join(values) + " }"


def match_text(m: Match) -> str:
    if isinstance(m, AddrIs):
        return f"{ip_keyword(m.family)} {m.field} {m.address}"
    if isinstance(m, AddrInSet):
        return f"{ip_keyword(m.family)} {m.field} {'!= ' if m.negate else ''}@{m.set_name}"
    if isinstance(m, DportIn):
        return f"{m.protocol.lower()} dport {_one_or_set([_port(r) for r in m.ports])}"
    if isinstance(m, L4protoIn):
        return f"meta l4proto {_one_or_set([p.lower() for p in m.protocols])}"
    if isinstance(m, DaddrProtoPortInSet):
        return f"{ip_keyword(m.family)} daddr . meta l4proto . th dport @{m.set_name}"
    if isinstance(m, SaddrDaddrInSet):
        ip = ip_keyword(m.family)
        return f"{ip} saddr . {ip} daddr @{m.set_name}"
    if isinstance(m, CtStateIn):
        return f"ct state {','.join(m.states)}"
    if isinstance(m, IifLoopback):
        return "meta iiftype loopback"
    if isinstance(m, IfnamePrefix):
        return f'{m.key} "{interface_wildcard(m.prefix)}"'
    if isinstance(m, IifnameSaddrInSet):
        return f"iifname . {ip_keyword(m.family)} saddr @{m.set_name}"
    if isinstance(m, FibSaddrIifMissing):
        return "fib saddr . iif oif missing"
    if isinstance(m, Icmpv6TypeIn):
        return f"icmpv6 type {_one_or_set(list(m.types))}"
    raise TypeError(f"unknown match {m!r}")


def verdict_text(v: Verdict) -> str:
    return f"jump {v.target}" if v.kind == "jump" else v.kind


def rule_text(rule: Rule) -> str:
    words = [match_text(m) for m in rule.matches]
    if rule.counter:
        words.append("counter")
    if isinstance(rule.action, VmapLookup):
        a = rule.action
        words.append(f"{ip_keyword(a.family)} {a.field} vmap @{a.map_name}")
    elif isinstance(rule.action, Notrack):
        words.append("notrack")
    else:
        words.append(verdict_text(rule.action))
    words.append(f'comment "{rule.comment}"')
    return " ".join(words)


def _interval(i: Interval) -> str:
    return f"{i.first}/{i.prefix_len}" if i.prefix_len is not None else f"{i.first}-{i.last}"


def set_element_texts(s: PlanSet) -> list[str]:
    if isinstance(s, AddrSet):
        return list(s.elements)
    if isinstance(s, IntervalSet):
        return [_interval(i) for i in s.elements]
    if isinstance(s, SelfPairSet):
        return [f"{a} . {a}" for a in s.elements]
    if isinstance(s, IfnameAddrSet):
        # Interface names are checked (compiler.podsources): letters, digits, '-', '_', '.' only.
        return [f'"{e.ifname}" . {e.address}' for e in s.elements]
    return [f"{e.address} . {e.protocol.lower()} . {e.port}" for e in s.elements]


def _elements_block(items: Sequence[str], indent: str) -> list[str]:
    if not items:
        return []
    lines = [", ".join(items[i : i + _PER_LINE]) for i in range(0, len(items), _PER_LINE)]
    if len(lines) == 1:
        return [f"{indent}elements = {{ {lines[0]} }}"]
    body = [f"{indent}\t{line}," for line in lines[:-1]] + [f"{indent}\t{lines[-1]}"]
    return [f"{indent}elements = {{", *body, f"{indent}}}"]


def _note(text: str, indent: str) -> list[str]:
    return [f"{indent}# {naming.note(text)}"] if text else []


def set_text(s: PlanSet) -> list[str]:
    if isinstance(s, AddrPortSet):
        kind = f"{addr_type(s.family)} . inet_proto . inet_service"
    elif isinstance(s, SelfPairSet):
        kind = f"{addr_type(s.family)} . {addr_type(s.family)}"
    elif isinstance(s, IfnameAddrSet):
        kind = f"ifname . {addr_type(s.family)}"
    else:
        kind = addr_type(s.family)
    lines = [*_note(s.note, "\t"), f"\tset {s.name} {{", f"\t\ttype {kind}"]
    if isinstance(s, IntervalSet):
        lines.append("\t\tflags interval")
    lines += _elements_block(set_element_texts(s), "\t\t")
    return [*lines, "\t}"]


def map_text(m: VerdictMap) -> list[str]:
    lines = [f"\tmap {m.name} {{", f"\t\ttype {addr_type(m.family)} : verdict"]
    lines += _elements_block([f"{e.address} : {verdict_text(e.verdict)}" for e in m.entries], "\t\t")
    return [*lines, "\t}"]


def chain_text(chain: Chain) -> list[str]:
    # No `#` line: the chain's first rule carries its description (see ir.description).
    lines = [f"\tchain {chain.name} {{"]
    if chain.hook is not None:
        h = chain.hook
        lines.append(f"\t\ttype filter hook {h.hook} priority {h.priority_name}; policy {h.policy};")
    lines += [f"\t\t{rule_text(r)}" for r in chain.rules]
    return [*lines, "\t}"]


def render_nft(plan: NodePlan) -> str:
    """The plan as an ``nft -f`` file that replaces table ``inet stockade`` in one transaction."""
    out = [f"# Stockade ruleset for node {naming.note(plan.node)!r}: generated, do not edit."]
    out += [f"# note: {naming.note(n)}" for n in plan.notes]
    out += [f"table {FAMILY} {TABLE} {{}}", f"delete table {FAMILY} {TABLE}", f"table {FAMILY} {TABLE} {{"]
    blocks: list[list[str]] = [set_text(s) for s in plan.sets]
    blocks += [map_text(m) for m in plan.maps]
    blocks += [chain_text(c) for c in plan.chains]
    for i, block in enumerate(blocks):
        if i:
            out.append("")
        out += block
    out.append("}")
    return "\n".join(out) + "\n"
