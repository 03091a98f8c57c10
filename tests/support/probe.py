"""The prober: asks pod agents to probe each other, concurrently, and renders reachability tables.

Independent of who built the pods: the kernel tier passes its NetLab's pods, the cluster lab its
own (any netns, any addresses), as `PodEndpoint`s whose control socket a `tests.support.podagent`
answers on.

Verdicts. A probe that gets an answer is final: an answer cannot be invented by a loaded
machine. A probe that gets none ("blocked") may just have been slow, so every non-answer is
probed once more with the longer `confirm_timeout`; only a second silence is a verdict (and
when that round shows the machine is loaded, a third with twice that timeout). All
probes of a call run at once (each agent gets its requests pipelined on one connection), so a
whole matrix costs about `timeout`, plus `confirm_timeout` when anything is blocked.

A refused probe (TCP RST, ICMP port unreachable, SCTP ABORT) reached the destination host and
counts as reachable; its outcome stays visible in `ProbeResult.outcome`. An ICMP error other
than port unreachable counts as blocked (outcome ``unreachable``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

Family = Literal[4, 6]
Protocol = Literal["TCP", "UDP", "SCTP"]
Outcome = Literal["connected", "refused", "unreachable", "blocked", "error"]
REACHED: frozenset[str] = frozenset({"connected", "refused"})
Pair = tuple[str, str]
ReachKey = tuple[str, str, Protocol, int]

DEFAULT_TIMEOUT = 0.5
DEFAULT_CONFIRM_TIMEOUT = 1.5
# Time an agent gets beyond the probe timeout to answer before the prober gives up on it.
AGENT_GRACE = 15.0


class ProbeError(RuntimeError):
    """An agent could not be asked or did not answer: a harness failure, never a verdict."""


@dataclass(frozen=True)
class PodEndpoint:
    """A pod as the prober sees it: a name, its agent's control socket and its addresses."""

    name: str
    netns: str
    control: str
    ipv4: str | None = None
    ipv6: str | None = None

    def address(self, family: Family) -> str:
        address = self.ipv4 if family == 4 else self.ipv6
        if address is None:
            raise ProbeError(f"pod {self.name} has no IPv{family} address")
        return address


@dataclass(frozen=True)
class ProbeRequest:
    src: str
    dst: str
    protocol: Protocol
    port: int
    family: Family = 4
    # Probe this address instead of the destination pod's (e.g. a service IP or the node).
    dst_address: str | None = None


@dataclass(frozen=True)
class ProbeResult:
    request: ProbeRequest
    outcome: Outcome
    elapsed_ms: float
    detail: str = ""
    attempts: int = 1

    @property
    def reachable(self) -> bool:
        return self.outcome in REACHED


@dataclass
class ProbeStats:
    """Counters over a Prober's life, for reports (a high `rescued` means the timeout is too tight)."""

    probes: int = 0
    confirmations: int = 0
    rescued: int = 0
    # Confirmation rounds slow enough to earn one more round with twice the timeout.
    stressed_rounds: int = 0
    calls: int = 0
    seconds: float = 0.0
    slowest_ms: float = 0.0
    outcomes: dict[str, int] = field(default_factory=dict)


def all_pairs(names: Iterable[str]) -> list[Pair]:
    """Every ordered pair of distinct names (a pod does not probe itself)."""
    ordered = list(names)
    return [(s, d) for s, d in itertools.product(ordered, ordered) if s != d]


