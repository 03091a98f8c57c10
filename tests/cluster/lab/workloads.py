"""Working with what runs in a lab: applying manifests, waiting for pods, probing them.

The prober (`tests.support.probe`) drives a client agent in each pod through its control socket
(`podclients` starts them); this module maps the API's pods to those endpoints.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Sequence

from tests.support.probe import PodEndpoint

from . import podclients
from .kube import Obj
from .lab import Lab
from .preflight import LabError
from .underlay import in_netns


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


def _proxy_lines(lab: Lab, netns: str, family: str) -> str:
    if lab.cfg.proxy_mode == "nftables":
        argv = ["nft", "list", "table", family, "kube-proxy"]
    else:
        argv = ["iptables-save" if family == "ip" else "ip6tables-save", "-t", "nat"]
    out = subprocess.run(in_netns(netns, argv), capture_output=True, text=True, check=False)
    return out.stdout if out.returncode == 0 else ""


def _map_body(dump: str, name: str) -> str:
    """The text of nft map `name` up to its first closing brace (its elements), or ''."""
    head = f"map {name} {{"
    return dump.split(head, 1)[1].split("}", 1)[0] if head in dump else ""


def programmed(dump: str, ip: str, *, mode: str) -> bool:
    """Whether kube-proxy's rules (`nft list table` / `iptables-save -t nat` text) send Service
    address `ip` to endpoints."""
    if mode == "nftables":
        # In the service-ips map: a Service kube-proxy knows without endpoints sits in the
        # no-endpoint-services map instead, and its packets are rejected ("refused").
        # An element starts with the address: nothing address-like right before it.
        element = re.compile(rf"(?<![0-9a-fA-F.:]){re.escape(ip)} \. ")
        return bool(element.search(_map_body(dump, "service-ips"))) and not element.search(
            _map_body(dump, "no-endpoint-services")
        )
    return any(f"-d {ip}/" in line and "-j KUBE-SVC-" in line for line in dump.splitlines())


def _proxied(lab: Lab, ips: list[str]) -> bool:
    return all(
        programmed(_proxy_lines(lab, node.netns, "ip6" if ":" in ip else "ip"), ip, mode=lab.cfg.proxy_mode)
        for node in lab.cfg.all_nodes
        for ip in ips
    )


def wait_proxied(lab: Lab, namespace: str, name: str, *, timeout: float = 60.0) -> list[str]:
    """The Service's ClusterIPs, once every node's kube-proxy forwards them to endpoints.

    Pods turn Ready before kube-proxy (which syncs at most once a second) has seen their
    EndpointSlices: a probe of the ClusterIP in between would be rejected on that node.
    """
    ips = cluster_ips(lab, namespace, name)
    deadline = time.monotonic() + timeout
    while not _proxied(lab, ips):
        if time.monotonic() > deadline:
            raise LabError(f"kube-proxy did not program Service {namespace}/{name} ({ips}) on every node")
        time.sleep(0.3)
    return ips
