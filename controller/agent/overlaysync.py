"""The agent drives this node's VXLAN overlay (:mod:`controller.overlay`) from the Node objects.

Every Node change the agent sees (a node joining, leaving, changing its InternalIP or podCIDRs)
wakes :class:`OverlaySync`, which converges the kernel with ``overlay.sync(local, nodes)``: the
device, and for every other node a route to its podCIDRs, a neighbour and an FDB entry. A timer
(the agent's check interval) wakes it too, so a route or FDB entry removed by hand is put back.

- Off the event loop: ``overlay.sync`` is blocking netlink; it runs in a thread of its own (not
  the compile worker), so a slow netlink call delays neither the watches nor policy programming.
- Coalesced: wake-ups that arrive while a sync runs make one more sync, with the nodes as they
  are then (the sync reads the agent's store when it starts, not when it was woken).
- Only from a complete listing: nothing is synced before the agent is seeded, so a restarted
  agent never removes a peer's route because its Node was not listed yet. An agent that stops
  leaves the overlay in place (as it leaves the ruleset): pods keep talking meanwhile.
- Never fatal: a failed sync (no InternalIP on this node yet, a netlink error) is logged, counted
  (``stockade_overlay_sync_errors_total``), posted once as a Warning Event on this Node
  (``OverlaySyncFailed``), and retried with backoff; the agent keeps enforcing policy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from compiler.model import Node
from controller import overlay
from controller.agent.notices import Notice, ObjectRef
from controller.overlay import OverlayNode, SyncReport

log = logging.getLogger(__name__)

# Seconds between attempts after a failed sync (the last one repeats).
RETRY_BACKOFF = (0.5, 1.0, 2.0, 5.0, 10.0)
DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)

SyncFn = Callable[[OverlayNode, list[OverlayNode]], SyncReport]


class OverlayMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.syncs = Counter("stockade_overlay_syncs", "Overlay syncs run (changes and checks)", registry=r)
        self.errors = Counter("stockade_overlay_sync_errors", "Overlay syncs that failed", registry=r)
        self.changes = Counter(
            "stockade_overlay_changes",
            "Overlay entries (device, addresses, routes, neighbours, FDB) added or removed",
            registry=r,
        )
        self.seconds = Histogram(
            "stockade_overlay_sync_duration_seconds",
            "Time an overlay sync took",
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.peers = Gauge("stockade_overlay_peers", "Other nodes the overlay reaches", registry=r)


class OverlaySync:
    def __init__(
        self,
        *,
        node: str,
        nodes: Callable[[], Iterable[Node]],
        ready: asyncio.Event,
        registry: CollectorRegistry,
        notify: Callable[[Notice], object] | None = None,
        check_interval: float = 30.0,
        sync: SyncFn | None = None,
    ) -> None:
        """``nodes`` reads the agent's Node objects now; ``ready`` is set once they are complete
        (the initial listing); ``notify`` posts a Notice as an Event; ``sync`` is
        ``overlay.sync`` (tests pass a recording one)."""
        self.node = node
        self._nodes = nodes
        self._ready = ready
        self._notify = notify
        self.check_interval = check_interval
        self._sync: SyncFn = sync if sync is not None else _kernel_sync
        self.metrics = OverlayMetrics(registry)
        self._wake = asyncio.Event()
        self._failures = 0
        self._skipped: tuple[str, ...] = ()
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"stockade-overlay-{node}")

    def nodes_changed(self) -> None:
        """A Node was added, changed or deleted (called on the event loop; cheap)."""
        self._wake.set()

    async def run(self) -> None:
        """Sync on every wake-up and every check interval, forever (cancel to stop)."""
        try:
            await self._ready.wait()
            while True:
                self._wake.clear()
                delay = await self.sync_once()
                # A timeout is the periodic check (or the retry after a failure).
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=delay)
        finally:
            self._worker.shutdown(wait=False, cancel_futures=True)

    async def sync_once(self) -> float:
        """One sync of the nodes as they are now; seconds until the next unprompted one."""
        by_name = {n.metadata.name: n for n in self._nodes()}
        local = by_name.get(self.node)
        if local is None:
            # Not listed yet (or deleted): nothing to derive the device from. Its arrival wakes us.
            return self.check_interval
        peers = [overlay.overlay_node(n) for n in by_name.values()]
        started = time.monotonic()
        self.metrics.syncs.inc()
        try:
            report = await asyncio.get_running_loop().run_in_executor(
                self._worker, self._sync, overlay.overlay_node(local), peers
            )
            self._note_skipped(local, peers)
        except Exception as exc:  # whatever it was, the agent goes on enforcing policy
            return self._failed(local, exc)
        finally:
            self.metrics.seconds.observe(time.monotonic() - started)
        self._failures = 0
        self.metrics.changes.inc(int(report.device_created) + len(report.added) + len(report.removed))
        if report.changed:
            log.info(
                "overlay of node %s:%s added %s; removed %s",
                self.node,
                " device created;" if report.device_created else "",
                report.added or "nothing",
                report.removed or "nothing",
            )
        return self.check_interval

    def _note_skipped(self, local: Node, peers: list[OverlayNode]) -> None:
        state = overlay.desired(overlay.overlay_node(local), peers)
        self.metrics.peers.set(len(state.fdb))
        if state.skipped != self._skipped and state.skipped:
            log.warning("overlay of node %s leaves out: %s", self.node, "; ".join(state.skipped))
        self._skipped = state.skipped

    def _failed(self, local: Node, exc: Exception) -> float:
        self.metrics.errors.inc()
        delay = RETRY_BACKOFF[min(self._failures, len(RETRY_BACKOFF) - 1)]
        self._failures += 1
        log.error("overlay sync of node %s failed (retry in %.1fs): %s", self.node, delay, exc, exc_info=exc)
        if self._notify is not None:
            ref = ObjectRef("Node", "v1", self.node, None, local.metadata.uid or "")
            message = f"Stockade cannot set up this node's VXLAN overlay: {exc}"
            self._notify(Notice(ref, "OverlaySyncFailed", message))
        return delay


def _kernel_sync(local: OverlayNode, nodes: list[OverlayNode]) -> SyncReport:
    return overlay.sync(local, nodes)
