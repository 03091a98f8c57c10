"""The agent and the node's routed pod sources (the anti-spoofing fast path's pairs).

The routing table is a test double of the :class:`~controller.agent.seams.PodSourceReader` seam
(the netlink reader is tested against real routes in tests/kernel/test_podroutes.py). Checked:
the store's bookkeeping, batching, and when the agent reads: before the first plan, for a
reported pod before it answers the CNI plugin, for a forgotten pod, and in the periodic check.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable

import pytest

from compiler.cluster import PodSource
from compiler.ir import IfnameAddrSet, NodePlan
from compiler.plan import build_plan
from controller.agent.debounce import Pending
from controller.agent.loop import Agent
from controller.agent.objects import parse
from controller.agent.seams import PodForget, PodReport
from controller.agent.store import SourcesChange, Store
from tests.unit.agent.bodies import namespace_body, node_body, pod_body
from tests.unit.agent.test_loop import NODE, Harness, RecordingApplier


class Routes:
    """The node's routing table as the reader sees it: address -> device of its host route."""

    def __init__(self, routes: dict[str, str], *, broken: bool = False) -> None:
        self.routes = dict(routes)
        self.broken = broken
        self.calls: list[tuple[str, ...] | None] = []  # None: a full listing

    def all(self) -> frozenset[PodSource]:
        self.calls.append(None)
        return self._pairs(self.routes)

    def of(self, addresses: Iterable[str]) -> frozenset[PodSource]:
        asked = tuple(addresses)
        self.calls.append(asked)
        return self._pairs(a for a in asked if a in self.routes)

    def _pairs(self, addresses: Iterable[str]) -> frozenset[PodSource]:
        if self.broken:
            raise OSError("netlink: the socket broke")
        return frozenset(PodSource(self.routes[a], a) for a in addresses if self.routes[a].startswith("stk"))


def pairs(plan: NodePlan) -> set[tuple[str, str]]:
    return {(e.ifname, e.address) for s in plan.sets if isinstance(s, IfnameAddrSet) for e in s.elements}


# --- the store and batching ----------------------------------------------------------------------

A, B = PodSource("stka", "10.244.1.2"), PodSource("stkb", "10.244.1.3")
A6 = PodSource("stka", "fd00:1::2")

REFRESHES = {
    "a-new-pod": ({A}, ("10.244.1.3",), {B}, {A, B}),
    "a-forgotten-pod": ({A, B}, ("10.244.1.3",), set(), {A}),
    "an-address-moved": (
        {A},
        ("10.244.1.2",),
        {PodSource("stkb", "10.244.1.2")},
        {PodSource("stkb", "10.244.1.2")},
    ),
    "an-interface-lost-an-address": ({A, A6}, ("10.244.1.2",), {A}, {A}),
    "an-interface-re-created-with-other-addresses": (
        {A, A6},
        ("10.244.1.9",),
        {PodSource("stka", "10.244.1.9")},
        {PodSource("stka", "10.244.1.9")},
    ),
}


@pytest.mark.parametrize(("held", "asked", "found", "after"), REFRESHES.values(), ids=REFRESHES.keys())
def test_a_refresh_replaces_the_pairs_of_what_was_asked(
    held: set[PodSource], asked: tuple[str, ...], found: set[PodSource], after: set[PodSource]
) -> None:
    store = Store()
    store.set_sources(frozenset(held))
    change = store.refresh_sources(asked, frozenset(found))
    assert store.sources == after
    assert change == (SourcesChange(frozenset(after)) if after != held else None)


def test_an_unchanged_listing_is_no_change() -> None:
    store = Store()
    assert store.set_sources(frozenset({A})) == SourcesChange(frozenset({A}))
    assert store.set_sources(frozenset({A})) is None
    assert store.snapshot().model().pod_sources == {A}


def test_a_batch_carries_the_last_listing_or_none() -> None:
    pending = Pending()
    pending.add(SourcesChange(frozenset({A})), arrived=1.0)
    pending.add(SourcesChange(frozenset({B})), arrived=2.0)
    assert pending.take().sources == frozenset({B})
    pending.touch(arrived=3.0)
    assert pending.take().sources is None


# --- when the agent reads ----------------------------------------------------------------------------


