"""Connectivity by equivalence classes of pods: :func:`compiler.semantics.connectivity`'s answers
without a verdict per pair of pods.

A pair's verdict depends on the two pods only through what policies can tell about them: the
namespace, the labels some selector looks at, host networking, the container ports (named ports
resolve on them), which ipBlocks hold the pod's address, and its node where a host-network pod
shares it (traffic from the pod's own node is always allowed). Pods equal in all of these are
indistinguishable to every policy, as sources and as destinations, so verdicts are computed once
per (class, class, probe), as bitmasks over classes, and expanded to pods only where a caller
needs pods. Two members of one class are still a real pair (replicas); a pod to itself is not.

The plain per-pair :func:`compiler.semantics.connectivity` stays the reference; the unit tests
check that both give the same answers on random models.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Hashable, Iterable, Iterator, Mapping, Sequence, Set
from dataclasses import dataclass
from typing import TypeVar

from compiler.cluster import ClusterModel
from compiler.matching import (
    Address,
    Endpoint,
    address_of,
    applies,
    endpoint_of,
    from_own_node,
    in_block,
    namespace_of,
    peers_match,
    ports_match,
    rules_of,
    selects,
)
from compiler.model import (
    Family,
    IPBlock,
    LabelSelector,
    NetworkPolicy,
    NetworkPolicyPeer,
    NetworkPolicyPort,
    Pod,
    Protocol,
)
from compiler.selectors import matches, requirements

Probe = tuple[Protocol, int]
_NOWHERE = Endpoint("", None, None)
T = TypeVar("T")
# Per probe, per class: a bitmask of the classes that class may open connections to.
Masks = dict[Probe, list[int]]


def bits(mask: int) -> Iterator[int]:
    """Indices of the set bits of ``mask``, lowest first."""
    while mask:
        low = mask & -mask
        yield low.bit_length() - 1
        mask ^= low


class Keyer:
    """Computes a pod's class key in one model: equal keys mean every policy treats the pods alike."""

    def __init__(self, model: ClusterModel, pods: Sequence[Pod], *, family: Family) -> None:
        self._family = family
        # Labels no selector mentions cannot change any match (pod-template-hash, for one).
        self._label_keys = frozenset(
            req[0] for selector in _pod_selectors(model.policies) for req in requirements(selector)
        )
        self._blocks = tuple(dict(_blocks(model.policies)).values())
        # Most blocks share a few CIDRs (0.0.0.0/0, the cluster's ranges): test those once per pod.
        self._cidrs = {b.cidr: ipaddress.ip_network(b.cidr, strict=False) for b in self._blocks}
        # Only where a host-network pod runs can "from the pod's own node" tell pods apart by node.
        self._host_nodes = frozenset(
            p.spec.node_name for p in pods if p.spec.host_network and p.spec.node_name
        )

    def key(self, pod: Pod) -> tuple[object, ...]:
        address = address_of(pod, self._family) if self._blocks else None
        return (
            namespace_of(pod),
            frozenset((k, v) for k, v in pod.metadata.labels.items() if k in self._label_keys),
            pod.spec.host_network,
            frozenset((p.name, p.protocol, p.container_port) for p in pod.container_ports()),
            pod.spec.node_name if pod.spec.node_name in self._host_nodes else None,
            None if address is None else self._membership(address),
        )

    def _membership(self, address: Address) -> tuple[bool, ...]:
        inside = {cidr for cidr, net in self._cidrs.items() if address in net}
        return tuple(b.cidr in inside and in_block(address, b) for b in self._blocks)


def _pod_selectors(policies: Sequence[NetworkPolicy]) -> Iterator[LabelSelector]:
    for policy in policies:
        yield policy.spec.pod_selector
        for peers in [*(r.from_ for r in policy.spec.ingress), *(r.to for r in policy.spec.egress)]:
            yield from (peer.pod_selector for peer in peers if peer.pod_selector is not None)


def _blocks(policies: Sequence[NetworkPolicy]) -> Iterator[tuple[tuple[str, tuple[str, ...]], IPBlock]]:
    for policy in policies:
        for peers in [*(r.from_ for r in policy.spec.ingress), *(r.to for r in policy.spec.egress)]:
            for peer in peers:
                if peer.ip_block is not None:
                    yield (peer.ip_block.cidr, tuple(peer.ip_block.except_)), peer.ip_block


