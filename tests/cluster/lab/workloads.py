"""Working with what runs in a lab: applying manifests, waiting for pods, probing them.

The prober (`tests.support.probe`) drives a client agent in each pod through its control socket
(`podclients` starts them); this module maps the API's pods to those endpoints.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from tests.support.probe import PodEndpoint

from . import podclients, proxy
from .kube import Obj
from .lab import Lab
from .preflight import LabError


def apply(lab: Lab, manifest: str) -> str:
    """kubectl apply -f - (server-side validation, as a user would)."""
    return lab.kubectl("apply", "-f", "-", input=manifest).stdout


def pods(lab: Lab, namespace: str, selector: str = "") -> list[Obj]:
    query = {"labelSelector": selector} if selector else {}
    items: list[Obj] = lab.kube.get(f"/api/v1/namespaces/{namespace}/pods", **query)["items"]
    return items


def is_ready(pod: Obj) -> bool:
    status = pod.get("status", {})
    conditions = {c["type"]: c["status"] for c in status.get("conditions", [])}
    return (
        status.get("phase") == "Running"
        and conditions.get("Ready") == "True"
        and bool(status.get("podIPs"))
        and not pod["metadata"].get("deletionTimestamp")
    )


def wait_pods(lab: Lab, namespace: str, selector: str, *, count: int, timeout: float = 120.0) -> list[Obj]:
    """Exactly `count` pods matching `selector`, all Running and Ready with IPs."""
    deadline = time.monotonic() + timeout
    while True:
        found = pods(lab, namespace, selector)
        ready = [p for p in found if is_ready(p)]
        if len(ready) == count == len(found):
            return sorted(ready, key=lambda p: str(p["metadata"]["name"]))
        if time.monotonic() > deadline:
            states = {p["metadata"]["name"]: p.get("status", {}).get("phase") for p in found}
            raise LabError(f"{namespace} pods {selector!r}: want {count} ready, have {states}")
        time.sleep(0.3)


def wait_gone(lab: Lab, namespace: str, selector: str, *, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while found := pods(lab, namespace, selector):
        if time.monotonic() > deadline:
            raise LabError(
                f"{namespace} pods {selector!r} still there: {[p['metadata']['name'] for p in found]}"
            )
        time.sleep(0.3)


def pod_name(pod: Obj) -> str:
    return f"{pod['metadata']['namespace']}/{pod['metadata']['name']}"


def endpoints(lab: Lab, pod_list: Sequence[Obj]) -> list[PodEndpoint]:
    """Prober endpoints named `namespace/name`, one per pod: a client agent in each pod."""
    return podclients.client_endpoints(lab, [(pod_name(pod), pod) for pod in pod_list])


def cluster_ips(lab: Lab, namespace: str, name: str) -> list[str]:
    svc = lab.kube.get(f"/api/v1/namespaces/{namespace}/services/{name}")
    return list(svc["spec"].get("clusterIPs") or [svc["spec"]["clusterIP"]])


def wait_proxied(lab: Lab, namespace: str, name: str, *, timeout: float = 60.0) -> list[str]:
    """The Service's ClusterIPs, once every node's kube-proxy forwards them to endpoints (see
    `proxy`: a ClusterIP probed before that is rejected)."""
    ips = cluster_ips(lab, namespace, name)
    deadline = time.monotonic() + timeout
    while not proxy.forwards(lab.cfg, ips):
        if time.monotonic() > deadline:
            raise LabError(f"kube-proxy did not program Service {namespace}/{name} ({ips}) on every node")
        time.sleep(0.3)
    return ips
