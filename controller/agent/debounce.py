"""Coalescing bursts of changes into batches: one compile and one apply per burst.

A batch is due once no change arrived for ``window`` seconds (the burst is over), or once its
oldest change waited ``max_delay`` (a steady stream of changes still reaches the kernel). The
window is milliseconds: long enough that a ``kubectl apply`` of many objects, or a Deployment
scaling up, becomes one apply; short enough to stay inside the programming-latency budget.

Two kinds of change do not wait for the window (the leading edge):

- a change that ends a quiet period (nothing pending, and nothing arrived for at least a window
  while the agent waited): a lone change, the common case, then costs no debounce at all. A burst
  that starts this way becomes two batches, its first change and the rest, which arrive while
  the first is compiled and applied, and are coalesced as before;
- a CNI report (:class:`~controller.agent.store.CniChange`): a pod's sandbox waits for it
  (ADD blocks until the pod is programmed), so the batch holding it is due at once; reports that
  arrive while a batch is being compiled and applied are coalesced into the next one.

Pod, policy and namespace changes are merged per UID (the compiler replaces its record of an
object by UID, so only the last state matters, and the first ``old`` names it); a node change
makes the batch a full compile.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from compiler.cluster import PodSource
from controller.agent.store import (
    Change,
    CniChange,
    ModelChange,
    NamespaceChange,
    PodChange,
    PolicyChange,
    SourcesChange,
)


@dataclass(frozen=True)
class Batch:
    """The changes of one burst, merged; ``arrivals`` are the monotonic arrival times of its events."""

    pods: tuple[PodChange, ...] = ()
    cni: tuple[CniChange, ...] = ()
    policies: tuple[PolicyChange, ...] = ()
    namespaces: tuple[NamespaceChange, ...] = ()
    rebuild: bool = False
    arrivals: tuple[float, ...] = ()
    sources: frozenset[PodSource] | None = None  # the node's routed pod sources, if they changed

    @property
    def size(self) -> int:
        return len(self.arrivals)


@dataclass
class Pending:
    """Changes not yet compiled."""

    pods: dict[str, PodChange] = field(default_factory=dict)
    cni: dict[str, CniChange] = field(default_factory=dict)
    policies: dict[str, PolicyChange] = field(default_factory=dict)
    namespaces: dict[str, NamespaceChange] = field(default_factory=dict)
    rebuild: bool = False
    arrivals: list[float] = field(default_factory=list)
    sources: frozenset[PodSource] | None = None
    urgent: bool = False  # a CNI report waits: due at once

    def add(self, change: Change, *, arrived: float) -> None:
        self.arrivals.append(arrived)
        if isinstance(change, ModelChange):
            self.rebuild = True
        elif isinstance(change, CniChange):
            self.cni[change.uid] = change
            self.urgent = True
        elif isinstance(change, SourcesChange):
            self.sources = change.sources  # each is a full listing: the last one holds
        elif isinstance(change, PolicyChange):
            was = self.policies.get(change.uid)
            self.policies[change.uid] = (
                change if was is None else PolicyChange(change.uid, was.old, change.new)
            )
        elif isinstance(change, NamespaceChange):
            seen = self.namespaces.get(change.uid)
            self.namespaces[change.uid] = (
                change if seen is None else NamespaceChange(change.uid, seen.old, change.new)
            )
        else:
            first = self.pods.get(change.uid)
            self.pods[change.uid] = change if first is None else PodChange(change.uid, first.old, change.new)

    def touch(self, *, arrived: float) -> None:
        """Ask for a compile and apply without a change (a retry, or the first apply)."""
        self.arrivals.append(arrived)

    @property
    def empty(self) -> bool:
        return not self.arrivals

    def take(self) -> Batch:
        batch = Batch(
            pods=tuple(self.pods.values()),
            cni=tuple(self.cni.values()),
            policies=tuple(self.policies.values()),
            namespaces=tuple(self.namespaces.values()),
            rebuild=self.rebuild,
            arrivals=tuple(self.arrivals),
            sources=self.sources,
        )
        self.pods, self.cni, self.rebuild, self.arrivals = {}, {}, False, []
        self.sources, self.urgent = None, False
        self.policies, self.namespaces = {}, {}
        return batch


def due_in(*, first: float, last: float, now: float, window: float, max_delay: float) -> float:
    """Seconds until a batch whose changes arrived from ``first`` to ``last`` is due (0: now)."""
    return max(0.0, min(last + window, first + max_delay) - now)


class Coalescer:
    """Collects changes from the event loop; :meth:`next_batch` waits for the next due batch."""

    def __init__(
        self, *, window: float, max_delay: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.window = window
        self.max_delay = max(max_delay, window)
        self._clock = clock
        self._pending = Pending()
        self._wake = asyncio.Event()

    def add(self, change: Change, *, arrived: float | None = None) -> None:
        self._pending.add(change, arrived=self._clock() if arrived is None else arrived)
        self._wake.set()

    @property
    def pending(self) -> bool:
        """Changes wait for the next batch."""
        return not self._pending.empty

    def touch(self, *, arrived: float | None = None) -> None:
        self._pending.touch(arrived=self._clock() if arrived is None else arrived)
        self._wake.set()

    async def next_batch(self) -> Batch:
        while True:
            if self._pending.empty:
                idle_from = self._clock()
                self._wake.clear()
                await self._wake.wait()
                if not self._pending.empty and min(self._pending.arrivals) - idle_from >= self.window:
                    return self._pending.take()  # a change after a quiet period: the leading edge
                continue
            if self._pending.urgent:
                return self._pending.take()
            arrivals = self._pending.arrivals
            wait = due_in(
                first=min(arrivals),
                last=max(arrivals),
                now=self._clock(),
                window=self.window,
                max_delay=self.max_delay,
            )
            if wait <= 0:
                return self._pending.take()
            self._wake.clear()
            # A new change restarts the wait (the window counts from the last change).
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=wait)
