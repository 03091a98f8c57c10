"""The lab works end to end: real controllers place pods on both nodes, the stand-ins give them
addresses from the nodes' podCIDRs, kube-proxy makes Services answer, packets cross nodes, and
deleting a workload removes every trace of its pods."""

from __future__ import annotations

import ipaddress
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pyroute2 import NetNS

from tests.cluster.lab import Lab
from tests.cluster.lab.config import CLUSTER_CIDRS
from tests.cluster.lab.underlay import in_netns
from tests.cluster.lab.workloads import (
    apply,
    cluster_ips,
    endpoints,
    pod_name,
    pods,
    wait_gone,
    wait_pods,
)
from tests.support.probe import Family, Prober, ProbeRequest, Protocol

pytestmark = pytest.mark.cluster

App = dict[str, list[dict[str, Any]]]

NS = "labtest"
# The image is never pulled: the node stand-in runs the pod agent on the declared ports instead.
IMAGE = "registry.k8s.io/e2e-test-images/agnhost:2.53"
PORTS = """
        ports:
        - {containerPort: 8080, protocol: TCP}
        - {containerPort: 5353, protocol: UDP}
        - {containerPort: 9999, protocol: SCTP}"""

APP = f"""
apiVersion: v1
kind: Namespace
metadata: {{name: {NS}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: echo, namespace: {NS}}}
spec:
  replicas: 4
  selector: {{matchLabels: {{app: echo}}}}
  template:
    metadata: {{labels: {{app: echo}}}}
    spec:
      topologySpreadConstraints:
      - maxSkew: 1
        topologyKey: kubernetes.io/hostname
        whenUnsatisfiable: DoNotSchedule
        labelSelector: {{matchLabels: {{app: echo}}}}
      containers:
      - name: echo
        image: {IMAGE}{PORTS}
---
apiVersion: v1
kind: Service
metadata: {{name: echo, namespace: {NS}}}
spec:
  ipFamilyPolicy: RequireDualStack
  selector: {{app: echo}}
  ports:
  - {{name: tcp, port: 80, targetPort: 8080, protocol: TCP}}
  - {{name: udp, port: 53, targetPort: 5353, protocol: UDP}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: pinned, namespace: {NS}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: pinned}}}}
  template:
    metadata: {{labels: {{app: pinned}}}}
    spec:
      nodeSelector: {{kubernetes.io/hostname: node-2}}
      containers:
      - name: pinned
        image: {IMAGE}{PORTS}
---
apiVersion: v1
kind: Service
metadata: {{name: pinned, namespace: {NS}}}
spec:
  ipFamilyPolicy: RequireDualStack
  selector: {{app: pinned}}
  ports:
  - {{name: tcp, port: 80, targetPort: 8080, protocol: TCP}}
"""


@pytest.fixture(scope="module")
def app(lab: Lab) -> Iterator[App]:
    apply(lab, APP)
    yield {
        "echo": wait_pods(lab, NS, "app=echo", count=4),
        "pinned": wait_pods(lab, NS, "app=pinned", count=1),
    }
    lab.kubectl("delete", "namespace", NS, "--ignore-not-found", "--wait=false")


def test_nodes_are_ready_with_dual_stack_pod_cidrs(lab: Lab) -> None:
    nodes = {n["metadata"]["name"]: n for n in lab.nodes()}
    assert sorted(nodes) == ["node-1", "node-2"]
    clusters = [ipaddress.ip_network(c) for c in CLUSTER_CIDRS]
    for addrs in lab.cfg.all_nodes:
        node = nodes[addrs.name]
        ready = [c for c in node["status"]["conditions"] if c["type"] == "Ready"]
        assert ready[0]["status"] == "True", ready
        internal = [a["address"] for a in node["status"]["addresses"] if a["type"] == "InternalIP"]
        assert internal == [addrs.ipv4, addrs.ipv6]
        cidrs = [ipaddress.ip_network(c) for c in node["spec"]["podCIDRs"]]
        assert [c.version for c in cidrs] == [4, 6]
        assert all(
            c.overlaps(cl) and c.prefixlen > cl.prefixlen for c, cl in zip(cidrs, clusters, strict=True)
        )


