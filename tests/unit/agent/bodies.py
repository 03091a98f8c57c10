"""API bodies as the API server sends them in watch events (with the fields the agent drops)."""

from __future__ import annotations

from typing import Any


def pod_body(
    name: str,
    *,
    ns: str = "default",
    uid: str | None = None,
    labels: dict[str, str] | None = None,
    ips: tuple[str, ...] = (),
    node: str = "n1",
    ports: tuple[tuple[str, int], ...] = (),
    phase: str = "Running",
    ready: str = "True",
) -> dict[str, Any]:
    status: dict[str, Any] = {
        "phase": phase,
        "conditions": [{"type": "Ready", "status": ready}],
        "hostIP": "192.0.2.1",
    }
    if ips:
        status["podIP"] = ips[0]
        status["podIPs"] = [{"ip": ip} for ip in ips]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": ns,
            "uid": uid or f"uid-{ns}-{name}",
            "resourceVersion": "1",
            "labels": labels or {},
            "annotations": {"kubectl.kubernetes.io/restartedAt": "now"},
            "creationTimestamp": "2026-01-01T00:00:00Z",
            "managedFields": [{"manager": "kubectl"}],
        },
        "spec": {
            "nodeName": node,
            "containers": [
                {
                    "name": "c",
                    "image": "registry.k8s.io/pause:3.10",
                    "ports": [{"name": n, "containerPort": p, "protocol": "TCP"} for n, p in ports],
                }
            ],
            "restartPolicy": "Always",
        },
        "status": status,
    }


def policy_body(
    name: str, *, ns: str = "default", spec: dict[str, Any] | None = None, uid: str | None = None
) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": name,
            "namespace": ns,
            "uid": uid or f"uid-np-{ns}-{name}",
            "resourceVersion": "7",
            "generation": 1,
            "creationTimestamp": "2026-01-01T00:00:00Z",
        },
        "spec": spec if spec is not None else {"podSelector": {}, "policyTypes": ["Ingress"]},
    }


def namespace_body(name: str, *, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": name,
            "uid": f"uid-ns-{name}",
            "labels": {"kubernetes.io/metadata.name": name, **(labels or {})},
        },
        "spec": {"finalizers": ["kubernetes"]},
        "status": {"phase": "Active"},
    }


def node_body(
    name: str,
    *,
    cidrs: tuple[str, ...] = ("10.244.1.0/24",),
    heartbeat: str = "t0",
    address: str = "192.0.2.1",
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "uid": f"uid-node-{name}", "labels": {}},
        "spec": {"podCIDR": cidrs[0], "podCIDRs": list(cidrs)},
        "status": {
            "addresses": [{"type": "InternalIP", "address": address}] if address else [],
            "conditions": [{"type": "Ready", "status": "True", "lastHeartbeatTime": heartbeat}],
        },
    }
