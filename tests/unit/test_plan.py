"""compiler.plan: structure of the per-node plan, and its verdicts against the reference semantics."""

from __future__ import annotations

import dataclasses
import ipaddress
import random
from typing import Any, Literal

import pytest

from compiler.cluster import ClusterModel
from compiler.ir import (
    ACCEPT,
    CONTINUE,
    AddrInSet,
    AddrPortSet,
    AddrSet,
    Chain,
    DportIn,
    Interval,
    IntervalSet,
    L4protoIn,
    NodePlan,
    PortRange,
    Rule,
    SaddrDaddrInSet,
    SelfPairSet,
    is_description,
    jump,
)
from compiler.model import Namespace, NetworkPolicy, Node, Pod
from compiler.plan import build_plan
from compiler.render_json import render_json
from compiler.render_nft import render_nft
from compiler.semantics import Peer, evaluate
from tests.unit import clustergen
from tests.unit.planeval import ClusterEval, Packet

NODE = "n1"


def pod(
    name: str,
    ip: str | None,
    *,
    ns: str = "x",
    node: str = NODE,
    labels: dict[str, str] | None = None,
    ports: list[dict[str, Any]] | None = None,
    ip6: str | None = None,
    host_network: bool = False,
    phase: str = "Running",
) -> Pod:
    ips = [a for a in (ip, ip6) if a]
    return Pod.model_validate(
        {
            "metadata": {"name": name, "namespace": ns, "labels": labels or {}},
            "spec": {"nodeName": node, "hostNetwork": host_network, "containers": [{"ports": ports or []}]},
            "status": {"phase": phase, "podIP": ip, "podIPs": [{"ip": a} for a in ips]},
        }
    )


def policy(name: str, spec: dict[str, Any], ns: str = "x") -> NetworkPolicy:
    return NetworkPolicy.model_validate({"metadata": {"name": name, "namespace": ns}, "spec": spec})


def node(name: str = NODE, cidrs: tuple[str, ...] = ("10.244.1.0/24", "fd00:1::/64")) -> Node:
    return Node.model_validate({"metadata": {"name": name}, "spec": {"podCIDRs": list(cidrs)}})


def model(*pods: Pod, policies: tuple[NetworkPolicy, ...] = (), nodes: tuple[Node, ...] = ()) -> ClusterModel:
    namespaces = (
        Namespace.model_validate({"metadata": {"name": "x", "labels": {"team": "a"}}}),
        Namespace.model_validate({"metadata": {"name": "y", "labels": {"team": "a"}}}),
    )
    return ClusterModel(namespaces=namespaces, pods=pods, policies=policies, nodes=nodes or (node(),))


WEB = pod("web", "10.244.1.2", labels={"app": "web"}, ports=[{"containerPort": 8080, "name": "http"}])
WEB2 = pod("web2", "10.244.1.4", labels={"app": "web"}, ports=[{"containerPort": 9090, "name": "http"}])
CLIENT = pod("client", "10.244.1.3", labels={"app": "client"}, ip6="fd00:1::3")
REMOTE = pod("remote", "10.244.2.2", ns="y", node="n2", labels={"app": "client"})
ALLOW_CLIENT = {
    "podSelector": {"matchLabels": {"app": "web"}},
    "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "client"}}}]}],
}


def pod_sets(plan: NodePlan) -> list[str]:
    return [s.name for s in plan.sets if s.name.startswith("pods-")]


def pod_chains(plan: NodePlan, direction: str) -> list[Chain]:
    return [c for c in plan.pod_chains if c.name.startswith(direction)]


def policy_rules(chain: Chain) -> list[Rule]:
    """The chain's rules between the tier jumps (the NetworkPolicy tier)."""
    return [r for r in chain.rules if not is_description(r)][1:-2]


# --- layout ---------------------------------------------------------------------------------------


