"""The upstream NetworkPolicy e2e cases (tests/data/upstream-netpol.yaml) as cluster models for the lab.

The data file's model: namespaces x, y, z; pods a, b, c in each, labelled ``pod=<name>``; every pod
serves each of the case's ports over each of its protocols, with container ports named
``serve-<port>-<proto>``. A step lists the complete set of policies in force, label overrides
(the full label set of a pod; extra labels of a namespace) and, per (port, protocol) probed,
the ordered pairs that must be blocked; every other pair must connect (no pod probes itself).

Here each (case, step, family) becomes a `Scenario`: a `ClusterModel` of one node ``node-1``
holding the nine pods at the lab's addresses (`tests.support.addressing`; every pod dual-stack,
IPv4 first), and the expected reachability of every ordered pair on each probed (protocol, port).

Symbolic ipBlock CIDRs are resolved per family:
- ``{ns/pod}/host``: the pod's address as /32 (IPv4) or /128 (IPv6);
- ``{ns/pod}/N``: the /N network that holds the pod's address in that family. For /4 that is
  0.0.0.0/4 for the lab's 10.244.1.0/24 and f000::/4 for its fd00:10:244:1::/64: in both
  families a network that holds every pod of the lab, so "all pods but the excepted one" means
  the same thing in IPv4 and IPv6.
A step's model for family 4 carries only IPv4 CIDRs and its model for family 6 only IPv6 ones,
exactly as upstream runs the suite once per IP family.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from compiler.cluster import ClusterModel
from compiler.model import Namespace, NetworkPolicy, Node, Pod, Protocol
from tests.support.addressing import (
    DEFAULT_NODE_IPV4,
    DEFAULT_NODE_IPV6,
    DEFAULT_POD_CIDR4,
    DEFAULT_POD_CIDR6,
    FAMILIES,
    Family,
    PodAddress,
    allocate,
    host_prefix,
    supernet,
)

DATA_FILE = Path(__file__).resolve().parents[1] / "data" / "upstream-netpol.yaml"
NAMESPACES = ("x", "y", "z")
POD_NAMES = ("a", "b", "c")
PODS: tuple[str, ...] = tuple(f"{ns}/{pod}" for ns in NAMESPACES for pod in POD_NAMES)
NODE_NAME = "node-1"
# Addresses of the nine pods, as the lab gives them (the unit tier uses the same ones).
LAB_ADDRESSES: tuple[PodAddress, ...] = allocate(PODS)

Pair = tuple[str, str]
Probe = tuple[Protocol, int]
ReachKey = tuple[str, str, Protocol, int]
_SYMBOLIC = re.compile(r"^\{(?P<pod>[^{}]+/[^{}]+)\}/(?P<len>host|\d+)$")


@dataclass(frozen=True)
class Step:
    index: int
    policies: tuple[Mapping[str, Any], ...]
    pod_labels: Mapping[str, Mapping[str, str]]
    namespace_labels: Mapping[str, Mapping[str, str]]
    # The (protocol, port)s probed in this step and, for each, the pairs that must be blocked.
    blocked: Mapping[Probe, frozenset[Pair]]


@dataclass(frozen=True)
class Case:
    id: int
    name: str
    ports: tuple[int, ...]
    protocols: tuple[Protocol, ...]
    steps: tuple[Step, ...]

    @property
    def slug(self) -> str:
        words = re.sub(r"[^a-z0-9]+", " ", self.name.lower()).split()
        if words and words[0] == "should":
            words = words[1:]
        slug = ""
        for word in words:
            if len(slug) + len(word) + 1 > 40:
                break
            slug = f"{slug}-{word}" if slug else word
        return slug


@dataclass(frozen=True)
class Scenario:
    """One (case, step, family): the model to compile and what every probe must find."""

    case: Case
    step: Step
    family: Family
    model: ClusterModel
    probes: tuple[Probe, ...]
    expected: Mapping[ReachKey, bool]

    @property
    def id(self) -> str:
        return f"case{self.case.id}-{self.case.slug}-step{self.step.index}-v{self.family}"

    def expected_matrix(self, probe: Probe) -> dict[Pair, bool]:
        return {(s, d): ok for (s, d, proto, port), ok in self.expected.items() if (proto, port) == probe}


# --- reading the data file ----------------------------------------------------------------------------


def _pair(text: str) -> Pair:
    src, sep, dst = text.partition("->")
    if not sep or src not in PODS or dst not in PODS or src == dst:
        raise ValueError(f"bad pair {text!r}")
    return src, dst


def load_cases(path: Path = DATA_FILE) -> tuple[Case, ...]:
    raw = yaml.safe_load(path.read_text())
    cases = []
    for item in raw:
        steps = []
        for index, step in enumerate(item["steps"]):
            blocked: dict[Probe, frozenset[Pair]] = {}
            for entry in step["expect_blocked"]:
                probe: Probe = (entry["protocol"], int(entry["port"]))
                if probe in blocked:
                    raise ValueError(f"case {item['id']} step {index}: {probe} listed twice")
                blocked[probe] = frozenset(_pair(p) for p in entry["pairs"])
            steps.append(
                Step(
                    index=index,
                    policies=tuple(step["policies"]),
                    pod_labels={k: dict(v) for k, v in (step.get("pod_labels") or {}).items()},
                    namespace_labels={k: dict(v) for k, v in (step.get("namespace_labels") or {}).items()},
                    blocked=blocked,
                )
            )
        cases.append(
            Case(
                id=int(item["id"]),
                name=str(item["name"]),
                ports=tuple(int(p) for p in item["ports"]),
                protocols=tuple(item["protocols"]),
                steps=tuple(steps),
            )
        )
    return tuple(cases)


# --- building models ----------------------------------------------------------------------------------


def resolve_cidr(text: str, family: Family, addresses: Mapping[str, PodAddress]) -> str:
    """A symbolic CIDR (``{ns/pod}/host``, ``{ns/pod}/N``) for one family; other text unchanged."""
    m = _SYMBOLIC.match(text)
    if not m:
        return text
    address = addresses[m.group("pod")].address(family)
    return host_prefix(address) if m.group("len") == "host" else supernet(address, int(m.group("len")))


def has_symbolic_cidr(value: Any) -> bool:
    """Whether a policy (or any part of one) names a pod's address symbolically."""
    if isinstance(value, str):
        return bool(_SYMBOLIC.match(value))
    if isinstance(value, list):
        return any(has_symbolic_cidr(v) for v in value)
    if isinstance(value, dict):
        return any(has_symbolic_cidr(v) for v in value.values())
    return False


