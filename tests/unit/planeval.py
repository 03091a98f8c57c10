"""An interpreter of NodePlans for the first packet of a connection, for unit tests.

It walks chains, sets and verdict maps as nftables would (jump / return / continue / end of a
regular chain = return, end of a base chain = its policy), so the compiler's logic can be
checked against :mod:`compiler.semantics` on many random models without a kernel. What it
cannot see (conntrack, fib, interface types) is answered as for a new, unspoofed packet from a
pod: `ct state` never matches, nor does `iiftype loopback`, nor the anti-spoofing drop. The
kernel tests check those parts, and that nftables reads the rendered plan the same way.

Anti-spoofing itself (the ``prerouting`` chain) has its own walk, :func:`prerouting_allows`, with
the arrival interface and a model of the node's routing table standing in for the kernel's
``fib`` lookup.

Which pod a packet's address belongs to is decided here by :class:`AddressOwners`, written from
the data-plane rules (DESIGN.md) and not from the compiler's own index: an oracle sharing that
code would agree with the compiler on exactly the defects it must catch.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from compiler.cluster import ClusterModel
from compiler.ir import (
    AddrInSet,
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
    IntervalSet,
    L4protoIn,
    Match,
    NodePlan,
    Notrack,
    SaddrDaddrInSet,
    SelfPairSet,
    Verdict,
    VmapLookup,
)
from compiler.model import Pod, Protocol

Outcome = Literal["accept", "drop", "return"]


@dataclass(frozen=True)
class Packet:
    saddr: str
    daddr: str
    protocol: Protocol
    dport: int

    @property
    def family(self) -> int:
        return ipaddress.ip_address(self.saddr).version


class CompiledPlan:
    """A NodePlan with its sets, maps and chains indexed for lookups."""

    def __init__(self, plan: NodePlan) -> None:
        self.plan = plan
        self.addrs: dict[str, frozenset[int]] = {}
        self.spans: dict[str, tuple[tuple[int, int], ...]] = {}
        self.tuples: dict[str, frozenset[tuple[int, str, int]]] = {}
        self.pairs: dict[str, frozenset[tuple[int, int]]] = {}
        self.sources: dict[str, frozenset[tuple[str, int]]] = {}
        for s in plan.sets:
            if isinstance(s, AddrSet):
                self.addrs[s.name] = frozenset(_int(a) for a in s.elements)
            elif isinstance(s, IntervalSet):
                self.spans[s.name] = tuple((_int(i.first), _int(i.last)) for i in s.elements)
            elif isinstance(s, AddrPortSet):
                self.tuples[s.name] = frozenset((_int(e.address), e.protocol, e.port) for e in s.elements)
            elif isinstance(s, SelfPairSet):
                self.pairs[s.name] = frozenset((_int(a), _int(a)) for a in s.elements)
            elif isinstance(s, IfnameAddrSet):
                self.sources[s.name] = frozenset((e.ifname, _int(e.address)) for e in s.elements)
        self.maps = {m.name: {_int(e.address): e.verdict for e in m.entries} for m in plan.maps}
        self.chains = {c.name: c for c in plan.chains}

    def member(self, name: str, address: str) -> bool:
        value = _int(address)
        if name in self.addrs:
            return value in self.addrs[name]
        assert name in self.spans, f"rule uses undeclared set {name}"
        return any(lo <= value <= hi for lo, hi in self.spans[name])


@functools.lru_cache(maxsize=4096)
def _int(address: str) -> int:
    return int(ipaddress.ip_address(address))


def _matches(plan: CompiledPlan, m: Match, pkt: Packet) -> bool:
    if isinstance(m, AddrInSet):
        if m.family != pkt.family:
            return False
        return plan.member(m.set_name, pkt.saddr if m.field == "saddr" else pkt.daddr) != m.negate
    if isinstance(m, DportIn):
        return m.protocol == pkt.protocol and any(r.first <= pkt.dport <= r.last for r in m.ports)
    if isinstance(m, L4protoIn):
        return pkt.protocol in m.protocols
    if isinstance(m, DaddrProtoPortInSet):
        if m.family != pkt.family:
            return False
        return (_int(pkt.daddr), pkt.protocol, pkt.dport) in plan.tuples[m.set_name]
    if isinstance(m, SaddrDaddrInSet):
        if m.family != pkt.family:
            return False
        return (_int(pkt.saddr), _int(pkt.daddr)) in plan.pairs[m.set_name]
    if isinstance(
        m, CtStateIn | IifLoopback | IfnamePrefix | IifnameSaddrInSet | FibSaddrIifMissing | Icmpv6TypeIn
    ):
        # A new, valid TCP/UDP/SCTP packet, source not spoofed: every rule that names an interface
        # also needs a spoofed source, an invalid state or the overlay's UDP port (which no
        # packet of these tables uses), so the interface does not matter here.
        return False
    raise TypeError(m)


def run_chain(plan: CompiledPlan, chain: Chain, pkt: Packet, depth: int = 0) -> Outcome:
    assert depth < 16, "jump loop"
    for rule in chain.rules:
        if not all(_matches(plan, m, pkt) for m in rule.matches):
            continue
        action = rule.action
        verdict: Verdict
        if isinstance(action, VmapLookup):
            if action.family != pkt.family:
                continue
            found = plan.maps[action.map_name].get(_int(pkt.saddr if action.field == "saddr" else pkt.daddr))
            if found is None:
                continue
            verdict = found
        elif isinstance(action, Notrack):
            continue  # a statement, not a verdict (only in prerouting and output, never judged here)
        else:
            verdict = action
        if verdict.kind == "accept":
            return "accept"
        if verdict.kind == "drop":
            return "drop"
        if verdict.kind == "return":
            return "return"
        if verdict.kind == "jump":
            assert verdict.target in plan.chains, f"jump to undeclared chain {verdict.target}"
            outcome = run_chain(plan, plan.chains[verdict.target], pkt, depth + 1)
            if outcome != "return":
                return outcome
    return "return"


def hook_allows(plan: CompiledPlan, hook: Literal["input", "forward"], pkt: Packet) -> bool:
    chain = plan.chains[hook]
    assert chain.hook is not None
    return run_chain(plan, chain, pkt) != "drop"  # a base chain's end is its policy: accept


@dataclass(frozen=True)
class Arrival:
    """A packet entering the node on interface ``iifname`` from ``saddr``."""

    iifname: str
    saddr: str


def routes_back(routes: Mapping[str, str], arrival: Arrival) -> bool:
    """The strict reverse-path rule, on a node whose routing table sends each address of
    ``routes`` to the interface it maps to (the /32 and /128 routes the CNI installs): the source
    routes back via the arrival interface. A link-local source routes back via every interface
    (each pod veth carries fe80::1/64, so each has a route to fe80::/64)."""
    address = ipaddress.ip_address(arrival.saddr)
    if address.version == 6 and address.is_link_local:
        return True
    return routes.get(str(address)) == arrival.iifname


def _prerouting_match(plan: CompiledPlan, m: Match, arrival: Arrival, routes: Mapping[str, str]) -> bool:
    family = ipaddress.ip_address(arrival.saddr).version
    if isinstance(m, IfnamePrefix):
        assert m.key == "iifname", "prerouting has no output interface"
        return arrival.iifname.startswith(m.prefix)
    if isinstance(m, IifnameSaddrInSet):
        assert m.set_name in plan.sources, f"rule uses undeclared set {m.set_name}"
        return m.family == family and (arrival.iifname, _int(arrival.saddr)) in plan.sources[m.set_name]
    if isinstance(m, FibSaddrIifMissing):
        return not routes_back(routes, arrival)
    raise TypeError(f"prerouting: no model of {m!r}")


def prerouting_allows(plan: CompiledPlan, arrival: Arrival, routes: Mapping[str, str]) -> bool:
    """Whether the ``prerouting`` chain lets the packet on (its policy is accept)."""
    chain = plan.chains["prerouting"]
    assert chain.hook is not None and chain.hook.hook == "prerouting"
    for rule in chain.rules:
        if isinstance(rule.action, Notrack):
            continue  # conntrack's business, not a verdict: the chain goes on either way
        if not all(_prerouting_match(plan, m, arrival, routes) for m in rule.matches):
            continue
        assert isinstance(rule.action, Verdict), "prerouting has no verdict maps"
        if rule.action.kind in ("accept", "drop"):
            return rule.action.kind == "accept"
        assert rule.action.kind == "continue", f"prerouting: unexpected {rule.action}"
    return True


def _canonical(text: str) -> str | None:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


class AddressOwners:
    """The owner (a pod UID) of every pod address, by the rules the compiler must follow.

    - Addresses come from the pod's status; a pod whose status lists none takes those the CNI
      plugin reported for its UID (``model.cni_addresses``).
    - Host-network pods and finished pods (Succeeded, Failed) own nothing.
    - Several live claimants: not being deleted beats being deleted, then the later
      creationTimestamp wins (a missing one loses to any); equal best claims: nobody owns it.
    """

    def __init__(self, model: ClusterModel) -> None:
        self.pods: dict[str, Pod] = {}
        claims: dict[str, list[tuple[tuple[int, float], str]]] = {}
        for pod in model.api_pods:
            self.pods[pod.uid] = pod
            if pod.spec.host_network or pod.status.phase in ("Succeeded", "Failed"):
                continue
            listed = [p.ip for p in pod.status.pod_ips] + [pod.status.pod_ip or ""]
            texts = [t for t in listed if t] or list(model.cni_addresses.get(pod.uid, ()))
            meta = pod.metadata
            rank = (
                0 if meta.deletion_timestamp is not None else 1,
                meta.creation_timestamp.timestamp() if meta.creation_timestamp is not None else -1e18,
            )
            for address in {a for a in map(_canonical, texts) if a is not None}:
                claims.setdefault(address, []).append((rank, pod.uid))
        self.owner: dict[str, str] = {}
        for address, found in claims.items():
            found.sort(reverse=True)
            if len(found) == 1 or found[0][0] != found[1][0]:
                self.owner[address] = found[0][1]

    def pod_of(self, address: str) -> Pod | None:
        uid = self.owner.get(_canonical(address) or "")
        return None if uid is None else self.pods[uid]


class ClusterEval:
    """Packets through a whole cluster: every node's plan, in the Stockade data-plane model."""

    def __init__(self, model: ClusterModel, plans: dict[str, NodePlan]) -> None:
        self.model = model
        self.plans = {name: CompiledPlan(plan) for name, plan in plans.items()}
        self.index = AddressOwners(model)

    def node_of(self, address: str) -> str | None:
        """Where a packet from ``address`` starts: its owning pod's node, or the node that has it."""
        owner = self.index.pod_of(address)
        if owner is not None:
            return owner.spec.node_name
        for pod in self.model.pods:
            if pod.spec.host_network and address in pod.ips():
                return pod.spec.node_name
        for node in self.model.nodes:
            if address in node.internal_ips():
                return node.metadata.name
        return None

    def pod_network(self, address: str) -> bool:
        return self.index.pod_of(address) is not None

    def allows(self, pkt: Packet) -> bool:
        """Pod-network sources cross their node's ``forward`` (``input`` when sent to that node's
        own address); the destination pod's node judges the packet in ``forward`` too; traffic a
        node originates (its own or a host-network pod's) is not policed there (no output chain)."""
        src_node, dst_node = self.node_of(pkt.saddr), self.node_of(pkt.daddr)
        dst_pod_network = dst_node is not None and self.pod_network(pkt.daddr)
        if src_node is not None and self.pod_network(pkt.saddr):
            if dst_node == src_node and not dst_pod_network:
                return hook_allows(self.plans[src_node], "input", pkt)
            if not hook_allows(self.plans[src_node], "forward", pkt):
                return False
        elif src_node is not None and src_node == dst_node:
            return True  # from the node itself to its pod: the output hook, not policed
        if dst_pod_network and dst_node != src_node:
            assert dst_node is not None
            return hook_allows(self.plans[dst_node], "forward", pkt)
        return True