def run_agent(routes: Routes, scenario: Callable[[Harness], Awaitable[None]], *, check: float = 30.0) -> None:
    async def main() -> None:
        applier = RecordingApplier()
        agent = Agent(node=NODE, applier=applier, debounce=0.01, check_interval=check, sources=routes)
        harness = Harness(agent, applier)
        initial = [node_body(NODE), namespace_body("default")]
        task = asyncio.create_task(agent.run())
        agent.seed((b["kind"], parse(b["kind"], b)) for b in initial)
        try:
            await scenario(harness)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    asyncio.run(main())


def full_compile(h: Harness) -> NodePlan:
    return build_plan(h.agent.store.snapshot().model(), node=NODE)


def test_the_first_plan_has_the_routed_pairs() -> None:
    routes = Routes({"10.244.1.2": "stka", "fd00:1::2": "stka", "10.244.2.0": "stockade.vx"})

    async def scenario(h: Harness) -> None:
        plan = await h.settle()
        assert h.applier.plans[0] == plan
        assert pairs(plan) == {("stka", "10.244.1.2"), ("stka", "fd00:1::2")}
        assert routes.calls == [None]

    run_agent(routes, scenario)


def test_a_reported_pod_is_answered_with_its_pair_in_the_plan() -> None:
    routes = Routes({"10.244.1.2": "stka"})
    report = PodReport("uid-default-new", "default", "new", "c0ffee", ("10.244.1.77", "fd00:1::77"))

    async def scenario(h: Harness) -> None:
        h.put(pod_body("new"))
        await h.settle()
        # The plugin routes the pod's addresses to its veth before it reports.
        routes.routes |= {"10.244.1.77": "stknew", "fd00:1::77": "stknew"}
        await asyncio.wait_for(h.agent.program_pod(report), timeout=2)
        answered = h.applier.plans[-1]
        assert {("stknew", "10.244.1.77"), ("stknew", "fd00:1::77")} <= pairs(answered)
        assert routes.calls == [None, ("10.244.1.77", "fd00:1::77")]  # its own addresses only
        assert await h.settle() == full_compile(h)

    run_agent(routes, scenario)


def test_a_forgotten_pod_loses_its_pair() -> None:
    routes = Routes({"10.244.1.2": "stka"})
    report = PodReport("uid-default-p", "default", "p", "sandbox-1", ("10.244.1.50",))

    async def scenario(h: Harness) -> None:
        h.put(pod_body("p"))
        routes.routes["10.244.1.50"] = "stkp"
        await asyncio.wait_for(h.agent.program_pod(report), timeout=2)
        assert ("stkp", "10.244.1.50") in pairs(h.applier.plans[-1])
        del routes.routes["10.244.1.50"]  # DEL removes the veth, and its routes, first
        await h.agent.forget_pod(PodForget("sandbox-1", uid="uid-default-p"))
        plan = await h.settle()
        assert pairs(plan) == {("stka", "10.244.1.2")}
        assert routes.calls[-1] == ("10.244.1.50",)
        assert plan == full_compile(h)

    run_agent(routes, scenario)


def test_the_periodic_check_reads_the_whole_table_again() -> None:
    routes = Routes({"10.244.1.2": "stka"})

    async def scenario(h: Harness) -> None:
        await h.settle()
        routes.routes = {"10.244.1.3": "stkb"}  # changed behind the agent's back
        await asyncio.sleep(0.3)
        plan = await h.settle()
        assert pairs(plan) == {("stkb", "10.244.1.3")}
        assert routes.calls.count(None) >= 2

    run_agent(routes, scenario, check=0.05)


def test_a_reader_that_fails_costs_only_the_fast_path() -> None:
    routes = Routes({"10.244.1.2": "stka"}, broken=True)
    report = PodReport("uid-default-new", "default", "new", "c0ffee", ("10.244.1.77",))

    async def scenario(h: Harness) -> None:
        h.put(pod_body("new"))
        await asyncio.wait_for(h.agent.program_pod(report), timeout=2)
        plan = h.applier.plans[-1]
        assert [p.addresses for p in plan.local_pods if p.key == "default/new"] == [("10.244.1.77",)]
        assert pairs(plan) == set()

    run_agent(routes, scenario)