def resolve_policy(
    policy: Mapping[str, Any], family: Family, addresses: Mapping[str, PodAddress]
) -> dict[str, Any]:
    """A policy of the data file as an API object for one family: symbolic CIDRs resolved."""
    resolved: dict[str, Any] = _resolve_all(dict(policy), family, addresses)
    return resolved


def pod_labels(step: Step, key: str) -> dict[str, str]:
    """The full label set of pod ``key`` (``ns/name``) in a step: ``pod=<name>`` unless overridden."""
    return dict(step.pod_labels.get(key, {"pod": key.split("/")[1]}))


def namespace_labels(step: Step, namespace: str) -> dict[str, str]:
    """The labels a step gives a namespace beyond ``kubernetes.io/metadata.name``."""
    return dict(step.namespace_labels.get(namespace, {}))


def serving_container_ports(cases: Sequence[Case] | None = None) -> list[dict[str, Any]]:
    """Container ports (named as the data file says) for every port and protocol of `cases`."""
    return [container_port(port, proto) for proto, ports in serving_ports(cases).items() for port in ports]


def _resolve_all(value: Any, family: Family, addresses: Mapping[str, PodAddress]) -> Any:
    if isinstance(value, str):
        return resolve_cidr(value, family, addresses)
    if isinstance(value, list):
        return [_resolve_all(v, family, addresses) for v in value]
    if isinstance(value, dict):
        return {k: _resolve_all(v, family, addresses) for k, v in value.items()}
    return value


