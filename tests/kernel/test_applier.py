"""The applier against real nftables: first apply, diffs that keep counters, rejected
transactions. Each test runs in a fresh network namespace its thread has entered
(:mod:`tests.support.nodelab`); the oracles read the table with the ``nft`` command.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterator

import pytest

from compiler.cluster import ClusterModel
from compiler.ir import Interval, IntervalSet, NodePlan
from compiler.plan import build_plan
from controller.applier import Applier, Backoff, Counts
from controller.errors import KernelRejected
from controller.kernelstate import ISOLATION, RuleKey
from controller.nft import Nft
from tests.kernel.test_render_load import nsexec
from tests.support.nodelab import (
    PODS,
    UDP_PORT,
    cli_counters,
    kernel,
    kernel_of,
    node_netns,
    plan,
    routed_pods,
    send_udp,
    wait_for,
)
from tests.unit import clustergen, hostile

pytestmark = pytest.mark.kernel

B_FROM_A = RuleKey("x", "b-from-a", "ingress", 0)
A_TO_B = RuleKey("x", "a-out", "egress", 1)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def node() -> Iterator[str]:
    with node_netns() as ns:
        yield ns


@pytest.fixture
def routed(node: str) -> Iterator[dict[str, str]]:
    with routed_pods(node) as pods:
        yield pods


# --- first apply ----------------------------------------------------------------------------------

PLANS = [
    pytest.param(plan, id="routed-pair"),
    pytest.param(lambda: build_plan(clustergen.random_model(2, pods=30, policies=8), node="n3"), id="random"),
    pytest.param(lambda: build_plan(hostile.model(), node=hostile.NODE), id="hostile-api-text"),
    pytest.param(lambda: build_plan(ClusterModel(), node="n1"), id="empty-cluster"),
]


@pytest.mark.parametrize("make", PLANS)
def test_first_apply_loads_the_plan_and_a_check_finds_no_drift(
    node: str, make: Callable[[], NodePlan]
) -> None:
    wanted = make()
    applier = Applier(nft=Nft())
    result = applier.apply(wanted)
    assert result.outcome == "full"
    got = kernel(node)
    assert set(got["chain"]) == {c.name for c in wanted.chains}
    assert set(got["set"]) | set(got["map"]) == {s.name for s in wanted.sets} | {m.name for m in wanted.maps}
    assert (
        sum(map(len, got["rule"].values())) == sum(len(c.rules) for c in wanted.chains) == applier.rules_count
    )
    report = applier.check()
    assert report.checked and not report.drifted, report.differences
    assert applier.apply(wanted).outcome == "unchanged"
    assert (applier.applies_total, applier.errors_total, applier.drift_repairs_total) == (2, 0, 0)


# --- diff applies and counters --------------------------------------------------------------------


def test_a_diff_keeps_the_counters_of_unchanged_rules_and_counters_are_read_per_policy(
    node: str, routed: dict[str, str]
) -> None:
    applier = Applier(nft=Nft())
    applier.apply(plan())
    send_udp(routed["a"], PODS["a"], PODS["b"], 7)
    wait_for(lambda: cli_counters(node).get("x/b-from-a ingress[0]", 0) >= 7)
    counted = applier.rule_counters()
    assert counted[B_FROM_A].packets == cli_counters(node)["x/b-from-a ingress[0]"] == 7
    assert counted[A_TO_B].packets == 7  # a's egress to b, on the same packets
    assert counted[B_FROM_A].bytes > 0

    result = applier.apply(plan(outside_port=8080))  # a's egress changes; b's ingress does not
    assert result.outcome == "diff" and not result.fell_back
    after = applier.rule_counters()
    assert after[B_FROM_A].packets == 7, "b's ingress chain was untouched but its counter was reset"
    assert after[A_TO_B].packets == 0, "a's egress chain changed, so it counts afresh"
    assert kernel(node) == kernel_of(plan(outside_port=8080))

    applier.apply(plan(outside_port=8080, extra_policy=True))  # an unrelated policy appears
    assert applier.rule_counters()[B_FROM_A].packets == 7


def test_what_a_policy_isolates_and_no_rule_allows_is_counted_under_that_policy(
    node: str, routed: dict[str, str]
) -> None:
    """a's egress is isolated by x/a-out, which allows b only on UDP_PORT: datagrams to another
    port end at the isolation drop of a's egress chain, counted under x/a-out (index ISOLATION);
    b's ingress never sees them, so nothing is counted under x/b-from-a."""
    applier = Applier(nft=Nft())
    applier.apply(plan())
    send_udp(routed["a"], PODS["a"], PODS["b"], 5, port=UDP_PORT + 1)
    isolated = RuleKey("x", "a-out", "egress", ISOLATION)
    wait_for(lambda: applier.rule_counters().get(isolated, Counts(0, 0)).packets >= 5)
    counted = applier.rule_counters()
    assert counted[isolated].packets == 5
    assert counted[isolated].bytes > 0
    assert counted.get(RuleKey("x", "b-from-a", "ingress", ISOLATION), Counts(0, 0)).packets == 0
    assert counted[A_TO_B].packets == 0  # the allowing rule did not match them


