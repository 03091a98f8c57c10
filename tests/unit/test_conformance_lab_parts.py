"""The pure parts of the end-to-end conformance run: the workload's manifests, the data file's
policies as API objects, and the report helpers (the run itself is tests/cluster/test_conformance_lab.py)."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from tests.cluster.conformancelab import NODES, as_list, manifests, node_of, service_of
from tests.support.conformance import (
    LAB_ADDRESSES,
    PODS,
    Step,
    has_symbolic_cidr,
    load_cases,
    namespace_labels,
    pod_labels,
    resolve_policy,
    serving_container_ports,
)
from tests.support.conformance_report import suspicious, wrong
from tests.support.probe import ProbeRequest, ProbeResult, ReachKey

OBJECTS = manifests()


def _kind(kind: str) -> list[dict[str, object]]:
    return [o for o in OBJECTS if o["kind"] == kind]


def test_pods_alternate_over_both_nodes_and_pairs_cross_and_stay() -> None:
    assert Counter(node_of(k) for k in PODS) == {NODES[0]: 5, NODES[1]: 4}
    pairs = [(s, d) for s in PODS for d in PODS if s != d]
    crossing = sum(node_of(s) != node_of(d) for s, d in pairs)
    assert 0 < crossing < len(pairs)
    for pod in _kind("Pod"):
        meta, spec = pod["metadata"], pod["spec"]
        assert isinstance(meta, dict) and isinstance(spec, dict)
        key = f"{meta['namespace']}/{meta['name']}"
        assert spec["nodeSelector"] == {"kubernetes.io/hostname": node_of(key)}
        assert meta["labels"] == {"pod": meta["name"]}


def test_every_pod_serves_and_names_every_port_of_the_table() -> None:
    ports = serving_container_ports()
    assert {(p["protocol"], p["containerPort"]) for p in ports} == {
        (proto, port) for proto in ("TCP", "UDP", "SCTP") for port in (80, 81)
    }
    assert all(len(p["name"]) <= 15 for p in ports), "a port name is an IANA_SVC_NAME: 15 characters"
    (container,) = _kind("Pod")[0]["spec"]["containers"]  # type: ignore[index]
    assert container["ports"] == ports
    args = container["args"]
    assert args[args.index("--sctp") + 1] == "80,81"


def test_one_dual_stack_service_per_pod_targets_named_ports() -> None:
    services = _kind("Service")
    assert sorted(s["metadata"]["name"] for s in services) == sorted(service_of(k) for k in PODS)  # type: ignore[index]
    for svc in services:
        spec = svc["spec"]
        assert isinstance(spec, dict)
        assert spec["ipFamilyPolicy"] == "RequireDualStack"
        assert all(p["targetPort"] == p["name"] for p in spec["ports"])


def test_manifests_go_to_kubectl_as_json_so_namespace_y_stays_a_string() -> None:
    listed = json.loads(as_list(OBJECTS))
    assert listed["kind"] == "List"
    assert "y" in [o["metadata"]["name"] for o in listed["items"] if o["kind"] == "Namespace"]


def test_symbolic_cidrs_resolve_inside_a_policy_and_nothing_else_changes() -> None:
    by_name = {a.name: a for a in LAB_ADDRESSES}
    policy = {
        "metadata": {"name": "p", "namespace": "x"},
        "spec": {"egress": [{"to": [{"ipBlock": {"cidr": "{x/b}/4", "except": ["{x/b}/host"]}}]}]},
    }
    assert has_symbolic_cidr(policy)
    v6 = resolve_policy(policy, 6, by_name)
    assert v6["spec"]["egress"][0]["to"][0]["ipBlock"] == {
        "cidr": "f000::/4",
        "except": [f"{by_name['x/b'].ipv6}/128"],
    }
    assert v6["metadata"] == policy["metadata"]
    assert not has_symbolic_cidr(v6)


def test_steps_with_symbolic_cidrs_are_few_and_known() -> None:
    cases = {c.id for c in load_cases() for s in c.steps if any(has_symbolic_cidr(p) for p in s.policies)}
    assert cases == {34, 35, 36}


def test_labels_default_and_override() -> None:
    step = Step(
        index=0, policies=(), pod_labels={"x/b": {"pod": "b", "pod2": "updated"}},
        namespace_labels={"y": {"ns2": "updated"}}, blocked={},
    )  # fmt: skip
    assert pod_labels(step, "x/a") == {"pod": "a"}
    assert pod_labels(step, "x/b") == {"pod": "b", "pod2": "updated"}
    assert namespace_labels(step, "y") == {"ns2": "updated"}
    assert namespace_labels(step, "z") == {}


@pytest.mark.parametrize(
    ("outcome", "reachable", "is_wrong", "is_suspicious"),
    [
        pytest.param("connected", True, False, False, id="connected-as-expected"),
        pytest.param("blocked", True, True, False, id="blocked-but-expected-reachable"),
        pytest.param("refused", True, False, True, id="refused-counts-reached-but-suspicious"),
        pytest.param("error", True, True, True, id="error-is-not-reached"),
    ],
)
def test_report_helpers(outcome: str, reachable: bool, is_wrong: bool, is_suspicious: bool) -> None:
    key: ReachKey = ("x/a", "x/b", "TCP", 80)
    result = ProbeResult(
        request=ProbeRequest(src="x/a", dst="x/b", protocol="TCP", port=80),
        outcome=outcome,  # type: ignore[arg-type]
        elapsed_ms=1.0,
    )
    assert (wrong({key: reachable}, {key: result}) == [key]) is is_wrong
    assert (suspicious([result]) == [result]) is is_suspicious
    assert wrong({key: True}, {}) == [key], "a key not measured is wrong"
