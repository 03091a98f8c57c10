"""compiler.incremental: pod churn as set elements, map entries and whole chains, never a rewrite.

The property: after any sequence of pod events, the compiler's plan equals ``build_plan`` of the
resulting model, and each delta, applied to the previous plan, gives exactly the next one (with
the checks the kernel makes: no deleting what is not there, no adding what is).
"""

from __future__ import annotations

import dataclasses
import json
import random
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compiler.cluster import ClusterModel
from compiler.incremental import NodeCompiler, PlanDelta, render_delta_json
from compiler.ir import Chain, NodePlan
from compiler.model import Pod
from compiler.plan import build_plan
from compiler.plandiff import diff_plans, diff_states, plan_state
from compiler.semantics import Peer, evaluate
from tests.unit import clustergen
from tests.unit.planeval import ClusterEval, Packet
from tests.unit.test_plan import ALLOW_CLIENT, CLIENT, NODE, REMOTE, WEB, model, pod, policy

State = dict[str, dict[str, Any]]


def as_state(plan: NodePlan) -> State:
    return {
        "sets": {s.name: (type(s).__name__, s.family, frozenset(s.elements)) for s in plan.sets},
        "maps": {m.name: {e.address: e.verdict for e in m.entries} for m in plan.maps},
        "chains": {c.name: c for c in plan.chains},
    }


def apply(plan: NodePlan, delta: PlanDelta) -> State:
    """The delta applied to the plan as the kernel would, failing where the kernel would."""
    state = as_state(plan)
    sets, maps, chains = state["sets"], state["maps"], state["chains"]
    for s in delta.add_sets:
        assert s.name not in sets, f"set {s.name} already exists"
        sets[s.name] = (type(s).__name__, s.family, frozenset(s.elements))
    for c in delta.add_chains:
        assert c.name not in chains, f"chain {c.name} already exists: existing chains are never rewritten"
        chains[c.name] = c
    for s in delta.delete_elements:
        kind, family, elements = sets[s.name]
        assert set(s.elements) <= elements, f"deleting absent elements of {s.name}"
        sets[s.name] = (kind, family, elements - set(s.elements))
    for s in delta.add_elements:
        kind, family, elements = sets[s.name]
        assert not set(s.elements) & elements, f"adding present elements to {s.name}"
        sets[s.name] = (kind, family, elements | set(s.elements))
    for m in delta.delete_map_entries:
        for e in m.entries:
            assert maps[m.name].pop(e.address) == e.verdict
    for m in delta.add_map_entries:
        for e in m.entries:
            assert e.address not in maps[m.name]
            maps[m.name][e.address] = e.verdict
    for name in delta.delete_chains:
        del chains[name]
        assert all(v.target != name for entries in maps.values() for v in entries.values())
    for name in delta.delete_sets:
        del sets[name]
    return state


def unordered(doc: dict[str, Any]) -> list[str]:
    """A transaction with each command's elements in a fixed order (the kernel takes them as a
    set; a converted form updated in place lists new elements last)."""
    out: list[str] = []
    for cmd in doc["nftables"]:
        fixed = {
            verb: {
                kind: {**obj, "elem": sorted(json.dumps(e, sort_keys=True) for e in obj["elem"])}
                if isinstance(obj, dict) and "elem" in obj
                else obj
                for kind, obj in body.items()
            }
            for verb, body in cmd.items()
        }
        out.append(json.dumps(fixed, sort_keys=True))
    return out


