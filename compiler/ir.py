"""The per-node plan's vocabulary: frozen values for chains, rules, matches, sets and maps.

A plan says *what* the table holds, in terms both renderers (libnftables JSON and nft text)
translate one to one, so the two can never drift apart: every match kind below has exactly one
rendering in each. Sequences are tuples in a defined order (sets and chains by name, elements by
address, rules in evaluation order), so equal inputs give equal plans and byte-identical output.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from compiler.model import Direction, Family, Protocol
from compiler.naming import FAMILY, TABLE
from compiler.naming import comment as sanitized_comment

FAMILIES: tuple[Family, ...] = (4, 6)
DIRECTIONS: tuple[Direction, ...] = ("ingress", "egress")
AddrField = Literal["saddr", "daddr"]
Hook = Literal["prerouting", "input", "forward", "output"]


# --- matches ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AddrInSet:
    """``ip saddr @set`` (``!=`` when negated); the family picks ``ip`` or ``ip6``."""

    family: Family
    field: AddrField
    set_name: str
    negate: bool = False


@dataclass(frozen=True)
class AddrIs:
    """``ip daddr 192.0.2.1``: one literal address (the node's own underlay addresses)."""

    family: Family
    field: AddrField
    address: str


@dataclass(frozen=True, order=True)
class PortRange:
    first: int
    last: int


@dataclass(frozen=True)
class DportIn:
    """``tcp dport 80`` / ``sctp dport { 80, 8000-8080 }``."""

    protocol: Protocol
    ports: tuple[PortRange, ...]


@dataclass(frozen=True)
class L4protoIn:
    """``meta l4proto sctp`` / ``meta l4proto { tcp, udp }``: a port entry without a port."""

    protocols: tuple[Protocol, ...]


@dataclass(frozen=True)
class DaddrProtoPortInSet:
    """``ip daddr . meta l4proto . th dport @set``: egress to named ports (resolved per peer pod)."""

    family: Family
    set_name: str


@dataclass(frozen=True)
class SaddrDaddrInSet:
    """``ip saddr . ip daddr @set``: the (source, destination) pair is in a set of pairs."""

    family: Family
    set_name: str


@dataclass(frozen=True)
class CtStateIn:
    states: tuple[str, ...]


@dataclass(frozen=True)
class IifLoopback:
    """``meta iiftype loopback``: by device type, not name, so it holds on any node."""


@dataclass(frozen=True)
class IfnamePrefix:
    """``iifname "stk*"`` / ``oifname "stk*"``: the arrival (or leaving) device's name starts with
    ``prefix``. A byte compare against the name the kernel keeps with the device: no lookup."""

    key: Literal["iifname", "oifname"]
    prefix: str


@dataclass(frozen=True)
class IifnameSaddrInSet:
    """``iifname . ip saddr @set``: the (arrival device's name, source address) pair is in a set of
    such pairs. One hash lookup, no route lookup."""

    family: Family
    set_name: str


@dataclass(frozen=True)
class FibSaddrIifMissing:
    """``fib saddr . iif oif missing``: the source address does not route back via the arrival device."""


@dataclass(frozen=True)
class Icmpv6TypeIn:
    types: tuple[str, ...]


Match = (
    AddrInSet
    | AddrIs
    | DportIn
    | L4protoIn
    | DaddrProtoPortInSet
    | SaddrDaddrInSet
    | CtStateIn
    | IifLoopback
    | IfnamePrefix
    | IifnameSaddrInSet
    | FibSaddrIifMissing
    | Icmpv6TypeIn
)


# --- actions and rules ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    kind: Literal["accept", "drop", "return", "continue", "jump"]
    target: str = ""


ACCEPT = Verdict("accept")
DROP = Verdict("drop")
RETURN = Verdict("return")
CONTINUE = Verdict("continue")


def jump(target: str) -> Verdict:
    return Verdict("jump", target)


@dataclass(frozen=True)
class Notrack:
    """The ``notrack`` statement: conntrack leaves the packet alone (no entry; ``ct state
    untracked``). Not a verdict: the chain goes on with the next rule."""


NOTRACK = Notrack()


@dataclass(frozen=True)
class VmapLookup:
    """``ip saddr vmap @map``: O(1) dispatch on a local pod's address."""

    family: Family
    field: AddrField
    map_name: str


@dataclass(frozen=True)
class Rule:
    """Matches (all must hold), then an optional counter, then the action; ``comment`` is sanitized."""

    matches: tuple[Match, ...]
    action: Verdict | VmapLookup | Notrack
    comment: str
    counter: bool = True


def description(text: str) -> Rule:
    """A rule that matches everything and does nothing but carry ``text`` as its comment: what its
    chain, or a set the chain uses, is for. libnftables JSON (nftables 1.0.6) silently drops the
    comments of chains, sets and maps, while rule comments reach the kernel, so ``nft list table``
    shows these where a chain comment would be. A ``continue`` without a counter: one immediate
    verdict per packet that passes, no state. (A rule without any expression would be cheaper
    still, but nft's text grammar cannot write one and ``nft -j list`` complains about it.)"""
    return Rule((), CONTINUE, sanitized_comment(text), counter=False)


def is_description(rule: Rule) -> bool:
    return not rule.matches and rule.action == CONTINUE and not rule.counter


@dataclass(frozen=True)
class BaseHook:
    hook: Hook
    priority: int
    # nft's symbolic name for the priority, for the text rendering (the kernel keeps the number).
    priority_name: str
    policy: Literal["accept"] = "accept"


@dataclass(frozen=True)
class Chain:
    name: str
    rules: tuple[Rule, ...]
    hook: BaseHook | None = None
    # What the chain is for, sanitized. The chain's first rule carries it into the kernel
    # (:func:`description`): libnftables JSON of nftables 1.0.6 drops chain comments.
    note: str = ""
    # A per-pod chain: the keys (``namespace/name``) of the policies that isolate its pods, whose
    # isolation its last rule enforces; the agent counts that rule's drops under each of them (the
    # rule's comment names them too, but is cut at 128 bytes).
    isolating: tuple[str, ...] = ()


# --- sets and maps ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class AddrSet:
    """A plain set of addresses (pods a selector selects, local pods)."""

    name: str
    family: Family
    elements: tuple[str, ...]
    note: str = ""


@dataclass(frozen=True, order=True)
class Interval:
    """An inclusive address range; ``prefix_len`` is set when it is exactly one CIDR."""

    first: str
    last: str
    prefix_len: int | None


@dataclass(frozen=True)
class IntervalSet:
    """A set with ``flags interval``: ipBlocks and podCIDRs. Intervals never overlap or touch."""

    name: str
    family: Family
    elements: tuple[Interval, ...]
    note: str = ""


@dataclass(frozen=True, order=True)
class AddrPortElement:
    address: str
    protocol: Protocol
    port: int


@dataclass(frozen=True)
class AddrPortSet:
    """A set of ``address . protocol . port`` (type ``ipv4_addr . inet_proto . inet_service``)."""

    name: str
    family: Family
    elements: tuple[AddrPortElement, ...]
    note: str = ""


@dataclass(frozen=True)
class SelfPairSet:
    """A set of ``address . address`` pairs (type ``ipv4_addr . ipv4_addr``), each address paired
    with itself: ``elements`` lists the addresses."""

    name: str
    family: Family
    elements: tuple[str, ...]
    note: str = ""


@dataclass(frozen=True, order=True)
class IfnameAddr:
    ifname: str
    address: str


@dataclass(frozen=True)
class IfnameAddrSet:
    """A set of ``interface name . address`` (type ``ifname . ipv4_addr``): the pod sources the
    node routes (:mod:`compiler.podsources`)."""

    name: str
    family: Family
    elements: tuple[IfnameAddr, ...]
    note: str = ""


PlanSet = AddrSet | IntervalSet | AddrPortSet | SelfPairSet | IfnameAddrSet


@dataclass(frozen=True)
class MapEntry:
    address: str
    verdict: Verdict


@dataclass(frozen=True)
class VerdictMap:
    name: str
    family: Family
    direction: Direction
    entries: tuple[MapEntry, ...]


@dataclass(frozen=True)
class LocalPod:
    """A pod this node hosts: the addresses it owns and the per-pod chains they dispatch to."""

    key: str
    addresses: tuple[str, ...]
    ingress_chain: str | None
    egress_chain: str | None


@dataclass(frozen=True)
class NodePlan:
    """Everything table ``inet stockade`` holds on one node."""

    node: str
    base_chains: tuple[Chain, ...]
    tier_chains: tuple[Chain, ...]
    pod_chains: tuple[Chain, ...]
    sets: tuple[PlanSet, ...]
    maps: tuple[VerdictMap, ...]
    local_pods: tuple[LocalPod, ...]
    notes: tuple[str, ...]
    table: str = TABLE
    family: str = FAMILY

    @property
    def chains(self) -> tuple[Chain, ...]:
        """Every chain, in creation order: regular chains first (base chains jump into them)."""
        return (*self.tier_chains, *self.pod_chains, *self.base_chains)

    def set(self, name: str) -> PlanSet | None:
        return next((s for s in self.sets if s.name == name), None)

    def chain(self, name: str) -> Chain | None:
        return next((c for c in self.chains if c.name == name), None)
