"""Validation of NetworkPolicy (the API server's rules) and of what Stockade uses in Pods,
Namespaces and Nodes: one case per rule, valid and invalid."""

from __future__ import annotations

import copy
import ipaddress
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from compiler.errors import Problem
from compiler.model import NetworkPolicy
from compiler.validation import parse_namespace, parse_node, parse_pod, parse_policy, validate_policy

FILE, OBJ = "policies.yaml", "NetworkPolicy x/p"


def policy(spec: dict[str, Any] | None = None, **metadata: Any) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "p", "namespace": "x", **metadata},
        "spec": {"podSelector": {}, **(spec or {})},
    }


def peer(p: dict[str, Any]) -> dict[str, Any]:
    """A policy whose only ingress rule has this one peer."""
    return policy({"ingress": [{"from": [p]}]})


def port(p: dict[str, Any]) -> dict[str, Any]:
    return policy({"ingress": [{"ports": [p]}]})


def selector(s: Any) -> dict[str, Any]:
    return policy({"podSelector": s})


def problems_of(doc: dict[str, Any]) -> list[tuple[str, str]]:
    checked = parse_policy(doc, file=FILE, obj=OBJ)
    assert all(p.file == FILE and p.obj == OBJ for p in checked.problems)
    assert (checked.value is None) == bool(checked.problems)
    return [(p.field, p.message) for p in checked.problems]


VALID = [
    pytest.param(policy(), id="deny-all-ingress"),
    pytest.param(policy(name="a.b-c"), id="name-with-dots"),
    pytest.param(policy(labels={"app": "web", "example.com/tier": "", "A_b.c": "v1.2_x"}), id="labels"),
    pytest.param(policy(annotations={"Example.COM/Note": "anything at all"}), id="annotation-key-any-case"),
    pytest.param(policy(annotations={"big": "x" * 262141}), id="annotations-256KiB"),
    pytest.param(policy(uid="u", resourceVersion="1", creationTimestamp=None), id="server-fields"),
    pytest.param(selector({"matchLabels": {"app": "web"}}), id="match-labels"),
    pytest.param(selector({"matchLabels": None, "matchExpressions": None}), id="null-means-absent"),
    pytest.param(selector({"matchExpressions": [{"key": "t", "operator": "In", "values": ["a"]}]}), id="in"),
    pytest.param(
        selector({"matchExpressions": [{"key": "t", "operator": "NotIn", "values": ["a"]}]}), id="notin"
    ),
    pytest.param(selector({"matchExpressions": [{"key": "t", "operator": "Exists"}]}), id="exists"),
    pytest.param(
        selector({"matchExpressions": [{"key": "t", "operator": "DoesNotExist", "values": []}]}), id="dne"
    ),
    pytest.param(peer({"podSelector": {}}), id="peer-pods"),
    pytest.param(peer({"namespaceSelector": {}}), id="peer-namespaces"),
    pytest.param(peer({"podSelector": {}, "namespaceSelector": {}}), id="peer-pods-in-namespaces"),
    pytest.param(peer({"ipBlock": {"cidr": "10.0.0.0/8"}}), id="ipblock-v4"),
    pytest.param(peer({"ipBlock": {"cidr": "2001:db8::/32"}}), id="ipblock-v6"),
    pytest.param(peer({"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8"]}}), id="except"),
    pytest.param(
        peer({"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.0.0.1/32", "10.1.0.0/16"]}}), id="excepts"
    ),
    pytest.param(peer({"ipBlock": {"cidr": "10.0.0.1/8"}}), id="cidr-host-bits"),
    pytest.param(peer({"podSelector": {}, "ipBlock": None}), id="null-ipblock"),
    pytest.param(port({"protocol": "UDP", "port": 53}), id="udp"),
    pytest.param(port({"protocol": "SCTP"}), id="sctp-all-ports"),
    pytest.param(port({"port": 1}), id="port-1"),
    pytest.param(port({"port": 65535}), id="port-65535"),
    pytest.param(port({"port": "http"}), id="named-port"),
    pytest.param(port({"port": 80, "endPort": 90}), id="range"),
    pytest.param(port({"port": 80, "endPort": 80}), id="range-of-one"),
    pytest.param(port({"port": 1, "endPort": 65535}), id="range-all"),
    pytest.param(policy({"policyTypes": ["Ingress"]}), id="types-ingress"),
    pytest.param(policy({"policyTypes": ["Egress"], "egress": [{}]}), id="types-egress"),
    pytest.param(policy({"policyTypes": ["Ingress", "Egress"]}), id="types-both"),
    pytest.param(policy({"policyTypes": ["Ingress", "Ingress"]}), id="types-duplicate-as-upstream"),
    pytest.param(policy({"ingress": None, "egress": [{"to": None, "ports": None}]}), id="null-rules"),
    pytest.param(policy({"ingress": [{}]}), id="allow-all-ingress"),
    pytest.param({**policy(), "status": {}}, id="status"),
]


