"""The agent run in-process against a real API server, with a recording applier.

The recording applier is a test double of the kernel side only (the applier seam): it keeps
every plan the agent hands over, with the time it arrived. Everything else is the real agent:
kopf watches, the store, the debounce, the compile thread, Events, the HTTP endpoints.
"""

from __future__ import annotations

import asyncio
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compiler.ir import NodePlan
from compiler.options import CompileOptions
from controller.agent.loop import Agent
from controller.agent.operator import Options, Server, run
from controller.agent.seams import PlanApplier
from controller.cnisocket import CniServer

# What the agents started here compile with: they run without the overlay (overlay=False below),
# so their plans leave UDP 4789 alone, as `stockade agent --no-overlay` does.
AGENT_OPTIONS = CompileOptions(overlay_port=None)


@dataclass
class RecordingApplier:
    gate: threading.Event = field(default_factory=threading.Event)
    plans: list[tuple[float, NodePlan]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.gate.set()

    def apply(self, plan: NodePlan) -> None:
        self.gate.wait()
        with self.lock:
            self.plans.append((time.monotonic(), plan))

    def check(self) -> None:
        return None

    @property
    def count(self) -> int:
        with self.lock:
            return len(self.plans)

    def last(self) -> NodePlan | None:
        with self.lock:
            return self.plans[-1][1] if self.plans else None


@dataclass
class RunningAgent:
    applier: Any
    url: str
    thread: threading.Thread
    errors: list[BaseException]

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=5) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()


@contextmanager
def running_agent(
    *,
    node: str,
    kubeconfig: Path | None,
    port: int,
    applier: PlanApplier,
    debounce_ms: float = 10.0,
    check_interval: float = 30.0,
    cni_socket: Path | None = None,
) -> Iterator[RunningAgent]:
    """The agent in a thread of its own (with its own event loop) until the block ends."""
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    errors: list[BaseException] = []
    options = Options(
        node=node,
        kubeconfig=str(kubeconfig) if kubeconfig is not None else None,
        listen=("127.0.0.1", port),
        debounce_ms=debounce_ms,
        check_interval=check_interval,
        # In-process, the agent's threads are in the test's own network namespace: no VXLAN device
        # there. The overlay is driven by agent processes in node namespaces (test_agent_overlay).
        overlay=False,
    )

    def cni(agent: Agent) -> Server:
        assert cni_socket is not None
        # As `stockade agent` does (controller/agent/main.py): the readiness marker STATUS reads.
        return CniServer(
            sink=agent, path=cni_socket, program_timeout=10, ready=lambda: agent.applied_plan is not None
        )

    def main() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(
                run(options, applier, stop=stop, cni_server=cni if cni_socket is not None else None)
            )
        except BaseException as exc:  # reported by the test, not lost in the thread
            errors.append(exc)
        finally:
            loop.close()

    thread = threading.Thread(target=main, name=f"agent-{node}", daemon=True)
    thread.start()
    try:
        yield RunningAgent(applier=applier, url=f"http://127.0.0.1:{port}", thread=thread, errors=errors)
    finally:
        if isinstance(applier, RecordingApplier):
            applier.gate.set()
        if not loop.is_closed():
            loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=30)
        assert not thread.is_alive(), "the agent did not stop within 30 s"
