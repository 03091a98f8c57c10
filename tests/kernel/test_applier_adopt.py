"""The applier against real nftables: adoption of a table found on start (without a window),
drift repair, removal. Each test runs in a fresh network namespace its thread has entered
(:mod:`tests.support.nodelab`); the oracles read and change the table with the ``nft`` command.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from compiler.cluster import PodSource
from compiler.plan import build_plan
from controller.applier import Applier
from controller.nft import Nft
from tests.kernel.test_render_load import nsexec
from tests.support.nodelab import (
    NODE,
    PODS,
    TableProbe,
    cli_counters,
    cli_packets,
    has_table,
    kernel,
    kernel_of,
    load_with_counters,
    model,
    node_netns,
    plan,
    routed_pods,
    send_udp,
    wait_for,
)

pytestmark = pytest.mark.kernel


@pytest.fixture
def node() -> Iterator[str]:
    with node_netns() as ns:
        yield ns


@pytest.fixture
def routed(node: str) -> Iterator[dict[str, str]]:
    with routed_pods(node) as pods:
        yield pods


def test_adoption_of_a_differing_table_has_no_window_and_keeps_unchanged_counters(node: str) -> None:
    old, new = plan(), plan(outside_port=8080, extra_policy=True)
    load_with_counters(node, old, 5)
    with TableProbe() as probe:
        time.sleep(0.05)
        results = []
        for i in range(20):  # restart after restart, alternating plans: every adoption is a diff
            results.append(Applier(nft=Nft()).apply(new if i % 2 == 0 else old))
        time.sleep(0.05)
    assert probe.listings > 20 and probe.gaps == []
    assert {r.outcome for r in results} == {"adopted"} and all(r.commands > 0 for r in results)
    assert kernel(node) == kernel_of(old)
    rules = cli_packets(node)["x/b-from-a ingress[0]"]
    assert rules and set(rules) == {5}, "adoption reset the counter of an unchanged rule"


def test_adoption_of_an_equal_table_writes_nothing(node: str) -> None:
    load_with_counters(node, plan(), 3)
    result = Applier(nft=Nft()).apply(plan())
    assert (result.outcome, result.commands) == ("adopted", 0)
    assert {p for packets in cli_packets(node).values() for p in packets} == {3}


def test_adoption_removes_what_was_added_by_hand_and_replaces_a_dormant_table(node: str) -> None:
    load_with_counters(node, plan(), 3)
    nsexec(node, "nft", "add", "chain", "inet", "stockade", "by-hand")
    nsexec(node, "nft", "add", "set", "inet", "stockade", "by-hand-set", "{ type ipv4_addr; }")
    nsexec(node, "nft", "add", "rule", "inet", "stockade", "forward", "counter", "accept")
    assert Applier(nft=Nft()).apply(plan()).outcome == "adopted"
    assert kernel(node) == kernel_of(plan())

    nsexec(node, "nft", "add", "table", "inet", "stockade", "{ flags dormant; }")
    assert Applier(nft=Nft()).apply(plan()).outcome == "adopted"
    assert kernel(node) == kernel_of(plan())  # not dormant any more: swapped whole


def test_pod_sources_are_adopted_and_diffed_like_every_set(node: str) -> None:
    """The (ifname . address) sets read back from the kernel as the plan writes them: adopting
    them writes nothing, and a new listing of the routes is a diff of elements."""
    first = {PodSource("stka", "10.244.1.2"), PodSource("stka", "fd00:1::2"), PodSource("stkb", "10.244.1.3")}
    second = {
        PodSource("stkb", "10.244.1.3"),
        PodSource("stkc", "10.244.1.4"),
        PodSource("stkc", "fd00:1::4"),
    }
    old, new = (
        build_plan(dataclasses.replace(model(), pod_sources=frozenset(s)), node=NODE) for s in (first, second)
    )
    load_with_counters(node, old, 2)
    result = Applier(nft=Nft()).apply(old)
    assert (result.outcome, result.commands) == ("adopted", 0)
    applier = Applier(nft=Nft())
    applier.apply(old)
    assert applier.apply(new).outcome == "diff"
    assert kernel(node) == kernel_of(new)
    assert {p for packets in cli_packets(node).values() for p in packets} == {2}  # no rule was touched
    assert not applier.check().drifted


# --- drift ----------------------------------------------------------------------------------------


def test_drift_after_a_flush_is_repaired_by_a_diff(node: str) -> None:
    applier = Applier(nft=Nft())
    applier.apply(plan())
    want = kernel(node)
    nsexec(node, "nft", "flush", "table", "inet", "stockade")
    report = applier.check()
    assert report.drifted and report.repair == "diff"
    assert any(d.startswith("chain forward") for d in report.differences)
    assert kernel(node) == want
    assert applier.drift_repairs_total == 1
    assert not applier.check().drifted


def test_drift_after_deleting_a_rule_by_hand_repairs_only_that_chain(
    node: str, routed: dict[str, str]
) -> None:
    applier = Applier(nft=Nft())
    applier.apply(plan())
    send_udp(routed["a"], PODS["a"], PODS["b"], 4)
    wait_for(lambda: cli_counters(node).get("x/b-from-a ingress[0]", 0) >= 4)
    want = kernel(node)
    doc = json.loads(nsexec(node, "nft", "-a", "-j", "list", "chain", "inet", "stockade", "forward").stdout)
    handle = next(o["rule"]["handle"] for o in doc["nftables"] if "rule" in o)
    nsexec(node, "nft", "delete", "rule", "inet", "stockade", "forward", "handle", str(handle))
    report = applier.check()
    assert report.differences == ("chain forward: rules differ (" + report.differences[0].split("(", 1)[1],)
    assert report.repair == "diff"
    assert kernel(node) == want
    assert cli_counters(node)["x/b-from-a ingress[0]"] == 4  # another chain: untouched


class CommitsWhileListing(Nft):
    """libnftables, except that the first ``races`` listings of the table made without the
    applier's lock each let another plan be committed while they run, as a pod change on a busy
    node does during a drift check (a listing under the lock cannot meet a commit)."""

    def __init__(self, *, races: int) -> None:
        super().__init__()
        self.races = races
        self.applier: Applier | None = None
        self.plans = [plan(outside_port=8080), plan()]

    def list_table(self) -> Any:
        listing = super().list_table()
        if self.races and self.applier is not None and not self.applier._lock._is_owned():  # type: ignore[attr-defined]
            self.races -= 1
            self.applier.apply(self.plans[self.races % 2])
        return listing


@pytest.mark.parametrize("races", [1, 2], ids=["one-race", "every-unlocked-listing"])
def test_a_check_racing_commits_still_finds_and_repairs_drift(node: str, races: int) -> None:
    # The plans differ in another chain than `forward`, so no commit repairs the edit by chance.
    nft = CommitsWhileListing(races=races)
    applier = Applier(nft=nft)
    applier.apply(plan())
    nft.applier = applier
    doc = json.loads(nsexec(node, "nft", "-a", "-j", "list", "chain", "inet", "stockade", "forward").stdout)
    handle = next(o["rule"]["handle"] for o in doc["nftables"] if "rule" in o)
    nsexec(node, "nft", "delete", "rule", "inet", "stockade", "forward", "handle", str(handle))
    report = applier.check()
    assert nft.races == 0  # every race happened, inside this check
    assert report.drifted and report.differences[0].startswith("chain forward: rules differ")
    assert applier.committed is not None
    assert kernel(node) == kernel_of(applier.committed)
    assert not applier.check().drifted


def test_a_deleted_table_is_rebuilt_whole(node: str) -> None:
    applier = Applier(nft=Nft())
    applier.apply(plan())
    nsexec(node, "nft", "delete", "table", "inet", "stockade")
    report = applier.check()
    assert report.differences == ("table inet stockade: missing",) and report.repair == "full"
    assert kernel(node) == kernel_of(plan())


def test_remove_deletes_the_table_and_may_be_repeated(node: str) -> None:
    applier = Applier(nft=Nft())
    applier.apply(plan())
    applier.remove()
    assert not has_table(node)
    applier.remove()
    assert applier.committed is None and not applier.check().checked