@pytest.mark.parametrize("doc", VALID)
def test_valid_policies(doc: dict[str, Any]) -> None:
    checked = parse_policy(doc, file=FILE, obj=OBJ)
    assert checked.problems == ()
    assert isinstance(checked.value, NetworkPolicy)


INVALID = [
    # metadata
    pytest.param(policy(name="Deny_All"), "metadata.name", "RFC 1123 subdomain", id="name-syntax"),
    pytest.param(policy(name=""), "metadata.name", "required value", id="name-empty"),
    pytest.param(
        policy(name=None, generateName="p-"),
        "metadata.name",
        "generateName needs the API server",
        id="generate-name",
    ),
    pytest.param(policy(name="a" * 254), "metadata.name", "no more than 253 bytes", id="name-254"),
    pytest.param(policy(namespace="a.b"), "metadata.namespace", "must not contain dots", id="namespace-dots"),
    pytest.param(policy(namespace="X"), "metadata.namespace", "RFC 1123 label", id="namespace-upper"),
    pytest.param(policy(labels={"-app": "x"}), "metadata.labels[-app]", "invalid label key", id="label-key"),
    pytest.param(
        policy(labels={"a/b/c": "x"}), "metadata.labels[a/b/c]", "invalid label key", id="label-key-slashes"
    ),
    pytest.param(
        policy(labels={"app": "a b"}), "metadata.labels[app]", "invalid label value", id="label-value"
    ),
    pytest.param(
        policy(labels={"app": "x" * 64}), "metadata.labels[app]", "no more than 63", id="label-value-64"
    ),
    pytest.param(
        policy(labels={"app": True}),
        "metadata.labels[app]",
        "YAML reads unquoted y/n/yes/no",
        id="label-bool",
    ),
    pytest.param(
        policy(labels={"v": 1.1}), "metadata.labels[v]", "got a number (1.1); quote", id="label-number"
    ),
    pytest.param(
        policy(labels={1: "x"}), "metadata.labels[1]", "map keys must be strings", id="label-key-int"
    ),
    pytest.param(
        policy(annotations={"a b": "x"}), "metadata.annotations[a b]", "annotation key", id="annotation"
    ),
    pytest.param(
        policy(annotations={"big": "x" * 262142}),
        "metadata.annotations",
        "262144 bytes",
        id="annotations-too-big",
    ),
    pytest.param(
        policy(nmae="p"), "metadata.nmae", 'unknown field "nmae" (did you mean "name"?)', id="meta-typo"
    ),
    # label selectors
    pytest.param(
        selector({"matchLabels": {"app": "-web"}}),
        "spec.podSelector.matchLabels[app]",
        "label value",
        id="ml-value",
    ),
    pytest.param(
        selector({"matchLabels": {"/app": "web"}}),
        "spec.podSelector.matchLabels[/app]",
        "prefix part must be non-empty",
        id="ml-key",
    ),
    pytest.param(
        selector({"matchExpressions": [{"key": "t", "operator": "In"}]}),
        "spec.podSelector.matchExpressions[0].values",
        "must be specified when `operator` is 'In' or 'NotIn'",
        id="in-without-values",
    ),
    pytest.param(
        selector({"matchExpressions": [{"key": "t", "operator": "NotIn", "values": []}]}),
        "spec.podSelector.matchExpressions[0].values",
        "must be specified",
        id="notin-empty-values",
    ),
    pytest.param(
        selector({"matchExpressions": [{"key": "t", "operator": "Exists", "values": ["a"]}]}),
        "spec.podSelector.matchExpressions[0].values",
        "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
        id="exists-with-values",
    ),
    pytest.param(
        selector({"matchExpressions": [{"key": "t", "operator": "DoesNotExist", "values": ["a"]}]}),
        "spec.podSelector.matchExpressions[0].values",
        "may not be specified",
        id="dne-with-values",
    ),
    pytest.param(
        selector({"matchExpressions": [{"key": "t", "operator": "in", "values": ["a"]}]}),
        "spec.podSelector.matchExpressions[0].operator",
        'unsupported value "in": supported values: "In", "NotIn", "Exists", "DoesNotExist"',
        id="operator",
    ),
    pytest.param(
        selector({"matchExpressions": [{"key": "a b", "operator": "Exists"}]}),
        "spec.podSelector.matchExpressions[0].key",
        "name part must consist of",
        id="expression-key",
    ),
    pytest.param(
        selector({"matchExpressions": [{"key": "t", "operator": "In", "values": ["ok", "not ok"]}]}),
        "spec.podSelector.matchExpressions[0].values[1]",
        "a valid label must be",
        id="expression-value",
    ),
    pytest.param(
        selector("x"),
        "spec.podSelector",
        'must be an object (a mapping), got a string ("x")',
        id="selector-str",
    ),
    pytest.param(policy({"podSelector": None}), "spec.podSelector", "required value", id="selector-missing"),
    # peers
    pytest.param(peer({}), "spec.ingress[0].from[0]", "must specify a peer", id="empty-peer"),
    pytest.param(
        peer({"podSelector": None}), "spec.ingress[0].from[0]", "must specify a peer", id="null-peer"
    ),
    pytest.param(
        peer({"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}),
        "spec.ingress[0].from[0]",
        "may not specify both ipBlock and another peer",
        id="ipblock-and-pods",
    ),
    pytest.param(
        peer({"ipBlock": {"cidr": "10.0.0.0/8"}, "namespaceSelector": {}}),
        "spec.ingress[0].from[0]",
        "may not specify both",
        id="ipblock-and-namespaces",
    ),
    pytest.param(
        policy({"egress": [{"to": [{"podSelector": {"matchLabels": {"a": "-"}}}]}]}),
        "spec.egress[0].to[0].podSelector.matchLabels[a]",
        "label value",
        id="egress-peer-selector",
    ),
    pytest.param(
        peer({"namespaceSelector": {"matchExpressions": [{"key": "k", "operator": "In"}]}}),
        "spec.ingress[0].from[0].namespaceSelector.matchExpressions[0].values",
        "must be specified",
        id="namespace-selector-expression",
    ),
    # ipBlock
    pytest.param(
        peer({"ipBlock": {"cidr": ""}}),
        "spec.ingress[0].from[0].ipBlock.cidr",
        "required value",
        id="cidr-empty",
    ),
    pytest.param(
        peer({"ipBlock": {}}), "spec.ingress[0].from[0].ipBlock.cidr", "required value", id="cidr-missing"
    ),
    pytest.param(
        peer({"ipBlock": {"cidr": "10.0.0.0"}}),
        "spec.ingress[0].from[0].ipBlock.cidr",
        "valid CIDR",
        id="cidr-no-prefix",
    ),
    pytest.param(
        peer({"ipBlock": {"cidr": "10.0.0.0/33"}}),
        "spec.ingress[0].from[0].ipBlock.cidr",
        "longer than 32",
        id="cidr-33",
    ),
    pytest.param(
        peer({"ipBlock": {"cidr": "010.0.0.0/8"}}),
        "spec.ingress[0].from[0].ipBlock.cidr",
        "leading zeros",
        id="cidr-octal",
    ),
    pytest.param(
        peer({"ipBlock": {"cidr": 10}}),
        "spec.ingress[0].from[0].ipBlock.cidr",
        "must be a string",
        id="cidr-int",
    ),
    pytest.param(
        peer({"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.0.0.0/8"]}}),
        "spec.ingress[0].from[0].ipBlock.except[0]",
        "must be a strict subset of `cidr`",
        id="except-equal",
    ),
    pytest.param(
        peer({"ipBlock": {"cidr": "10.0.0.0/16", "except": ["10.0.0.0/8"]}}),
        "spec.ingress[0].from[0].ipBlock.except[0]",
        "strict subset",
        id="except-wider",
    ),
    pytest.param(
        peer({"ipBlock": {"cidr": "10.0.0.0/16", "except": ["10.1.0.0/24"]}}),
        "spec.ingress[0].from[0].ipBlock.except[0]",
        "strict subset",
        id="except-outside",
    ),
    pytest.param(
        peer({"ipBlock": {"cidr": "0.0.0.0/0", "except": ["2001:db8::/32"]}}),
        "spec.ingress[0].from[0].ipBlock.except[0]",
        "strict subset",
        id="except-other-family",
    ),
    pytest.param(
        peer({"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.0.0.0/8/8"]}}),
        "spec.ingress[0].from[0].ipBlock.except[0]",
        "valid CIDR",
        id="except-syntax",
    ),
    pytest.param(
        peer({"ipBlock": {"cidr": "bad", "except": ["also bad"]}}),
        "spec.ingress[0].from[0].ipBlock.cidr",
        "valid CIDR",
        id="except-unchecked-when-cidr-is-bad",
    ),
    pytest.param(
        peer({"ipBlock": {"cidr": "10.0.0.0/8", "exept": []}}),
        "spec.ingress[0].from[0].ipBlock.exept",
        'unknown field "exept" (did you mean "except"?)',
        id="except-typo",
    ),
    # ports
    pytest.param(
        port({"protocol": "tcp"}),
        "spec.ingress[0].ports[0].protocol",
        'unsupported value "tcp": supported values: "TCP", "UDP", "SCTP"',
        id="protocol-lowercase",
    ),
    pytest.param(
        port({"protocol": "ICMP"}), "spec.ingress[0].ports[0].protocol", "unsupported value", id="icmp"
    ),
    pytest.param(port({"port": 0}), "spec.ingress[0].ports[0].port", "between 1 and 65535", id="port-0"),
    pytest.param(
        port({"port": 65536}), "spec.ingress[0].ports[0].port", "between 1 and 65535", id="port-65536"
    ),
    pytest.param(
        port({"port": "80"}), "spec.ingress[0].ports[0].port", "at least one letter", id="port-digit-string"
    ),
    pytest.param(
        port({"port": "a-long-port-name"}), "spec.ingress[0].ports[0].port", "no more than 15", id="port-16"
    ),
    pytest.param(
        port({"port": "ht--tp"}), "spec.ingress[0].ports[0].port", "consecutive hyphens", id="port-hyphens"
    ),
    pytest.param(
        port({"port": "-http"}), "spec.ingress[0].ports[0].port", "begin or end", id="port-edge-hyphen"
    ),
    pytest.param(
        port({"port": 80.5}), "spec.ingress[0].ports[0].port", "got a number (80.5)", id="port-float"
    ),
    pytest.param(
        port({"port": 80.0}), "spec.ingress[0].ports[0].port", "got a number (80.0)", id="port-float-whole"
    ),
    pytest.param(
        port({"port": True}), "spec.ingress[0].ports[0].port", "got a boolean (true)", id="port-bool"
    ),
    pytest.param(port({"port": [80]}), "spec.ingress[0].ports[0].port", "got a list", id="port-list"),
    pytest.param(
        port({"port": 90, "endPort": 80}),
        "spec.ingress[0].ports[0].endPort",
        "must be greater than or equal to `port`",
        id="end-before-start",
    ),
    pytest.param(
        port({"port": 80, "endPort": 65536}),
        "spec.ingress[0].ports[0].endPort",
        "between 1 and 65535",
        id="end-65536",
    ),
    pytest.param(
        port({"port": "http", "endPort": 90}),
        "spec.ingress[0].ports[0].endPort",
        "may not be specified when `port` is non-numeric",
        id="end-with-named-port",
    ),
    pytest.param(
        port({"endPort": 90}),
        "spec.ingress[0].ports[0].endPort",
        "may not be specified when `port` is not specified",
        id="end-without-port",
    ),
    pytest.param(
        port({"port": 80, "endPort": "90"}),
        "spec.ingress[0].ports[0].endPort",
        "must be an integer",
        id="end-str",
    ),
    pytest.param(
        port({"port": 80, "endPort": False}), "spec.ingress[0].ports[0].endPort", "boolean", id="end-bool"
    ),
    pytest.param(
        policy({"egress": [{"ports": [{"port": 0}]}]}),
        "spec.egress[0].ports[0].port",
        "between 1",
        id="egress-port",
    ),
    # policyTypes
    pytest.param(
        policy({"policyTypes": ["Sideways"]}),
        "spec.policyTypes[0]",
        'unsupported value "Sideways": supported values: "Ingress", "Egress"',
        id="type-unknown",
    ),
    pytest.param(
        policy({"policyTypes": ["Ingress", "Egress", "Ingress"]}),
        "spec.policyTypes",
        "may not specify more than two policyTypes",
        id="types-three",
    ),
    pytest.param(
        policy({"policyTypes": "Ingress"}), "spec.policyTypes", "must be a list", id="types-not-a-list"
    ),
    # structure
    pytest.param(
        policy({"ingress": [{"form": [{"podSelector": {}}]}]}),
        "spec.ingress[0].form",
        'unknown field "form" (did you mean "from"?)',
        id="from-typo",
    ),
    pytest.param(
        policy({"ingress": {"from": []}}), "spec.ingress", "must be a list, got an object", id="rules-mapping"
    ),
    pytest.param({**policy(), "spec": None}, "spec", "required value", id="no-spec"),
    pytest.param({**policy(), "sepc": {}}, "sepc", 'did you mean "spec"?', id="spec-typo"),
    pytest.param(
        {**policy(), "apiVersion": "extensions/v1beta1"}, "apiVersion", "unsupported value", id="api-version"
    ),
]