def test_per_pod_chain_layout() -> None:
    plan = build_plan(model(WEB, CLIENT, policies=(policy("allow", ALLOW_CLIENT),)), node=NODE)
    (chain,) = pod_chains(plan, "ingress")
    about, set_v4, set_v6, first, *_, baseline, last = chain.rules
    assert [r for r in chain.rules if is_description(r)] == [about, set_v4, set_v6]
    assert about.comment == "ingress of pods isolated by x/allow"
    peers = "pods (app=client) in namespaces (kubernetes.io/metadata.name=x)"
    assert [set_v4.comment, set_v6.comment] == [f"set {s}: {peers}" for s in sorted(pod_sets(plan))]
    assert first.action.target == "admin-ingress" and first.counter  # type: ignore[union-attr]
    assert baseline.action.target == "baseline-ingress"  # type: ignore[union-attr]
    assert last.action.kind == "drop" and last.comment == "ingress isolation: x/allow"  # type: ignore[union-attr]
    assert {r.comment for r in policy_rules(chain)} == {"x/allow ingress[0]"}
    assert all(r.counter for r in chain.rules if not is_description(r))
    assert {c.name for c in plan.tier_chains} == {
        "admin-ingress",
        "admin-egress",
        "baseline-ingress",
        "baseline-egress",
    }
    assert all([is_description(r) for r in c.rules] == [True] for c in plan.tier_chains)


def test_dispatch_maps_cover_every_local_pod() -> None:
    plan = build_plan(model(WEB, CLIENT, REMOTE, policies=(policy("allow", ALLOW_CLIENT),)), node=NODE)
    maps = {m.name: {e.address: e.verdict for e in m.entries} for m in plan.maps}
    (chain,) = pod_chains(plan, "ingress")
    assert maps["dispatch-ingress-v4"] == {"10.244.1.2": jump(chain.name), "10.244.1.3": ACCEPT}
    assert maps["dispatch-egress-v4"] == {"10.244.1.2": CONTINUE, "10.244.1.3": CONTINUE}
    assert maps["dispatch-ingress-v6"] == {"fd00:1::3": ACCEPT}
    assert plan.set("local-pods-v4") == AddrSet(
        "local-pods-v4", 4, ("10.244.1.2", "10.244.1.3"), "addresses of local pods"
    )


def test_hairpin_sets_pair_each_local_address_with_itself() -> None:
    """An isolated pod reaching itself through a Service comes back with source = destination:
    accepted in forward before any per-pod chain, for local pods only (REMOTE is on n2)."""
    plan = build_plan(model(WEB, CLIENT, REMOTE, policies=(policy("deny", DENY_ALL_WEB),)), node=NODE)
    assert plan.set("hairpin-v4") == SelfPairSet(
        "hairpin-v4", 4, ("10.244.1.2", "10.244.1.3"), "local pods, each to itself"
    )
    assert plan.set("hairpin-v6") == SelfPairSet(
        "hairpin-v6", 6, ("fd00:1::3",), "local pods, each to itself"
    )
    forward = plan.chain("forward")
    assert forward is not None
    actions = [r.action for r in forward.rules]
    hairpin = [
        i for i, r in enumerate(forward.rules) if any(isinstance(m, SaddrDaddrInSet) for m in r.matches)
    ]
    first_dispatch = next(i for i, r in enumerate(forward.rules) if r.comment.startswith("dispatch"))
    assert [forward.rules[i].matches for i in hairpin] == [
        (SaddrDaddrInSet(4, "hairpin-v4"),),
        (SaddrDaddrInSet(6, "hairpin-v6"),),
    ]
    assert all(actions[i] == ACCEPT for i in hairpin) and max(hairpin) < first_dispatch


DENY_ALL_WEB = {"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Ingress", "Egress"]}


@pytest.mark.parametrize(
    ("nodes", "note", "fail_closed"),
    [
        pytest.param((node(),), None, True, id="known-node"),
        pytest.param((node("other"),), "is not in the model", False, id="unknown-node"),
        pytest.param((node(NODE, ()),), "has no podCIDRs", False, id="no-podcidrs"),
        pytest.param((node(NODE, ("10.244.1.0/24",)),), None, True, id="v4-only"),
    ],
)
def test_fail_closed_needs_podcidrs(nodes: tuple[Node, ...], note: str | None, fail_closed: bool) -> None:
    plan = build_plan(model(WEB, nodes=nodes), node=NODE)
    assert (note is None) == (not plan.notes)
    if note is not None:
        assert note in plan.notes[0]
    forward = plan.chain("forward")
    assert forward is not None
    fail_rules = [r for r in forward.rules if r.comment.startswith("fail closed")]
    assert bool(fail_rules) == fail_closed
    families = {m.family for r in fail_rules for m in r.matches if isinstance(m, AddrInSet)}
    assert families == (
        {4} if nodes[0].pod_cidrs() == ("10.244.1.0/24",) else {4, 6} if fail_closed else set()
    )
    assert [p.key for p in plan.local_pods] == ["x/web"]  # local pods are dispatched either way


