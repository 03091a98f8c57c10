"""Who a peer is, and the sets peers fill: selector peers, ipBlock peers, and their set specs.

Every set here is defined by address *owners* (see :mod:`compiler.podindex`), so the data plane
and :mod:`compiler.semantics` agree on which pod an address stands for. Peer sets are
materialised only when a rule of a local pod needs them; :class:`Selection` fills them from the
index without scanning unrelated pods.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from compiler import naming
from compiler.ir import Interval
from compiler.model import (
    NAMESPACE_NAME_LABEL,
    Family,
    IPBlock,
    LabelSelector,
    NetworkPolicyPeer,
    Pod,
    Protocol,
)
from compiler.podindex import PodIndex, addr_key, family_of, namespace_of
from compiler.selectors import canonical, describe, matches

Span = tuple[int, int]
NsLabels = Callable[[str], Mapping[str, str]]


# --- peers ------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class SelectorPeer:
    """Pods selected by (namespace selector, pod selector); ``key`` is their canonical text.

    A peer without a namespaceSelector means the policy's own namespace, written as a selector on
    the immutable ``kubernetes.io/metadata.name`` label, so both spellings share one set.
    """

    key: str
    namespace_selector: LabelSelector
    pod_selector: LabelSelector
    note: str


@dataclass(frozen=True, eq=False)
class BlockPeer:
    """Every ipBlock of one rule: the union of (cidr minus except), as disjoint spans per family."""

    key: str
    v4: tuple[Span, ...]
    v6: tuple[Span, ...]
    note: str

    def spans(self, family: Family) -> tuple[Span, ...]:
        return self.v4 if family == 4 else self.v6

    def contains(self, address: str) -> bool:
        value = addr_key(address)[1]
        return any(lo <= value <= hi for lo, hi in self.spans(family_of(address)))


@dataclass(frozen=True, eq=False)
class AnyPeer:
    """A rule without peers: every source or destination."""

    key: str = "any"
    note: str = "any pod"


Peer = SelectorPeer | BlockPeer | AnyPeer


def selector_peer(policy_namespace: str, peer: NetworkPolicyPeer) -> SelectorPeer | None:
    """The peer's pod selection, or None for a peer with neither selector (it matches nothing)."""
    if peer.pod_selector is None and peer.namespace_selector is None:
        return None
    ns_sel = peer.namespace_selector or LabelSelector(match_labels={NAMESPACE_NAME_LABEL: policy_namespace})
    pod_sel = peer.pod_selector or LabelSelector()
    key = f"ns:{canonical(ns_sel)}|pod:{canonical(pod_sel)}"
    note = f"pods ({describe(pod_sel)}) in namespaces ({describe(ns_sel)})"
    return SelectorPeer(key, ns_sel, pod_sel, naming.note(note))


def _spans_of(block: IPBlock) -> tuple[int, list[Span]]:
    net = ipaddress.ip_network(block.cidr, strict=False)
    holes = [ipaddress.ip_network(c, strict=False) for c in block.except_]
    cut = merge_spans(
        (int(h.network_address), int(h.broadcast_address)) for h in holes if h.version == net.version
    )
    spans: list[Span] = []
    lo, hi = int(net.network_address), int(net.broadcast_address)
    for h_lo, h_hi in cut:
        if h_hi < lo or h_lo > hi:
            continue
        if h_lo > lo:
            spans.append((lo, h_lo - 1))
        lo = max(lo, h_hi + 1)
    if lo <= hi:
        spans.append((lo, hi))
    return net.version, spans


def block_peer(blocks: Sequence[IPBlock]) -> BlockPeer:
    """One peer for all ipBlocks of a rule: cidr minus except per block, then the union, merged.

    Computing the difference here rather than writing the except list as a second set keeps one
    lookup per packet and makes the union of several blocks exact (each block's excepts apply to
    that block only); overlapping or touching spans are merged because the kernel rejects
    overlapping intervals in an interval set.
    """
    per_family: dict[int, list[Span]] = {4: [], 6: []}
    parts: list[str] = []
    for block in blocks:
        version, spans = _spans_of(block)
        per_family[version].extend(spans)
        net = ipaddress.ip_network(block.cidr, strict=False)
        excepts = sorted(
            {str(ipaddress.ip_network(c, strict=False)) for c in block.except_},
            key=lambda c: addr_key(c.split("/")[0]),
        )
        parts.append(f"{net}" + (f" except {', '.join(excepts)}" if excepts else ""))
    parts = sorted(set(parts))
    key = "blocks:" + ";".join(parts)
    return BlockPeer(
        key,
        tuple(merge_spans(per_family[4])),
        tuple(merge_spans(per_family[6])),
        naming.note("ipBlock " + "; ".join(parts)),
    )


def merge_spans(spans: Iterable[Span]) -> list[Span]:
    """Sorted, disjoint, non-adjacent spans covering exactly the union of ``spans``."""
    merged: list[Span] = []
    for lo, hi in sorted(spans):
        if merged and lo <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    return merged


def intervals(spans: Iterable[Span], family: Family) -> tuple[Interval, ...]:
    """Spans as plan intervals (a CIDR when a span is exactly one)."""
    make = ipaddress.IPv4Address if family == 4 else ipaddress.IPv6Address
    width = 32 if family == 4 else 128
    out: list[Interval] = []
    for lo, hi in spans:
        size = hi - lo + 1
        is_prefix = size & (size - 1) == 0 and lo % size == 0
        prefix = width - (size.bit_length() - 1) if is_prefix else None
        out.append(Interval(str(make(lo)), str(make(hi)), prefix))
    return tuple(out)