@pytest.mark.parametrize(("doc", "field", "fragment"), INVALID)
def test_invalid_policies(doc: dict[str, Any], field: str, fragment: str) -> None:
    problems = problems_of(doc)
    assert [f for f, _ in problems] == [field], problems
    assert fragment in problems[0][1]


def test_every_problem_of_a_policy_is_reported_at_once() -> None:
    doc = policy(
        {
            "podSelector": {"matchLabels": {"app": True}},
            "policyTypes": ["Ingress", "Sideways"],
            "ingress": [
                {
                    "from": [{}, {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["11.0.0.0/16"]}}],
                    "ports": [{"port": 0}, {"port": "http", "endPort": 9}],
                }
            ],
            "egress": [{"to": [{"podselector": {}}]}],
        },
        name="Bad",
    )
    assert sorted(f for f, _ in problems_of(doc)) == sorted(
        [
            "metadata.name",
            "spec.podSelector.matchLabels[app]",
            "spec.policyTypes[1]",
            "spec.ingress[0].from[0]",
            "spec.ingress[0].from[1].ipBlock.except[0]",
            "spec.ingress[0].ports[0].port",
            "spec.ingress[0].ports[1].endPort",
            "spec.egress[0].to[0]",  # must specify a peer...
            "spec.egress[0].to[0].podselector",  # ...because this one is misspelt
        ]
    )