def test_kube_proxy_programs_each_node(lab: Lab) -> None:
    for node in lab.cfg.all_nodes:
        if lab.cfg.proxy_mode == "nftables":
            for family in ("ip", "ip6"):
                out = subprocess.run(
                    in_netns(node.netns, ["nft", "list", "table", family, "kube-proxy"]),
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout
                assert "chain services" in out, f"{node.name}: {family} kube-proxy has no services chain"
        else:
            out = subprocess.run(
                in_netns(node.netns, ["iptables-save", "-t", "nat"]),
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            assert "KUBE-SERVICES" in out


def test_pods_run_on_both_nodes_with_addresses_from_their_pod_cidrs(lab: Lab, app: App) -> None:
    cidrs = {
        n["metadata"]["name"]: [ipaddress.ip_network(c) for c in n["spec"]["podCIDRs"]] for n in lab.nodes()
    }
    placed = {str(p["spec"]["nodeName"]) for p in app["echo"]}
    assert placed == {"node-1", "node-2"}
    for pod in app["echo"] + app["pinned"]:
        ips = [ipaddress.ip_address(i["ip"]) for i in pod["status"]["podIPs"]]
        assert [ip.version for ip in ips] == [4, 6], pod_name(pod)
        node_cidrs = cidrs[str(pod["spec"]["nodeName"])]
        assert all(ip in net for ip, net in zip(ips, node_cidrs, strict=True)), (
            pod_name(pod),
            ips,
            node_cidrs,
        )
    # EndpointSlices list every replica as ready: the stand-in's status is what the controllers use.
    slices = json.loads(
        lab.kubectl(
            "get", "endpointslices", "-n", NS, "-l", "kubernetes.io/service-name=echo", "-o", "json"
        ).stdout
    )["items"]
    ready = {
        ep["addresses"][0] for s in slices for ep in s.get("endpoints", []) if ep["conditions"].get("ready")
    }
    assert ready == {i["ip"] for p in app["echo"] for i in p["status"]["podIPs"]}


@pytest.mark.parametrize("family", [4, 6], ids=["ipv4", "ipv6"])
def test_pods_reach_each_other_across_nodes_by_pod_ip(lab: Lab, app: App, family: Family) -> None:
    prober = Prober(endpoints(lab, app["echo"]))
    node_of = {pod_name(p): p["spec"]["nodeName"] for p in app["echo"]}
    ports: list[tuple[Protocol, int]] = [("TCP", 8080), ("UDP", 5353), ("SCTP", 9999), ("TCP", 8081)]
    results = prober.reachability(None, ports, family)
    assert any(node_of[s] != node_of[d] for s, d, _, _ in results), "no cross-node pair probed"
    wrong = {
        k: r.outcome for k, r in results.items() if r.outcome != ("refused" if k[3] == 8081 else "connected")
    }
    assert not wrong, f"IPv{family}: unexpected outcomes {wrong}"


def test_service_cluster_ip_answers_from_both_nodes(lab: Lab, app: App) -> None:
    prober = Prober(endpoints(lab, app["echo"]))
    echo_ips = cluster_ips(lab, NS, "echo")
    pinned_ips = cluster_ips(lab, NS, "pinned")
    assert len(echo_ips) == len(pinned_ips) == 2
    requests = []
    for src in prober.names:
        for ip in echo_ips:
            requests += [
                ProbeRequest(src=src, dst="echo", protocol="TCP", port=80, dst_address=ip),
                ProbeRequest(src=src, dst="echo", protocol="UDP", port=53, dst_address=ip),
            ]
        # pinned's only backend is on node-2: from node-1's pods this crosses nodes after DNAT.
        requests += [
            ProbeRequest(src=src, dst="pinned", protocol="TCP", port=80, dst_address=ip) for ip in pinned_ips
        ]
    results = prober.probe(requests)
    wrong = [
        (r.request.src, r.request.dst_address, r.request.protocol, r.outcome)
        for r in results
        if r.outcome != "connected"
    ]
    assert not wrong, f"Service probes failed: {wrong}"


def test_statefulset_and_job_complete(lab: Lab, app: App) -> None:
    apply(
        lab,
        f"""
apiVersion: apps/v1
kind: StatefulSet
metadata: {{name: db, namespace: {NS}}}
spec:
  serviceName: db
  replicas: 2
  selector: {{matchLabels: {{app: db}}}}
  template:
    metadata: {{labels: {{app: db}}}}
    spec:
      containers:
      - {{name: db, image: {IMAGE}, ports: [{{containerPort: 5432}}]}}
---
apiVersion: batch/v1
kind: Job
metadata: {{name: once, namespace: {NS}}}
spec:
  completions: 2
  parallelism: 2
  template:
    metadata:
      labels: {{app: once}}
      annotations: {{lab.stockade.io/run-seconds: "1"}}
    spec:
      restartPolicy: Never
      containers:
      - {{name: once, image: {IMAGE}}}
""",
    )
    db = wait_pods(lab, NS, "app=db", count=2)
    assert sorted(p["metadata"]["name"] for p in db) == ["db-0", "db-1"]
    lab.kubectl("wait", "-n", NS, "job/once", "--for=condition=Complete", "--timeout=90s")
    done = pods(lab, NS, "app=once")
    assert [p["status"]["phase"] for p in done] == ["Succeeded", "Succeeded"]
    # A completed pod's sandbox is gone, as kubelet removes a finished pod's sandbox.
    assert not {p["metadata"]["uid"] for p in done} & set(lab.pod_sandboxes())
    lab.kubectl("delete", "-n", NS, "statefulset/db", "job/once", "--cascade=foreground")
    wait_gone(lab, NS, "app in (db, once)")


def _node_state(netns_name: str) -> tuple[set[str], set[str]]:
    """Links and host routes (/32, /128) in a node namespace: what CNI ADD creates for pods."""
    with NetNS(netns_name) as ns:
        links = {str(link.get("ifname")) for link in ns.link("dump")}
        routes = {
            f"{r.get('dst')}/{r['dst_len']}"
            for r in ns.route("dump", table=254)
            if r["dst_len"] in (32, 128) and r.get("dst")
        }
    return links, routes


def test_deleting_the_workloads_removes_pods_sandboxes_and_addresses(lab: Lab, app: App) -> None:
    uids = {str(p["metadata"]["uid"]) for p in app["echo"] + app["pinned"]}
    ips = {i["ip"] for p in app["echo"] + app["pinned"] for i in p["status"]["podIPs"]}
    assert uids <= set(lab.pod_sandboxes())
    lab.kubectl("delete", "-n", NS, "deployment/echo", "deployment/pinned", "service/echo", "service/pinned")
    wait_gone(lab, NS, "app in (echo, pinned)")
    assert not uids & set(lab.pod_sandboxes()), "sandbox records left"
    netns_left = [n for n in Path("/run/netns").iterdir() if any(u in n.name for u in uids)]
    assert not netns_left, netns_left
    for node in lab.cfg.all_nodes:
        links, routes = _node_state(node.netns)
        assert links == {"lo", "eth0"}, f"{node.name}: pod veths left: {links}"
        assert not {r.split("/")[0] for r in routes} & ips, f"{node.name}: pod routes left: {routes}"
        ipam = lab.node_dir(node.name) / "ipam" / "stockade-lab"
        held = [f.name for f in ipam.iterdir() if not f.name.startswith(("last_reserved_ip", "lock"))]
        assert not held, f"{node.name}: host-local still holds {held}"
