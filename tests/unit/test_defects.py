"""One malformed NetworkPolicy degrades only itself (compiler.defects, via ClusterModel).

Objects are built the way the agent builds them: ``model_validate`` of the object a watch event
delivers (server fields and all), straight into a ClusterModel, never through the loader. For
each malformed form, the expectations come from data, not from the module under test:

- the reference: the same raw policy with the bad rule deleted and ``policyTypes`` written out
  (so the policy isolates as before); the semantics of the model must equal its semantics;
- the compiled plans of every node, run by the test interpreter (tests/unit/planeval.py), must
  give the semantics' verdicts for every pair of addresses;
- the plan's notes and explain name the policy and the field.
"""

from __future__ import annotations

import copy
import ipaddress
from typing import Any, Literal

import pytest

from compiler.cluster import ClusterModel
from compiler.diff import connectivity_diff
from compiler.matrix import build_matrix
from compiler.model import NetworkPolicy
from compiler.plan import build_plan
from compiler.semantics import Peer, connectivity, evaluate
from tests.unit.planeval import ClusterEval, Packet
from tests.unit.test_plan import ALLOW_CLIENT, CLIENT, REMOTE, WEB, model, node, pod, policy

Family = Literal[4, 6]
PROBES: tuple[tuple[Literal["TCP", "UDP", "SCTP"], int], ...] = (("TCP", 80), ("TCP", 8080), ("UDP", 53))
REMOTE_WEB = pod("rweb", "10.244.2.5", node="n2", labels={"app": "web"}, ip6="fd00:2::5")
GOOD_INGRESS = {"from": [{"podSelector": {"matchLabels": {"app": "web"}}}], "ports": [{"port": 8080}]}
GOOD_EGRESS = {"to": [{"namespaceSelector": {}}], "ports": [{"protocol": "UDP", "port": 53}]}