def class_masks(
    model: ClusterModel,
    reps: Sequence[Pod],
    *,
    probes: Sequence[Probe],
    family: Family,
    addresses: Sequence[Address] = (),
) -> Masks:
    """For each probe and each class (given by its representative pod), the classes it may reach.

    The same steps as :func:`compiler.semantics.connectivity`, over representatives and with sets
    of classes as bitmasks; ingress is recorded transposed (which destinations admit a source), so
    a class's answer is one AND of its egress and its admissions. ``addresses`` are bare addresses
    taking part as further ends, after the classes; they must be no pod's and no node's (as
    :func:`compiler.diff.regions` picks them), so none is resolved to a pod or counts as a node.
    """
    ends = [endpoint_of(pod, family) for pod in reps] + [Endpoint(str(a), None, a) for a in addresses]
    everyone = (1 << len(ends)) - 1
    by_namespace: dict[str, list[int]] = {}
    for i, pod in enumerate(reps):
        by_namespace.setdefault(namespace_of(pod), []).append(i)
    egress: dict[int, dict[Probe, int]] = {}
    # Rules repeat the same peers (a DNS selector in every namespace): match each peer once.
    memo: dict[tuple[str, str], int] = {}

    def matched(policy: NetworkPolicy, peers: Sequence[NetworkPolicyPeer]) -> int:
        if not peers:
            return everyone
        mask = 0
        for peer in peers:
            # Only a pod selector without a namespaceSelector depends on the policy's namespace.
            scoped = peer.ip_block is None and peer.namespace_selector is None
            key = (namespace_of(policy) if scoped else "", peer.model_dump_json())
            if key not in memo:
                found = _matched(model, policy, peer=peer, ends=ends, by_namespace=by_namespace)
                memo[key] = sum(1 << j for j in found)
            mask |= memo[key]
        return mask

    # Ingress admissions by the sources they admit: many rules share one peer set (all pods,
    # 0.0.0.0/0), so each distinct set is spread over its members once, not once per rule.
    admitted: dict[int, dict[Probe, int]] = {}
    isolated_in = 0
    for policy in model.policies:
        # A policy selects pods of its own namespace only.
        selected = [i for i in by_namespace.get(namespace_of(policy), []) if selects(policy, ends[i])]
        if not selected:
            continue
        if applies(policy, "egress"):
            for i in selected:
                egress.setdefault(i, dict.fromkeys(probes, 0))
            for peers, rule_ports in rules_of(policy, "egress"):
                found = matched(policy, peers)
                for probe in probes:
                    # The peer is the destination, which named ports resolve against.
                    to = _port_ok(rule_ports, probe=probe, mask=found, ends=ends)
                    for i in selected:
                        egress[i][probe] |= to
        if applies(policy, "ingress"):
            dst_mask = sum(1 << i for i in selected)
            isolated_in |= dst_mask
            for peers, rule_ports in rules_of(policy, "ingress"):
                sources = admitted.setdefault(matched(policy, peers), dict.fromkeys(probes, 0))
                for probe in probes:
                    sources[probe] |= _port_ok(rule_ports, probe=probe, mask=dst_mask, ends=ends)
    admits = [dict.fromkeys(probes, 0) for _ in ends]
    for mask, dsts in admitted.items():
        for j in bits(mask):
            for probe, d in dsts.items():
                admits[j][probe] |= d
    open_in = everyone & ~isolated_in
    for j, end in enumerate(ends):
        # Only a host-network pod can be the node an isolated pod runs on.
        local = (
            0
            if end.pod is None or end.policed
            else sum(1 << i for i in bits(isolated_in) if from_own_node(model, src=end, dst=ends[i]))
        )
        for probe in probes:
            admits[j][probe] |= open_in | local
    return {
        probe: [(egress[i][probe] if i in egress else everyone) & admits[i][probe] for i in range(len(ends))]
        for probe in probes
    }


def _port_ok(ports: Sequence[NetworkPolicyPort], *, probe: Probe, mask: int, ends: Sequence[Endpoint]) -> int:
    """The destinations of ``mask`` on which ``ports`` match ``probe``."""
    if not any(isinstance(p.port, str) for p in ports):
        # Without named ports the destination does not matter: all or none.
        return mask if ports_match(ports, protocol=probe[0], port=probe[1], dst=_NOWHERE) else 0
    return sum(
        1 << j for j in bits(mask) if ports_match(ports, protocol=probe[0], port=probe[1], dst=ends[j])
    )


def _matched(
    model: ClusterModel,
    policy: NetworkPolicy,
    *,
    peer: NetworkPolicyPeer,
    ends: Sequence[Endpoint],
    by_namespace: Mapping[str, list[int]],
) -> list[int]:
    """Ends ``peer`` matches."""
    if peer.ip_block is not None:
        candidates: Iterable[int] = range(len(ends))
    else:
        # A pod peer matches pods only, and only in the namespaces its namespaceSelector (or,
        # without one, the policy's namespace) picks: skip the others a namespace at a time.
        candidates = [
            j
            for namespace, members in by_namespace.items()
            if (
                namespace == namespace_of(policy)
                if peer.namespace_selector is None
                else matches(peer.namespace_selector, model.namespace_labels(namespace))
            )
            for j in members
        ]
    return [j for j in candidates if peers_match(model, policy, peers=[peer], other=ends[j])]