# --- sets that peers fill ---------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class PodSetSpec:
    """``pods-*``: addresses whose owner the selector peer selects."""

    name: str
    family: Family
    peer: SelectorPeer

    @property
    def note(self) -> str:
        return self.peer.note


@dataclass(frozen=True, eq=False)
class CidrSetSpec:
    """``cidrs-*``: a rule's ipBlocks (static)."""

    name: str
    family: Family
    peer: BlockPeer

    @property
    def note(self) -> str:
        return self.peer.note


@dataclass(frozen=True, eq=False)
class NamedPortSetSpec:
    """``named-*``: (address . protocol . port) of peer pods that have one of ``ports`` by name."""

    name: str
    family: Family
    peer: Peer
    ports: tuple[tuple[Protocol, str], ...]

    @property
    def key(self) -> str:
        return named_port_key(self.peer, self.ports)

    @property
    def note(self) -> str:
        ports = ", ".join(f"{proto}/{name}" for proto, name in self.ports)
        return naming.note(f"named ports {ports} of {self.peer.note}")


def named_port_key(peer: Peer, ports: Sequence[tuple[Protocol, str]]) -> str:
    return f"{peer.key}|ports:" + ",".join(f"{proto}/{name}" for proto, name in ports)


SetSpec = PodSetSpec | CidrSetSpec | NamedPortSetSpec
Element = str | tuple[str, Protocol, int]


def spec_key(spec: SetSpec) -> str:
    """What the set's name hashes: equal keys must mean equal sets (checked against collisions)."""
    if isinstance(spec, NamedPortSetSpec):
        return spec.key
    return spec.peer.key


@dataclass
class Selection:
    """Evaluates peers against pods; caches namespace-selector verdicts (namespaces churn rarely:
    :meth:`relabelled` drops what a namespace's old labels decided)."""

    index: PodIndex
    ns_labels: NsLabels
    # peer key -> namespace -> verdict; nested rather than keyed by (peer, namespace) pairs: at
    # 1,000 policies and 500 namespaces the pairs' tuples alone were ~2 MiB of the node agent.
    _ns_cache: dict[str, dict[str, bool]] = field(default_factory=dict)
    _ns_lists: dict[str, tuple[str, ...]] = field(default_factory=dict)
    _ns_known: int = 0

    def namespace_matches(self, peer: SelectorPeer, namespace: str) -> bool:
        verdicts = self._ns_cache.get(peer.key)
        if verdicts is None:
            verdicts = self._ns_cache[peer.key] = {}
        hit = verdicts.get(namespace)
        if hit is None:
            hit = verdicts[namespace] = matches(peer.namespace_selector, self.ns_labels(namespace))
        return hit

    def relabelled(self, namespace: str) -> None:
        """``ns_labels`` now answers differently for ``namespace``: forget verdicts about it."""
        for verdicts in self._ns_cache.values():
            verdicts.pop(namespace, None)
        self._ns_lists.clear()

    def admits(self, peer: Peer, pod: Pod, *, address: str) -> bool:
        """Whether ``peer`` matches ``pod`` (the owner of ``address``) seen at ``address``."""
        if isinstance(peer, AnyPeer):
            return True
        if isinstance(peer, BlockPeer):
            return peer.contains(address)
        return self.namespace_matches(peer, namespace_of(pod)) and matches(
            peer.pod_selector, pod.metadata.labels
        )

    def contribution(self, spec: SetSpec, address: str) -> set[Element]:
        """The elements ``address`` puts in a pod-dependent set (given its current owner)."""
        if isinstance(spec, CidrSetSpec) or family_of(address) != spec.family:
            return set()
        owner = self.index.owner.get(address)
        if owner is None:
            return set()
        pod = self.index.pods[owner]
        if not self.admits(spec.peer, pod, address=address):
            return set()
        if isinstance(spec, PodSetSpec):
            return {address}
        return {(address, proto, port) for proto, port in named_ports(pod, spec.ports)}

    def elements(self, spec: SetSpec) -> set[Element]:
        """Every element of a pod-dependent set, from the index (no scan of unrelated pods)."""
        if isinstance(spec, CidrSetSpec):
            return set()
        out: set[Element] = set()
        for address in self._candidates(spec):
            out |= self.contribution(spec, address)
        return out

    def _candidates(self, spec: PodSetSpec | NamedPortSetSpec) -> Iterable[str]:
        peer = spec.peer
        if not isinstance(peer, SelectorPeer):
            return [a for a in self.index.owner if family_of(a) == spec.family]
        found: list[str] = []
        known = self.index.namespaces()
        if len(known) != self._ns_known:
            # A pod brought a namespace the index had not seen (the index never forgets one).
            self._ns_lists.clear()
            self._ns_known = len(known)
        namespaces = self._ns_lists.get(peer.key)
        if namespaces is None:
            namespaces = tuple(n for n in known if self.namespace_matches(peer, n))
            self._ns_lists[peer.key] = namespaces
        for namespace in namespaces:
            for key in self.index.select(namespace, peer.pod_selector):
                found.extend(a for a in self.index.addresses(key) if family_of(a) == spec.family)
        return found


def named_ports(pod: Pod, wanted: Sequence[tuple[Protocol, str]]) -> set[tuple[Protocol, int]]:
    """(protocol, number) of the pod's container ports named as in ``wanted`` (protocol included)."""
    want = set(wanted)
    return {
        (p.protocol, p.container_port)
        for p in pod.container_ports()
        if (p.protocol, p.name) in want and 0 <= p.container_port <= 65535
    }
