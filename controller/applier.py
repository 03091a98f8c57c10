"""The node applier: keeps table ``inet stockade`` in the kernel equal to the node's plan.

How a plan gets into the kernel (every change is one libnftables transaction, so the kernel
holds the old ruleset or the new one, never a mix, and never no ruleset):

- **first apply (adoption)**: the applier lists the table. No table: a full load. A table equal
  to the plan: nothing is written, its counters keep counting. A table that differs: the diff
  from what the kernel holds (:func:`compiler.plandiff.diff_states`) to the plan. A full swap
  (table deleted and re-created inside one transaction) would be just as windowless; the diff is
  preferred because rules the restart does not change keep their counters, so per-policy
  packet counts survive an agent restart. Only a table holding what a plan never has
  (flowtables, table flags; see :mod:`controller.kernelstate`) is swapped whole.
- **later applies**: :func:`compiler.plandiff.diff_plans` from the last committed plan: set
  elements, map entries, and the chains that changed; untouched rules keep their counters.
- **a rejected transaction** leaves the last good ruleset in place (the kernel applies a batch
  whole or not at all). It is logged with the nft error and the commands, and the applier falls
  back to a full rebuild of the same plan at once (the diff may have been wrong only because the
  kernel drifted). If the rebuild is rejected too, the plan is kept pending and retried with
  exponential backoff (capped); a *different* plan is tried at once, as a full rebuild. After
  every failure a check confirms the kernel still holds the last good plan.
- **state is committed only after the kernel accepted it**: :attr:`committed` is always what the
  kernel was last known to hold.
- **check** (periodic, and after every failure) lists the table, compares it with the committed
  plan object by object, and repairs drift with the diff from what the kernel holds (a full
  rebuild when that is rejected or the table is gone). It also retries a pending plan whose
  backoff has elapsed.

Synchronous and thread-safe (one lock): the agent calls it from a worker thread, off its event
loop. The clock is injectable so tests can step through the backoff.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from compiler.ir import NodePlan, PlanSet
from compiler.plandiff import TableState, diff_states, plan_state
from compiler.render_json import render_json, table_json
from controller.errors import KernelRejected
from controller.kernelstate import KernelTable, RuleKey, differences, isolation_keys, read_listing, rule_key

Json = dict[str, Any]
log = logging.getLogger("stockade.applier")

# How much of a rejected transaction goes to the log: enough to see what was asked, bounded so a
# 10,000-pod full load does not flood it.
_LOGGED_COMMAND_CHARS = 20_000


class NftLike(Protocol):
    """What the applier needs of :class:`controller.nft.Nft`."""

    def run(self, doc: Json, *, what: str) -> None: ...

    def list_table(self) -> Json | None: ...


@dataclass(frozen=True)
class Backoff:
    """Delay before retrying a rejected plan: ``initial * factor ** (failures - 1)``, at most ``cap``."""

    initial: float = 0.5
    factor: float = 2.0
    cap: float = 30.0

    def delay(self, failures: int) -> float:
        return float(min(self.cap, self.initial * self.factor ** max(0, failures - 1)))


Outcome = Literal["unchanged", "diff", "full", "adopted", "deferred"]


@dataclass(frozen=True)
class ApplyResult:
    """``outcome``: ``unchanged`` (nothing to write), ``diff``, ``full`` (whole table replaced),
    ``adopted`` (first apply over an existing table), ``deferred`` (a rejected plan whose backoff
    has not elapsed; nothing was tried). ``fell_back``: a diff was rejected and a full rebuild
    put the plan in instead."""

    outcome: Outcome
    commands: int
    seconds: float
    fell_back: bool = False
    retry_in: float | None = None


def _differences(listing: Json | None, state: TableState) -> tuple[tuple[str, ...], KernelTable | None]:
    """What differs between a listing of the table (None: no table) and the plan's state."""
    kernel: KernelTable | None = None if listing is None else read_listing(listing)
    if kernel is None:
        return ("table inet stockade: missing",), None
    return tuple(kernel.foreign) + differences(kernel.state, state), kernel


