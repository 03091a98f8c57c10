"""controller.agent.objects: API bodies become the compiler's models, trimmed to what it reads."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from compiler.model import NetworkPolicy, Pod
from controller.agent.objects import Kind, UnreadableObject, parse
from tests.unit.agent.bodies import namespace_body, node_body, pod_body, policy_body


def test_pod_keeps_what_the_compiler_reads() -> None:
    pod = parse(
        "Pod", pod_body("a", labels={"app": "web"}, ips=("10.244.1.5", "fd00::5"), ports=(("http", 80),))
    )
    assert isinstance(pod, Pod)
    assert pod.uid == "uid-default-a"
    assert pod.metadata.labels == {"app": "web"}
    assert pod.ips() == ("10.244.1.5", "fd00::5")
    assert [(p.name, p.container_port) for p in pod.container_ports()] == [("http", 80)]
    assert pod.spec.node_name == "n1"
    assert pod.metadata.annotations == {}  # not read by the compiler, not held


def _changed(body: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    out = copy.deepcopy(body)
    node = out
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return out


@pytest.mark.parametrize(
    ("kind", "body", "path", "value", "same"),
    [
        ("Pod", pod_body("a"), ("status", "conditions"), [], True),
        ("Pod", pod_body("a"), ("metadata", "resourceVersion"), "2", True),
        ("Pod", pod_body("a"), ("metadata", "annotations"), {"x": "y"}, True),
        ("Pod", pod_body("a"), ("metadata", "labels"), {"app": "x"}, False),
        ("Pod", pod_body("a"), ("status", "phase"), "Succeeded", False),
        ("Pod", pod_body("a"), ("status", "podIPs"), [{"ip": "10.0.0.9"}], False),
        ("Node", node_body("n1"), ("status", "conditions"), [], True),
        ("Node", node_body("n1"), ("spec", "podCIDRs"), ["10.9.0.0/24"], False),
        ("Namespace", namespace_body("x"), ("status", "phase"), "Terminating", True),
        ("Namespace", namespace_body("x"), ("metadata", "labels"), {"team": "a"}, False),
        ("NetworkPolicy", policy_body("p"), ("metadata", "generation"), 2, True),
        ("NetworkPolicy", policy_body("p"), ("spec", "podSelector"), {"matchLabels": {"a": "b"}}, False),
    ],
    ids=[
        "pod-conditions",
        "pod-resourceVersion",
        "pod-annotations",
        "pod-labels",
        "pod-phase",
        "pod-ips",
        "node-heartbeat",
        "node-podCIDRs",
        "namespace-phase",
        "namespace-labels",
        "policy-generation",
        "policy-spec",
    ],
)
def test_only_what_the_compiler_reads_makes_a_difference(
    kind: Kind, body: dict[str, Any], path: tuple[str, ...], value: Any, same: bool
) -> None:
    assert (parse(kind, body) == parse(kind, _changed(body, path, value))) is same


def test_policy_parses_as_the_api_shows_it() -> None:
    spec = {"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [{"from": [{"podSelector": {}}]}]}
    policy = parse("NetworkPolicy", policy_body("p", spec=spec))
    assert isinstance(policy, NetworkPolicy)
    assert policy.key == "default/p"
    assert policy.spec.pod_selector.match_labels == {"app": "web"}


def test_a_policy_field_the_model_does_not_know_is_an_error_naming_the_object() -> None:
    body = policy_body("p", ns="team", spec={"podSelector": {}, "futureField": True})
    with pytest.raises(UnreadableObject, match=r"NetworkPolicy team/p: .*futureField"):
        parse("NetworkPolicy", body)


def _pod(body: dict[str, Any]) -> Pod:
    pod = parse("Pod", body)
    assert isinstance(pod, Pod)
    return pod


def test_pods_of_one_spec_share_it_and_stay_equal_to_what_pydantic_parses() -> None:
    bodies = [pod_body(n, ips=(f"10.0.0.{i}",), ports=(("http", 80),)) for i, n in enumerate("abc", 1)]
    other = pod_body("d", ports=(("http", 81),))
    a, b, c, d = (_pod(body) for body in [*bodies, other])
    assert a.spec is b.spec is c.spec
    assert d.spec is not a.spec and d.spec.containers[0].ports[0].container_port == 81
    for pod, body in zip((a, b, c, d), [*bodies, other], strict=True):
        # The oracle: pydantic's own parse of the same trimmed fields, nothing shared.
        plain = Pod.model_validate(
            {"metadata": body["metadata"], "spec": body["spec"], "status": body["status"]}
        )
        assert (pod.spec, pod.status) == (plain.spec, plain.status)
        assert (pod.uid, pod.metadata.labels) == (plain.uid, plain.metadata.labels)
        assert pod.ips() == plain.ips() and pod.container_ports() == plain.container_ports()
        assert pod.model_fields_set == plain.model_fields_set


def test_a_copy_of_a_compact_pod_changes_no_other_pod() -> None:
    a, b = (_pod(pod_body(n)) for n in "ab")
    fields_before = set(b.status.model_fields_set)
    changed = a.status.model_copy(update={"pod_ip": "10.0.0.9"})
    assert changed.pod_ip == "10.0.0.9" and "pod_ip" in changed.model_fields_set
    assert b.status.model_fields_set == fields_before
    assert b.status.pod_ip is None and a.status.pod_ip is None


def test_namespaces_labels_and_phases_of_separately_parsed_pods_are_one_string_each() -> None:
    # Each body from its own JSON text, as two API responses would bring them: equal strings,
    # distinct objects, until parsed.
    a, b = (_pod(json.loads(json.dumps(pod_body(n, labels={"app": "web", "tier": "front"})))) for n in "ab")
    assert a.metadata.namespace is b.metadata.namespace
    assert a.status.phase is b.status.phase
    for (ka, va), (kb, vb) in zip(a.metadata.labels.items(), b.metadata.labels.items(), strict=True):
        assert ka is kb and va is vb
    assert a.metadata.labels == {"app": "web", "tier": "front"}


def test_labels_that_are_not_strings_are_still_refused() -> None:
    body = pod_body("a")
    body["metadata"]["labels"] = {"app": 7}
    with pytest.raises(UnreadableObject, match="labels"):
        parse("Pod", body)
