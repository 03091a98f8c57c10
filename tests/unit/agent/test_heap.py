"""controller.agent.heap: what the agent's own full collections find, and when they run. The
oracle is CPython's collector itself: a weak reference to an object in a garbage cycle says
whether a collection freed it."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from controller.agent.heap import Heap


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


def cycle() -> weakref.ref[Node]:
    """A two-object cycle that nothing else refers to once this returns; a weak reference to it."""
    a, b = Node(), Node()
    a.other, b.other = b, a
    return weakref.ref(a)


def alive_cycle() -> tuple[list[Node], weakref.ref[Node]]:
    """A cycle still referred to from a list (drop the list to make it garbage)."""
    a, b = Node(), Node()
    a.other, b.other = b, a
    return [a], weakref.ref(a)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def unfrozen() -> Iterator[None]:
    gc.unfreeze()  # an agent of another test may have settled in this process
    gc.disable()  # only the heap's own collections: an automatic one could free the cycles here
    yield
    gc.enable()
    gc.unfreeze()  # the permanent generation is the process's: leave none behind for other tests
    gc.collect()


def test_settling_collects_the_start_garbage_and_freezes_what_is_alive() -> None:
    garbage = cycle()
    keep, kept = alive_cycle()
    heap = Heap(clock=Clock())
    assert not heap.settled
    heap.settle()
    assert heap.settled
    assert garbage() is None
    assert kept() is not None and gc.get_freeze_count() > 0
    # Frozen: the collector's own runs no longer walk it, so its garbage cycles wait for the heap.
    keep.clear()
    gc.collect()
    assert kept() is not None


@pytest.mark.parametrize(
    ("after", "idle_for", "collects"),
    [
        pytest.param(599.0, 60.0, False, id="not-due-yet"),
        pytest.param(601.0, 0.5, False, id="due-but-busy"),
        pytest.param(601.0, 2.5, True, id="due-and-idle"),
        pytest.param(1201.0, 0.0, True, id="overdue-while-busy"),
    ],
)
def test_a_full_collection_waits_for_its_interval_and_an_idle_moment(
    after: float, idle_for: float, collects: bool
) -> None:
    clock = Clock()
    heap = Heap(interval=600.0, idle=2.0, clock=clock)
    keep, kept = alive_cycle()
    heap.settle()
    keep.clear()  # garbage now, but frozen
    clock.now += after
    assert heap.maybe_collect(idle_for=idle_for) is collects
    assert (kept() is None) is collects
    if collects:  # and it froze again: the next one is an interval away
        assert gc.get_freeze_count() > 0
        assert not heap.maybe_collect(idle_for=60.0)


def test_nothing_is_collected_or_frozen_before_the_first_plan() -> None:
    clock = Clock()
    heap = Heap(clock=clock)
    clock.now += 10_000.0
    assert not heap.maybe_collect(idle_for=60.0)
    assert gc.get_freeze_count() == 0
