"""What the reference semantics answers: a verdict per connection, each side's reasons, and its text.

Kept apart from :mod:`compiler.semantics` so that the words for people (:mod:`compiler.explain`)
and the semantics both build on these types without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass

from compiler.model import Direction, Family, Protocol


@dataclass(frozen=True, order=True)
class RuleRef:
    """A rule of a policy: ``index`` into ``spec.ingress`` or ``spec.egress``."""

    policy: str
    direction: Direction
    index: int

    def __str__(self) -> str:
        return f"{self.policy} {self.direction} rule {self.index}"


@dataclass(frozen=True)
class Side:
    """The verdict of one side: the source's egress or the destination's ingress.

    ``isolating`` names the policies that isolate the pod in this direction, ``allowed_by`` every
    rule of theirs that allows the connection. ``exempt`` says why policy does not decide this side
    (not a pod, a host-network pod, traffic from the pod's own node or to itself); ``hints`` are
    near misses (rules that match the peer but not the port, or the reverse), for people.
    """

    direction: Direction
    isolated: bool
    isolating: tuple[str, ...]
    allowed_by: tuple[RuleRef, ...]
    allowed: bool
    subject: str = ""
    exempt: str = ""
    hints: tuple[str, ...] = ()


@dataclass(frozen=True)
class Verdict:
    """Whether the connection is allowed (both sides allow it), each side's reasons, and what was asked."""

    allowed: bool
    egress: Side
    ingress: Side
    src: str = ""
    dst: str = ""
    protocol: Protocol = "TCP"
    port: int = 0
    family: Family = 4

    def explain(self) -> str:
        """A few lines for a terminal: the verdict, then which policy and rule decided each side."""
        return render(self)


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