def watch_event(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    """What a watch on networking.k8s.io/v1 NetworkPolicies delivers for an object in x."""
    return {
        "type": "ADDED",
        "object": {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {
                "name": name,
                "namespace": "x",
                "uid": "6f1c2a34-0000-4000-8000-000000000001",
                "resourceVersion": "48213",
                "generation": 1,
                "creationTimestamp": "2019-03-02T10:00:00Z",
                "managedFields": [
                    {"manager": "kubectl", "operation": "Update", "apiVersion": "networking.k8s.io/v1"}
                ],
            },
            "spec": spec,
        },
    }


def bad_spec(direction: str, bad_rule: dict[str, Any]) -> dict[str, Any]:
    """A policy isolating the x/client pod both ways: the bad rule first, a good one after it."""
    good = GOOD_INGRESS if direction == "ingress" else GOOD_EGRESS
    other = "egress" if direction == "ingress" else "ingress"
    other_good = GOOD_EGRESS if direction == "ingress" else GOOD_INGRESS
    return {
        "podSelector": {"matchLabels": {"app": "client"}},
        direction: [bad_rule, good],
        other: [other_good],
    }


def cidr_from(block: dict[str, Any], key: str = "from") -> dict[str, Any]:
    return {key: [{"ipBlock": block}]}


def case(direction: str, rule: dict[str, Any], field: str, name: str) -> Any:
    """A malformed rule (rule 0 of ``direction``) and the field the note must name, relative to it."""
    return pytest.param(direction, rule, f"spec.{direction}[0].{field}", id=name)


DISABLING = [
    case("ingress", cidr_from({"cidr": "10.010.0.0/16"}), "from[0].ipBlock.cidr", "leading-zero-cidr"),
    case(
        "ingress",
        cidr_from({"cidr": "10.244.0.0/16", "except": ["10.244.2.0/33"]}),
        "from[0].ipBlock.except[0]",
        "except-prefix-too-long",
    ),
    case(
        "ingress",
        cidr_from({"cidr": "10.244.0.0/16", "except": ["10.245.0.0/24"]}),
        "from[0].ipBlock.except[0]",
        "except-outside-cidr",
    ),
    case("ingress", cidr_from({"cidr": "10.244.2.0"}), "from[0].ipBlock.cidr", "cidr-without-prefix"),
    case("ingress", {"ports": [{"port": 70000}]}, "ports[0].port", "port-above-65535"),
    case("ingress", {"ports": [{"port": 0}]}, "ports[0].port", "port-zero"),
    case("ingress", {"ports": [{"port": 90, "endPort": 80}]}, "ports[0].endPort", "endport-below-port"),
    case("ingress", {"ports": [{"port": "http", "endPort": 9000}]}, "ports[0].endPort", "endport-named-port"),
    case("ingress", {"from": [{}]}, "from[0]", "empty-peer"),
    case(
        "ingress",
        {"from": [{"ipBlock": {"cidr": "10.244.2.0/24"}, "podSelector": {}}]},
        "from[0]",
        "ipblock-with-selector",
    ),
    case("egress", cidr_from({"cidr": "0.0.0.0/0/0"}, "to"), "to[0].ipBlock.cidr", "egress-garbage-cidr"),
    case(
        "egress",
        cidr_from({"cidr": "fd00:2::/64", "except": ["fd00:2::5/129"]}, "to"),
        "to[0].ipBlock.except[0]",
        "egress-ipv6-except",
    ),
    case("egress", {"ports": [{"protocol": "UDP", "port": -53}]}, "ports[0].port", "egress-negative-port"),
]


def the_model(*policies: NetworkPolicy) -> ClusterModel:
    return model(
        WEB,
        CLIENT,
        REMOTE,
        REMOTE_WEB,
        policies=(policy("allow", ALLOW_CLIENT), *policies),
        nodes=(node(), node("n2", ("10.244.2.0/24", "fd00:2::/64"))),
    )


def reference(direction: str, spec: dict[str, Any]) -> NetworkPolicy:
    """The raw policy with rule 0 of ``direction`` deleted and policyTypes written out."""
    spec = copy.deepcopy(spec)
    del spec[direction][0]
    spec["policyTypes"] = ["Ingress", "Egress"]
    return NetworkPolicy.model_validate(watch_event("bad", spec)["object"])


def addresses(m: ClusterModel, family: Family) -> list[str]:
    found = {a for p in m.pods for a in p.ips() if ipaddress.ip_address(a).version == family}
    return sorted(found, key=lambda a: int(ipaddress.ip_address(a)))


def plan_disagreements(m: ClusterModel) -> list[str]:
    """Pairs of pod addresses where the compiled plans and the semantics differ."""
    cluster = ClusterEval(m, {n: build_plan(m, node=n) for n in ("n1", "n2")})
    out = []
    for family in (4, 6):
        for src in addresses(m, family):
            for dst in addresses(m, family):
                for proto, port in PROBES:
                    want = evaluate(
                        m, src=Peer(ip=src), dst=Peer(ip=dst), protocol=proto, port=port, family=family
                    )
                    if src != dst and want.allowed != cluster.allows(Packet(src, dst, proto, port)):
                        out.append(f"{src} -> {dst} {proto}/{port}: semantics {want.allowed}")
    return out


@pytest.mark.parametrize(("direction", "bad_rule", "field"), DISABLING)
def test_a_malformed_rule_matches_nothing_and_the_rest_compiles(
    direction: str, bad_rule: dict[str, Any], field: str
) -> None:
    spec = bad_spec(direction, bad_rule)
    bad = NetworkPolicy.model_validate(watch_event("bad", spec)["object"])
    m = the_model(bad)
    want = the_model(reference(direction, spec))
    for family in (4, 6):
        assert connectivity(m, ports=PROBES, family=family) == connectivity(want, ports=PROBES, family=family)
    assert not plan_disagreements(m)
    for n in ("n1", "n2"):
        notes = build_plan(m, node=n).notes
        assert any(
            "NetworkPolicy x/bad" in note and field in note and f"{direction} rule 0 matches nothing" in note
            for note in notes
        ), notes
    # The rule after the bad one still works: x/client's good rules are what the reference says.
    if direction == "ingress":
        assert evaluate(m, src=Peer("x", "web"), dst=Peer("x", "client"), protocol="TCP", port=8080).allowed
    else:
        assert evaluate(m, src=Peer("x", "client"), dst=Peer("y", "remote"), protocol="UDP", port=53).allowed


@pytest.mark.parametrize(("direction", "bad_rule", "field"), DISABLING[:1] + DISABLING[-3:-2])
def test_explain_names_the_malformed_rule(direction: str, bad_rule: dict[str, Any], field: str) -> None:
    spec = bad_spec(direction, bad_rule)
    m = the_model(NetworkPolicy.model_validate(watch_event("bad", spec)["object"]))
    if direction == "ingress":
        verdict = evaluate(m, src=Peer("y", "remote"), dst=Peer("x", "client"), protocol="TCP", port=80)
    else:
        verdict = evaluate(m, src=Peer("x", "client"), dst=Peer("y", "remote"), protocol="TCP", port=80)
    assert not verdict.allowed
    text = verdict.explain()
    assert f"x/bad {direction} rule 0 matches nothing" in text and field in text, text


def test_a_cidr_the_api_once_accepted_does_not_stop_diff_or_matrix() -> None:
    """diff and matrix parse ipBlocks too: they see the same rule that matches nothing."""
    spec = bad_spec("ingress", cidr_from({"cidr": "10.010.0.0/16"}))
    bad = the_model(NetworkPolicy.model_validate(watch_event("bad", spec)["object"]))
    without = the_model()
    change = connectivity_diff(without, bad, ports=PROBES, family=(4, 6))
    assert change.gained == ()  # a malformed policy never widens access
    assert ("y/remote", "x/client") in {(c.src, c.dst) for c in change.lost}  # x/client is isolated now
    build_matrix(bad, family=4)


EXACT = [
    pytest.param(
        {"from": [{"podSelector": {"matchLabels": {"app": "we b"}}}]},
        "spec.ingress[0].from[0].podSelector.matchLabels",
        id="peer-label-value",
    ),
    pytest.param({"ports": [{"port": "Http_Port"}]}, "spec.ingress[0].ports[0].port", id="port-name-syntax"),
]


@pytest.mark.parametrize(("bad_rule", "field"), EXACT)
def test_a_problem_that_leaves_the_meaning_exact_is_noted_and_compiled_as_written(
    bad_rule: dict[str, Any], field: str
) -> None:
    bad = NetworkPolicy.model_validate(watch_event("bad", bad_spec("ingress", bad_rule))["object"])
    m = the_model(bad)
    assert bad in m.policies  # the very object: nothing was rewritten
    notes = build_plan(m, node="n1").notes
    assert any("NetworkPolicy x/bad" in n and field in n and "compiled as written" in n for n in notes), notes
    assert not plan_disagreements(m)


def test_a_valid_policy_is_kept_as_given_and_leaves_no_note() -> None:
    good = NetworkPolicy.model_validate(watch_event("good", bad_spec("ingress", GOOD_INGRESS))["object"])
    m = the_model(good)
    assert m.policies[-1] is good and m.policy_defects == ()
    assert build_plan(m, node="n1").notes == ()


def test_a_rebuilt_model_keeps_the_same_verdict_on_the_rewritten_policy() -> None:
    """The agent rebuilds its model from the objects it holds: one taken from a model (already
    made harmless) gives the same model and the same notes."""
    spec = bad_spec("ingress", cidr_from({"cidr": "10.010.0.0/16"}))
    first = the_model(NetworkPolicy.model_validate(watch_event("bad", spec)["object"]))
    again = ClusterModel(first.namespaces, first.pods, first.policies, first.nodes)
    assert again == first and again.policy_defects == first.policy_defects
