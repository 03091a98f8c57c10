"""A fake node agent for CNI tests: the real CniServer (controller/cnisocket.py) on its own event
loop thread, with a sink the test steers (delay, block, fail). Only the agent's programming is
faked; the socket, the protocol and the plugin's client are the real ones."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from types import TracebackType

from controller.cniproto import PodForget, PodReport
from controller.cnisocket import CniServer
from controller.errors import KernelRejected


class SteeredSink:
    def __init__(self) -> None:
        self.reports: list[PodReport] = []
        self.forgets: list[PodForget] = []
        self.delay = 0.0
        self.fail = False
        self.release = threading.Event()
        self.release.set()  # not blocking unless a test clears it
        self.received = threading.Event()

    async def program_pod(self, report: PodReport) -> None:
        self.reports.append(report)
        self.received.set()
        while not self.release.is_set():
            await asyncio.sleep(0.02)
        await asyncio.sleep(self.delay)
        if self.fail:
            raise KernelRejected("diff", "Error: Could not process rule: No such file or directory")

    async def forget_pod(self, forget: PodForget) -> None:
        self.forgets.append(forget)


class FakeAgent:
    def __init__(self, path: str | Path, *, program_timeout: float = 10.0) -> None:
        self.path = Path(path)
        self.sink = SteeredSink()
        self._timeout = program_timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="fake-agent", daemon=True)

    def _run(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            async with CniServer(sink=self.sink, path=self.path, program_timeout=self._timeout):
                self._ready.set()
                await self._stop.wait()

        try:
            asyncio.run(main())
        except BaseException as exc:
            self._error = exc
            self._ready.set()

    def __enter__(self) -> FakeAgent:
        self._thread.start()
        if not self._ready.wait(10) or self._error is not None:
            raise RuntimeError(f"the fake agent did not start: {self._error!r}")
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.sink.release.set()
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def wait_for_report(self, timeout: float = 30.0) -> PodReport:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.sink.reports:
                return self.sink.reports[-1]
            time.sleep(0.02)
        raise AssertionError(f"no report reached the fake agent within {timeout}s")