class Prober:
    def __init__(
        self,
        pods: Sequence[PodEndpoint],
        *,
        timeout: float = DEFAULT_TIMEOUT,
        confirm_timeout: float = DEFAULT_CONFIRM_TIMEOUT,
    ) -> None:
        self.pods: dict[str, PodEndpoint] = {p.name: p for p in pods}
        if len(self.pods) != len(pods):
            raise ValueError("duplicate pod names")
        self.timeout = timeout
        self.confirm_timeout = confirm_timeout
        self.stats = ProbeStats()

    @property
    def names(self) -> list[str]:
        return list(self.pods)

    # --- the primitive ------------------------------------------------------------------------

    async def aprobe(self, requests: Sequence[ProbeRequest]) -> list[ProbeResult]:
        """Run every request at once; re-probe each non-answer with `confirm_timeout`.

        If that confirmation round shows the machine is loaded (an answer in it took more than
        half its timeout), whatever is still silent gets one last round with twice the timeout.
        """
        loop = asyncio.get_running_loop()
        started = loop.time()
        results = await self._round(requests, self.timeout)
        retry = [i for i, r in enumerate(results) if not r.reachable]
        timeout = self.confirm_timeout
        for attempt in (2, 3):
            if not retry or timeout <= 0:
                break
            again = await self._round([requests[i] for i in retry], timeout)
            for i, result in zip(retry, again, strict=True):
                results[i] = dataclasses.replace(result, attempts=attempt)
                self.stats.rescued += result.reachable
            self.stats.confirmations += len(retry)
            slowest = max((r.elapsed_ms for r in again if r.reachable), default=0.0)
            retry = [i for i in retry if not results[i].reachable]
            if slowest < timeout * 1000 / 2:
                break
            self.stats.stressed_rounds += 1
            timeout *= 2
        self.stats.calls += 1
        self.stats.probes += len(requests)
        self.stats.seconds += loop.time() - started
        for result in results:
            self.stats.outcomes[result.outcome] = self.stats.outcomes.get(result.outcome, 0) + 1
            if result.reachable:
                self.stats.slowest_ms = max(self.stats.slowest_ms, result.elapsed_ms)
        return results

    def probe(self, requests: Sequence[ProbeRequest]) -> list[ProbeResult]:
        return asyncio.run(self.aprobe(requests))

    async def _round(self, requests: Sequence[ProbeRequest], timeout: float) -> list[ProbeResult]:
        by_src: dict[str, list[int]] = {}
        for i, request in enumerate(requests):
            if request.src not in self.pods:
                raise ProbeError(f"unknown source pod {request.src}")
            by_src.setdefault(request.src, []).append(i)
        results: list[ProbeResult | None] = [None] * len(requests)
        answers = await asyncio.gather(
            *(self._ask(src, [(i, requests[i]) for i in idx], timeout) for src, idx in by_src.items())
        )
        for answer in answers:
            for i, result in answer.items():
                results[i] = result
        missing = [requests[i] for i, r in enumerate(results) if r is None]
        if missing:
            raise ProbeError(f"no answer for {missing[:3]}")
        return [r for r in results if r is not None]

    def _address(self, request: ProbeRequest) -> str:
        if request.dst_address is not None:
            return request.dst_address
        if request.dst not in self.pods:
            raise ProbeError(f"unknown destination pod {request.dst}")
        return self.pods[request.dst].address(request.family)

    async def _ask(
        self, src: str, items: list[tuple[int, ProbeRequest]], timeout: float
    ) -> dict[int, ProbeResult]:
        endpoint = self.pods[src]
        lines = [f"probe {i} {self._address(r)} {r.protocol} {r.port} {timeout}\n" for i, r in items]
        try:
            reader, writer = await asyncio.open_unix_connection(endpoint.control, limit=1 << 20)
        except OSError as exc:
            raise ProbeError(f"agent of {src} at {endpoint.control}: {exc}") from exc
        pending = dict(items)
        out: dict[int, ProbeResult] = {}
        try:
            writer.write("".join(lines).encode())
            await writer.drain()
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout + AGENT_GRACE
            while pending:
                left = deadline - loop.time()
                if left <= 0:
                    raise ProbeError(f"agent of {src} left {len(pending)} probes unanswered")
                line = await asyncio.wait_for(reader.readline(), left)
                if not line:
                    raise ProbeError(f"agent of {src} closed the connection")
                ident, outcome, elapsed, *detail = line.decode().split(maxsplit=3)
                request = pending.pop(int(ident))
                if outcome not in ("connected", "refused", "unreachable", "blocked", "error"):
                    raise ProbeError(f"agent of {src} answered {line!r}")
                out[int(ident)] = ProbeResult(
                    request=request,
                    outcome=outcome,  # type: ignore[arg-type]  # checked just above
                    elapsed_ms=float(elapsed),
                    detail=detail[0].strip() if detail else "",
                )
        except (TimeoutError, OSError, ValueError, KeyError) as exc:
            raise ProbeError(f"agent of {src}: {type(exc).__name__}: {exc}") from exc
        finally:
            writer.close()
        return out

    # --- matrices -----------------------------------------------------------------------------

    async def areachability(
        self,
        pairs: Iterable[Pair] | None,
        ports: Sequence[tuple[Protocol, int]],
        family: Family,
    ) -> dict[ReachKey, ProbeResult]:
        """Probe every pair on every (protocol, port); None pairs means all ordered pairs."""
        pair_list = list(pairs) if pairs is not None else all_pairs(self.pods)
        requests = [
            ProbeRequest(src=s, dst=d, protocol=proto, port=port, family=family)
            for proto, port in ports
            for s, d in pair_list
        ]
        results = await self.aprobe(requests)
        return {(r.request.src, r.request.dst, r.request.protocol, r.request.port): r for r in results}

    def reachability(
        self,
        pairs: Iterable[Pair] | None,
        ports: Sequence[tuple[Protocol, int]],
        family: Family,
    ) -> dict[ReachKey, ProbeResult]:
        return asyncio.run(self.areachability(pairs, ports, family))

    def matrix(
        self, pairs: Iterable[Pair] | None, port: int, protocol: Protocol, family: Family
    ) -> dict[Pair, bool]:
        """{(src, dst): reachable} for one port and protocol."""
        results = self.reachability(pairs, [(protocol, port)], family)
        return {(s, d): r.reachable for (s, d, _, _), r in results.items()}