def chains_of(plan: NodePlan) -> dict[str, Chain]:
    return {c.name: c for c in plan.chains}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10**6),
    events=st.integers(0, 10**6),
    node=st.sampled_from(clustergen.NODES),
    steps=st.integers(1, 10),
)
def test_incremental_plan_equals_a_full_build(seed: int, events: int, node: str, steps: int) -> None:
    current = clustergen.random_model(seed)
    compiler = NodeCompiler(current, node=node)
    assert compiler.plan == build_plan(current, node=node)
    rng = random.Random(events)
    for _ in range(steps):
        before = compiler.plan
        old, new, current = clustergen.random_change(rng, current)
        delta = compiler.update_pod(old, new)
        expected = build_plan(current, node=node)
        assert compiler.plan == expected
        assert apply(before, delta) == as_state(expected)
        for c in delta.add_chains:  # only per-pod chains come and go
            assert c.hook is None and c.name.startswith(("ingress-", "egress-"))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10**6),
    events=st.integers(0, 10**6),
    node=st.sampled_from(clustergen.NODES),
    steps=st.integers(1, 12),
)
def test_policy_namespace_and_pod_changes_equal_a_full_build(
    seed: int, events: int, node: str, steps: int
) -> None:
    """Policies added, edited and deleted, namespaces relabelled, declared and deleted, and pod
    events, in any order: the plan equals a full build, and each delta gives the next plan."""
    current = clustergen.random_model(seed)
    current = dataclasses.replace(
        current,
        policies=tuple(sorted(current.policies, key=lambda p: (p.metadata.namespace or "", p.metadata.name))),
    )
    compiler = NodeCompiler(current, node=node)
    rng = random.Random(events)
    state = plan_state(compiler.plan)
    for _ in range(steps):
        before = compiler.plan
        kind = rng.choice(["policy", "policy", "namespace", "pod"])
        if kind == "policy":
            old_p, new_p, current = clustergen.random_policy_change(rng, current)
            delta = compiler.update_policy(old_p, new_p)
        elif kind == "namespace":
            old_n, new_n, current = clustergen.random_namespace_change(rng, current)
            delta = compiler.update_namespace(old_n, new_n)
        else:
            old, new, current = clustergen.random_change(rng, current)
            delta = compiler.update_pod(old, new)
        expected = build_plan(current, node=node)
        assert compiler.plan == expected, kind
        assert apply(before, delta) == as_state(expected), kind
        # The applier converts only what changed (objects the compiler handed out again are
        # reused) and diffs only those: the same state and the same transaction as from scratch.
        fresh, reused = plan_state(compiler.plan), plan_state(compiler.plan, reuse=(before, state))
        assert reused == fresh
        assert unordered(diff_states(state, reused)) == unordered(diff_plans(before, compiler.plan))
        state = reused


def _compiler(*pods: Any) -> tuple[NodeCompiler, ClusterModel]:
    m = model(*pods, policies=(policy("allow", ALLOW_CLIENT),))
    return NodeCompiler(m, node=NODE), m


def _relabel(p: Any, labels: dict[str, str]) -> Any:
    ip6 = next((a for a in p.ips() if ":" in a), None)
    return pod(
        p.metadata.name,
        p.status.pod_ip,
        ns=p.metadata.namespace,
        node=p.spec.node_name,
        labels=labels,
        ip6=ip6,
    )