def test_hook_priorities() -> None:
    plan = build_plan(model(WEB), node=NODE)
    hooks = {c.name: (c.hook.hook, c.hook.priority, c.hook.policy) for c in plan.base_chains if c.hook}
    assert hooks == {
        "prerouting": ("prerouting", -300, "accept"),
        "input": ("input", 0, "accept"),
        "forward": ("forward", 0, "accept"),
    }


# --- peer sets ------------------------------------------------------------------------------------


def test_identical_selectors_share_one_set() -> None:
    same_by_name = {
        "podSelector": {"matchLabels": {"app": "db"}},
        "ingress": [
            {
                "from": [
                    {
                        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "x"}},
                        "podSelector": {
                            "matchExpressions": [{"key": "app", "operator": "In", "values": ["client"]}]
                        },
                    }
                ]
            }
        ],
    }
    db = pod("db", "10.244.1.5", labels={"app": "db"})
    plan = build_plan(
        model(WEB, CLIENT, db, policies=(policy("a", ALLOW_CLIENT), policy("b", same_by_name))), node=NODE
    )
    used = {
        m.set_name for c in plan.pod_chains for r in c.rules for m in r.matches if isinstance(m, AddrInSet)
    }
    assert len(used) == 2  # one per family, for both policies and both spellings
    assert plan.set(next(n for n in used if n.endswith("-v4"))).elements == ("10.244.1.3",)  # type: ignore[union-attr]


def test_peer_sets_hold_pods_cluster_wide_but_not_host_network() -> None:
    host = pod("host", "192.168.0.10", labels={"app": "client"}, host_network=True)
    plan = build_plan(
        model(WEB, CLIENT, REMOTE, host, policies=(policy("allow", any_ns_clients()),)), node=NODE
    )
    sets = [s for s in plan.sets if s.name.startswith("pods-")]
    assert {s.name[-2:]: s.elements for s in sets} == {
        "v4": ("10.244.1.3", "10.244.2.2"),
        "v6": ("fd00:1::3",),
    }