@dataclass(frozen=True)
class DriftReport:
    """``checked`` is False when no plan was committed yet (nothing to compare with).
    ``differences`` lists what differed, one line per object; ``repair`` says how it was fixed.
    ``retried``/``retry_error``: a pending plan the check tried first, and why it failed again."""

    checked: bool
    differences: tuple[str, ...] = ()
    repair: Literal["", "diff", "full"] = ""
    retried: ApplyResult | None = None  # a pending plan the check tried (or deferred) first
    retry_error: str = ""  # ... and why the kernel rejected it again

    @property
    def drifted(self) -> bool:
        return bool(self.differences)


@dataclass(frozen=True)
class Counts:
    packets: int
    bytes: int


class Applier:
    def __init__(
        self,
        *,
        nft: NftLike,
        clock: Callable[[], float] = time.monotonic,
        backoff: Backoff = Backoff(),
    ) -> None:
        self._nft = nft
        self._clock = clock
        self._backoff = backoff
        self._lock = threading.RLock()
        self._committed: NodePlan | None = None
        self._committed_state: TableState | None = None
        self._wanted: NodePlan | None = None
        self._rebuild = False  # the kernel may not hold `committed` exactly: next change is a full load
        self._failures = 0
        self._retry_at: float | None = None
        self._failed_plan: NodePlan | None = None
        self._applies = 0
        self._errors = 0
        self._drift_repairs = 0
        self._last_seconds = 0.0

    # --- applying ---------------------------------------------------------------------------------

    def apply(self, plan: NodePlan) -> ApplyResult:
        """Put ``plan`` in the kernel; raises :class:`KernelRejected` (with ``retry_in`` set) when
        neither a diff nor a full rebuild was accepted. The last good ruleset then stays."""
        with self._lock:
            self._wanted = plan
            return self._converge()

    def adopt(self, plan: NodePlan) -> ApplyResult:
        """Take over whatever table the kernel holds and make it ``plan`` without a window: the
        first :meth:`apply` does this by itself; this forgets the committed plan first."""
        with self._lock:
            self._committed = self._committed_state = None
            self._wanted = plan
            return self._converge()

    def _converge(self) -> ApplyResult:
        plan = self._wanted
        assert plan is not None
        now = self._clock()
        if plan == self._failed_plan and self._retry_at is not None and now < self._retry_at:
            return ApplyResult("deferred", 0, 0.0, retry_in=self._retry_at - now)
        started = time.perf_counter()
        # Objects the compiler handed out unchanged since the committed plan keep their converted
        # form, and the diff skips them: an apply costs what changed, not the size of the plan.
        committed = self._committed, self._committed_state
        state = plan_state(
            plan, reuse=None if committed[0] is None or committed[1] is None else (committed[0], committed[1])
        )
        try:
            outcome, commands, fell_back = self._write(plan, state)
        except KernelRejected as exc:
            self._errors += 1
            self._failures += 1
            self._failed_plan = plan
            self._rebuild = True
            delay = self._backoff.delay(self._failures)
            self._retry_at = self._clock() + delay
            exc.retry_in = delay
            log.error("plan for node %s not applied, retry in %.1fs: %s", plan.node, delay, exc)
            self._check_after_failure()
            raise
        self._last_seconds = time.perf_counter() - started
        self._applies += 1
        self._failures, self._retry_at, self._failed_plan, self._rebuild = 0, None, None, False
        self._committed, self._committed_state = plan, state
        return ApplyResult(outcome, commands, self._last_seconds, fell_back=fell_back)

    def _write(self, plan: NodePlan, state: TableState) -> tuple[Outcome, int, bool]:
        """Write ``plan`` by the cheapest windowless way; returns (outcome, commands, fell back)."""
        if self._committed_state is None:
            return self._adopt(plan, state)
        if self._rebuild:
            return "full", self._full(plan), False
        # diff_plans(committed, plan), without converting the committed plan again.
        doc = diff_states(self._committed_state, state)
        if not doc["nftables"]:
            return "unchanged", 0, False
        if self._try(doc, what="diff", plan=plan):
            return "diff", len(doc["nftables"]), False
        return "full", self._full(plan), True

    def _adopt(self, plan: NodePlan, state: TableState) -> tuple[Outcome, int, bool]:
        listing = self._nft.list_table()
        if listing is None:
            return "full", self._full(plan), False
        kernel = read_listing(listing)
        if kernel.foreign:
            log.warning("table inet stockade holds %s: replacing it whole", ", ".join(kernel.foreign))
            return "adopted", self._full(plan), False
        doc = diff_states(kernel.state, state)
        if not doc["nftables"]:
            return "adopted", 0, False
        if self._try(doc, what="adoption diff", plan=plan):
            return "adopted", len(doc["nftables"]), False
        return "adopted", self._full(plan), True

    def _try(self, doc: Json, *, what: str, plan: NodePlan) -> bool:
        """Run a diff; on rejection log it (error and commands) and say so."""
        try:
            self._nft.run(doc, what=what)
        except KernelRejected as exc:
            self._errors += 1
            text = json.dumps(doc["nftables"])
            log.error(
                "%s for node %s rejected, falling back to a full rebuild: %s\ncommands: %s",
                what,
                plan.node,
                exc.nft_error,
                text[:_LOGGED_COMMAND_CHARS] + ("..." if len(text) > _LOGGED_COMMAND_CHARS else ""),
            )
            return False
        return True

    def _full(self, plan: NodePlan) -> int:
        doc = render_json(plan)
        self._nft.run(doc, what="full rebuild")
        return len(doc["nftables"])

    # --- checking ---------------------------------------------------------------------------------

    def check(self) -> DriftReport:
        """Retry a pending plan whose backoff has elapsed, then compare the kernel with the
        committed plan and repair what differs. Raises :class:`KernelRejected` when the repair
        is rejected (the next check tries again)."""
        retried, error = None, ""
        with self._lock:
            if self.pending:
                try:
                    retried = self._converge()
                except KernelRejected as exc:
                    error = str(exc)  # logged; the check below still guards the last good plan
        report = self._check_committed()
        return dataclasses.replace(report, retried=retried, retry_error=error)

    def _check_after_failure(self) -> None:
        try:
            report = self._check_committed()
        except KernelRejected as exc:
            log.error("after a rejected transaction, the drift repair failed too: %s", exc)
            return
        if report.drifted:
            log.warning("after a rejected transaction the kernel had drifted; repaired: %s", report.repair)

    # Checks that lose the race with an apply before the last one, which lists under the lock.
    UNLOCKED_CHECKS = 2

    def _check_committed(self) -> DriftReport:
        # Listing and comparing a 10,000-pod table takes a good part of a second on a busy node:
        # done without the lock, so applies go on meanwhile. A plan committed in between makes the
        # comparison moot (the kernel may show either), so the check looks again at once: on a
        # node whose plan changes often (every check refreshes the pod sources, which may commit a
        # plan right then) "the next check" could otherwise be skipped again and again. The last
        # attempt lists while holding the lock (no commit can come between its plan and its
        # listing); parsing and comparing go on without it.
        for attempt in range(self.UNLOCKED_CHECKS + 1):
            last = attempt == self.UNLOCKED_CHECKS
            with self._lock:
                committed, state = self._committed, self._committed_state
                if committed is None or state is None:
                    return DriftReport(checked=False)
                listing = self._nft.list_table() if last else None
            if not last:
                listing = self._nft.list_table()
            found, kernel = _differences(listing, state)
            if not found:
                return DriftReport(checked=True)
            with self._lock:
                if self._committed is committed:
                    return self._repair(kernel, found)
        return DriftReport(checked=True)  # three plans committed during three checks: the next one

    def _repair(self, kernel: KernelTable | None, found: tuple[str, ...]) -> DriftReport:
        assert self._committed is not None and self._committed_state is not None
        log.warning("kernel drifted from the plan of node %s: %s", self._committed.node, "; ".join(found))
        repair: Literal["diff", "full"] = "full"
        if kernel is not None and not kernel.foreign:
            doc = diff_states(kernel.state, self._committed_state)
            if self._try(doc, what="drift repair", plan=self._committed):
                repair = "diff"
        if repair == "full":
            try:
                self._full(self._committed)
            except KernelRejected:
                self._errors += 1
                self._rebuild = True
                raise
        self._drift_repairs += 1
        return DriftReport(checked=True, differences=found, repair=repair)

    # --- uninstall --------------------------------------------------------------------------------

    def remove(self) -> None:
        """Delete table ``inet stockade`` (uninstall); no error when it is not there."""
        with self._lock:
            # `add` first so the `delete` cannot fail on a node without the table: one transaction.
            self._nft.run({"nftables": [{"add": table_json()}, {"delete": table_json()}]}, what="removal")
            self._committed = self._committed_state = self._wanted = None

    # --- for metrics and readiness ----------------------------------------------------------------

    @property
    def committed(self) -> NodePlan | None:
        """The plan the kernel last accepted (None before the first apply)."""
        return self._committed

    @property
    def pending(self) -> bool:
        """A plan was asked for that the kernel does not hold yet (rejected, waiting for a retry)."""
        return self._wanted is not None and self._wanted is not self._committed

    @property
    def retry_in(self) -> float | None:
        """Seconds until a rejected plan may be retried (by :meth:`check` or :meth:`apply`)."""
        return None if self._retry_at is None else max(0.0, self._retry_at - self._clock())

    @property
    def last_apply_seconds(self) -> float:
        return self._last_seconds

    @property
    def applies_total(self) -> int:
        """Plans the kernel accepted (including ones with nothing to write)."""
        return self._applies

    @property
    def errors_total(self) -> int:
        """Transactions the kernel rejected (a rejected diff and its rejected fallback count two)."""
        return self._errors

    @property
    def drift_repairs_total(self) -> int:
        return self._drift_repairs

    @property
    def chains_count(self) -> int:
        return 0 if self._committed is None else len(self._committed.chains)

    @property
    def rules_count(self) -> int:
        return 0 if self._committed is None else sum(len(c.rules) for c in self._committed.chains)

    @property
    def set_elements_count(self) -> int:
        """Elements of every set plus entries of every verdict map."""
        if self._committed is None:
            return 0
        sets: tuple[PlanSet, ...] = self._committed.sets
        return sum(len(s.elements) for s in sets) + sum(len(m.entries) for m in self._committed.maps)

    def rule_counters(self) -> dict[RuleKey, Counts]:
        """Packets and bytes per policy rule, read from the kernel now (one listing), summed over
        the kernel rules that carry the same comment (one per port group and family); and per
        policy, what the isolation drops of the pods it isolates dropped (``index`` ISOLATION; a
        pod several policies isolate counts its drops under each)."""
        # The listing takes seconds on a large node: done without the applier's lock (Nft lists
        # on a context of its own), as the drift check does, so applies go on meanwhile. A chain a
        # plan committed in between brought is attributed from the next scrape on.
        with self._lock:
            committed = self._committed
        listing = self._nft.list_table()
        out: dict[RuleKey, Counts] = {}
        if listing is None:
            return out
        isolating = (
            {} if committed is None else {c.name: c.isolating for c in committed.chains if c.isolating}
        )
        for counter in read_listing(listing).counters:
            key = rule_key(counter.comment)
            keys = (
                [key]
                if key is not None
                else isolation_keys(counter.comment, isolating.get(counter.chain, ()))
            )
            for k in keys:
                was = out.get(k, Counts(0, 0))
                out[k] = Counts(was.packets + counter.packets, was.bytes + counter.bytes)
        return out
