"""A tiny work queue with client-go's guarantees: a key is handled by one worker at a time,
adds while it is being handled cause one more pass, and a handler may ask to be called again
later (a delay) or fail (retried with capped exponential backoff)."""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger("standin.queue")

MAX_BACKOFF = 10.0


class WorkQueue:
    def __init__(self, handler: Callable[[str], float | None], *, workers: int) -> None:
        self._handler = handler
        self._workers = workers
        self._cond = threading.Condition()
        self._ready: list[str] = []  # FIFO of keys due now (no duplicates)
        self._queued: set[str] = set()
        self._active: set[str] = set()
        self._dirty: set[str] = set()  # added while active: run again when done
        self._later: list[tuple[float, int, str]] = []  # (due, seq, key) min-heap
        self._seq = 0
        self._failures: dict[str, int] = {}
        self._stopped = False

    def add(self, key: str, delay: float = 0.0) -> None:
        with self._cond:
            if delay > 0:
                self._seq += 1
                heapq.heappush(self._later, (time.monotonic() + delay, self._seq, key))
            elif key in self._active:
                self._dirty.add(key)
            elif key not in self._queued:
                self._queued.add(key)
                self._ready.append(key)
            self._cond.notify_all()

    def start(self) -> None:
        for i in range(self._workers):
            threading.Thread(target=self._work, name=f"worker-{i}", daemon=True).start()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()

    def _next(self) -> str | None:
        with self._cond:
            while not self._stopped:
                now = time.monotonic()
                while self._later and self._later[0][0] <= now:
                    _, _, key = heapq.heappop(self._later)
                    if key in self._active:
                        self._dirty.add(key)
                    elif key not in self._queued:
                        self._queued.add(key)
                        self._ready.append(key)
                for i, key in enumerate(self._ready):
                    if key not in self._active:
                        del self._ready[i]
                        self._queued.discard(key)
                        self._active.add(key)
                        return key
                wait = self._later[0][0] - now if self._later else None
                self._cond.wait(wait)
            return None

    def _work(self) -> None:
        while (key := self._next()) is not None:
            again: float | None
            try:
                again = self._handler(key)
                self._failures.pop(key, None)
            except Exception:
                n = self._failures[key] = self._failures.get(key, 0) + 1
                again = min(MAX_BACKOFF, 0.25 * 2**n)
                log.exception("handling %s failed (attempt %d); retrying in %.1fs", key, n, again)
            with self._cond:
                self._active.discard(key)
                if key in self._dirty:
                    self._dirty.discard(key)
                    if key not in self._queued:
                        self._queued.add(key)
                        self._ready.append(key)
                self._cond.notify_all()
            if again is not None:
                self.add(key, again)
