"""controller.agent.debounce: when a batch is due, how changes merge, and bursts in real time."""

from __future__ import annotations

import asyncio
import time

import pytest

from compiler.model import LabelSelector, NetworkPolicy, NetworkPolicySpec, ObjectMeta, Pod
from controller.agent.debounce import Coalescer, Pending, due_in
from controller.agent.store import Change, CniChange, ModelChange, PodChange, PolicyChange


@pytest.mark.parametrize(
    ("first", "last", "now", "expected"),
    [
        (0.0, 0.0, 0.0, 0.010),  # one change, just arrived: wait the window
        (0.0, 0.0, 0.004, 0.006),
        (0.0, 0.0, 0.010, 0.0),  # quiet for a window: due
        (0.0, 0.095, 0.095, 0.005),  # a stream: the max delay caps the wait
        (0.0, 0.2, 0.2, 0.0),  # past the max delay: due at once
    ],
    ids=["just-arrived", "mid-window", "quiet-window", "capped-by-max-delay", "past-max-delay"],
)
def test_due_in(first: float, last: float, now: float, expected: float) -> None:
    assert due_in(first=first, last=last, now=now, window=0.010, max_delay=0.1) == pytest.approx(expected)


def _pod(uid: str, label: str) -> Pod:
    return Pod(metadata=ObjectMeta(name=uid, namespace="d", uid=uid, labels={"v": label}))


def test_pod_changes_merge_per_uid_first_old_last_new() -> None:
    pending = Pending()
    a1, a2, a3 = _pod("a", "1"), _pod("a", "2"), _pod("a", "3")
    pending.add(PodChange("a", None, a1), arrived=1.0)
    pending.add(PodChange("a", a1, a2), arrived=2.0)
    pending.add(PodChange("a", a2, a3), arrived=3.0)
    pending.add(PodChange("b", None, _pod("b", "1")), arrived=4.0)
    batch = pending.take()
    assert [(c.uid, c.old, c.new) for c in batch.pods] == [("a", None, a3), ("b", None, _pod("b", "1"))]
    assert batch.arrivals == (1.0, 2.0, 3.0, 4.0)
    assert not batch.rebuild
    assert pending.empty


def _policy(name: str) -> NetworkPolicy:
    meta = ObjectMeta(name=name, namespace="d", uid="p")
    return NetworkPolicy(metadata=meta, spec=NetworkPolicySpec(pod_selector=LabelSelector()))


def test_policy_changes_merge_per_uid_first_old_last_new() -> None:
    pending = Pending()
    p1, p2 = _policy("one"), _policy("two")
    pending.add(PolicyChange("p", None, p1), arrived=1.0)
    pending.add(PolicyChange("p", p1, p2), arrived=2.0)
    batch = pending.take()
    assert [(c.uid, c.old, c.new) for c in batch.policies] == [("p", None, p2)]
    assert not batch.rebuild


@pytest.mark.parametrize(
    ("changes", "rebuild"),
    [
        ([CniChange("a", ("10.0.0.1",))], False),
        ([PolicyChange("p", None, _policy("one"))], False),
        ([CniChange("a", ()), ModelChange("Node", "n")], True),
    ],
    ids=["cni-only", "policy-is-incremental", "cni-and-node"],
)
def test_node_changes_make_a_full_compile(changes: list[Change], rebuild: bool) -> None:
    pending = Pending()
    for change in changes:
        pending.add(change, arrived=0.0)
    assert pending.take().rebuild is rebuild


@pytest.mark.parametrize(
    ("quiet_before", "sizes"),
    [(0.0, [100]), (0.08, [1, 99])],
    ids=["right-after-the-last-batch", "after-a-quiet-period: first-change-at-once"],
)
def test_a_burst_becomes_one_batch_after_its_leading_change(quiet_before: float, sizes: list[int]) -> None:
    async def scenario() -> list[int]:
        coalescer = Coalescer(window=0.05, max_delay=1.0)
        seen: list[int] = []

        async def consume() -> None:
            while True:
                seen.append((await coalescer.next_batch()).size)

        consumer = asyncio.create_task(consume())
        await asyncio.sleep(quiet_before)
        for i in range(100):
            coalescer.add(PodChange(f"p{i}", None, _pod(f"p{i}", "x")))
            if i % 10 == 0:
                await asyncio.sleep(0)  # the consumer runs in between, as the watches would let it
        await asyncio.sleep(0.2)
        consumer.cancel()
        return seen

    assert asyncio.run(scenario()) == sizes


def _timed_batches(feed: list[tuple[float, Change]], *, window: float) -> list[tuple[float, int]]:
    """(seconds after the start, size) of each batch, for changes fed at the given offsets."""

    async def scenario() -> list[tuple[float, int]]:
        coalescer = Coalescer(window=window, max_delay=1.0)
        started = time.monotonic()
        out: list[tuple[float, int]] = []

        async def consume() -> None:
            while True:
                batch = await coalescer.next_batch()
                out.append((time.monotonic() - started, batch.size))

        consumer = asyncio.create_task(consume())
        for at, change in feed:
            await asyncio.sleep(max(0.0, started + at - time.monotonic()))
            coalescer.add(change)
        await asyncio.sleep(2 * window)
        consumer.cancel()
        return out

    return asyncio.run(scenario())


def test_a_lone_change_after_a_quiet_period_is_due_at_once() -> None:
    batches = _timed_batches([(0.25, PodChange("p", None, _pod("p", "x")))], window=0.2)
    assert [size for _, size in batches] == [1]
    assert batches[0][0] == pytest.approx(0.25, abs=0.05)  # not 0.25 + the 0.2 s window


def test_a_change_before_a_quiet_period_waits_for_the_window() -> None:
    batches = _timed_batches([(0.1, PodChange("p", None, _pod("p", "x")))], window=0.2)
    assert [size for _, size in batches] == [1]
    assert batches[0][0] == pytest.approx(0.3, abs=0.05)


def test_a_cni_report_does_not_wait_for_the_window() -> None:
    # A pod change just arrived (its window runs), then a report: both go at once, in one batch.
    feed: list[tuple[float, Change]] = [
        (0.0, PodChange("p", None, _pod("p", "x"))),
        (0.05, CniChange("q", ("10.0.0.9",))),
    ]
    batches = _timed_batches(feed, window=0.3)
    assert [size for _, size in batches] == [2]
    assert batches[0][0] == pytest.approx(0.05, abs=0.05)  # not 0.05 + the 0.3 s window


def test_a_steady_stream_is_flushed_at_the_max_delay() -> None:
    async def scenario() -> list[float]:
        coalescer = Coalescer(window=0.05, max_delay=0.15)
        started = time.monotonic()
        flushed: list[float] = []

        async def consume() -> None:
            while True:
                await coalescer.next_batch()
                flushed.append(time.monotonic() - started)

        consumer = asyncio.create_task(consume())
        for _ in range(20):  # a change every 20 ms for 400 ms: never quiet for a window
            coalescer.touch()
            await asyncio.sleep(0.02)
        consumer.cancel()
        return flushed

    flushed = asyncio.run(scenario())
    assert flushed, "nothing was flushed during a 400 ms stream"
    assert flushed[0] == pytest.approx(0.15, abs=0.06)