def test_problems_print_with_file_object_and_field() -> None:
    checked = parse_policy(port({"port": 0}), file=FILE, obj=OBJ)
    assert [str(p) for p in checked.problems] == [
        "policies.yaml: NetworkPolicy x/p: spec.ingress[0].ports[0].port: invalid value 0: "
        "must be between 1 and 65535, inclusive"
    ]


def test_cidrs_are_stored_as_networks_with_a_note_for_host_bits() -> None:
    doc = peer({"ipBlock": {"cidr": "10.1.2.3/8", "except": ["10.1.0.9/16", "10.2.0.0/16"]}})
    checked = parse_policy(doc, file=FILE, obj=OBJ)
    assert checked.value is not None
    block = checked.value.spec.ingress[0].from_[0].ip_block
    assert block is not None
    assert (block.cidr, block.except_) == ("10.0.0.0/8", ("10.1.0.0/16", "10.2.0.0/16"))
    assert checked.notes == (
        "policies.yaml: NetworkPolicy x/p: spec.ingress[0].from[0].ipBlock.cidr: "
        "10.1.2.3/8 has host bits set; read as 10.0.0.0/8, as the API server does",
        "policies.yaml: NetworkPolicy x/p: spec.ingress[0].from[0].ipBlock.except[0]: "
        "10.1.0.9/16 has host bits set; read as 10.1.0.0/16, as the API server does",
    )


