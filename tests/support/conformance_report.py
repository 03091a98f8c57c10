"""Readable reports of a conformance step: expected and measured truth tables per probed port, the
differing pairs with each probe's outcome, and outcomes that say the harness (not the policy) is off.

Shared by the kernel tier (compiled rulesets in a netns) and the cluster tier (the chart's agents on
real nodes), which measure the same table (`tests.support.conformance`) in different places.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence

from tests.support.conformance import PODS, Probe
from tests.support.probe import ProbeResult, ReachKey, render_comparison

# A probe outcome that says the harness, not the policy, is off: every probed port is served,
# so nothing may be refused, and agents must always manage to send.
SUSPICIOUS = frozenset({"refused", "error"})


def wrong(expected: Mapping[ReachKey, bool], results: Mapping[ReachKey, ProbeResult]) -> list[ReachKey]:
    """Keys whose measured reachability differs from the expected (or that were not measured)."""
    return sorted(k for k, ok in expected.items() if k not in results or results[k].reachable != ok)


def suspicious(
    results: Iterable[ProbeResult], *, outcomes: Collection[str] = SUSPICIOUS
) -> list[ProbeResult]:
    return [r for r in results if r.outcome in outcomes]


def render_tables(
    expected: Mapping[ReachKey, bool],
    results: Mapping[ReachKey, ProbeResult],
    *,
    probes: Sequence[Probe],
    title: str = "",
    names: Sequence[str] = PODS,
) -> str:
    """Per probed (protocol, port): expected, measured and difference tables, then the differing
    pairs with how each probe ended (outcome, time, attempts)."""
    parts = []
    for protocol, port in probes:
        mine = {(s, d): r for (s, d, p, n), r in results.items() if (p, n) == (protocol, port)}
        details = {
            pair: f"{r.outcome} after {r.elapsed_ms:.0f}ms, {r.attempts} attempt(s) {r.detail}".strip()
            for pair, r in mine.items()
        }
        want = {(s, d): ok for (s, d, p, n), ok in expected.items() if (p, n) == (protocol, port)}
        measured = {pair: r.reachable for pair, r in mine.items()}
        heading = f"{title} {protocol}/{port}".strip()
        parts.append(render_comparison(want, measured, names=names, title=heading, details=details))
    return "\n\n".join(parts)


def render_suspicious(results: Sequence[ProbeResult], *, limit: int = 10) -> str:
    lines = []
    for r in results[:limit]:
        q = r.request
        target = f" ({q.dst_address})" if q.dst_address else ""
        lines.append(
            f"suspicious outcome {r.outcome!r} for {q.src} -> {q.dst}{target} "
            f"{q.protocol}/{q.port} IPv{q.family}: {r.detail}"
        )
    if len(results) > limit:
        lines.append(f"... and {len(results) - limit} more")
    return "\n".join(lines)
