"""The anti-spoofing fast path: the node's routed (pod interface, address) pairs in the plan.

- the pairs reach the plan, both renderings and the incremental path like every other set;
- pairs that cannot be written or could never match are left out with a note;
- whatever the pairs, ``prerouting`` decides as the strict reverse-path rule does, as long as the
  pairs are routes the node holds (checked with :func:`tests.unit.planeval.prerouting_allows`,
  whose ``fib`` is a model of the routing table, not the compiler's code).
"""

from __future__ import annotations

import dataclasses
import json
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compiler.cluster import ClusterModel, PodSource
from compiler.incremental import NodeCompiler, render_delta_json
from compiler.ir import IfnameAddr, IfnameAddrSet, NodePlan
from compiler.options import CompileOptions
from compiler.plan import build_plan
from compiler.plandiff import diff_plans
from compiler.render_json import render_json
from compiler.render_nft import render_nft
from tests.unit import clustergen
from tests.unit.planeval import Arrival, CompiledPlan, prerouting_allows, routes_back
from tests.unit.test_incremental import apply, as_state
from tests.unit.test_plan import CLIENT, NODE, WEB, model

PAIRS = frozenset(
    {
        PodSource("stk0a1b2c3d4e5f", "10.244.1.2"),
        PodSource("stk0a1b2c3d4e5f", "fd00:1::2"),
        PodSource("stk99887766554", "10.244.1.3"),
    }
)


def sets_of(plan: NodePlan) -> dict[str, IfnameAddrSet]:
    return {s.name: s for s in plan.sets if isinstance(s, IfnameAddrSet)}


def with_sources(base: ClusterModel, sources: frozenset[PodSource]) -> ClusterModel:
    return dataclasses.replace(base, pod_sources=sources)


def test_the_plan_holds_the_pairs_per_family() -> None:
    plan = build_plan(with_sources(model(WEB, CLIENT), PAIRS), node=NODE)
    assert sets_of(plan) == {
        "pod-sources-v4": IfnameAddrSet(
            "pod-sources-v4",
            4,
            (IfnameAddr("stk0a1b2c3d4e5f", "10.244.1.2"), IfnameAddr("stk99887766554", "10.244.1.3")),
            sets_of(plan)["pod-sources-v4"].note,
        ),
        "pod-sources-v6": IfnameAddrSet(
            "pod-sources-v6",
            6,
            (IfnameAddr("stk0a1b2c3d4e5f", "fd00:1::2"),),
            sets_of(plan)["pod-sources-v6"].note,
        ),
    }
    assert not plan.notes


def test_both_renderings_write_the_pairs_and_the_lookup() -> None:
    plan = build_plan(with_sources(model(WEB), PAIRS), node=NODE)
    text = render_nft(plan)
    assert "type ifname . ipv4_addr" in text and "type ifname . ipv6_addr" in text
    assert '"stk0a1b2c3d4e5f" . 10.244.1.2' in text
    assert "\tiifname . ip saddr @pod-sources-v4 accept" in text
    assert "\tiifname . ip6 saddr @pod-sources-v6 accept" in text
    doc = render_json(plan)["nftables"]
    (v6,) = [
        c["add"]["set"]
        for c in doc
        if "set" in c.get("add", {}) and c["add"]["set"]["name"] == "pod-sources-v6"
    ]
    assert v6["type"] == ["ifname", "ipv6_addr"]
    assert v6["elem"] == [{"concat": ["stk0a1b2c3d4e5f", "fd00:1::2"]}]


def test_without_pairs_the_sets_are_declared_empty() -> None:
    """``stockade compile`` from manifests: the route lookup does everything, as before."""
    plan = build_plan(model(WEB, CLIENT), node=NODE)
    assert {n: s.elements for n, s in sets_of(plan).items()} == {"pod-sources-v4": (), "pod-sources-v6": ()}


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        pytest.param(PodSource("eth0", "10.244.1.2"), "not a pod interface name", id="other-prefix"),
        pytest.param(PodSource("stk0123456789abcd", "10.244.1.2"), "not a pod interface name", id="too-long"),
        pytest.param(PodSource('stk"x', "10.244.1.2"), "not a pod interface name", id="quote"),
        pytest.param(PodSource("stk x", "10.244.1.2"), "not a pod interface name", id="space"),
        pytest.param(PodSource("stk1", "10.244.1.300"), "not an IP address", id="bad-address"),
        pytest.param(PodSource("stk1", "10.244.1.0/24"), "not an IP address", id="a-network"),
        pytest.param(PodSource("stk1", "fe80::1%stk1"), "a scoped address", id="scoped"),
    ],
)
def test_unusable_pairs_are_left_to_the_route_lookup(source: PodSource, reason: str) -> None:
    plan = build_plan(with_sources(model(WEB), frozenset({source, *PAIRS})), node=NODE)
    assert sum(len(s.elements) for s in sets_of(plan).values()) == len(PAIRS)
    (note,) = plan.notes
    assert reason in note and "left to the route lookup" in note
    assert '"' not in render_nft(plan).split("\n# note: ", 1)[1].split("\n", 1)[0]


