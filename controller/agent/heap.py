"""When the agent's garbage collector may pause it.

At 10,000 pods the agent holds a few million Python objects (the store's pods and policies, the
compiler's indexes, the plan and the applier's table state), nearly all of them alive for the
process's life. CPython's full (generation 2) collection walks every one of them: 250-450 ms on
the project machine, taken whenever enough objects have survived into the old generation since
the last one, that is, in the middle of whatever change happens to be compiling then. That was
the agent's p99 programming latency (tests/bench/agentcpu.py: a new pod at 37 ms p50, 462 ms p99).

So, as long-running services with big heaps do (``gc.freeze``, Python 3.7+): once the first plan
is in the kernel, what is alive is moved to the permanent generation, which no automatic
collection walks; collections then only walk what was made since, and stay short. Objects in the
permanent generation are still freed by reference counting the moment nothing refers to them;
only garbage *cycles* among them wait, for a full collection that this module runs itself, at
most every ``interval`` seconds and only after the agent has been idle for ``idle`` seconds (or,
when changes never stop, once it is ``interval`` overdue), and then freezes again.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

# Cycles among long-lived objects are rare (replaced pods and plans go by reference counting), so
# a full walk every 10 minutes bounds what they can hold without costing a pause more often.
FULL_COLLECTION_INTERVAL = 600.0
# A full walk waits for a quiet moment: this long without a change being compiled or applied.
IDLE_BEFORE_COLLECTING = 2.0


class Heap:
    """Freezes the long-lived heap once the agent has settled and runs its full collections."""

    def __init__(
        self,
        *,
        interval: float = FULL_COLLECTION_INTERVAL,
        idle: float = IDLE_BEFORE_COLLECTING,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interval = interval
        self.idle = idle
        self._clock = clock
        self._collected_at: float | None = None  # None: not settled yet (nothing frozen)

    @property
    def settled(self) -> bool:
        return self._collected_at is not None

    def settle(self) -> None:
        """Once, after the first plan: collect what the start left behind, freeze the rest."""
        if self._collected_at is None:
            self._full("first plan applied")

    def maybe_collect(self, *, idle_for: float) -> bool:
        """A full collection when one is due and the agent has been idle ``idle_for`` seconds
        (or one is overdue by a whole interval); whether it ran."""
        if self._collected_at is None:
            return False
        since = self._clock() - self._collected_at
        if since < self.interval or (idle_for < self.idle and since < 2 * self.interval):
            return False
        self._full("periodic")
        return True

    def _full(self, why: str) -> None:
        started = self._clock()
        gc.unfreeze()  # back into the oldest generation, so this walk sees them too
        found = gc.collect()
        gc.freeze()
        self._collected_at = self._clock()
        log.debug(
            "full collection (%s): %d unreachable objects, %d frozen, %.0f ms",
            why, found, gc.get_freeze_count(), (self._collected_at - started) * 1000,
        )  # fmt: skip


# One per process: the collector is the process's, however many agents run in it (tests run
# several); the first agent's first plan settles it.
PROCESS_HEAP = Heap()
