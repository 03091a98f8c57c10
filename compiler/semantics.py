"""The reference semantics of Kubernetes NetworkPolicy (networking.k8s.io/v1): who may talk to whom, and why.

This module is the specification the rest of Stockade is tested against: the verdicts of a compiled
ruleset, probed with real packets, must equal :func:`evaluate`. It is written for clarity first;
:func:`connectivity` computes the same answers for a whole matrix with the per-policy work done once.

The rules, as upstream defines them (kubernetes.io/docs/concepts/services-networking/network-policies):

- A pod is isolated for ingress (egress) iff a policy in its namespace selects it with
  ``spec.podSelector`` and has Ingress (Egress) among its effective policyTypes. An isolated side
  allows what the union of those policies' rules allows; a side that is not isolated allows all.
  A connection needs both the source's egress side and the destination's ingress side to allow it.
- A rule allows a connection when its peer list is empty or one peer matches the other end, and its
  port list is empty or one port matches. Named ports resolve against the destination pod.
- ipBlocks match the other end's address of the probed family, pods included.

Where upstream leaves a choice to the implementation, Stockade takes the common one:

- Host-network pods are not policed, and selectors ignore them: traffic from or to one is
  traffic from or to its node's address, which only ipBlocks can match, and a named port
  never resolves against one.
- Traffic from a pod's own node (a host-network pod on it, or one of its InternalIPs) to the pod is
  always allowed (kubelet probes); upstream: a pod cannot block access from its resident node.
  Egress from a pod to its node is policed like egress to any other address.
- A pod's traffic to itself never leaves it and is always allowed.
- An address belongs to at most one pod: only live pods hold addresses (a Succeeded or Failed
  pod holds none; its address may be another pod's already); between live pods listing the same
  address, the one without a ``deletionTimestamp``, then the newest ``creationTimestamp``; when
  those tie, the address is nobody's (no pod identity rather than an arbitrary one).
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass

from compiler import explain
from compiler.cluster import ClusterModel
from compiler.errors import PeerError, UnknownPeerError
from compiler.matching import (
    Address,
    Endpoint,
    applies,
    endpoint_of,
    from_own_node,
    named_port_numbers,
    namespace_of,
    parse_ip,
    peers_match,
    ports_match,
    rules_of,
    selects,
)
from compiler.model import Direction, Family, NetworkPolicyPort, Pod, Protocol
from compiler.verdict import RuleRef, Side, Verdict

__all__ = [
    "Address",
    "Direction",
    "Family",
    "Peer",
    "Probe",
    "RuleRef",
    "Side",
    "Verdict",
    "connectivity",
    "evaluate",
    "parse_ip",
]

# Phases whose pods have released their addresses: an address is never resolved to one of them.
_FINISHED_PHASES = ("Succeeded", "Failed")


@dataclass(frozen=True)
class Peer:
    """One end of a connection: a pod (``namespace`` defaults to ``default``) or a bare IP address."""

    namespace: str | None = None
    pod: str | None = None
    ip: str | None = None


# --- evaluate -----------------------------------------------------------------------------------------


def evaluate(
    model: ClusterModel, *, src: Peer, dst: Peer, protocol: Protocol, port: int, family: Family = 4
) -> Verdict:
    """Whether ``src`` may open a ``protocol``/``port`` connection to ``dst``, and which rules say so."""
    source = _resolve(model, src, family=family, role="source")
    target = _resolve(model, dst, family=family, role="destination")
    egress = _side(model, "egress", subject=source, src=source, dst=target, protocol=protocol, port=port)
    ingress = _side(model, "ingress", subject=target, src=source, dst=target, protocol=protocol, port=port)
    if source.pod is not None and source.pod is target.pod:
        note = "a pod's traffic to itself never leaves it"
        egress = _exempt(egress, note)
        ingress = _exempt(ingress, note)
    elif not ingress.allowed and from_own_node(model, src=source, dst=target):
        ingress = _exempt(ingress, "traffic from the pod's own node is always allowed")
    return Verdict(
        allowed=egress.allowed and ingress.allowed,
        egress=egress,
        ingress=ingress,
        src=source.name,
        dst=target.name,
        protocol=protocol,
        port=port,
        family=family,
    )


def _exempt(side: Side, reason: str) -> Side:
    return Side(side.direction, side.isolated, side.isolating, side.allowed_by, True, side.subject, reason)


def _side(
    model: ClusterModel,
    direction: Direction,
    *,
    subject: Endpoint,
    src: Endpoint,
    dst: Endpoint,
    protocol: Protocol,
    port: int,
) -> Side:
    other = dst if direction == "egress" else src
    if subject.pod is None:
        return Side(direction, False, (), (), True, subject.name, "not a pod; policies apply to pods only")
    if not subject.policed:
        return Side(direction, False, (), (), True, subject.name, "host-network pod; policies do not apply")
    policies = [p for p in model.policies if applies(p, direction) and selects(p, subject)]
    allowed_by: list[RuleRef] = []
    hints: list[str] = []
    for policy in policies:
        for index, (peers, ports) in enumerate(rules_of(policy, direction)):
            ref = RuleRef(policy.key, direction, index)
            defects = model.rule_defects(policy.key, direction, index)
            if defects:  # replaced by a rule that matches nothing (compiler.defects)
                hints.append(explain.defective(ref, [f"{d.field}: {d.message}" for d in defects]))
                continue
            peer_ok = peers_match(model, policy, peers=peers, other=other)
            port_ok = ports_match(ports, protocol=protocol, port=port, dst=dst)
            if peer_ok and port_ok:
                allowed_by.append(ref)
            elif peer_ok:
                notes = [
                    _named_note(p.port, protocol=protocol, dst=dst) for p in ports if _is_named(p, protocol)
                ]
                hints.append(explain.port_miss(ref, other=other.name, ports=ports, notes=notes))
            elif port_ok:
                hints.append(
                    explain.peer_miss(
                        ref, namespace=namespace_of(policy), peers=peers, protocol=protocol, port=port
                    )
                )
    isolating = tuple(sorted({p.key for p in policies}))
    allowed = not isolating or bool(allowed_by)
    return Side(
        direction=direction,
        isolated=bool(isolating),
        isolating=isolating,
        allowed_by=tuple(sorted(set(allowed_by))),
        allowed=allowed,
        subject=subject.name,
        hints=() if allowed else tuple(hints),
    )


def _is_named(rule_port: NetworkPolicyPort, protocol: Protocol) -> bool:
    return isinstance(rule_port.port, str) and rule_port.protocol == protocol


def _named_note(name: int | str | None, *, protocol: Protocol, dst: Endpoint) -> str:
    numbers = named_port_numbers(dst, name=str(name), protocol=protocol)
    if numbers:
        return f"{name} is {protocol}/{','.join(map(str, numbers))} on {dst.name}"
    return f"{dst.name} has no {protocol} container port named {name}"


def _resolve(model: ClusterModel, peer: Peer, *, family: Family, role: str) -> Endpoint:
    if peer.ip is not None:
        if peer.pod is not None or peer.namespace is not None:
            raise PeerError(f"{role}: give a pod or an IP address, not both")
        address = parse_ip(peer.ip)
        if address is None:
            raise PeerError(f"{role}: {peer.ip!r} is not an IP address")
        if address.version != family:
            raise PeerError(
                f"{role}: {address} is an IPv{address.version} address, but IPv{family} was asked for"
            )
        pod = _pod_with_address(model, address)
        if pod is None:
            return Endpoint(str(address), None, address)
        return Endpoint(f"{pod.key} ({address})", pod, address)
    if peer.pod is None:
        raise PeerError(f"{role}: give a pod (namespace/name) or an IP address")
    namespace = peer.namespace or "default"
    pod = model.pod(namespace, peer.pod)
    if pod is None:
        near = _near_pods(model, namespace=namespace, name=peer.pod)
        raise UnknownPeerError(role, f"{namespace}/{peer.pod}", candidates=near)
    return endpoint_of(pod, family)


def _near_pods(model: ClusterModel, *, namespace: str, name: str) -> list[str]:
    """Likely meant instead: the same name in other namespaces, then similar names in the namespace."""
    keys = sorted(p.key for p in model.pods)
    same_name = [k for k in keys if k.endswith(f"/{name}")]
    here = [k.split("/", 1)[1] for k in keys if k.startswith(f"{namespace}/")]
    similar = [f"{namespace}/{n}" for n in difflib.get_close_matches(name, here, n=3, cutoff=0.6)]
    return [*same_name, *similar][:5]


def _pod_with_address(model: ClusterModel, address: Address) -> Pod | None:
    """The pod that owns ``address``: among the live pod-network pods listing it, the one not
    being deleted, then the newest; None when none does or the best two claims are equal."""
    holders = [
        p
        for p in model.pods_with_address(address)
        if not p.spec.host_network and p.status.phase not in _FINISHED_PHASES
    ]
    if len(holders) < 2:
        return holders[0] if holders else None

    def claim(pod: Pod) -> tuple[bool, float]:
        meta = pod.metadata
        created = meta.creation_timestamp.timestamp() if meta.creation_timestamp else float("-inf")
        return meta.deletion_timestamp is None, created

    first, second = sorted(holders, key=claim, reverse=True)[:2]
    return None if claim(first) == claim(second) else first


# --- connectivity -------------------------------------------------------------------------------------

Probe = tuple[Protocol, int]


def connectivity(
    model: ClusterModel, *, ports: Sequence[Probe], family: Family = 4, pods: Sequence[Pod] | None = None
) -> dict[tuple[str, str, Protocol, int], bool]:
    """:func:`evaluate`'s verdict for every ordered pair of distinct pods and every (protocol, port).

    Keys are (source key, destination key, protocol, port). Each rule's peers and ports are matched
    against every pod once; a pair then costs a set lookup per side.
    """
    ends = [endpoint_of(p, family) for p in (model.pods if pods is None else pods)]
    probes = list(dict.fromkeys(ports))
    everyone = frozenset(range(len(ends)))
    # reach[direction][i][probe]: indices of the peers pod i may reach (egress) or be reached by
    # (ingress); pod i has an entry only if it is isolated in that direction.
    reach: dict[Direction, dict[int, dict[Probe, set[int]]]] = {"ingress": {}, "egress": {}}
    for policy in model.policies:
        selected = [i for i, end in enumerate(ends) if selects(policy, end)]
        for direction in ("ingress", "egress"):
            if not selected or not applies(policy, direction):
                continue
            table = reach[direction]
            for i in selected:
                table.setdefault(i, {probe: set() for probe in probes})
            for peers, rule_ports in rules_of(policy, direction):
                matched = (
                    everyone
                    if not peers
                    else frozenset(
                        j for j, end in enumerate(ends) if peers_match(model, policy, peers=peers, other=end)
                    )
                )
                for protocol, port in probes:
                    if direction == "egress":
                        # The peer is the destination, which named ports resolve against.
                        to = {
                            j
                            for j in matched
                            if ports_match(rule_ports, protocol=protocol, port=port, dst=ends[j])
                        }
                        for i in selected:
                            table[i][protocol, port] |= to
                    else:
                        for i in selected:
                            if ports_match(rule_ports, protocol=protocol, port=port, dst=ends[i]):
                                table[i][protocol, port] |= matched
    for i, sets in reach["ingress"].items():
        local = {j for j, other in enumerate(ends) if from_own_node(model, src=other, dst=ends[i])}
        for probe in sets:
            sets[probe] |= local
    result: dict[tuple[str, str, Protocol, int], bool] = {}
    for s, source in enumerate(ends):
        egress = reach["egress"].get(s)
        for d, target in enumerate(ends):
            if s == d:
                continue
            ingress = reach["ingress"].get(d)
            for probe in probes:
                ok = (egress is None or d in egress[probe]) and (ingress is None or s in ingress[probe])
                result[(source.name, target.name, *probe)] = ok
    return result
