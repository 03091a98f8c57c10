"""Text for people: a verdict of the reference semantics, and policy rules, described in a few words.

An operator reading ``stockade explain`` should see at a glance which policy and which rule decided
each side of a connection, and when it is blocked, which rules nearly allowed it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from compiler.model import NetworkPolicyPeer, NetworkPolicyPort, Protocol
from compiler.selectors import describe, requirements

if TYPE_CHECKING:  # semantics imports this module; the types are only needed for checking
    from compiler.semantics import RuleRef, Side, Verdict


def render(verdict: Verdict) -> str:
    """``ALLOWED``/``BLOCKED`` with the connection, then one line per side (egress, ingress) and details."""
    word = "ALLOWED" if verdict.allowed else "BLOCKED"
    lines = [
        f"{word}  {verdict.src} -> {verdict.dst}  {verdict.protocol}/{verdict.port} (IPv{verdict.family})"
    ]
    for side in (verdict.egress, verdict.ingress):
        other = verdict.dst if side.direction == "egress" else verdict.src
        first, *rest = _side_lines(side, other, probe=f"{verdict.protocol}/{verdict.port}")
        lines.append(f"  {side.direction:<7} {side.subject}: {first}")
        lines.extend(f"    {line}" for line in rest)
    return "\n".join(lines)


def _side_lines(side: Side, other: str, *, probe: str) -> list[str]:
    """The side's verdict and reason, then detail lines (other allowing rules, near misses)."""
    if side.exempt:
        lines = [f"allowed: {side.exempt}"]
        if side.isolated and not side.allowed_by:
            lines.append(f"(policies would block it: isolated by {', '.join(side.isolating)})")
        return lines
    if not side.isolated:
        return [f"allowed: not isolated (no policy selects it for {side.direction})"]
    if side.allowed:
        first, *rest = side.allowed_by
        more = f" (and {len(rest)} more)" if rest else ""
        lines = [f"allowed by {first}{more}"]
        if rest:
            lines.append("also allowed by " + ", ".join(str(ref) for ref in rest))
        return lines
    towards = "from" if side.direction == "ingress" else "to"
    head = (
        f"blocked: {side.subject} is isolated for {side.direction} by {', '.join(side.isolating)}"
        f" and no rule allows {probe} {towards} {other}"
    )
    return [head, *(f"nearly: {hint}" for hint in side.hints)]


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