def test_parsing_does_not_change_the_input() -> None:
    doc = peer({"ipBlock": {"cidr": "10.1.2.3/8"}})
    before = copy.deepcopy(doc)
    parse_policy(doc, file=FILE, obj=OBJ)
    assert doc == before


def test_validate_policy_takes_data_or_a_model() -> None:
    bad = port({"port": 0})
    expected = [
        Problem(
            FILE,
            OBJ,
            "spec.ingress[0].ports[0].port",
            "invalid value 0: must be between 1 and 65535, inclusive",
        )
    ]
    assert validate_policy(bad, file=FILE, obj=OBJ) == expected
    # A model built directly (not through the loader) has had only its types checked.
    assert validate_policy(NetworkPolicy.model_validate(bad), file=FILE, obj=OBJ) == expected
    assert validate_policy(NetworkPolicy.model_validate(policy()), file=FILE, obj=OBJ) == []


@given(
    st.integers(0, 2**32 - 1),
    st.integers(0, 32),
    st.integers(0, 2**32 - 1),
    st.integers(0, 32),
)
def test_except_must_lie_strictly_inside_cidr(
    outer_ip: int, outer_len: int, inner_ip: int, inner_len: int
) -> None:
    outer = ipaddress.IPv4Network((outer_ip, outer_len), strict=False)
    inner = ipaddress.IPv4Network((inner_ip, inner_len), strict=False)
    doc = peer({"ipBlock": {"cidr": str(outer), "except": [str(inner)]}})
    inside = inner != outer and inner.subnet_of(outer)
    assert (problems_of(doc) == []) == inside


