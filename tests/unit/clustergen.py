"""Random small clusters for the plan and incremental tests (seeded, so a failure reproduces).

Three nodes with dual-stack podCIDRs, three namespaces, a dozen pods with labels and named
container ports (some dual-stack, some host-network, one finished pod whose address was reused),
and a few policies drawn from a vocabulary that makes selectors, ipBlocks, named ports, endPort
and protocol-only ports meet often.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import random
from typing import Any

from compiler.cluster import ClusterModel
from compiler.model import Namespace, NetworkPolicy, Node, Pod, Protocol

NODES = ("n1", "n2", "n3")
NAMESPACES = ("x", "y", "z")
LABELS: dict[str, tuple[str, ...]] = {"app": ("web", "db", "api"), "tier": ("front", "back")}
NS_LABELS: dict[str, tuple[str, ...]] = {"team": ("red", "blue")}
CONTAINER_PORTS = (
    {"containerPort": 80, "name": "http", "protocol": "TCP"},
    {"containerPort": 8080, "name": "http", "protocol": "TCP"},
    {"containerPort": 53, "name": "dns", "protocol": "UDP"},
    {"containerPort": 5000, "name": "assoc", "protocol": "SCTP"},
    {"containerPort": 81, "protocol": "TCP"},
)
POLICY_PORTS: tuple[dict[str, Any], ...] = (
    {"protocol": "TCP", "port": 80},
    {"protocol": "TCP", "port": 8000, "endPort": 8100},
    {"protocol": "UDP", "port": 53},
    {"protocol": "SCTP"},
    {"protocol": "TCP", "port": "http"},
    {"protocol": "UDP", "port": "dns"},
    {"protocol": "SCTP", "port": "assoc"},
    {"protocol": "TCP", "port": "missing"},
    {"protocol": "SCTP", "port": 5000},
)
PROBES: tuple[tuple[Protocol, int], ...] = (
    ("TCP", 80),
    ("TCP", 8080),
    ("TCP", 8050),
    ("TCP", 81),
    ("UDP", 53),
    ("SCTP", 5000),
)
EXTERNAL = ("203.0.113.9", "2001:db8::9")


def node_ip(i: int, family: int) -> str:
    return f"192.168.0.{10 + i}" if family == 4 else f"fd00:192::{10 + i:x}"


def make_node(i: int) -> Node:
    return Node.model_validate(
        {
            "metadata": {"name": NODES[i]},
            "spec": {"podCIDRs": [f"10.244.{i + 1}.0/24", f"fd00:244:{i + 1}::/64"]},
            "status": {
                "addresses": [
                    {"type": "InternalIP", "address": node_ip(i, 4)},
                    {"type": "InternalIP", "address": node_ip(i, 6)},
                ]
            },
        }
    )


def make_pod(
    ns: str,
    name: str,
    *,
    node: int,
    host: int,
    labels: dict[str, str],
    ports: list[dict[str, Any]],
    dual: bool = True,
    phase: str = "Running",
    host_network: bool = False,
) -> Pod:
    if host_network:
        ips = [node_ip(node, 4), node_ip(node, 6)]
    else:
        ips = [f"10.244.{node + 1}.{host}"] + ([f"fd00:244:{node + 1}::{host:x}"] if dual else [])
    return Pod.model_validate(
        {
            "metadata": {"name": name, "namespace": ns, "labels": labels},
            "spec": {
                "nodeName": NODES[node],
                "hostNetwork": host_network,
                "containers": [{"name": "c", "ports": ports}],
            },
            "status": {"phase": phase, "podIP": ips[0], "podIPs": [{"ip": ip} for ip in ips]},
        }
    )


def _labels(rng: random.Random, vocab: dict[str, tuple[str, ...]]) -> dict[str, str]:
    return {k: rng.choice(vs) for k, vs in vocab.items() if rng.random() < 0.6}


def selector(rng: random.Random, vocab: dict[str, tuple[str, ...]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if rng.random() < 0.5:
        out["matchLabels"] = _labels(rng, vocab)
    if rng.random() < 0.4:
        key = rng.choice(sorted(vocab))
        op = rng.choice(["In", "NotIn", "Exists", "DoesNotExist"])
        expr: dict[str, Any] = {"key": key, "operator": op}
        if op in ("In", "NotIn"):
            expr["values"] = sorted(set(rng.sample(vocab[key], rng.randint(1, len(vocab[key])))))
        out["matchExpressions"] = [expr]
    return out


def _block(rng: random.Random, pods: list[Pod]) -> dict[str, Any]:
    pod = rng.choice([p for p in pods if not p.spec.host_network])
    ip = rng.choice(pod.ips())
    v6 = ":" in ip
    host_len = 128 if v6 else 32
    choices = (
        [f"{ip}/128", "fd00:244::/32", "fd00:244:1::/64", "fd00:192::/64", "::/0"]
        if v6
        else [f"{ip}/32", "10.244.0.0/16", "10.244.1.0/24", "192.168.0.0/24", "0.0.0.0/0"]
    )
    cidr = rng.choice(choices)
    block: dict[str, Any] = {"cidr": cidr}
    inside = sorted(
        {
            a
            for p in pods
            for a in p.ips()
            if (":" in a) == v6 and ipaddress.ip_address(a) in ipaddress.ip_network(cidr)
        }
        - {ip if cidr.endswith(f"/{host_len}") else ""}
    )
    if inside and rng.random() < 0.5:
        block["except"] = [f"{a}/{host_len}" for a in rng.sample(inside, min(2, len(inside)))]
    return {"ipBlock": block}


def _peer(rng: random.Random, pods: list[Pod]) -> dict[str, Any]:
    kind = rng.choice(["pod", "ns", "both", "block", "block"])
    if kind == "block":
        return _block(rng, pods)
    peer: dict[str, Any] = {}
    if kind in ("pod", "both"):
        peer["podSelector"] = selector(rng, LABELS)
    if kind in ("ns", "both"):
        peer["namespaceSelector"] = selector(rng, NS_LABELS)
    return peer


def _rule(rng: random.Random, pods: list[Pod], peers_key: str) -> dict[str, Any]:
    rule: dict[str, Any] = {}
    if rng.random() < 0.8:
        rule[peers_key] = [_peer(rng, pods) for _ in range(rng.randint(1, 3))]
    if rng.random() < 0.75:
        rule["ports"] = rng.sample(POLICY_PORTS, rng.randint(1, 3))
    return rule


def make_policy(rng: random.Random, index: int, pods: list[Pod]) -> NetworkPolicy:
    spec: dict[str, Any] = {"podSelector": selector(rng, LABELS)}
    types = rng.choice([None, ["Ingress"], ["Egress"], ["Ingress", "Egress"]])
    if types is not None:
        spec["policyTypes"] = types
    if rng.random() < 0.8:
        spec["ingress"] = [_rule(rng, pods, "from") for _ in range(rng.randint(0, 2))]
    if rng.random() < 0.7:
        spec["egress"] = [_rule(rng, pods, "to") for _ in range(rng.randint(0, 2))]
    return NetworkPolicy.model_validate(
        {"metadata": {"name": f"p{index}", "namespace": rng.choice(NAMESPACES)}, "spec": spec}
    )


def random_pod(rng: random.Random, ns: str, name: str, host: int) -> Pod:
    return make_pod(
        ns,
        name,
        node=rng.randrange(len(NODES)),
        host=host,
        labels=_labels(rng, LABELS),
        ports=rng.sample(CONTAINER_PORTS, rng.randint(0, 3)),
        dual=rng.random() < 0.8,
    )


def random_model(seed: int, *, pods: int = 12, policies: int = 5) -> ClusterModel:
    rng = random.Random(seed)
    namespaces = [
        Namespace.model_validate({"metadata": {"name": ns, "labels": _labels(rng, NS_LABELS)}})
        for ns in NAMESPACES
    ]
    pod_list = [random_pod(rng, rng.choice(NAMESPACES), f"pod{i}", 10 + i) for i in range(pods)]
    if rng.random() < 0.5:
        n = rng.randrange(len(NODES))
        pod_list.append(
            make_pod("x", "host", node=n, host=0, labels={"app": "web"}, ports=[], host_network=True)
        )
    if rng.random() < 0.5:
        # A finished pod still listing an address a live pod now holds: the live pod owns it.
        reused = pod_list[0]
        node = NODES.index(reused.spec.node_name or "n1")
        octet = int(reused.ips()[0].rsplit(".", 1)[1])
        pod_list.append(
            make_pod("y", "done", node=node, host=octet, labels={"app": "db"}, ports=[], phase="Succeeded")
        )
    policy_list = [make_policy(rng, i, pod_list) for i in range(rng.randint(1, policies))]
    return ClusterModel(
        namespaces=tuple(namespaces),
        pods=tuple(pod_list),
        policies=tuple(policy_list),
        nodes=tuple(make_node(i) for i in range(len(NODES))),
    )


def _rebuilt(pod: Pod, **changes: Any) -> Pod:
    data = pod.model_dump(by_alias=True, exclude_none=True)
    for path, value in changes.items():
        target = data
        *parents, leaf = path.split("__")
        for part in parents:
            target = target.setdefault(part, {})
        target[leaf] = value
    return Pod.model_validate(data)


def random_change(rng: random.Random, model: ClusterModel) -> tuple[Pod | None, Pod | None, ClusterModel]:
    """One pod event (added, deleted, relabelled, readdressed, ports or phase changed) and the
    model after it. New addresses may collide with existing ones on purpose."""
    pods = [p for p in model.pods if not p.spec.host_network]
    kind = rng.choice(["relabel", "relabel", "readdress", "add", "add", "delete", "ports", "finish", "move"])
    old: Pod | None = None
    new: Pod | None
    if kind == "add" or not pods:
        # Sometimes in a namespace nothing declared: the model implies it (name label only).
        ns = rng.choice((*NAMESPACES, "w"))
        new = random_pod(rng, ns, f"new{rng.randrange(10**6)}", rng.randint(2, 40))
    else:
        old = rng.choice(pods)
        node = NODES.index(old.spec.node_name or "n1")
        if kind == "delete":
            new = None
        elif kind == "relabel":
            new = _rebuilt(old, metadata__labels=_labels(rng, LABELS))
        elif kind == "ports":
            ports = rng.sample(CONTAINER_PORTS, rng.randint(0, 3))
            new = _rebuilt(old, spec__containers=[{"name": "c", "ports": ports}])
        elif kind == "finish":
            new = _rebuilt(old, status__phase=rng.choice(["Succeeded", "Failed", "Running"]))
        else:
            if kind == "move":
                node = rng.randrange(len(NODES))
            host = rng.randint(2, 40)
            ips = [f"10.244.{node + 1}.{host}"] + (
                [f"fd00:244:{node + 1}::{host:x}"] if rng.random() < 0.7 else []
            )
            new = _rebuilt(
                old,
                spec__nodeName=NODES[node],
                status__podIP=ips[0],
                status__podIPs=[{"ip": ip} for ip in ips],
            )
    key = (new or old).key  # type: ignore[union-attr]
    rest = tuple(p for p in model.pods if p.key != key)
    return old, new, dataclasses.replace(model, pods=rest + ((new,) if new is not None else ()))


def _by_key(policies: list[NetworkPolicy]) -> tuple[NetworkPolicy, ...]:
    # The agent's model lists policies by namespace and name.
    return tuple(sorted(policies, key=lambda p: (p.metadata.namespace or "", p.metadata.name)))


def random_policy_change(
    rng: random.Random, model: ClusterModel
) -> tuple[NetworkPolicy | None, NetworkPolicy | None, ClusterModel]:
    """One NetworkPolicy event (a new policy, an edit under the same namespace/name, a delete)
    and the model after it."""
    policies = list(model.policies)
    if policies and rng.random() < 0.3:
        gone = policies.pop(rng.randrange(len(policies)))
        return gone, None, dataclasses.replace(model, policies=_by_key(policies))
    fresh = make_policy(rng, rng.randrange(8), list(model.pods))
    old = next((p for p in policies if p.key == fresh.key), None)
    rest = [p for p in policies if p.key != fresh.key]
    return old, fresh, dataclasses.replace(model, policies=_by_key([*rest, fresh]))


def random_namespace_change(
    rng: random.Random, model: ClusterModel
) -> tuple[Namespace | None, Namespace | None, ClusterModel]:
    """One Namespace event (relabelled, deleted, or declared, also the undeclared "w" that new
    pods may use) and the model after it."""
    name = rng.choice((*NAMESPACES, "w"))
    old = next((ns for ns in model.namespaces if ns.metadata.name == name), None)
    new: Namespace | None = None
    if old is None or rng.random() < 0.8:
        new = Namespace.model_validate({"metadata": {"name": name, "labels": _labels(rng, NS_LABELS)}})
    rest = tuple(ns for ns in model.namespaces if ns.metadata.name != name)
    return old, new, dataclasses.replace(model, namespaces=rest + ((new,) if new is not None else ()))


PAIR_KINDS = ("unrelated", "pods", "policies", "namespaces", "node")


def random_pair(seed: int, kind: str) -> tuple[ClusterModel, ClusterModel]:
    """Two clusters a node may see one after the other: unrelated ones (everything changes), or
    one after a few pod events, policy edits, namespace relabels, or its Node's podCIDRs changing."""
    rng = random.Random(seed)
    old = random_model(seed, pods=rng.randint(4, 16), policies=rng.randint(1, 6))
    if kind == "unrelated":
        return old, random_model(seed + 1, pods=rng.randint(4, 16), policies=rng.randint(1, 6))
    new = old
    if kind == "pods":
        for _ in range(rng.randint(1, 6)):
            _, _, new = random_change(rng, new)
    elif kind == "policies":
        policies = list(new.policies)
        for _ in range(rng.randint(1, 3)):
            if policies and rng.random() < 0.4:
                policies.pop(rng.randrange(len(policies)))
            else:
                # A new policy, or an edit of an existing one (the same namespace/name).
                fresh = make_policy(rng, rng.randrange(8), list(new.pods))
                policies = [p for p in policies if p.key != fresh.key] + [fresh]
        new = dataclasses.replace(new, policies=tuple(policies))
    elif kind == "namespaces":
        namespaces = tuple(
            Namespace.model_validate(
                {"metadata": {"name": ns.metadata.name, "labels": _labels(rng, NS_LABELS)}}
            )
            for ns in new.namespaces
        )
        new = dataclasses.replace(new, namespaces=namespaces)
    elif kind == "node":
        # The node disappears (no podCIDRs: no fail-closed rules) or loses its IPv6 podCIDR.
        nodes = [make_node(i) for i in range(len(NODES))]
        if rng.random() < 0.5:
            nodes.pop(0)
        else:
            nodes[0] = Node.model_validate(
                {"metadata": {"name": NODES[0]}, "spec": {"podCIDRs": ["10.244.1.0/24"]}}
            )
        changed = dataclasses.replace(old, nodes=tuple(nodes))
        old, new = (old, changed) if rng.random() < 0.5 else (changed, old)
    else:
        raise ValueError(f"unknown pair kind {kind!r}")
    return old, new
