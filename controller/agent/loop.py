"""The agent's main loop: changes in, batches compiled off the loop, plans to the applier.

Everything here runs on one asyncio loop except compiling, applying and checking, which run in
one worker thread (so they never overlap and never stall the watches). The loop holds:

- readiness: ready once the first plan built from the complete initial listing is applied, and
  while the watches are healthy (a callable the operator wiring supplies);
- CNI waiters: :meth:`Agent.program_pod` returns once an applied plan holds the pod;
- retries: a failed apply is retried with backoff (the applier keeps the last good ruleset);
- notices: after each full compile, new notices are posted as Events (off the loop too);
- the node's routed pod sources (the anti-spoofing fast path, :mod:`compiler.podsources`): read
  in full before the first plan and in every periodic check, and for one pod's addresses when
  the CNI plugin reports or forgets it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from compiler.ir import NodePlan
from compiler.options import DEFAULT_OPTIONS, CompileOptions
from controller.agent.debounce import Batch, Coalescer
from controller.agent.engine import Compiled, Engine
from controller.agent.heap import PROCESS_HEAP, Heap
from controller.agent.metrics import AgentMetrics
from controller.agent.notices import Notice, Noticeboard
from controller.agent.objects import Kind, Model
from controller.agent.seams import PlanApplier, PodForget, PodReport, PodSourceReader, retry_delay
from controller.agent.store import Change, ModelChange, Snapshot, Store

log = logging.getLogger(__name__)

RETRY_BACKOFF = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0)  # seconds; the applier falls back to a full rebuild


class EventSink(Protocol):
    def post(self, notice: Notice) -> None:
        """Post one Event (blocking; called in a thread)."""
        ...


class Agent:
    def __init__(
        self,
        *,
        node: str,
        applier: PlanApplier,
        events: EventSink | None = None,
        debounce: float = 0.01,
        max_delay: float | None = None,
        check_interval: float = 30.0,
        watches_healthy: Callable[[], bool] = lambda: True,
        notice_delay: float = 1.0,
        sources: PodSourceReader | None = None,
        compile_options: CompileOptions = DEFAULT_OPTIONS,
    ) -> None:
        self.node = node
        self.sources = sources
        self.applier = applier
        self.events = events
        self.store = Store()
        self.coalescer = Coalescer(
            window=debounce, max_delay=max_delay if max_delay else max(10 * debounce, 0.1)
        )
        self.engine = Engine(node=node, options=compile_options)
        self.metrics = AgentMetrics(applier)
        self.check_interval = check_interval
        self.watches_healthy = watches_healthy
        self.board = Noticeboard()
        self.synced = asyncio.Event()
        self.applied_plan: NodePlan | None = None
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"stockade-{node}")
        self._waiters: list[tuple[Callable[[NodePlan], bool], asyncio.Future[None]]] = []
        self._failures = 0
        self._sandboxes: dict[str, str] = {}  # pod UID -> container ID of the sandbox that reported
        # Called on the loop after any Node object changed (the overlay: controller.agent.overlaysync).
        self.on_nodes: Callable[[], None] | None = None
        self.notice_delay = notice_delay
        self._review_next: Snapshot | None = None
        self._review_due = 0.0
        self._reviewer: asyncio.Task[None] | None = None
        self.heap: Heap = PROCESS_HEAP  # the heap is the process's, however many agents run in it
        self._last_step = time.monotonic()  # when the last batch was done (the heap's idle time)
        self._stepping = False  # a batch is being compiled or applied

    # --- readiness -------------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        ok = self.applied_plan is not None and self.watches_healthy()
        self.metrics.ready.set(1 if ok else 0)
        return ok

    # --- changes in ------------------------------------------------------------------------------

    def _add(self, change: Change | None, arrived: float | None) -> None:
        if change is not None:
            self.coalescer.add(change, arrived=arrived)
            if self.on_nodes is not None and isinstance(change, ModelChange) and change.kind == "Node":
                self.on_nodes()

    def seed(self, objects: Iterable[tuple[Kind, Model]]) -> None:
        """The complete initial listing: from now on a plan means the whole cluster."""
        for kind, obj in objects:
            self._add(self.store.upsert(kind, obj), None)
        self.synced.set()
        self.coalescer.touch()

    def observe(
        self, kind: Kind, obj: Model | None, *, uid: str, deleted: bool, arrived: float | None = None
    ) -> None:
        """One watch event: ``obj`` is the object as it is now (None when it could not be read,
        which counts as gone: an object the compiler cannot read must not keep old rules)."""
        self.metrics.watch_events.labels(kind=kind).inc()
        if deleted or obj is None:
            self._sandboxes.pop(uid, None)
            self._add(self.store.delete(kind, uid), arrived)
        else:
            self._add(self.store.upsert(kind, obj), arrived)

    def known(self, kind: Kind) -> set[str]:
        """UIDs of the objects of ``kind`` held now."""
        return self.store.uids(kind)

    def prune(self, kind: Kind, *, listed: set[str], known_before: set[str]) -> set[str]:
        """Forget objects a fresh listing no longer shows.

        A watch resumed after a long outage is a new listing, which shows what exists but says
        nothing of what was deleted meanwhile. ``known_before`` are the UIDs held before that
        listing was asked for: one of them missing from it was deleted before the listing, so
        it goes; an object that arrived during the listing is not in ``known_before`` and stays.
        """
        stale = known_before - listed
        for uid in sorted(stale):
            self._sandboxes.pop(uid, None)
            self._add(self.store.delete(kind, uid), None)
        return stale

    # --- the CNI sink ----------------------------------------------------------------------------

    async def program_pod(self, report: PodReport) -> None:
        """Return once an applied plan dispatches the pod's addresses (the caller bounds the wait).
        A report for a pod the API has not shown yet is kept, and the wait lasts until it has.

        The pod's addresses are the reported ones, or those the API shows for this UID once it
        shows any (the API wins). Matching on addresses, not only the name, keeps a previous
        incarnation of the pod (a StatefulSet pod re-created under its name) from answering."""
        key = f"{report.namespace}/{report.name}"
        reported = set(report.addresses)

        def holds(plan: NodePlan) -> bool:
            api = self.store.pods.get(report.uid)
            wanted = [reported, set(api.ips()) if api is not None else set()]
            return any(
                p.key == key and any(w and w <= set(p.addresses) for w in wanted) for p in plan.local_pods
            )

        self._sandboxes[report.uid] = report.container_id
        # The plugin created the pod's veth and routes before it reported: read them now, so the
        # plan that answers this report also lets the pod's packets skip the route lookup. Added
        # with the report, in one step of the loop: one batch, one plan.
        await self._read_sources(report.addresses)
        change = self.store.report_cni(report.uid, tuple(report.addresses))
        self._add(change, None)
        if change is None and self.applied_plan is not None and holds(self.applied_plan):
            return  # a repeated report (CNI ADD retried): already in the kernel
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((holds, future))
        try:
            await future
        finally:
            self._waiters = [(h, f) for h, f in self._waiters if f is not future]

    async def forget_pod(self, forget: PodForget) -> None:
        """Forget the addresses that sandbox reported; a DEL of an older sandbox of the same pod
        (its sandbox was re-created) leaves the newer one's report alone."""
        uid = forget.uid or next((u for u, c in self._sandboxes.items() if c == forget.container_id), "")
        if not uid or self._sandboxes.get(uid) not in (None, forget.container_id):
            return
        self._sandboxes.pop(uid, None)
        reported = self.store.cni.get(uid, ())
        self._add(self.store.report_cni(uid, ()), None)
        await self._read_sources(reported)  # the plugin removed the veth and its routes first

    # --- the loop --------------------------------------------------------------------------------

    async def _read_sources(self, addresses: tuple[str, ...] | None = None) -> None:
        """Read the routed pod sources (all, or those of ``addresses``) off the loop, and queue
        what changed. A failure is logged only: without a pair, the route lookup checks the pod."""
        reader = self.sources
        if reader is None or (addresses is not None and not addresses):
            return
        loop = asyncio.get_running_loop()
        try:
            if addresses is None:
                found = await loop.run_in_executor(None, reader.all)
                change = self.store.set_sources(found)
            else:
                found = await loop.run_in_executor(None, reader.of, addresses)
                change = self.store.refresh_sources(addresses, found)
        except Exception:
            log.exception("reading the routed pod sources of node %s failed", self.node)
            return
        self._add(change, None)

    async def _in_worker(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._worker, fn, *args)

    async def run(self) -> None:
        """Compile and apply batches forever (cancel to stop)."""
        checker = asyncio.create_task(self._check_loop(), name=f"stockade check {self.node}")
        try:
            await self._read_sources()  # before the first plan, which then has them
            await self.synced.wait()
            while True:
                await self.step(await self.coalescer.next_batch())
        finally:
            checker.cancel()
            self._worker.shutdown(wait=False, cancel_futures=True)

    async def step(self, batch: Batch) -> None:
        self._stepping = True
        try:
            await self._step(batch)
        finally:
            self._stepping = False
            self._last_step = time.monotonic()

    async def _step(self, batch: Batch) -> None:
        snapshot = self.store.snapshot()
        started = time.monotonic()
        compiled: Compiled = await self._in_worker(self.engine.compile, batch, snapshot)
        self.metrics.compile_seconds.observe(time.monotonic() - started)
        if compiled.full:
            self.metrics.full_compiles.inc()
        if compiled.notices is not None:
            self._post(self.board.update(list(compiled.notices)))
        if not await self._apply(compiled.plan):
            for arrived in batch.arrivals:  # the retry carries them: latency counts to the kernel
                self.coalescer.touch(arrived=arrived)
            return
        done = time.monotonic()
        for arrived in batch.arrivals:
            self.metrics.latency.observe(done - arrived)
        for holds, future in self._waiters:
            if not future.done() and holds(compiled.plan):
                future.set_result(None)
        if not self.heap.settled:
            # Once the loop has run what the waiters' results scheduled (the CNI answers): the
            # start's one long pause then delays no pod.
            asyncio.get_running_loop().call_soon(self.heap.settle)
        if compiled.review:
            self._review(snapshot)

    async def _apply(self, plan: NodePlan) -> bool:
        """Hand the plan over; whether the kernel holds it now. When it does not (the kernel
        refused it, or the applier defers a refused plan until its backoff elapsed), wait what
        the applier says, or our own backoff, before the caller retries."""
        started = time.monotonic()
        self.metrics.applies.inc()
        outcome: object
        try:
            outcome = await self._in_worker(self.applier.apply, plan)
        except Exception as exc:
            outcome = exc
            log.error("applying the plan of node %s failed: %s", self.node, exc, exc_info=exc)
        finally:
            self.metrics.apply_seconds.observe(time.monotonic() - started)
        delay = retry_delay(outcome)
        if delay is not None:
            self.metrics.apply_errors.inc()
            ours = RETRY_BACKOFF[min(self._failures, len(RETRY_BACKOFF) - 1)]
            self._failures += 1
            await asyncio.sleep(max(delay, ours) if isinstance(outcome, BaseException) else delay)
            return False
        self._failures = 0
        self.applied_plan = plan
        self.metrics.applied(plan)
        return True

    async def _check_loop(self) -> None:
        while True:
            await asyncio.sleep(self.check_interval)
            await self._read_sources()  # routes changed by hand, or a report missed
            if self.applied_plan is None:
                continue
            try:
                # Not in the worker: listing a big table must not hold up compiling and applying
                # (the applier is thread-safe and compares without holding its lock).
                await asyncio.get_running_loop().run_in_executor(None, self.applier.check)
            except Exception:
                log.exception("drift check of node %s failed; applying the plan again", self.node)
                self.coalescer.touch()
            if not (self._stepping or self.coalescer.pending):
                self.heap.maybe_collect(idle_for=time.monotonic() - self._last_step)

    def _review(self, snapshot: Snapshot) -> None:
        """Find the notices of ``snapshot`` (a policy or namespace changed) once such changes have
        stopped for ``notice_delay``, off the worker thread: reading the whole model costs ~0.1 s
        of CPU at 10,000 pods, which programming the next change must not wait or compete for."""
        self._review_next = snapshot
        self._review_due = time.monotonic() + self.notice_delay
        if self._reviewer is not None and not self._reviewer.done():
            return

        async def review() -> None:
            loop = asyncio.get_running_loop()
            while self._review_next is not None:
                wait = self._review_due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                    continue
                latest, self._review_next = self._review_next, None
                try:
                    found = await loop.run_in_executor(None, self.engine.notices, latest)
                except Exception:
                    log.exception("finding the notices of node %s failed", self.node)
                    continue
                self._post(self.board.update(list(found)))

        self._reviewer = asyncio.create_task(review(), name=f"stockade notices {self.node}")

    # --- events ----------------------------------------------------------------------------------

    def notice(self, notice: Notice) -> bool:
        """A notice found outside the model (kube-proxy's mode, an unreadable object), posted
        once; whether it was new."""
        if not self.board.once(notice):
            return False
        self._post([notice])
        return True

    def _post(self, fresh: list[Notice]) -> None:
        for n in fresh:
            name = f"{n.ref.namespace}/{n.ref.name}" if n.ref.namespace else n.ref.name
            log.warning("%s %s: %s: %s", n.ref.kind, name, n.reason, n.message)
        if self.events is None or not fresh:
            return
        sink = self.events

        def post_all() -> None:
            for n in fresh:
                try:
                    sink.post(n)
                except Exception:
                    log.exception("posting Event %s for %s %s failed", n.reason, n.ref.kind, n.ref.name)

        asyncio.get_running_loop().run_in_executor(None, post_all)