@dataclass(frozen=True)
class ClassConnectivity:
    """Verdicts per class; :meth:`allowed` answers for any two pods, :meth:`pairs` for all of them."""

    members: tuple[tuple[str, ...], ...]  # pod keys of each class, in the order the pods were given
    class_of: Mapping[str, int]
    masks: Masks

    def allowed(self, src: str, dst: str, probe: Probe) -> bool:
        """The verdict of two different pods; for ``src == dst``, that of two members of its class."""
        return bool(self.masks[probe][self.class_of[src]] >> self.class_of[dst] & 1)

    def pairs(self) -> dict[tuple[str, str, Protocol, int], bool]:
        """:func:`compiler.semantics.connectivity`'s result: every ordered pair of distinct pods."""
        result: dict[tuple[str, str, Protocol, int], bool] = {}
        keys = [k for group in self.members for k in group]
        for src in keys:
            for dst in keys:
                if src != dst:
                    for probe in self.masks:
                        result[(src, dst, *probe)] = self.allowed(src, dst, probe)
        return result


def group(items: Sequence[T], keys: Sequence[Hashable]) -> list[list[T]]:
    """``items`` grouped by equal ``keys`` (one key per item), groups in order of first member."""
    groups: dict[Hashable, list[T]] = {}
    for item, key in zip(items, keys, strict=True):
        groups.setdefault(key, []).append(item)
    return list(groups.values())


def joint_classes(
    old: ClusterModel, new: ClusterModel, *, keys: Sequence[str], family: Family
) -> list[list[str]]:
    """Pod ``keys`` (present in both models) grouped by their class in ``old`` and in ``new``."""
    pods = [{p.key: p for p in model.pods} for model in (old, new)]
    keyers = [
        Keyer(model, [by_key[k] for k in keys], family=family)
        for model, by_key in zip((old, new), pods, strict=True)
    ]
    joint = [tuple(keyer.key(by_key[k]) for keyer, by_key in zip(keyers, pods, strict=True)) for k in keys]
    return group(keys, joint)


def changed_pairs(
    old: ClusterModel,
    new: ClusterModel,
    *,
    keys: Sequence[str],
    replicas: Set[str],
    probes: Sequence[Probe],
    family: Family,
    addresses: Sequence[Address] = (),
) -> list[tuple[list[tuple[str | int, str | int]], Probe]]:
    """(source, destination) pairs whose verdict for a probe differs between ``old`` and ``new``,
    one list per pair of classes (whose pairs all changed alike) and probe.

    Ends are pods present on both sides (``keys``) and ``addresses`` (as in :func:`class_masks`),
    an address given as its index. A pod is paired with itself only if it is in ``replicas`` (a
    template pod: one replica to another). Verdicts are compared per class of both sides; only
    changed ones are expanded to pods.
    """
    groups: list[list[str | int]] = [list(g) for g in joint_classes(old, new, keys=keys, family=family)]
    was, now = (
        class_masks(
            model, [by_key[str(g[0])] for g in groups], probes=probes, family=family, addresses=addresses
        )
        for model, by_key in ((m, {p.key: p for p in m.pods}) for m in (old, new))
    )
    groups.extend([i] for i in range(len(addresses)))
    found: list[tuple[list[tuple[str | int, str | int]], Probe]] = []
    for probe in probes:
        for c, (before, after) in enumerate(zip(was[probe], now[probe], strict=True)):
            for d in bits(before ^ after):
                pairs = [
                    (src, dst) for src in groups[c] for dst in groups[d] if src != dst or src in replicas
                ]
                if pairs:
                    found.append((pairs, probe))
    return found


def class_connectivity(
    model: ClusterModel, *, ports: Sequence[Probe], family: Family = 4, pods: Sequence[Pod] | None = None
) -> ClassConnectivity:
    """:func:`compiler.semantics.connectivity`, computed per class of indistinguishable pods."""
    chosen = list(model.pods if pods is None else pods)
    keyer = Keyer(model, chosen, family=family)
    groups = group(chosen, [keyer.key(p) for p in chosen])
    masks = class_masks(model, [g[0] for g in groups], probes=list(dict.fromkeys(ports)), family=family)
    members = tuple(tuple(p.key for p in g) for g in groups)
    class_of = {key: c for c, keys in enumerate(members) for key in keys}
    return ClassConnectivity(members, class_of, masks)
