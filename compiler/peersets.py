"""Who a peer is: an index of pods (labels per namespace, address owners) and the sets peers fill.

Peer sets hold addresses, so what matters is which pod an address belongs to. The reference
semantics resolves an address to the pod-network pod holding it, a live pod winning over a
finished one (its address may already be reused) and the smaller ``namespace/name`` breaking
ties; :class:`PodIndex` keeps that *owner* per address, and every set here is defined by owners,
so the data plane and :mod:`compiler.semantics` agree even on odd clusters.

Selecting pods never scans every pod: each namespace keeps an inverted index from label
(key, value) and from key to pod names, and a selector is the intersection of its requirements'
candidate sets. Peer sets are materialised only when a rule of a local pod needs them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

from compiler import naming
from compiler.ir import Family, Interval
from compiler.model import NAMESPACE_NAME_LABEL, IPBlock, LabelSelector, NetworkPolicyPeer, Pod, Protocol
from compiler.selectors import canonical, describe, matches, requirements

FINISHED_PHASES = ("Succeeded", "Failed")
Span = tuple[int, int]
NsLabels = Callable[[str], Mapping[str, str]]


def namespace_of(obj: Pod) -> str:
    return obj.metadata.namespace or "default"


def _ipv4_value(text: str) -> int | None:
    """Dotted-quad IPv4 as an integer, by the same rules as ``ipaddress`` (no leading zeros);
    a fast path, since every pod address of a large cluster is parsed on each full compile."""
    parts = text.split(".")
    if len(parts) != 4:
        return None
    value = 0
    for part in parts:
        if not (part.isascii() and part.isdigit()) or len(part) > 3 or (len(part) > 1 and part[0] == "0"):
            return None
        octet = int(part)
        if octet > 255:
            return None
        value = value << 8 | octet
    return value


@lru_cache(maxsize=65536)
def normalize(text: str) -> str | None:
    """The canonical text of an address (as nft prints it), or None if it is not one."""
    if _ipv4_value(text) is not None:
        return text  # a valid dotted quad is already canonical
    if ":" not in text:
        return None  # not IPv6 either (the fast path above follows ipaddress's IPv4 rules)
    try:
        return str(ipaddress.IPv6Address(text))
    except ValueError:
        return None


@lru_cache(maxsize=65536)
def addr_key(address: str) -> tuple[int, int]:
    """Sort key of a normalized address: family, then numeric value."""
    value = _ipv4_value(address)
    if value is not None:
        return 4, value
    return 6, int(ipaddress.IPv6Address(address))


def family_of(address: str) -> Family:
    return 6 if ":" in address else 4


def pod_addresses(pod: Pod) -> tuple[str, ...]:
    """Normalized addresses of a pod-network pod (host-network pods use the node's: none here)."""
    if pod.spec.host_network:
        return ()
    found = (normalize(ip) for ip in pod.ips())
    return tuple(dict.fromkeys(a for a in found if a is not None))


class _NsIndex:
    __slots__ = ("all", "by_key", "by_label")

    def __init__(self) -> None:
        self.all: set[str] = set()
        self.by_key: dict[str, set[str]] = {}
        self.by_label: dict[tuple[str, str], set[str]] = {}


class PodIndex:
    """Pods by key, by namespace and label, and the owner of every pod address."""

    def __init__(self, pods: Iterable[Pod] = ()) -> None:
        self.pods: dict[str, Pod] = {}
        self.owner: dict[str, str] = {}
        self._addrs: dict[str, tuple[str, ...]] = {}
        self._holders: dict[str, set[str]] = {}
        self._ns: dict[str, _NsIndex] = {}
        for pod in pods:
            self._insert(pod)
        for address in self._holders:
            self._elect(address)

    def namespaces(self) -> tuple[str, ...]:
        return tuple(self._ns)

    def addresses(self, key: str) -> tuple[str, ...]:
        return self._addrs.get(key, ())

    def owned(self, key: str) -> tuple[str, ...]:
        """The addresses ``key`` holds and owns, sorted."""
        return tuple(sorted((a for a in self.addresses(key) if self.owner.get(a) == key), key=addr_key))

    def add(self, pod: Pod) -> None:
        if pod.key in self.pods:
            self.remove(pod.key)
        self._insert(pod)
        for address in self.addresses(pod.key):
            self._elect(address)

    def remove(self, key: str) -> None:
        pod = self.pods.pop(key, None)
        if pod is None:
            return
        addresses = self._addrs.pop(key, ())
        for address in addresses:
            holders = self._holders[address]
            holders.discard(key)
            if not holders:
                del self._holders[address]
        if not pod.spec.host_network:
            ns = self._ns[namespace_of(pod)]
            ns.all.discard(key)
            for k, v in pod.metadata.labels.items():
                ns.by_key[k].discard(key)
                ns.by_label[(k, v)].discard(key)
        for address in addresses:
            self._elect(address)

    def select(self, namespace: str, selector: LabelSelector) -> set[str]:
        """Keys of the pod-network pods of ``namespace`` that ``selector`` selects."""
        ns = self._ns.get(namespace)
        if ns is None:
            return set()
        found: set[str] | None = None
        for key, op, values in sorted(requirements(selector), key=_cheapest_first):
            if op == "In":
                hits = set().union(*(ns.by_label.get((key, v), ()) for v in values))
            elif op == "NotIn":
                hits = ns.all - set().union(*(ns.by_label.get((key, v), ()) for v in values))
            elif op == "Exists":
                hits = set(ns.by_key.get(key, ()))
            else:  # DoesNotExist
                hits = ns.all - ns.by_key.get(key, set())
            found = hits if found is None else found & hits
            if not found:
                return set()
        return set(ns.all) if found is None else found

    def _insert(self, pod: Pod) -> None:
        key = pod.key
        self.pods[key] = pod
        if pod.spec.host_network:
            return  # not policed, selected by nothing, owns no address (it uses its node's)
        ns = self._ns.setdefault(namespace_of(pod), _NsIndex())
        ns.all.add(key)
        for k, v in pod.metadata.labels.items():
            ns.by_key.setdefault(k, set()).add(key)
            ns.by_label.setdefault((k, v), set()).add(key)
        addresses = pod_addresses(pod)
        if addresses:
            self._addrs[key] = addresses
        for address in addresses:
            self._holders.setdefault(address, set()).add(key)

    def _elect(self, address: str) -> None:
        holders = self._holders.get(address)
        if not holders:
            self.owner.pop(address, None)
            return
        self.owner[address] = min(holders, key=lambda k: (self.pods[k].status.phase in FINISHED_PHASES, k))


def _cheapest_first(req: tuple[str, str, tuple[str, ...]]) -> int:
    # In and Exists narrow from small buckets; NotIn / DoesNotExist start from every pod.
    return {"In": 0, "Exists": 1}.get(req[1], 2)


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


@dataclass(frozen=True, eq=False)
class CidrSetSpec:
    """``cidrs-*``: a rule's ipBlocks (static)."""

    name: str
    family: Family
    peer: BlockPeer


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
    """Evaluates peers against pods; caches namespace-selector verdicts (namespaces do not churn)."""

    index: PodIndex
    ns_labels: NsLabels
    _ns_cache: dict[tuple[str, str], bool] = field(default_factory=dict)
    _ns_lists: dict[str, tuple[str, ...]] = field(default_factory=dict)
    _ns_known: int = 0

    def namespace_matches(self, peer: SelectorPeer, namespace: str) -> bool:
        cache_key = (peer.key, namespace)
        hit = self._ns_cache.get(cache_key)
        if hit is None:
            hit = matches(peer.namespace_selector, self.ns_labels(namespace))
            self._ns_cache[cache_key] = hit
        return hit

    def admits(self, peer: Peer, pod: Pod, address: str) -> bool:
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
        if not self.admits(spec.peer, pod, address):
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