@given(st.integers(0, 2**128 - 1), st.integers(0, 128), st.integers(0, 128))
def test_an_except_carved_from_a_v6_cidr_is_valid(address: int, outer_len: int, extra: int) -> None:
    outer = ipaddress.IPv6Network((address, outer_len), strict=False)
    inner = ipaddress.IPv6Network((address, min(128, outer_len + 1 + extra % 8)), strict=False)
    if outer.network_address.ipv4_mapped is not None or outer_len == 128:
        return
    assert problems_of(peer({"ipBlock": {"cidr": str(outer), "except": [str(inner)]}})) == []


# --- Pods, Namespaces, Nodes -------------------------------------------------------------------------------


def pod(
    spec: dict[str, Any] | None = None, status: dict[str, Any] | None = None, **metadata: Any
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "a", "namespace": "x", **metadata},
        "spec": spec or {"containers": [{"name": "c", "ports": [{"containerPort": 80, "name": "http"}]}]},
        "status": status or {"podIP": "10.0.0.1", "podIPs": [{"ip": "10.0.0.1"}, {"ip": "fd00::1"}]},
    }


def ports(*entries: dict[str, Any]) -> dict[str, Any]:
    return {"containers": [{"name": "c", "ports": list(entries)}]}


VALID_PODS = [
    pytest.param(pod(), id="dual-stack"),
    pytest.param(
        pod(labels={"app": "web"}, annotations={"any key at all": "x"}), id="labels-annotations-unchecked"
    ),
    pytest.param(pod(status={"phase": "Pending"}), id="no-ip-yet"),
    pytest.param(
        pod(spec={"hostNetwork": True, "nodeName": "n1", "volumes": [{"name": "v"}]}), id="host-network"
    ),
    pytest.param(pod(ports({"containerPort": 53, "protocol": "UDP", "name": "dns"})), id="udp-port"),
    pytest.param(
        pod(
            {
                "containers": [
                    {"name": "a", "ports": [{"containerPort": 1, "name": "p"}]},
                    {"name": "b", "ports": [{"containerPort": 2, "name": "p"}]},
                ]
            }
        ),
        id="same-port-name-in-two-containers",
    ),
    pytest.param(
        pod({"initContainers": [{"name": "i", "ports": [{"containerPort": 9}]}]}), id="init-container"
    ),
]


