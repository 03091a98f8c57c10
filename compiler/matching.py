"""Matching primitives of the reference semantics: which pods a policy selects, which peers and ports
a rule matches. :mod:`compiler.semantics` builds :func:`~compiler.semantics.evaluate` and
:func:`~compiler.semantics.connectivity` on them; its docstring states the rules they implement.

Only the semantics should use this module: the compiled plan is tested against the semantics, and a
bug the two shared would hide from those tests.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from compiler.cluster import ClusterModel
from compiler.model import (
    Direction,
    Family,
    IPBlock,
    NetworkPolicy,
    NetworkPolicyPeer,
    NetworkPolicyPort,
    Pod,
    Protocol,
)
from compiler.selectors import matches

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Endpoint:
    """A resolved end: the pod (None for an address outside the pods) and the address ipBlocks see."""

    name: str
    pod: Pod | None
    address: Address | None

    @property
    def policed(self) -> bool:
        """Whether policies apply to it and selectors can match it: a pod on the pod network."""
        return self.pod is not None and not self.pod.spec.host_network


def namespace_of(obj: Pod | NetworkPolicy) -> str:
    return obj.metadata.namespace or "default"


@lru_cache(maxsize=4096)
def parse_ip(text: str) -> Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


@lru_cache(maxsize=4096)
def _network(cidr: str) -> Network:
    # The API server accepts host bits in ipBlock CIDRs (it parses them "sloppily").
    return ipaddress.ip_network(cidr, strict=False)


def address_of(pod: Pod, family: Family) -> Address | None:
    """The pod's address of ``family``, or None (template pods and single-stack pods have none,
    and a finished pod holds none: its address may already be another pod's)."""
    if pod.status.phase in ("Succeeded", "Failed"):
        return None
    for text in pod.ips():
        address = parse_ip(text)
        if address is not None and address.version == family:
            return address
    return None


def endpoint_of(pod: Pod, family: Family) -> Endpoint:
    return Endpoint(pod.key, pod, address_of(pod, family))


def in_block(address: Address, block: IPBlock) -> bool:
    """In ``cidr`` and in none of ``except`` (a network of the other family never contains it)."""
    if address not in _network(block.cidr):
        return False
    return not any(address in _network(cidr) for cidr in block.except_)


def selects(policy: NetworkPolicy, endpoint: Endpoint) -> bool:
    """Whether ``spec.podSelector`` selects the endpoint: a policed pod of the policy's namespace."""
    pod = endpoint.pod
    return (
        pod is not None
        and endpoint.policed
        and namespace_of(pod) == namespace_of(policy)
        and matches(policy.spec.pod_selector, pod.metadata.labels)
    )


def applies(policy: NetworkPolicy, direction: Direction) -> bool:
    return direction.capitalize() in policy.spec.effective_policy_types()


def peer_matches(
    model: ClusterModel, policy: NetworkPolicy, *, peer: NetworkPolicyPeer, other: Endpoint
) -> bool:
    """Whether one ``from``/``to`` entry of ``policy`` matches the other end of the connection."""
    if peer.ip_block is not None:
        return other.address is not None and in_block(other.address, peer.ip_block)
    if peer.pod_selector is None and peer.namespace_selector is None:
        return False  # an empty peer is rejected by validation; it matches nothing
    pod = other.pod
    if pod is None or not other.policed:
        return False
    if peer.namespace_selector is None:
        if namespace_of(pod) != namespace_of(policy):
            return False
    elif not matches(peer.namespace_selector, model.namespace_labels(namespace_of(pod))):
        return False
    return peer.pod_selector is None or matches(peer.pod_selector, pod.metadata.labels)


def named_port_numbers(dst: Endpoint, *, name: str, protocol: Protocol) -> tuple[int, ...]:
    """Container port numbers ``name`` stands for on the destination (none for non-pods, host network)."""
    if dst.pod is None or not dst.policed:
        return ()
    return tuple(
        p.container_port for p in dst.pod.container_ports() if p.name == name and p.protocol == protocol
    )


def port_matches(rule_port: NetworkPolicyPort, *, protocol: Protocol, port: int, dst: Endpoint) -> bool:
    if rule_port.protocol != protocol:
        return False
    if rule_port.port is None:
        return True
    if isinstance(rule_port.port, str):
        return port in named_port_numbers(dst, name=rule_port.port, protocol=protocol)
    end = rule_port.end_port if rule_port.end_port is not None else rule_port.port
    return rule_port.port <= port <= end


def ports_match(ports: Sequence[NetworkPolicyPort], *, protocol: Protocol, port: int, dst: Endpoint) -> bool:
    return not ports or any(port_matches(p, protocol=protocol, port=port, dst=dst) for p in ports)


def peers_match(
    model: ClusterModel, policy: NetworkPolicy, *, peers: Sequence[NetworkPolicyPeer], other: Endpoint
) -> bool:
    return not peers or any(peer_matches(model, policy, peer=p, other=other) for p in peers)


def rules_of(
    policy: NetworkPolicy, direction: Direction
) -> list[tuple[tuple[NetworkPolicyPeer, ...], tuple[NetworkPolicyPort, ...]]]:
    """(peers, ports) of each rule of ``direction``, in order."""
    if direction == "ingress":
        return [(r.from_, r.ports) for r in policy.spec.ingress]
    return [(r.to, r.ports) for r in policy.spec.egress]


def from_own_node(model: ClusterModel, *, src: Endpoint, dst: Endpoint) -> bool:
    """Whether ``src`` is the node ``dst`` runs on: a host-network pod there, or one of its InternalIPs."""
    node = dst.pod.spec.node_name if dst.pod is not None else None
    if not node:
        return False
    if src.pod is not None:
        return src.pod.spec.host_network and src.pod.spec.node_name == node
    node_obj = model.node(node)
    texts = list(node_obj.internal_ips()) if node_obj is not None else []
    texts += [ip for p in model.pods if p.spec.host_network and p.spec.node_name == node for ip in p.ips()]
    return src.address is not None and src.address in {parse_ip(t) for t in texts}