# --- rejected transactions ------------------------------------------------------------------------


def overlapping(good: NodePlan) -> NodePlan:
    """``good`` with intervals in the podCIDR set that overlap: the kernel (nft) rejects it."""
    bad = (Interval("10.244.0.0", "10.244.255.255", 16), Interval("10.244.1.0", "10.244.1.255", 24))
    sets = tuple(
        dataclasses.replace(s, elements=bad) if isinstance(s, IntervalSet) and s.name == "podcidrs-v4" else s
        for s in good.sets
    )
    assert sets != good.sets
    return dataclasses.replace(good, sets=sets)


def test_a_rejected_transaction_keeps_the_last_good_ruleset_and_backs_off(
    node: str, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    applier = Applier(nft=Nft(), clock=clock, backoff=Backoff(initial=1.0, factor=2.0, cap=3.0))
    good = plan()
    applier.apply(good)
    before = kernel(node)
    bad = overlapping(plan(outside_port=8080))

    with caplog.at_level(logging.ERROR, logger="stockade.applier"), pytest.raises(KernelRejected) as caught:
        applier.apply(bad)
    assert "conflicting intervals" in caught.value.nft_error
    assert caught.value.retry_in == 1.0
    assert kernel(node) == before, "a rejected transaction changed the kernel"
    assert applier.committed is good and applier.pending
    assert applier.errors_total == 2  # the diff, then the full rebuild it fell back to
    assert "diff for node n1 rejected" in caplog.text and "commands: [" in caplog.text

    assert applier.apply(bad).outcome == "deferred"  # the same plan waits out its backoff
    clock.now += 1.0
    with pytest.raises(KernelRejected) as again:
        applier.apply(bad)
    assert again.value.retry_in == 2.0
    clock.now += 2.0
    report = applier.check()  # a check retries the pending plan; the failure is reported, not raised
    assert report.retried is None and "rejected" in report.retry_error
    assert applier.retry_in == 3.0  # capped
    assert report.checked and not report.drifted  # and the last good ruleset is still whole
    assert kernel(node) == before


def test_after_a_rejection_a_new_plan_goes_in_as_a_full_rebuild(node: str) -> None:
    applier = Applier(nft=Nft(), clock=FakeClock())
    applier.apply(plan())
    with pytest.raises(KernelRejected):
        applier.apply(overlapping(plan()))
    result = applier.apply(plan(outside_port=8080))  # different: no waiting for the backoff
    assert result.outcome == "full"
    assert kernel(node) == kernel_of(plan(outside_port=8080))
    assert applier.apply(plan(outside_port=9090)).outcome == "diff"  # and diffs again afterwards


def test_a_diff_rejected_because_the_kernel_drifted_falls_back_to_a_full_rebuild(node: str) -> None:
    applier = Applier(nft=Nft())
    applier.apply(plan())
    nsexec(node, "nft", "delete", "table", "inet", "stockade")  # every diff command now fails
    result = applier.apply(plan(outside_port=8080))
    assert (result.outcome, result.fell_back) == ("full", True)
    assert kernel(node) == kernel_of(plan(outside_port=8080))
    assert applier.errors_total == 1
