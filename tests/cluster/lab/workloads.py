"""Working with what runs in a lab: applying manifests, waiting for pods, probing them.

The prober (`tests.support.probe`) drives each pod's agent through its control socket; this
module maps the API's pods to those sockets via the stand-ins' sandbox records.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from tests.support.probe import PodEndpoint

from . import podclients
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
    """Prober endpoints named `namespace/name`, one per pod, from the nodes' sandbox records."""
    if lab.cfg.real_nodes:
        return [podclients.client_endpoint(lab, pod, name=pod_name(pod)) for pod in pod_list]
    boxes = lab.pod_sandboxes()
    out = []
    for pod in pod_list:
        box = boxes.get(pod["metadata"]["uid"])
        if box is None:
            raise LabError(f"pod {pod_name(pod)} has no sandbox on {pod['spec'].get('nodeName')}")
        ips = [i["ip"] for i in pod["status"]["podIPs"]]
        out.append(
            PodEndpoint(
                name=pod_name(pod),
                netns=box["netns"],
                control=box["socket"],
                ipv4=next((ip for ip in ips if ":" not in ip), None),
                ipv6=next((ip for ip in ips if ":" in ip), None),
            )
        )
    return out


def cluster_ips(lab: Lab, namespace: str, name: str) -> list[str]:
    svc = lab.kube.get(f"/api/v1/namespaces/{namespace}/services/{name}")
    return list(svc["spec"].get("clusterIPs") or [svc["spec"]["clusterIP"]])