@pytest.mark.parametrize("doc", VALID_PODS)
def test_valid_pods(doc: dict[str, Any]) -> None:
    assert parse_pod(doc, file=FILE, obj="Pod x/a").problems == ()


INVALID_PODS = [
    pytest.param(pod(name="A"), "metadata.name", "RFC 1123 subdomain", id="name"),
    pytest.param(pod(labels={"app": "a b"}), "metadata.labels[app]", "label value", id="label"),
    pytest.param(pod(status={"podIP": "10.0.0.256"}), "status.podIP", "valid IP address", id="pod-ip"),
    pytest.param(
        pod(status={"podIPs": [{"ip": "x"}]}), "status.podIPs[0].ip", "valid IP address", id="pod-ips"
    ),
    pytest.param(
        pod(status={"podIPs": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}]}),
        "status.podIPs",
        "one IP for each IP family",
        id="two-v4",
    ),
    pytest.param(
        pod(status={"podIP": "10.0.0.1", "podIPs": [{"ip": "10.0.0.2"}]}),
        "status.podIPs[0].ip",
        "must equal status.podIP",
        id="pod-ip-mismatch",
    ),
    pytest.param(
        pod(ports({"containerPort": 0})),
        "spec.containers[0].ports[0].containerPort",
        "between 1",
        id="port-0",
    ),
    pytest.param(
        pod(ports({"containerPort": True})), "spec.containers[0].ports[0].containerPort", "boolean", id="bool"
    ),
    pytest.param(
        pod(ports({"name": "http"})), "spec.containers[0].ports[0].containerPort", "required", id="no-number"
    ),
    pytest.param(
        pod(ports({"containerPort": 80, "name": "Http"}, {"containerPort": 81, "name": "x"})),
        "spec.containers[0].ports[0].name",
        "alpha-numeric",
        id="port-name-upper",
    ),
    pytest.param(
        pod(ports({"containerPort": 80, "name": "web"}, {"containerPort": 81, "name": "web"})),
        "spec.containers[0].ports[1].name",
        'duplicate value "web"',
        id="duplicate-port-name",
    ),
    pytest.param(
        pod(ports({"containerPort": 80, "protocol": "tcp"})),
        "spec.containers[0].ports[0].protocol",
        "unsupported value",
        id="protocol",
    ),
    pytest.param(pod(spec={"containers": "x"}), "spec.containers", "must be a list", id="containers-str"),
    # A host-network pod is exempt from every policy: "yes" must not quietly make one.
    pytest.param(
        pod(spec={"hostNetwork": "yes"}), "spec.hostNetwork", "true or false", id="host-network-str"
    ),
    pytest.param(pod(spec={"hostNetwork": 1}), "spec.hostNetwork", "true or false", id="host-network-int"),
]