# --- rendering ----------------------------------------------------------------------------------


def _names(pairs: Iterable[Pair], names: Sequence[str] | None) -> list[str]:
    if names is not None:
        return list(names)
    seen: dict[str, None] = {}
    for s, d in pairs:
        seen.setdefault(s)
        seen.setdefault(d)
    return sorted(seen)


def render_matrix(matrix: Mapping[Pair, bool], *, names: Sequence[str] | None = None, title: str = "") -> str:
    """A truth table like the upstream e2e one: rows are sources, columns destinations,
    ``.`` reachable, ``X`` blocked, ``-`` not probed."""
    cols = _names(matrix, names)
    width = max([len(n) for n in cols] + [1])
    lines = [title] if title else []
    lines.append(" ".join(["-".ljust(width), *(n.ljust(width) for n in cols)]).rstrip())
    for src in cols:
        cells = []
        for dst in cols:
            value = matrix.get((src, dst))
            cells.append(("-" if value is None else "." if value else "X").ljust(width))
        lines.append(" ".join([src.ljust(width), *cells]).rstrip())
    return "\n".join(lines)


def render_comparison(
    expected: Mapping[Pair, bool],
    measured: Mapping[Pair, bool],
    *,
    names: Sequence[str] | None = None,
    title: str = "",
    details: Mapping[Pair, str] | None = None,
) -> str:
    """Expected and measured tables, a table of differences (``!``), and the differing pairs."""
    cols = _names([*expected, *measured], names)
    diff = {k: expected.get(k) == measured.get(k) for k in {*expected, *measured}}
    parts = [
        render_matrix(expected, names=cols, title=f"{title} expected".strip()),
        render_matrix(measured, names=cols, title=f"{title} measured".strip()),
        render_matrix(diff, names=cols, title=f"{title} comparison (X = differs)".strip()),
    ]
    wrong = sorted(k for k, same in diff.items() if not same)
    for src, dst in wrong:
        want = {True: "reachable", False: "blocked", None: "absent"}[expected.get((src, dst))]
        got = {True: "reachable", False: "blocked", None: "absent"}[measured.get((src, dst))]
        extra = f" ({details[(src, dst)]})" if details and (src, dst) in details else ""
        parts.append(f"  {src} -> {dst}: expected {want}, measured {got}{extra}")
    return "\n\n".join(parts[:3]) + ("\n" + "\n".join(parts[3:]) if wrong else "")


def split_by_port(results: Mapping[ReachKey, bool]) -> dict[tuple[Protocol, int], dict[Pair, bool]]:
    """{(protocol, port): {(src, dst): reachable}} from a flat reachability dict."""
    out: dict[tuple[Protocol, int], dict[Pair, bool]] = {}
    for (src, dst, proto, port), value in results.items():
        out.setdefault((proto, port), {})[(src, dst)] = value
    return out
