"""Real nodes: kubelet and containerd per node, pods run from locally built images.

Its own lab (`--real-nodes`), next to the stand-in lab of the rest of the tier: the CNI config
comes from the installer DaemonSet, pods are containers, kubelet probes cross the node, and the
prober reaches a pod through its sandbox process. Needs the node tools and the lab's images
(`nodes.NodeTools.find` says which are missing); without them the lab fails to start and every
test here fails with the reason.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator

import pytest

from tests.cluster.conftest import running_lab
from tests.cluster.lab import Lab
from tests.cluster.lab.nodes import PAUSE_IMAGE, TEST_POD_IMAGE
from tests.cluster.lab.workloads import apply, cluster_ips, endpoints, pods, wait_gone, wait_pods
from tests.support.probe import Prober, ProbeRequest, Protocol

POD_PORTS: list[tuple[Protocol, int]] = [("TCP", 8080), ("UDP", 5353), ("SCTP", 9999)]
SERVICE_PORTS: list[tuple[Protocol, int]] = [("TCP", 80), ("UDP", 53)]

NS = "realnodes"
ECHO = f"""
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
      - {{maxSkew: 1, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: DoNotSchedule,
          labelSelector: {{matchLabels: {{app: echo}}}}}}
      containers:
      - name: agent
        image: {TEST_POD_IMAGE}
        imagePullPolicy: Never
        args: [--control, /tmp/agent.sock, --tcp, "8080", --udp, "5353", --sctp, "9999"]
        ports:
        - {{containerPort: 8080, protocol: TCP}}
        - {{containerPort: 5353, protocol: UDP}}
        - {{containerPort: 9999, protocol: SCTP}}
        # kubelet probes from the node's namespace to the pod's address. The startup probe gives
        # python the time it needs on a loaded machine; liveness runs only after it.
        startupProbe: {{tcpSocket: {{port: 8080}}, periodSeconds: 1, failureThreshold: 60}}
        readinessProbe: {{tcpSocket: {{port: 8080}}, periodSeconds: 1}}
        livenessProbe: {{tcpSocket: {{port: 8080}}, periodSeconds: 1, failureThreshold: 2}}
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
"""
DAEMONSETS = f"""
apiVersion: v1
kind: Namespace
metadata: {{name: {NS}}}
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {{name: ds-pod, namespace: {NS}}}
spec:
  selector: {{matchLabels: {{app: ds-pod}}}}
  template:
    metadata: {{labels: {{app: ds-pod}}}}
    spec:
      containers: [{{name: pause, image: "{PAUSE_IMAGE}", imagePullPolicy: Never}}]
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {{name: ds-host, namespace: {NS}}}
spec:
  selector: {{matchLabels: {{app: ds-host}}}}
  template:
    metadata: {{labels: {{app: ds-host}}}}
    spec:
      hostNetwork: true
      containers: [{{name: pause, image: "{PAUSE_IMAGE}", imagePullPolicy: Never}}]