@pytest.mark.parametrize(("doc", "field", "fragment"), INVALID_PODS)
def test_invalid_pods(doc: dict[str, Any], field: str, fragment: str) -> None:
    checked = parse_pod(doc, file=FILE, obj="Pod x/a")
    assert [p.field for p in checked.problems] == [field], checked.problems
    assert fragment in checked.problems[0].message
    assert checked.value is None


def test_pod_problems_are_rebased_onto_the_template_they_came_from() -> None:
    doc = pod(ports({"containerPort": 0}), labels={"app": "-"})
    rebase = (("metadata.labels", "spec.template.metadata.labels"), ("spec", "spec.template.spec"))
    checked = parse_pod(doc, file=FILE, obj="Deployment x/a", rebase=rebase)
    assert sorted(p.field for p in checked.problems) == [
        "spec.template.metadata.labels[app]",
        "spec.template.spec.containers[0].ports[0].containerPort",
    ]


def test_pods_keep_what_stockade_uses() -> None:
    checked = parse_pod(pod(labels={"app": "web"}), file=FILE, obj="Pod x/a")
    assert checked.value is not None
    assert checked.value.ips() == ("10.0.0.1", "fd00::1")
    assert [(p.container_port, p.name) for p in checked.value.container_ports()] == [(80, "http")]


@pytest.mark.parametrize(
    ("name", "labels", "field"),
    [
        pytest.param("prod", {"team": "a"}, None, id="valid"),
        pytest.param("a.b", {}, "metadata.name", id="dotted-name"),
        pytest.param("prod", {"team": "a b"}, "metadata.labels[team]", id="bad-label"),
    ],
)
def test_namespaces(name: str, labels: dict[str, str], field: str | None) -> None:
    doc = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}
    checked = parse_namespace(doc, file=FILE, obj=f"Namespace {name}")
    assert [p.field for p in checked.problems] == ([field] if field else [])


def node(spec: dict[str, Any], addresses: list[dict[str, str]] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": "n1"},
        "spec": spec,
        "status": {"addresses": addresses or []},
    }


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        pytest.param(
            node({"podCIDR": "10.244.1.0/24", "podCIDRs": ["10.244.1.0/24", "fd00:1::/64"]}), None, id="valid"
        ),
        pytest.param(node({}, [{"type": "Hostname", "address": "n1"}]), None, id="hostname-not-an-ip"),
        pytest.param(node({"podCIDR": "10.244.1.0"}), "spec.podCIDR", id="pod-cidr"),
        pytest.param(node({"podCIDRs": ["10.0.0.0/24", "bad"]}), "spec.podCIDRs[1]", id="pod-cidrs"),
        pytest.param(node({"podCIDRs": ["10.0.0.0/24", "10.0.1.0/24"]}), "spec.podCIDRs", id="two-v4"),
        pytest.param(
            node({"podCIDR": "10.0.0.0/24", "podCIDRs": ["10.0.1.0/24"]}), "spec.podCIDRs[0]", id="mismatch"
        ),
        pytest.param(
            node({}, [{"type": "InternalIP", "address": "n1"}]),
            "status.addresses[0].address",
            id="internal-ip",
        ),
    ],
)
def test_nodes(doc: dict[str, Any], field: str | None) -> None:
    checked = parse_node(doc, file=FILE, obj="Node n1")
    assert [p.field for p in checked.problems] == ([field] if field else []), checked.problems


def test_node_pod_cidrs_are_stored_as_networks() -> None:
    checked = parse_node(
        node({"podCIDR": "10.244.1.7/24", "podCIDRs": ["10.244.1.7/24"]}), file=FILE, obj="Node n1"
    )
    assert checked.value is not None
    assert checked.value.pod_cidrs() == ("10.244.1.0/24",)
    assert len(checked.notes) == 2
