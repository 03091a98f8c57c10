"""Hypothesis strategies: random but valid cluster models over the lab's nine pods.

The vocabulary is small on purpose, so random selectors often match something:
- pods x/a … z/c are labelled ``pod=<name>`` and maybe ``tier=front|back``; namespaces may carry
  ``team=red|blue`` besides their name label;
- every pod serves 80 and 81 over TCP, UDP and SCTP; its TCP port 80 or 81 may be named ``web``
  instead of ``serve-<port>-tcp`` (and UDP ``dns`` likewise), so named ports resolve differently
  per destination pod;
- ipBlocks are drawn from the pods' own addresses: a host, the /28 (IPv6: /124, the same pods)
  around one, the node's pod CIDR, the /4 that holds them all, or everything; excepts are hosts
  inside the block. A block is written for IPv4, IPv6 or both, so one model serves both families.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from typing import Any

from hypothesis import strategies as st

from compiler.cluster import ClusterModel
from compiler.model import NetworkPolicy, Protocol
from compiler.validation import validate_policy
from tests.support.addressing import DEFAULT_POD_CIDR4, DEFAULT_POD_CIDR6, Family, PodAddress, supernet
from tests.support.conformance import (
    LAB_ADDRESSES,
    NAMESPACES,
    PODS,
    container_port,
    make_namespace,
    make_node,
    make_pod,
)

PORTS = (80, 81)
PROTOCOLS: tuple[Protocol, ...] = ("TCP", "UDP", "SCTP")
PROBES: tuple[tuple[Protocol, int], ...] = tuple((proto, port) for proto in PROTOCOLS for port in PORTS)
PORT_NAMES = ("web", "dns", "serve-80-tcp", "serve-81-udp", "serve-80-sctp", "missing")

_pod_values = st.sampled_from(["a", "b", "c", "d"])
_tiers = st.sampled_from(["front", "back"])


def _requirement(keys_values: Mapping[str, Sequence[str]]) -> st.SearchStrategy[dict[str, Any]]:
    key = st.sampled_from(sorted(keys_values))
    return key.flatmap(
        lambda k: st.one_of(
            st.builds(
                lambda op, vals: {"key": k, "operator": op, "values": sorted(set(vals))},
                st.sampled_from(["In", "NotIn"]),
                st.lists(st.sampled_from(list(keys_values[k])), min_size=1, max_size=2),
            ),
            st.sampled_from([{"key": k, "operator": "Exists"}, {"key": k, "operator": "DoesNotExist"}]),
        )
    )


def selectors(keys_values: Mapping[str, Sequence[str]]) -> st.SearchStrategy[dict[str, Any]]:
    """A label selector over the vocabulary; often empty (selects everything)."""
    match_labels = st.dictionaries(st.sampled_from(sorted(keys_values)), st.just(""), max_size=2).flatmap(
        lambda d: st.fixed_dictionaries({k: st.sampled_from(list(keys_values[k])) for k in d})
    )
    return st.builds(
        lambda ml, me: {
            **({"matchLabels": ml} if ml else {}),
            **({"matchExpressions": me} if me else {}),
        },
        match_labels,
        st.lists(_requirement(keys_values), max_size=2),
    )


POD_VOCABULARY = {"pod": ["a", "b", "c", "d"], "tier": ["front", "back"]}
NAMESPACE_VOCABULARY = {"kubernetes.io/metadata.name": list(NAMESPACES), "team": ["red", "blue"]}


def _block(address: PodAddress, family: Family, kind: str, excepts: Sequence[PodAddress]) -> dict[str, Any]:
    ip = address.address(family)
    bits = 32 if family == 4 else 128
    if kind == "host":
        cidr = f"{ip}/{bits}"
    elif kind == "small":
        cidr = supernet(ip, bits - 4)
    elif kind == "podcidr":
        cidr = DEFAULT_POD_CIDR4 if family == 4 else DEFAULT_POD_CIDR6
    elif kind == "slash4":
        cidr = supernet(ip, 4)
    else:
        cidr = "0.0.0.0/0" if family == 4 else "::/0"
    network = ipaddress.ip_network(cidr)
    inside = sorted(
        {e.address(family) for e in excepts if ipaddress.ip_address(e.address(family)) in network}
        - ({ip} if kind == "host" else set())
    )
    block: dict[str, Any] = {"cidr": cidr}
    if inside and network.prefixlen < bits:
        block["except"] = [f"{e}/{bits}" for e in inside]
    return block


@st.composite
def ip_block_peers(draw: st.DrawFn) -> list[dict[str, Any]]:
    anchor = draw(st.sampled_from(LAB_ADDRESSES))
    kind = draw(st.sampled_from(["host", "small", "podcidr", "slash4", "all"]))
    excepts = draw(st.lists(st.sampled_from(LAB_ADDRESSES), max_size=2))
    families: tuple[Family, ...] = draw(st.sampled_from([(4,), (6,), (4, 6)]))
    return [{"ipBlock": _block(anchor, f, kind, excepts)} for f in families]


@st.composite
def peer_lists(draw: st.DrawFn) -> list[dict[str, Any]]:
    peers: list[dict[str, Any]] = []
    for _ in range(draw(st.integers(0, 2))):
        shape = draw(st.sampled_from(["pod", "ns", "both", "ip"]))
        if shape == "ip":
            peers += draw(ip_block_peers())
            continue
        peer: dict[str, Any] = {}
        if shape in ("pod", "both"):
            peer["podSelector"] = draw(selectors(POD_VOCABULARY))
        if shape in ("ns", "both"):
            peer["namespaceSelector"] = draw(selectors(NAMESPACE_VOCABULARY))
        peers.append(peer)
    return peers


@st.composite
def policy_ports(draw: st.DrawFn) -> dict[str, Any]:
    port: dict[str, Any] = {}
    protocol = draw(st.sampled_from([None, *PROTOCOLS]))
    if protocol is not None:
        port["protocol"] = protocol
    kind = draw(st.sampled_from(["number", "number", "range", "name", "none"]))
    if kind == "number":
        port["port"] = draw(st.sampled_from([80, 81, 82]))
    elif kind == "range":
        port["port"] = draw(st.sampled_from([79, 80]))
        port["endPort"] = draw(st.sampled_from([80, 81]))
    elif kind == "name":
        port["port"] = draw(st.sampled_from(PORT_NAMES))
    return port


@st.composite
def rules(draw: st.DrawFn, peer_key: str) -> dict[str, Any]:
    rule: dict[str, Any] = {}
    ports = draw(st.lists(policy_ports(), max_size=2))
    if ports:
        rule["ports"] = ports
    peers = draw(peer_lists())
    if peers:
        rule[peer_key] = peers
    return rule


@st.composite
def policies(draw: st.DrawFn, index: int) -> dict[str, Any]:
    spec: dict[str, Any] = {"podSelector": draw(selectors(POD_VOCABULARY))}
    types = draw(st.sampled_from([None, ["Ingress"], ["Egress"], ["Ingress", "Egress"]]))
    if types is not None:
        spec["policyTypes"] = types
    if types is None or "Ingress" in types:
        spec["ingress"] = draw(st.lists(rules("from"), max_size=2))
    if types is None or "Egress" in types:
        spec["egress"] = draw(st.lists(rules("to"), max_size=2))
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": f"p{index}", "namespace": draw(st.sampled_from(NAMESPACES))},
        "spec": spec,
    }


@st.composite
def models(draw: st.DrawFn, max_policies: int = 3) -> ClusterModel:
    """A model of the nine lab pods on node-1 with 1..max_policies random valid policies."""
    pods = []
    for address, key in zip(LAB_ADDRESSES, PODS, strict=True):
        labels = {"pod": key.split("/")[1]}
        tier = draw(st.one_of(st.none(), _tiers))
        if tier:
            labels["tier"] = tier
        web = draw(st.sampled_from([None, 80, 81]))
        dns = draw(st.sampled_from([None, 80, 81]))
        ports = [
            container_port(
                port,
                proto,
                "web" if (proto, port) == ("TCP", web) else "dns" if (proto, port) == ("UDP", dns) else None,
            )
            for port in PORTS
            for proto in PROTOCOLS
        ]
        pods.append(make_pod(key, address, labels=labels, ports=ports))
    namespaces = []
    for ns in NAMESPACES:
        team = draw(st.one_of(st.none(), st.sampled_from(["red", "blue"])))
        namespaces.append(make_namespace(ns, {"team": team} if team else {}))
    raw = [draw(policies(i)) for i in range(draw(st.integers(1, max_policies)))]
    parsed = []
    for doc in raw:
        problems = validate_policy(doc, file="<hypothesis>", obj=doc["metadata"]["name"])
        if problems:  # the strategies promise valid policies: a problem here is their bug
            raise AssertionError(f"generated an invalid policy {doc}: {problems}")
        parsed.append(NetworkPolicy.model_validate(doc))
    return ClusterModel(
        namespaces=tuple(namespaces), pods=tuple(pods), policies=tuple(parsed), nodes=(make_node(),)
    )