def test_the_prefix_option_decides_which_pairs_can_match() -> None:
    options = CompileOptions(pod_interface_prefix="veth")
    sources = frozenset({PodSource("veth12", "10.244.1.2"), PodSource("stk12", "10.244.1.3")})
    plan = build_plan(with_sources(model(WEB, CLIENT), sources), node=NODE, options=options)
    assert sets_of(plan)["pod-sources-v4"].elements == (IfnameAddr("veth12", "10.244.1.2"),)
    # The set is the fast path's only scope: a pair under another prefix never reaches it.
    assert '"stk12"' not in render_nft(plan)
    assert 'iifname "veth*" fib saddr . iif oif missing counter drop' in render_nft(plan)
    assert len(plan.notes) == 1


def test_addresses_are_written_canonically() -> None:
    sources = frozenset({PodSource("stk1", "FD00:1:0::0:2")})
    plan = build_plan(with_sources(model(WEB), sources), node=NODE)
    assert sets_of(plan)["pod-sources-v6"].elements == (IfnameAddr("stk1", "fd00:1::2"),)


# --- the incremental path and the plan diff -------------------------------------------------------------

POOL = (
    *(PodSource(f"stk{i:x}", f"10.244.1.{i}") for i in range(1, 7)),
    *(PodSource(f"stk{i:x}", f"fd00:1::{i:x}") for i in range(1, 7)),
    PodSource("stk1", "10.244.1.9"),  # two addresses of one family on one interface
    PodSource("eth0", "10.244.1.1"),  # not a pod interface: a note
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10**6), steps=st.integers(1, 8))
def test_source_updates_equal_a_full_build(seed: int, steps: int) -> None:
    rng = random.Random(seed)
    current = with_sources(clustergen.random_model(seed), frozenset(rng.sample(POOL, rng.randint(0, 4))))
    compiler = NodeCompiler(current, node="n1")
    assert compiler.plan == build_plan(current, node="n1")
    for _ in range(steps):
        before = compiler.plan
        current = with_sources(current, frozenset(rng.sample(POOL, rng.randint(0, len(POOL)))))
        delta = compiler.update_sources(current.pod_sources)
        expected = build_plan(current, node="n1")
        assert compiler.plan == expected
        assert apply(before, delta) == as_state(expected)
        assert (
            not delta.add_sets and not delta.add_chains and not delta.delete_chains and not delta.delete_sets
        )
        # The delta's commands and the plan diff's change the same elements.
        diffed = [c for c in diff_plans(before, expected)["nftables"] if "element" in next(iter(c.values()))]
        assert _elements(render_delta_json(delta)["nftables"]) == _elements(diffed)


def _elements(cmds: list[dict[str, object]]) -> set[str]:
    return {
        json.dumps([verb, body["element"]["name"], e], sort_keys=True)  # type: ignore[index]
        for cmd in cmds
        for verb, body in cmd.items()
        for e in body["element"]["elem"]  # type: ignore[index]
    }


def test_an_unchanged_listing_is_no_change() -> None:
    compiler = NodeCompiler(with_sources(model(WEB), PAIRS), node=NODE)
    assert compiler.update_sources(PAIRS).empty


# --- what prerouting decides ------------------------------------------------------------------------------


def _node(rng: random.Random) -> tuple[dict[str, str], list[str], list[str]]:
    """A node's routing table (address -> interface: pods' host routes, and remote pods' and
    external addresses via the uplink), its interfaces, and every address worth claiming."""
    routes: dict[str, str] = {}
    pods = [f"stk{i:012x}" for i in range(rng.randint(1, 5))]
    for i, ifname in enumerate(pods):
        routes[f"10.244.1.{i + 2}"] = ifname
        if rng.random() < 0.7:
            routes[f"fd00:1::{i + 2:x}"] = ifname
    for address in ("10.244.2.5", "fd00:2::5", *clustergen.EXTERNAL):
        routes[address] = "eth0"
    claims = [*routes, "10.244.1.200", "fd00:1::200", "fe80::9", "fe80::1"]
    return routes, [*pods, "eth0", "stockade.vx"], claims


@settings(max_examples=80, deadline=None)
@given(seed=st.integers(0, 10**6))
def test_prerouting_decides_as_the_reverse_path_rule(seed: int) -> None:
    """With any subset of the node's pod routes as pairs (the agent may not have read a new
    pod's yet), a packet passes exactly when its source routes back via its arrival interface,
    or when it did not arrive on a pod interface at all."""
    rng = random.Random(seed)
    routes, interfaces, claims = _node(rng)
    known = [PodSource(ifname, a) for a, ifname in routes.items() if ifname.startswith("stk")]
    pairs = frozenset(rng.sample(known, rng.randint(0, len(known))))
    plan = CompiledPlan(build_plan(with_sources(model(WEB, CLIENT), pairs), node=NODE))
    for ifname in interfaces:
        for saddr in claims:
            arrival = Arrival(ifname, saddr)
            expected = not ifname.startswith("stk") or routes_back(routes, arrival)
            assert prerouting_allows(plan, arrival, routes) == expected, arrival


def test_a_pair_is_trusted_without_a_route_lookup() -> None:
    """Why the pairs must be routes the node holds: a pair skips the lookup, so a pair that is
    not a route (here: another pod's address) would let that source through."""
    routes = {"10.244.1.2": "stk1", "10.244.1.3": "stk2"}
    arrival = Arrival("stk1", "10.244.1.3")
    honest = CompiledPlan(build_plan(model(WEB), node=NODE))
    assert not prerouting_allows(honest, arrival, routes)
    wrong = frozenset({PodSource("stk1", "10.244.1.3")})
    assert prerouting_allows(
        CompiledPlan(build_plan(with_sources(model(WEB), wrong), node=NODE)), arrival, routes
    )
