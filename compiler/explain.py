"""Text for people: policy rules and near misses, described in a few words.

An operator reading ``stockade explain`` should see at a glance, when a connection is blocked, which
rules nearly allowed it. The verdict itself is rendered by :mod:`compiler.verdict`.
"""

from __future__ import annotations

from collections.abc import Sequence

from compiler.model import NetworkPolicyPeer, NetworkPolicyPort, Protocol
from compiler.selectors import describe, requirements
from compiler.verdict import RuleRef

# --- near misses --------------------------------------------------------------------------------------


def port_miss(ref: RuleRef, *, other: str, ports: Sequence[NetworkPolicyPort], notes: Sequence[str]) -> str:
    """A rule whose peers match the other end but whose ports do not match the probe."""
    extra = f" ({'; '.join(notes)})" if notes else ""
    return f"{ref} covers {other}, but only on {describe_ports(ports)}{extra}"


def peer_miss(
    ref: RuleRef, *, namespace: str, peers: Sequence[NetworkPolicyPeer], protocol: Protocol, port: int
) -> str:
    """A rule whose ports match the probe but whose peers do not match the other end."""
    towards = "from" if ref.direction == "ingress" else "to"
    return f"{ref} covers {protocol}/{port}, but only {towards} {describe_peers(namespace, peers)}"


def defective(ref: RuleRef, problems: Sequence[str]) -> str:
    """A rule that matches nothing because the policy is malformed there."""
    return f"{ref} matches nothing: it is malformed ({'; '.join(problems)})"


# --- rules in words ------------------------------------------------------------------------------------


def describe_peer(namespace: str, peer: NetworkPolicyPeer) -> str:
    """One ``from``/``to`` entry of a policy in ``namespace``: ``pods app=web in namespaces team=a``."""
    if peer.ip_block is not None:
        block = peer.ip_block
        return block.cidr + (f" except {', '.join(block.except_)}" if block.except_ else "")
    if peer.pod_selector is None or not requirements(peer.pod_selector):
        pods = "all pods"
    else:
        pods = f"pods {describe(peer.pod_selector)}"
    if peer.namespace_selector is None:
        return f"{pods} in namespace {namespace}"
    if not requirements(peer.namespace_selector):
        return f"{pods} in all namespaces"
    return f"{pods} in namespaces {describe(peer.namespace_selector)}"


def describe_peers(namespace: str, peers: Sequence[NetworkPolicyPeer]) -> str:
    if not peers:
        return "anywhere"
    return "; ".join(describe_peer(namespace, peer) for peer in peers)


def describe_port(port: NetworkPolicyPort) -> str:
    """``TCP/80``, ``TCP/8000-8080``, ``TCP/http`` (a named port) or ``TCP (all ports)``."""
    if port.port is None:
        return f"{port.protocol} (all ports)"
    if isinstance(port.port, int) and port.end_port is not None:
        return f"{port.protocol}/{port.port}-{port.end_port}"
    return f"{port.protocol}/{port.port}"


def describe_ports(ports: Sequence[NetworkPolicyPort]) -> str:
    if not ports:
        return "all ports"
    return ", ".join(describe_port(port) for port in ports)
