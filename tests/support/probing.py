"""Traffic kept up through a disruption (an agent restart, a rollout, an API outage), recorded so
a test can say afterwards whether any of it was cut or let through.

- :class:`Probing`: rounds of one probe set (new connections each round) in a thread until stopped,
  every result and when each round ended.
- :func:`probing`: several of them running in threads for the duration of a ``with`` block.
- :class:`Flow`: one long-lived TCP connection from inside a network namespace to an echo server,
  exchanging a message every ``interval``: an established flow that must keep flowing.
"""

from __future__ import annotations

import contextlib
import itertools
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from tests.support.nodelab import entered
from tests.support.probe import Prober, ProbeRequest, ProbeResult


@dataclass
class Probing:
    """Rounds of one probe set in a thread until stopped: every result and when each round ended."""

    prober: Prober
    requests: list[ProbeRequest]
    pause: float = 0.0
    results: list[ProbeResult] = field(default_factory=list)
    ends: list[float] = field(default_factory=list)
    error: BaseException | None = None

    def run(self, stop: threading.Event) -> None:
        try:
            while not stop.is_set():
                self.results += self.prober.probe(self.requests)
                self.ends.append(time.monotonic())
                stop.wait(self.pause)
        except BaseException as exc:  # re-raised by the test thread
            self.error = exc

    def max_gap(self, start: float) -> float:
        marks = [start, *self.ends]
        return max(b - a for a, b in itertools.pairwise(marks))

    def failures(self, *, reachable: bool) -> list[ProbeResult]:
        """The results whose outcome was not ``reachable`` (cut allowed or leaked denied probes)."""
        return [r for r in self.results if r.reachable != reachable]


@contextlib.contextmanager
def probing(*runs: Probing) -> Iterator[float]:
    """Every `Probing` in its own thread until the block ends (yields when they started); then
    stopped, joined, and the first error any of them met re-raised."""
    stop = threading.Event()
    threads = [threading.Thread(target=p.run, args=(stop,), daemon=True) for p in runs]
    started = time.monotonic()
    for t in threads:
        t.start()
    try:
        yield started
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    for p in runs:
        if p.error is not None:
            raise p.error


class Flow:
    """One TCP connection opened inside ``netns`` (a name under /run/netns or a path such as
    ``/proc/PID/ns/net``: the socket stays in the namespace it was made in) to an echo server,
    sending a numbered 8-byte message every ``interval`` and reading its echo, until stopped.

    ``error`` is the first failure (a reset, or no echo within ``timeout``: TCP retransmits a
    dropped segment within a second, so a longer silence is a flow the kernel stopped passing);
    ``ends`` the time each echo arrived."""

    def __init__(self, netns: str, address: str, port: int, *, interval: float = 0.05, timeout: float = 3.0):
        self.netns, self.address, self.port = netns, address, port
        self.interval, self.timeout = interval, timeout
        self.ends: list[float] = []
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._sock: socket.socket | None = None

    def __enter__(self) -> Flow:
        with entered(self.netns):
            self._sock = socket.create_connection((self.address, self.port), timeout=self.timeout)
        self.started = time.monotonic()
        self._thread.start()
        return self

    def _run(self) -> None:
        sock = self._sock
        assert sock is not None
        for n in itertools.count():
            if self._stop.is_set():
                return
            message = n.to_bytes(8, "big")
            try:
                sock.sendall(message)
                echo = b""
                while len(echo) < len(message):
                    chunk = sock.recv(len(message) - len(echo))
                    if not chunk:
                        raise ConnectionError("the server closed the connection")
                    echo += chunk
            except OSError as exc:
                self.error = f"message {n}: {type(exc).__name__}: {exc}"
                return
            if echo != message:
                self.error = f"message {n}: echo {echo!r}"
                return
            self.ends.append(time.monotonic())
            self._stop.wait(self.interval)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=self.timeout + 5)
        if self._sock is not None:
            self._sock.close()

    def max_gap(self) -> float:
        """The longest time without an echo, from the connection to the last echo (or now)."""
        marks = [self.started, *self.ends]
        if self.error is not None:
            marks.append(time.monotonic())
        return max(b - a for a, b in itertools.pairwise(marks)) if len(marks) > 1 else 0.0
