"""controller.agent.overlaysync: the agent's Node objects drive overlay syncs, off the loop.

The kernel side is a recording sync function (the seam ``overlay.sync`` fills in the agent); the
Node events go through the real Agent (observe, seed, prune). The expected arguments are written
out literally from the bodies, not derived with ``overlay.overlay_node``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from prometheus_client import generate_latest

from compiler.ifnames import POD_INTERFACE_PREFIX, VXLAN_INTERFACE
from controller import overlay
from controller.agent.loop import Agent
from controller.agent.main import options
from controller.agent.objects import parse
from controller.agent.overlaysync import OverlaySync
from controller.cli.args import build_parser
from controller.overlay import OverlayNode, SyncReport
from tests.unit.agent.bodies import namespace_body, node_body, policy_body
from tests.unit.agent.test_loop import RecordingApplier, RecordingEvents

NODE = "n1"
N1 = node_body("n1", cidrs=("10.244.1.0/24", "fd00:1::/64"), address="192.0.2.1")
N2 = node_body("n2", cidrs=("10.244.2.0/24", "fd00:2::/64"), address="192.0.2.2")
N3 = node_body("n3", cidrs=("10.244.3.0/24",), address="192.0.2.3")
ME = OverlayNode("n1", ("192.0.2.1",), ("10.244.1.0/24", "fd00:1::/64"))
TWO = OverlayNode("n2", ("192.0.2.2",), ("10.244.2.0/24", "fd00:2::/64"))
THREE = OverlayNode("n3", ("192.0.2.3",), ("10.244.3.0/24",))


@dataclass
class RecordingSync:
    """Records every (local, nodes) it is asked to sync; can block, fail, or check like desired()."""

    calls: list[tuple[OverlayNode, frozenset[OverlayNode]]] = field(default_factory=list)
    failures: int = 0
    gate: threading.Event = field(default_factory=threading.Event)
    threads: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.gate.set()

    def __call__(self, local: OverlayNode, nodes: list[OverlayNode]) -> SyncReport:
        self.threads.add(threading.current_thread().name)
        self.gate.wait(5)
        overlay.desired(local, nodes)  # what the real sync raises for a node it cannot serve
        if self.failures:
            self.failures -= 1
            raise OSError(16, "Device or resource busy")
        self.calls.append((local, frozenset(nodes)))
        return SyncReport(added=[f"call {len(self.calls)}"])

    def last(self) -> frozenset[OverlayNode]:
        return self.calls[-1][1]


@dataclass
class Harness:
    agent: Agent
    sync: RecordingSync
    overlay: OverlaySync
    events: RecordingEvents

    def put(self, body: dict[str, Any]) -> None:
        self.agent.observe("Node", parse("Node", body), uid=body["metadata"]["uid"], deleted=False)

    def delete(self, body: dict[str, Any]) -> None:
        self.agent.observe("Node", None, uid=body["metadata"]["uid"], deleted=True)

    async def until(self, what: str, check: Callable[[], bool], timeout: float = 3.0) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            assert time.monotonic() < deadline, f"{what}: not within {timeout}s ({self.sync.calls})"
            await asyncio.sleep(0.01)

    def metric(self, name: str) -> float:
        for line in generate_latest(self.agent.metrics.registry).decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        raise AssertionError(f"no metric {name}")


def run(
    scenario: Callable[[Harness], Awaitable[None]],
    *,
    seed: list[dict[str, Any]] | None = None,
    sync: RecordingSync | None = None,
    check_interval: float = 60.0,
) -> Harness:
    async def main() -> Harness:
        events = RecordingEvents()
        agent = Agent(node=NODE, applier=RecordingApplier(), events=events, debounce=0.01)
        recorder = sync or RecordingSync()
        driver = OverlaySync(
            node=NODE,
            nodes=agent.store.nodes.values,
            ready=agent.synced,
            registry=agent.metrics.registry,
            notify=agent.notice,
            check_interval=check_interval,
            sync=recorder,
        )
        agent.on_nodes = driver.nodes_changed
        harness = Harness(agent, recorder, driver, events)
        tasks = [asyncio.create_task(agent.run()), asyncio.create_task(driver.run())]
        try:
            await scenario(harness)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        return harness

    return asyncio.run(main())


def seed(h: Harness, *bodies: dict[str, Any]) -> None:
    h.agent.seed(("Node", parse("Node", b)) for b in bodies)


def test_nothing_is_synced_before_the_complete_listing() -> None:
    async def scenario(h: Harness) -> None:
        await asyncio.sleep(0.1)
        assert h.sync.calls == []
        seed(h, N1, N2)
        await h.until("a sync after the seed", lambda: len(h.sync.calls) == 1)
        assert h.sync.calls[0] == (ME, frozenset({ME, TWO}))

    run(scenario)


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        pytest.param(lambda h: h.put(N3), {ME, TWO, THREE}, id="a-node-joins"),
        pytest.param(lambda h: h.delete(N2), {ME}, id="a-node-leaves"),
        pytest.param(
            lambda h: h.put(node_body("n2", cidrs=("10.244.2.0/24", "fd00:2::/64"), address="192.0.2.9")),
            {ME, OverlayNode("n2", ("192.0.2.9",), ("10.244.2.0/24", "fd00:2::/64"))},
            id="a-node-moves",
        ),
        pytest.param(
            lambda h: h.put(node_body("n2", cidrs=("10.244.7.0/24",), address="192.0.2.2")),
            {ME, OverlayNode("n2", ("192.0.2.2",), ("10.244.7.0/24",))},
            id="podcidrs-change",
        ),
        pytest.param(
            lambda h: h.put(node_body("n1", cidrs=("10.244.1.0/24",), address="192.0.2.5")),
            {OverlayNode("n1", ("192.0.2.5",), ("10.244.1.0/24",)), TWO},
            id="this-node-changes",
        ),
    ],
)
def test_every_node_change_syncs_the_nodes_as_they_are(
    step: Callable[[Harness], None], expected: set[OverlayNode]
) -> None:
    async def scenario(h: Harness) -> None:
        seed(h, N1, N2)
        await h.until("the first sync", lambda: len(h.sync.calls) == 1)
        step(h)
        await h.until("a sync after the change", lambda: len(h.sync.calls) == 2)
        assert h.sync.last() == expected
        assert h.sync.calls[-1][0] == next(n for n in expected if n.name == NODE)

    run(scenario)


def test_a_heartbeat_or_another_kind_changes_nothing() -> None:
    async def scenario(h: Harness) -> None:
        seed(h, N1, N2)
        await h.until("the first sync", lambda: len(h.sync.calls) == 1)
        h.put(node_body("n2", cidrs=("10.244.2.0/24", "fd00:2::/64"), address="192.0.2.2", heartbeat="t1"))
        body = namespace_body("default")
        h.agent.observe("Namespace", parse("Namespace", body), uid=body["metadata"]["uid"], deleted=False)
        body = policy_body("p")
        h.agent.observe("NetworkPolicy", parse("NetworkPolicy", body), uid="uid-p", deleted=False)
        await asyncio.sleep(0.2)
        assert len(h.sync.calls) == 1

    run(scenario)


def test_a_node_pruned_by_a_resync_leaves_the_overlay() -> None:
    async def scenario(h: Harness) -> None:
        seed(h, N1, N2, N3)
        await h.until("the first sync", lambda: len(h.sync.calls) == 1)
        h.agent.prune("Node", listed={"uid-node-n1", "uid-node-n2"}, known_before=h.agent.known("Node"))
        await h.until("a sync after the prune", lambda: len(h.sync.calls) == 2)
        assert h.sync.last() == {ME, TWO}

    run(scenario)


def test_the_periodic_check_syncs_without_changes() -> None:
    async def scenario(h: Harness) -> None:
        seed(h, N1, N2)
        await h.until("three syncs (drift checks)", lambda: len(h.sync.calls) >= 3)
        assert {nodes for _, nodes in h.sync.calls} == {frozenset({ME, TWO})}

    run(scenario, check_interval=0.05)


def test_changes_during_a_slow_sync_coalesce_and_the_loop_keeps_programming() -> None:
    """The sync runs in a thread of its own: while it blocks, the agent applies a policy, and the
    changes that arrived meanwhile make one more sync with the final picture."""

    async def scenario(h: Harness) -> None:
        seed(h, N1)
        await h.until("the first sync", lambda: len(h.sync.calls) == 1)
        h.sync.gate.clear()
        h.put(N2)  # a sync starts and blocks
        await asyncio.sleep(0.05)
        h.put(N3)
        h.delete(N2)
        applied = len(h.agent.applier.plans)  # type: ignore[attr-defined]
        body = policy_body("p")
        h.agent.observe("NetworkPolicy", parse("NetworkPolicy", body), uid="uid-p", deleted=False)
        await h.until(
            "the policy applied while the sync blocks",
            lambda: len(h.agent.applier.plans) > applied,  # type: ignore[attr-defined]
        )
        h.sync.gate.set()
        await h.until("the final picture synced", lambda: bool(h.sync.calls) and h.sync.last() == {ME, THREE})
        await asyncio.sleep(0.1)
        assert len(h.sync.calls) == 3, h.sync.calls  # seed, the blocked one, one for both changes
        assert not any(name.startswith("stockade-n1") for name in h.sync.threads)  # not the compiler's

    run(scenario)


def test_a_failed_sync_is_logged_counted_posted_once_and_retried() -> None:
    async def scenario(h: Harness) -> None:
        seed(h, N1, N2)
        await h.until("a sync after two failures", lambda: len(h.sync.calls) == 1, timeout=5)
        assert h.metric("stockade_overlay_sync_errors_total") == 2
        assert h.metric("stockade_overlay_syncs_total") == 3
        await asyncio.sleep(0.1)  # the Events are posted in a thread
        (notice,) = [n for n in h.events.posted if n.reason == "OverlaySyncFailed"]
        assert (notice.ref.kind, notice.ref.name, notice.ref.uid) == ("Node", "n1", "uid-node-n1")
        assert "Device or resource busy" in notice.message

    run(scenario, sync=RecordingSync(failures=2))


def test_this_node_without_an_internal_ip_is_an_event_not_a_crash() -> None:
    async def scenario(h: Harness) -> None:
        seed(h, node_body("n1", address=""), N2)
        await h.until("an error", lambda: h.overlay.metrics.errors._value.get() >= 1)
        await asyncio.sleep(0.1)
        (notice,) = [n for n in h.events.posted if n.reason == "OverlaySyncFailed"]
        assert "node n1 has no InternalIP" in notice.message
        h.put(N1)  # the kubelet reports its address: the next sync works
        await h.until("a sync", lambda: len(h.sync.calls) == 1)
        assert h.sync.last() == {ME, TWO}

    run(scenario)


def test_this_node_unknown_means_no_sync() -> None:
    async def scenario(h: Harness) -> None:
        seed(h, N2)
        await asyncio.sleep(0.1)
        assert h.sync.calls == []
        h.put(N1)
        await h.until("a sync once this node is listed", lambda: len(h.sync.calls) == 1)

    run(scenario)


@pytest.mark.parametrize(
    ("flags", "expected"),
    [([], True), (["--overlay"], True), (["--no-overlay"], False)],
    ids=["default-on", "on", "off"],
)
def test_the_overlay_flag(flags: list[str], expected: bool) -> None:
    args = build_parser().parse_args(["agent", "--node", "n1", *flags])
    assert options(args).overlay is expected


def test_the_overlay_device_is_not_a_pod_interface() -> None:
    """Pod-only checks match interface names by the prefix; decapsulated traffic must not meet them."""
    assert not VXLAN_INTERFACE.startswith(POD_INTERFACE_PREFIX)