def any_ns_clients() -> dict[str, Any]:
    return {
        "podSelector": {"matchLabels": {"app": "web"}},
        "ingress": [{"from": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": "client"}}}]}],
    }


def test_empty_sets_are_declared() -> None:
    nobody = {"podSelector": {}, "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "nobody"}}}]}]}
    plan = build_plan(model(WEB, policies=(policy("p", nobody),)), node=NODE)
    empty = [s for s in plan.sets if s.name.startswith("pods-")]
    assert len(empty) == 2 and all(not s.elements for s in empty)
    text = render_nft(plan)
    for s in empty:
        assert f"set {s.name} {{\n\t\ttype {'ipv4' if s.family == 4 else 'ipv6'}_addr\n\t}}" in text


def test_finished_pod_loses_its_address_to_a_live_pod() -> None:
    done = pod("done", "10.244.1.3", ns="y", labels={"app": "client"}, phase="Succeeded")
    live = pod("live", "10.244.1.3", labels={"app": "other"})
    plan = build_plan(model(WEB, done, live, policies=(policy("allow", any_ns_clients()),)), node=NODE)
    (peers,) = [s for s in plan.sets if s.name.endswith("-v4") and s.name.startswith("pods-")]
    assert peers.elements == ()  # the address is the live pod's, which the selector does not match
    assert [p.key for p in plan.local_pods] == ["x/live", "x/web"]


def _claimant(name: str, labels: dict[str, str], *, phase: str = "Running", **meta: str) -> Pod:
    base = pod(name, "10.244.1.3", ns="y", labels=labels, phase=phase)
    return Pod.model_validate(
        {**base.model_dump(by_alias=True), "metadata": {**base.metadata.model_dump(by_alias=True), **meta}}
    )


OLD_T, NEW_T = "2026-03-01T10:00:00Z", "2026-03-01T10:00:07Z"


@pytest.mark.parametrize(
    ("dead", "reused", "owner"),
    [
        pytest.param({"phase": "Succeeded"}, {}, "y/new", id="succeeded-owns-nothing"),
        pytest.param(
            {"phase": "Failed", "creationTimestamp": NEW_T},
            {"creationTimestamp": OLD_T},
            "y/new",
            id="failed-owns-nothing-even-if-newer",
        ),
        pytest.param(
            {"creationTimestamp": OLD_T}, {"creationTimestamp": NEW_T}, "y/new", id="newest-live-wins"
        ),
        pytest.param(
            {"creationTimestamp": NEW_T, "deletionTimestamp": NEW_T},
            {"creationTimestamp": OLD_T},
            "y/new",
            id="being-deleted-loses",
        ),
        pytest.param({"phase": "Succeeded"}, {"phase": "Failed"}, None, id="both-finished-nobodys"),
        pytest.param({}, {}, None, id="equal-claims-nobodys"),
    ],
)
def test_address_claims_plan_and_semantics_agree(
    dead: dict[str, str], reused: dict[str, str], owner: str | None
) -> None:
    """The address 10.244.1.3 was a client's ("y/a-old": the name sorts first) and the IPAM gave
    it to another pod ("y/new"); the client's identity must not stick to the address."""
    old = _claimant("a-old", {"app": "client"}, **dead)
    new = _claimant("new", {"app": "other"}, **reused)
    m = model(WEB, old, new, policies=(policy("allow", any_ns_clients()),))
    plans = {n: build_plan(m, node=n) for n in (NODE, "n2")}
    plan = plans[NODE]
    holders = [p.key for p in plan.local_pods if "10.244.1.3" in p.addresses]
    assert holders == ([owner] if owner else [])
    (peers,) = [s for s in plan.sets if s.name.startswith("pods-") and s.name.endswith("-v4")]
    assert "10.244.1.3" not in peers.elements  # the client's address is no client's now
    dispatched = {e.address for mp in plan.maps if mp.family == 4 for e in mp.entries}
    assert ("10.244.1.3" in dispatched) == (owner is not None)
    verdict = evaluate(m, src=Peer(ip="10.244.1.3"), dst=Peer("x", "web"), protocol="TCP", port=8080)
    assert verdict.src == (f"{owner} (10.244.1.3)" if owner else "10.244.1.3")
    assert not verdict.allowed
    assert not ClusterEval(m, plans).allows(Packet("10.244.1.3", "10.244.1.2", "TCP", 8080))
    # Roles swapped (the address's new pod is the client): allowed exactly when it owns it.
    old, new = _claimant("a-old", {"app": "other"}, **dead), _claimant("new", {"app": "client"}, **reused)
    m = model(WEB, old, new, policies=(policy("allow", any_ns_clients()),))
    plans = {n: build_plan(m, node=n) for n in (NODE, "n2")}
    verdict = evaluate(m, src=Peer(ip="10.244.1.3"), dst=Peer("x", "web"), protocol="TCP", port=8080)
    assert verdict.allowed == (owner is not None)
    assert ClusterEval(m, plans).allows(Packet("10.244.1.3", "10.244.1.2", "TCP", 8080)) == verdict.allowed


@pytest.mark.parametrize(
    ("blocks", "v4", "v6"),
    [
        pytest.param(
            [{"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}],
            [Interval("10.0.0.0", "10.0.255.255", 16), Interval("10.2.0.0", "10.255.255.255", None)],
            None,
            id="except-splits",
        ),
        pytest.param(
            [{"cidr": "10.0.0.0/24"}, {"cidr": "10.0.1.0/24"}, {"cidr": "10.0.0.128/25"}],
            [Interval("10.0.0.0", "10.0.1.255", 23)],
            None,
            id="overlapping-and-adjacent-merge",
        ),
        pytest.param(
            [{"cidr": "10.0.0.0/16", "except": ["10.0.5.0/24", "10.0.5.128/25", "10.0.6.0/24"]}],
            [Interval("10.0.0.0", "10.0.4.255", None), Interval("10.0.7.0", "10.0.255.255", None)],
            None,
            id="overlapping-excepts",
        ),
        pytest.param(
            [{"cidr": "10.0.0.0/16", "except": ["10.0.0.0/24"]}, {"cidr": "10.0.0.0/24"}],
            [Interval("10.0.0.0", "10.0.255.255", 16)],
            None,
            id="except-of-one-block-only",
        ),
        pytest.param(
            [{"cidr": "10.9.8.7/8"}], [Interval("10.0.0.0", "10.255.255.255", 8)], None, id="host-bits"
        ),
        pytest.param(
            [{"cidr": "fd00::/16", "except": ["fd00:1::/32"]}, {"cidr": "192.168.1.1/32"}],
            [Interval("192.168.1.1", "192.168.1.1", 32)],
            [
                Interval("fd00::", "fd00:0:ffff:ffff:ffff:ffff:ffff:ffff", 32),
                Interval("fd00:2::", "fd00:ffff:ffff:ffff:ffff:ffff:ffff:ffff", None),
            ],
            id="both-families",
        ),
        pytest.param([{"cidr": "10.0.0.0/24", "except": ["10.0.0.0/24"]}], None, None, id="nothing-left"),
    ],
)
def test_ip_blocks_become_merged_interval_sets(
    blocks: list[dict[str, Any]], v4: list[Interval] | None, v6: list[Interval] | None
) -> None:
    spec = {"podSelector": {}, "ingress": [{"from": [{"ipBlock": b} for b in blocks]}]}
    plan = build_plan(model(WEB, policies=(policy("blocks", spec),)), node=NODE)
    got = {
        s.family: list(s.elements)
        for s in plan.sets
        if isinstance(s, IntervalSet) and s.name.startswith("cidrs-")
    }
    assert got.get(4) == v4 and got.get(6) == v6
    (chain,) = pod_chains(plan, "ingress")
    assert len(policy_rules(chain)) == (v4 is not None) + (
        v6 is not None
    )  # one rule per family for all blocks


# --- ports ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ports", "groups"),
    [
        pytest.param([], [()], id="no-ports-any"),
        pytest.param(
            [{"port": 80}, {"port": 443}],
            [(DportIn("TCP", (PortRange(80, 80), PortRange(443, 443))),)],
            id="tcp-set",
        ),
        pytest.param(
            [{"port": 8000, "endPort": 8080}, {"port": 8081}, {"port": 8050}],
            [(DportIn("TCP", (PortRange(8000, 8081),)),)],
            id="ranges-merge",
        ),
        pytest.param(
            [{"protocol": "UDP", "port": 53}, {"port": 53}],
            [(DportIn("TCP", (PortRange(53, 53),)),), (DportIn("UDP", (PortRange(53, 53),)),)],
            id="group-per-protocol",
        ),
        pytest.param(
            [{"protocol": "SCTP"}, {"protocol": "SCTP", "port": 9}, {"protocol": "UDP"}],
            [(L4protoIn(("UDP", "SCTP")),)],
            id="protocol-only-covers-its-ports",
        ),
        pytest.param([{"port": 90, "endPort": 80}], [], id="empty-range-allows-nothing"),
        pytest.param(
            [{"port": "http"}, {"port": 80}],
            [(DportIn("TCP", (PortRange(80, 80), PortRange(8080, 8080))),)],
            id="named-ingress-resolves",
        ),
        pytest.param([{"port": "nope"}], [], id="unresolved-named-port"),
        pytest.param([{"protocol": "UDP", "port": "http"}], [], id="named-port-protocol-must-match"),
    ],
)
def test_ingress_port_groups(ports: list[dict[str, Any]], groups: list[tuple[Any, ...]]) -> None:
    spec = {"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [{"ports": ports}]}
    plan = build_plan(model(WEB, policies=(policy("ports", spec),)), node=NODE)
    (chain,) = pod_chains(plan, "ingress")
    assert [r.matches for r in policy_rules(chain)] == groups


def test_named_ingress_ports_resolve_per_pod() -> None:
    spec = {"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [{"ports": [{"port": "http"}]}]}
    plan = build_plan(model(WEB, WEB2, policies=(policy("named", spec),)), node=NODE)
    chains = pod_chains(plan, "ingress")
    assert sorted(policy_rules(c)[0].matches[0].ports[0].first for c in chains) == [8080, 9090]  # type: ignore[union-attr]
    local = {p.key: p.ingress_chain for p in plan.local_pods}
    assert local["x/web"] != local["x/web2"]


def test_named_egress_ports_use_address_protocol_port_sets() -> None:
    spec = {
        "podSelector": {"matchLabels": {"app": "client"}},
        "policyTypes": ["Egress"],
        "egress": [
            {
                "to": [{"podSelector": {"matchLabels": {"app": "web"}}}],
                "ports": [{"port": "http"}, {"port": 443}],
            }
        ],
    }
    plan = build_plan(model(WEB, WEB2, CLIENT, policies=(policy("out", spec),)), node=NODE)
    (chain,) = pod_chains(plan, "egress")
    kinds = [type(r.matches[-1]).__name__ for r in policy_rules(chain)]
    assert kinds == ["DportIn", "DportIn", "DaddrProtoPortInSet", "DaddrProtoPortInSet"]
    named = [s for s in plan.sets if isinstance(s, AddrPortSet)]
    assert [(e.address, e.protocol, e.port) for s in named for e in s.elements] == [
        ("10.244.1.2", "TCP", 8080),
        ("10.244.1.4", "TCP", 9090),
    ]
    assert all(r.action.kind == "return" for r in policy_rules(chain))  # type: ignore[union-attr]


def test_pods_with_equal_policies_share_chains() -> None:
    twins = [pod(f"web-{i}", f"10.244.1.{10 + i}", labels={"app": "web"}) for i in range(5)]
    spec = {"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Ingress", "Egress"]}
    plan = build_plan(model(*twins, policies=(policy("deny", spec),)), node=NODE)
    assert len(plan.pod_chains) == 2
    assert {(p.ingress_chain, p.egress_chain) for p in plan.local_pods} == {
        (plan.pod_chains[1].name, plan.pod_chains[0].name)
    }


def test_chain_names_do_not_depend_on_python_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    """Chain names hash what the kernel runs, so a Python upgrade or an added dataclass field
    cannot rename every chain (and reset every counter) on an agent upgrade."""
    spec = {"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [{"ports": [{"port": 80}]}]}
    m = model(pod("web", "10.244.1.10", labels={"app": "web"}), policies=(policy("web", spec),))
    before = [c.name for c in build_plan(m, node=NODE).pod_chains]
    monkeypatch.setattr(Rule, "__repr__", lambda self: "same for every rule")
    assert [c.name for c in build_plan(m, node=NODE).pod_chains] == before


def test_egress_isolation_without_rules_returns_nothing() -> None:
    spec = {"podSelector": {}, "policyTypes": ["Egress"]}
    plan = build_plan(model(WEB, policies=(policy("deny-out", spec),)), node=NODE)
    (chain,) = pod_chains(plan, "egress")
    assert policy_rules(chain) == [] and chain.rules[-1].comment == "egress isolation: x/deny-out"


# --- determinism ----------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [pytest.param(s, id=f"seed-{s}") for s in range(6)])
def test_same_input_same_bytes_whatever_the_order(seed: int) -> None:
    m = clustergen.random_model(seed)
    rng = random.Random(seed)
    shuffled = dataclasses.replace(
        m,
        pods=tuple(rng.sample(m.pods, len(m.pods))),
        policies=tuple(rng.sample(m.policies, len(m.policies))),
    )
    for n in clustergen.NODES:
        first, again, other = build_plan(m, node=n), build_plan(m, node=n), build_plan(shuffled, node=n)
        assert first == again == other
        assert render_nft(first) == render_nft(other)
        assert render_json(first) == render_json(other)


# --- verdicts against the reference semantics ---------------------------------------------------


def _addresses(m: ClusterModel, family: int) -> list[str]:
    # A finished pod's address that no live pod reuses is nobody's: inside a podCIDR the plan drops
    # it (fail closed), which the semantics does not model; test_finished_pods_own_nothing covers it.
    live = [p for p in m.pods if p.status.phase not in ("Succeeded", "Failed")]
    found = {a for p in live for a in p.ips() if ipaddress.ip_address(a).version == family}
    found |= {a for n in m.nodes for a in n.internal_ips() if ipaddress.ip_address(a).version == family}
    found.add(clustergen.EXTERNAL[0 if family == 4 else 1])
    return sorted(found, key=lambda a: int(ipaddress.ip_address(a)))


@pytest.mark.parametrize("seed", [pytest.param(s, id=f"seed-{s}") for s in range(40)])
def test_plan_verdicts_equal_the_semantics(seed: int) -> None:
    m = clustergen.random_model(seed)
    cluster = ClusterEval(m, {n: build_plan(m, node=n) for n in clustergen.NODES})
    mismatches = []
    families: tuple[Literal[4, 6], ...] = (4, 6)
    for family in families:
        addresses = _addresses(m, family)
        # Every pair, a pod with itself included: through a Service, a pod's traffic to itself
        # comes back to it with source = destination, crossing its node's forward hook.
        for src in addresses:
            for dst in addresses:
                for proto, port in clustergen.PROBES:
                    want = evaluate(
                        m, src=Peer(ip=src), dst=Peer(ip=dst), protocol=proto, port=port, family=family
                    )
                    got = cluster.allows(Packet(src, dst, proto, port))
                    if want.allowed != got:
                        mismatches.append(f"{src} -> {dst} {proto}/{port}: plan {got}\n{want.explain()}")
    assert not mismatches, f"{len(mismatches)} mismatches, first:\n" + "\n".join(mismatches[:3])