"""


@pytest.fixture(scope="module")
def rlab() -> Iterator[Lab]:
    name = "real" + os.environ.get("PYTEST_XDIST_WORKER", "").removeprefix("gw")
    yield from running_lab(Lab.create(name=name, nodes=2, real_nodes=True))


def test_nodes_ready_with_containerd_after_the_cni_daemonset(rlab: Lab) -> None:
    nodes = rlab.nodes()
    assert len(nodes) == 2
    for node in nodes:
        assert node["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("containerd://2.")
        assert node["status"]["nodeInfo"]["kubeletVersion"] == "v1.37.2"
        conds = {c["type"]: c["status"] for c in node["status"]["conditions"]}
        assert conds["Ready"] == "True"
    installers = pods(rlab, "kube-system", "app=lab-cni-installer")
    assert sorted(p["spec"]["nodeName"] for p in installers) == ["node-1", "node-2"]


def test_daemonsets_with_and_without_host_network_run_on_every_node(rlab: Lab) -> None:
    apply(rlab, DAEMONSETS)
    cidrs = rlab.rec.info["pod_cidrs"]
    by_ip = {n.name: {n.ipv4, n.ipv6} for n in rlab.cfg.all_nodes}
    for app, host in (("ds-pod", False), ("ds-host", True)):
        got = wait_pods(rlab, NS, f"app={app}", count=2, timeout=60)
        assert sorted(p["spec"]["nodeName"] for p in got) == ["node-1", "node-2"]
        for p in got:
            ips = {i["ip"] for i in p["status"]["podIPs"]}
            if host:
                assert ips == by_ip[p["spec"]["nodeName"]]
            else:
                assert len(ips) == 2 and _in_cidrs(ips, cidrs[p["spec"]["nodeName"]])


def _in_cidrs(ips: set[str], cidrs: list[str]) -> bool:
    import ipaddress  # noqa: PLC0415

    nets = [ipaddress.ip_network(c) for c in cidrs]
    return all(any(ipaddress.ip_address(ip) in n for n in nets) for ip in ips)


@pytest.fixture(scope="module")
def echo(rlab: Lab) -> list[dict[str, object]]:
    apply(rlab, ECHO)
    return wait_pods(rlab, NS, "app=echo", count=4, timeout=90)


def test_pods_spread_with_addresses_from_their_nodes_podcidrs(
    rlab: Lab, echo: list[dict[str, object]]
) -> None:
    cidrs = rlab.rec.info["pod_cidrs"]
    nodes = set()
    for p in echo:
        node = p["spec"]["nodeName"]  # type: ignore[index]
        nodes.add(node)
        ips = {i["ip"] for i in p["status"]["podIPs"]}  # type: ignore[index]
        assert len(ips) == 2 and _in_cidrs(ips, cidrs[node])
    assert nodes == {"node-1", "node-2"}


def test_kubelet_probes_pass_through_the_node(rlab: Lab, echo: list[dict[str, object]]) -> None:
    time.sleep(3)  # several liveness periods: a failing probe would restart the container
    for p in pods(rlab, NS, "app=echo"):
        (status,) = p["status"]["containerStatuses"]
        assert status["ready"] is True
        assert status["restartCount"] == 0


def test_pod_ip_and_cluster_ip_across_nodes_v4_v6(rlab: Lab, echo: list[dict[str, object]]) -> None:
    eps = endpoints(rlab, pods(rlab, NS, "app=echo"))
    by_node: dict[str, str] = {}
    for p, ep in zip(pods(rlab, NS, "app=echo"), eps, strict=True):
        by_node.setdefault(p["spec"]["nodeName"], ep.name)
    a, b = by_node["node-1"], by_node["node-2"]
    prober = Prober(eps)
    reqs = [
        ProbeRequest(src, dst, proto, port, fam)
        for src, dst in ((a, b), (b, a))
        for proto, port in POD_PORTS
        for fam in (4, 6)
    ]
    ips = cluster_ips(rlab, NS, "echo")
    assert len(ips) == 2
    reqs += [
        ProbeRequest(src, a, proto, port, 6 if ":" in ip else 4, dst_address=ip)
        for src in (a, b)
        for ip in ips
        for proto, port in SERVICE_PORTS
    ]
    failed = [r for r in prober.probe(reqs) if not r.reachable]
    assert not failed, failed


def test_deleting_pods_leaves_no_sandbox_cgroup_or_veth(rlab: Lab, echo: list[dict[str, object]]) -> None:
    uids = {p["metadata"]["uid"] for p in pods(rlab, NS, "app=echo")}
    rlab.kubectl("delete", "-n", NS, "deployment/echo", "daemonset/ds-pod", "daemonset/ds-host")
    wait_gone(rlab, NS, "app=echo", timeout=60)
    wait_gone(rlab, NS, "app=ds-pod", timeout=60)
    for node in rlab.cfg.all_nodes:
        cg = f"/sys/fs/cgroup/pids/{rlab.cfg.prefix}{node.name}"
        left = subprocess.run(
            ["find", cg, "-name", "pod*"], capture_output=True, text=True, check=True
        ).stdout
        assert not any(uid in left or uid.replace("-", "_") in left for uid in uids), left
        links = subprocess.run(
            ["nsenter", f"--net=/run/netns/{node.netns}", "ip", "-o", "link"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        # The node keeps lo, eth0 and the CNI installer's nothing: no pod veth is left.
        assert "veth" not in links, links