@pytest.mark.parametrize(
    ("old", "new", "expect"),
    [
        pytest.param(
            REMOTE,
            _relabel(REMOTE, {"app": "other"}),
            {"delete_elements": 0, "add_elements": 0},
            id="remote-pod-outside-every-selector-stays-out",
        ),
        pytest.param(
            None,
            pod("late", "10.244.2.9", ns="x", node="n2", labels={"app": "client"}),
            {"add_elements": 1},
            id="remote-client-appears",
        ),
        pytest.param(
            CLIENT,
            _relabel(CLIENT, {"app": "other"}),
            {"delete_elements": 2},
            id="local-client-leaves-the-peer-set",
        ),
        pytest.param(
            CLIENT,
            _relabel(CLIENT, {"app": "web"}),
            {"delete_elements": 2, "delete_map_entries": 2, "add_map_entries": 2},
            id="local-pod-becomes-selected-reuses-chain",
        ),
        pytest.param(
            WEB,
            None,
            # Its address leaves the local-pods and hairpin sets.
            {"delete_map_entries": 2, "delete_chains": 1, "delete_sets": 2, "delete_elements": 2},
            id="last-pod-of-a-chain-leaves",
        ),
        pytest.param(
            CLIENT,
            pod("client", "10.244.1.30", labels={"app": "client"}),
            # Dual-stack to v4-only at a new address: local, hairpin and peer sets, all four maps.
            {"delete_elements": 6, "add_elements": 3, "delete_map_entries": 4, "add_map_entries": 2},
            id="local-pod-changes-address",
        ),
    ],
)
def test_delta_examples(old: Any, new: Any, expect: dict[str, int]) -> None:
    compiler, m = _compiler(WEB, CLIENT, REMOTE)
    before = compiler.plan
    delta = compiler.update_pod(old, new)
    counts = {f.name: len(getattr(delta, f.name)) for f in dataclasses.fields(delta)}
    assert {k: v for k, v in counts.items() if v} == {k: v for k, v in expect.items() if v}
    pods = tuple(p for p in m.pods if p.key != (new or old).key) + ((new,) if new else ())
    assert compiler.plan == build_plan(dataclasses.replace(m, pods=pods), node=NODE)
    assert apply(before, delta) == as_state(compiler.plan)