def container_port(port: int, protocol: Protocol, name: str | None = None) -> dict[str, Any]:
    return {
        "containerPort": port,
        "protocol": protocol,
        "name": name or f"serve-{port}-{protocol.lower()}",
    }


def make_pod(
    key: str, address: PodAddress, *, labels: Mapping[str, str], ports: Iterable[Mapping[str, Any]]
) -> Pod:
    namespace, name = key.split("/")
    return Pod.model_validate(
        {
            "metadata": {"name": name, "namespace": namespace, "labels": dict(labels)},
            "spec": {"nodeName": NODE_NAME, "containers": [{"name": "cont", "ports": list(ports)}]},
            "status": {
                "phase": "Running",
                "podIP": address.ipv4,
                "podIPs": [{"ip": address.ipv4}, {"ip": address.ipv6}],
            },
        }
    )


def make_node(
    *,
    cidr4: str = DEFAULT_POD_CIDR4,
    cidr6: str = DEFAULT_POD_CIDR6,
    ipv4: str = DEFAULT_NODE_IPV4,
    ipv6: str = DEFAULT_NODE_IPV6,
) -> Node:
    return Node.model_validate(
        {
            "metadata": {"name": NODE_NAME},
            "spec": {"podCIDR": cidr4, "podCIDRs": [cidr4, cidr6]},
            "status": {
                "addresses": [
                    {"type": "InternalIP", "address": ipv4},
                    {"type": "InternalIP", "address": ipv6},
                    {"type": "Hostname", "address": NODE_NAME},
                ]
            },
        }
    )


def make_namespace(name: str, labels: Mapping[str, str]) -> Namespace:
    return Namespace.model_validate({"metadata": {"name": name, "labels": dict(labels)}})


def build_model(
    case: Case,
    step: Step,
    *,
    family: Family,
    addresses: Sequence[PodAddress] = LAB_ADDRESSES,
    node: Node | None = None,
) -> ClusterModel:
    by_name = {a.name: a for a in addresses}
    ports = [container_port(port, proto) for port in case.ports for proto in case.protocols]
    pods = tuple(
        make_pod(
            key,
            by_name[key],
            labels=pod_labels(step, key),
            ports=ports,
        )
        for key in PODS
    )
    namespaces = tuple(make_namespace(ns, namespace_labels(step, ns)) for ns in NAMESPACES)
    policies = tuple(NetworkPolicy.model_validate(resolve_policy(p, family, by_name)) for p in step.policies)
    return ClusterModel(namespaces=namespaces, pods=pods, policies=policies, nodes=(node or make_node(),))


def expected_reachability(step: Step) -> dict[ReachKey, bool]:
    return {
        (src, dst, proto, port): (src, dst) not in blocked
        for (proto, port), blocked in step.blocked.items()
        for src in PODS
        for dst in PODS
        if src != dst
    }


def scenarios(
    cases: Sequence[Case] | None = None,
    *,
    families: Sequence[Family] = FAMILIES,
    addresses: Sequence[PodAddress] = LAB_ADDRESSES,
    node: Node | None = None,
) -> list[Scenario]:
    """Every (case, step, family), in file order."""
    out = []
    for case in load_cases() if cases is None else cases:
        for step in case.steps:
            expected = expected_reachability(step)
            for family in families:
                out.append(
                    Scenario(
                        case=case,
                        step=step,
                        family=family,
                        model=build_model(case, step, family=family, addresses=addresses, node=node),
                        probes=tuple(step.blocked),
                        expected=expected,
                    )
                )
    return out


def serving_ports(cases: Sequence[Case] | None = None) -> dict[Protocol, tuple[int, ...]]:
    """The union of ports per protocol over all cases: what the lab's agents must serve."""
    out: dict[Protocol, set[int]] = {}
    for case in load_cases() if cases is None else cases:
        for proto in case.protocols:
            out.setdefault(proto, set()).update(case.ports)
    return {proto: tuple(sorted(ports)) for proto, ports in sorted(out.items())}