def test_new_chain_is_added_not_rewritten() -> None:
    compiler, _ = _compiler(WEB, CLIENT)
    before = chains_of(compiler.plan)
    named = pod("named", "10.244.1.8", labels={"app": "web"}, ports=[{"containerPort": 7000, "name": "http"}])
    delta = compiler.update_pod(None, named)
    assert delta.add_chains == ()  # same policies, no named ports in them: the chain is shared
    spec = {"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [{"ports": [{"port": "http"}]}]}
    m = model(WEB, CLIENT, policies=(policy("named", spec),))
    compiler = NodeCompiler(m, node=NODE)
    before = chains_of(compiler.plan)
    delta = compiler.update_pod(None, named)
    (added,) = delta.add_chains
    assert added.name not in before
    assert all(chains_of(compiler.plan)[n] == c for n, c in before.items())


def test_no_op_events() -> None:
    compiler, _ = _compiler(WEB, CLIENT)
    assert compiler.update_pod(None, None).empty
    assert compiler.update_pod(WEB, WEB).empty
    assert compiler.update_pod(None, WEB).empty  # a repeated add converges
    with pytest.raises(ValueError, match="changed UID"):
        compiler.update_pod(WEB, CLIENT)


def _verbs(doc: dict[str, Any]) -> list[tuple[str, str, str]]:
    out = []
    for command in doc["nftables"]:
        ((verb, body),) = command.items()
        ((kind, obj),) = body.items()
        out.append((verb, kind, obj.get("name", obj.get("chain", ""))))
    return out


def test_delta_json_orders_objects_before_users() -> None:
    compiler, _ = _compiler(WEB, CLIENT, REMOTE)
    chain = next(p.ingress_chain for p in compiler.plan.local_pods if p.key == "x/web")
    peer_sets = sorted(s.name for s in compiler.plan.sets if s.name.startswith("pods-"))
    assert len(peer_sets) == 2
    removed = render_delta_json(compiler.update_pod(WEB, None))
    assert _verbs(removed) == [
        ("delete", "element", "hairpin-v4"),
        ("delete", "element", "local-pods-v4"),
        ("delete", "element", "dispatch-egress-v4"),  # a map element is deleted by its key alone
        ("delete", "element", "dispatch-ingress-v4"),
        ("flush", "chain", chain),  # its rules hold references to the sets
        ("delete", "chain", chain),
        *[("delete", "set", n) for n in peer_sets],  # no chain uses them any more
    ]
    assert removed["nftables"][0]["delete"]["element"]["elem"] == [{"concat": ["10.244.1.2", "10.244.1.2"]}]
    assert removed["nftables"][2]["delete"]["element"]["elem"] == ["10.244.1.2"]
    added = render_delta_json(compiler.update_pod(None, WEB))
    assert [(v, k) for v, k, _ in _verbs(added)] == [
        ("add", "set"),
        ("add", "set"),
        ("add", "chain"),
        *[("add", "rule")] * 8,  # 3 describe the chain and its two sets
        *[("add", "element")] * 4,  # hairpin and local-pods sets, two dispatch maps
    ]


def test_set_created_after_a_new_namespace_appeared_includes_it() -> None:
    everywhere = {
        "podSelector": {"matchLabels": {"app": "web"}},
        "ingress": [{"from": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": "client"}}}]}],
    }
    m = model(CLIENT, WEB, policies=(policy("everywhere", everywhere),))
    compiler = NodeCompiler(m, node=NODE)
    compiler.update_pod(WEB, None)  # the peer set goes with the last pod that needed it
    assert not [s for s in compiler.plan.sets if s.name.startswith("pods-")]
    stranger = pod("stranger", "10.244.2.7", ns="brand-new", node="n2", labels={"app": "client"})
    compiler.update_pod(None, stranger)
    delta = compiler.update_pod(None, WEB)  # needed again: built from the index, new namespace included
    (v4,) = [s for s in delta.add_sets if s.name.endswith("-v4")]
    assert v4.elements == ("10.244.1.3", "10.244.2.7")
    final = dataclasses.replace(m, pods=(CLIENT, stranger, WEB))
    assert compiler.plan == build_plan(final, node=NODE)


# --- identity by UID ---------------------------------------------------------------------------------


def _incarnation(p: Pod, uid: str, ip: str) -> Pod:
    """``p`` re-created under the same namespace/name: another UID, another address."""
    data = p.model_dump(by_alias=True, exclude_none=True)
    data["metadata"]["uid"] = uid
    data["status"] = {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}
    return Pod.model_validate(data)


def test_late_delete_of_a_previous_incarnation_keeps_the_new_pod() -> None:
    first = _incarnation(WEB, "uid-web-0", "10.244.1.2")
    second = _incarnation(WEB, "uid-web-1", "10.244.1.9")
    compiler = NodeCompiler(model(first, CLIENT, policies=(policy("allow", ALLOW_CLIENT),)), node=NODE)
    compiler.update_pod(None, second)  # the new incarnation's ADD arrives first
    delta = compiler.update_pod(first, None)  # then the old one's DELETE
    expected = build_plan(model(second, CLIENT, policies=(policy("allow", ALLOW_CLIENT),)), node=NODE)
    assert compiler.plan == expected
    assert [(p.key, p.addresses) for p in compiler.plan.local_pods] == [
        ("x/client", ("10.244.1.3", "fd00:1::3")),
        ("x/web", ("10.244.1.9",)),
    ]
    dispatch = {m.name: {e.address for e in m.entries} for m in compiler.plan.maps}
    assert (
        "10.244.1.9" in dispatch["dispatch-ingress-v4"]
        and "10.244.1.2" not in dispatch["dispatch-ingress-v4"]
    )
    assert {e.address for m in delta.delete_map_entries for e in m.entries} == {"10.244.1.2"}
    assert compiler.update_pod(first, None).empty  # repeated: nothing of the new pod goes


# --- addresses reported by the CNI plugin ------------------------------------------------------------


def _pending(
    name: str, labels: dict[str, str], *, uid: str, phase: str = "Pending", ip: str | None = None
) -> Pod:
    status: dict[str, Any] = {"phase": phase}
    if ip:
        status |= {"podIP": ip, "podIPs": [{"ip": ip}]}
    return Pod.model_validate(
        {
            "metadata": {"name": name, "namespace": "x", "uid": uid, "labels": labels},
            "spec": {"nodeName": NODE},
            "status": status,
        }
    )


def _holders(plan: NodePlan) -> dict[str, tuple[str, ...]]:
    return {p.key: p.addresses for p in plan.local_pods}


@pytest.mark.parametrize(
    ("reported", "want"),
    [
        pytest.param({"uid-new": ("10.244.1.7",)}, {"x/new": ("10.244.1.7",)}, id="cni-before-status"),
        pytest.param(
            {"uid-new": ("10.244.1.7", "fd00:1::7")}, {"x/new": ("10.244.1.7", "fd00:1::7")}, id="dual"
        ),
        pytest.param({"uid-gone": ("10.244.1.7",)}, {}, id="unknown-uid-owns-nothing"),
        pytest.param({}, {}, id="no-report"),
    ],
)
def test_cni_addresses_before_the_status(reported: dict[str, tuple[str, ...]], want: dict[str, Any]) -> None:
    new = _pending("new", {"app": "client"}, uid="uid-new")
    m = dataclasses.replace(
        model(WEB, new, policies=(policy("allow", ALLOW_CLIENT),)), cni_addresses=reported
    )
    plan = build_plan(m, node=NODE)
    assert {k: v for k, v in _holders(plan).items() if k != "x/web"} == want
    peers = {a for s in plan.sets if s.name.startswith("pods-") for a in s.elements}
    assert peers == {a for addrs in want.values() for a in addrs}  # a client: in the allowed peers
    for address in ("10.244.1.7",):
        verdict = evaluate(m, src=Peer(ip=address), dst=Peer("x", "web"), protocol="TCP", port=8080)
        assert verdict.allowed == bool(want)
        assert ClusterEval(m, {NODE: plan}).allows(Packet(address, "10.244.1.2", "TCP", 8080)) == bool(want)


@pytest.mark.parametrize(
    ("pod_", "want"),
    [
        pytest.param(
            _pending("new", {}, uid="uid-new", phase="Running", ip="10.244.1.8"),
            ("10.244.1.8",),
            id="status-wins",
        ),
        pytest.param(_pending("new", {}, uid="uid-new", phase="Succeeded"), None, id="finished-owns-nothing"),
        pytest.param(_pending("new", {}, uid="uid-new", phase="Failed"), None, id="failed-owns-nothing"),
    ],
)
def test_cni_report_rules(pod_: Pod, want: tuple[str, ...] | None) -> None:
    m = ClusterModel(pods=(pod_,), nodes=model().nodes, cni_addresses={"uid-new": ("10.244.1.7",)})
    assert _holders(build_plan(m, node=NODE)).get("x/new") == want


def test_incremental_path_follows_cni_reports() -> None:
    new = _pending("new", {"app": "client"}, uid="uid-new")
    base = model(WEB, policies=(policy("allow", ALLOW_CLIENT),))
    compiler = NodeCompiler(base, node=NODE)
    assert compiler.update_cni("uid-new", ("10.244.1.7",)).empty  # the API has not shown the pod yet
    delta = compiler.update_pod(None, new)
    reported = dataclasses.replace(base, pods=(WEB, new), cni_addresses={"uid-new": ("10.244.1.7",)})
    assert compiler.plan == build_plan(reported, node=NODE)
    assert {e for s in delta.add_elements for e in s.elements} >= {"10.244.1.7"}
    running = _pending("new", {"app": "client"}, uid="uid-new", phase="Running", ip="10.244.1.8")
    compiler.update_pod(new, running)  # the status arrives, with another address: it wins
    assert _holders(compiler.plan)["x/new"] == ("10.244.1.8",)
    assert compiler.update_cni("uid-new", ("10.244.1.9",)).empty  # status present: the report is moot
    done = _pending("new", {"app": "client"}, uid="uid-new", phase="Succeeded")
    compiler.update_pod(running, done)  # finished, status cleared: the CNI report must not revive it
    assert "x/new" not in _holders(compiler.plan)
    final = dataclasses.replace(base, pods=(WEB, done), cni_addresses={"uid-new": ("10.244.1.9",)})
    assert compiler.plan == build_plan(final, node=NODE)
