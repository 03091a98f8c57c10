"""The lab works end to end on real nodes: kubelet and containerd register both nodes, a CNI
DaemonSet makes them Ready (Stockade's release by default: stockade-cni and the agents' overlay;
the lab's own ptp installer with `--cni lab`), controllers place pods on both, the CNI gives them
addresses from the nodes' podCIDRs, kubelet probes pass through the node, kube-proxy makes
Services answer, packets cross nodes (IPv4 and IPv6), and deleting a workload removes every trace
of its pods: containers, sandboxes, host-side links, routes and IPAM allocations."""

from __future__ import annotations

import functools
import ipaddress
import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pyroute2 import NetNS

from tests.cluster.lab import Lab
from tests.cluster.lab.config import CLUSTER_CIDRS
from tests.cluster.lab.nodes import PAUSE_IMAGE, TEST_POD_IMAGE
from tests.cluster.lab.podclients import pod_containers, running_tasks, sandbox_pid
from tests.cluster.lab.underlay import in_netns
from tests.cluster.lab.workloads import (
    apply,
    endpoints,
    pod_name,
    pods,
    wait_gone,
    wait_pods,
    wait_proxied,
)
from tests.support.probe import Family, Prober, ProbeRequest, Protocol

pytestmark = pytest.mark.cluster

App = dict[str, list[dict[str, Any]]]

NS = "labtest"
# The lab's test-pod image runs the pod agent (tests.support.podagent) with its args: servers on
# these ports, and a control socket for the prober's requests.
AGENT = f"""
        image: {TEST_POD_IMAGE}
        imagePullPolicy: Never
        args: [--control, /tmp/agent.sock, --tcp, "8080", --udp, "5353", --sctp, "9999"]
        ports:
        - {{containerPort: 8080, protocol: TCP}}
        - {{containerPort: 5353, protocol: UDP}}
        - {{containerPort: 9999, protocol: SCTP}}"""
# kubelet probes connect from the node's namespace to the pod's address. The startup probe gives
# python the time it needs on a loaded machine; liveness and readiness run after it.
PROBES = """
        startupProbe: {tcpSocket: {port: 8080}, periodSeconds: 1, failureThreshold: 60}
        readinessProbe: {tcpSocket: {port: 8080}, periodSeconds: 1}
        livenessProbe: {tcpSocket: {port: 8080}, periodSeconds: 1, failureThreshold: 2}"""

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
      - name: echo{AGENT}{PROBES}
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
      - name: pinned{AGENT}
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

DAEMONSETS = f"""
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

STATEFUL_AND_JOB = f"""
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
      - name: db
        image: {TEST_POD_IMAGE}
        imagePullPolicy: Never
        args: [--control, /tmp/agent.sock, --tcp, "5432"]
        ports: [{{containerPort: 5432}}]
---
apiVersion: batch/v1
kind: Job
metadata: {{name: once, namespace: {NS}}}
spec:
  completions: 2
  parallelism: 2
  template:
    metadata: {{labels: {{app: once}}}}
    spec:
      restartPolicy: Never
      containers:
      - name: once
        image: {TEST_POD_IMAGE}
        imagePullPolicy: Never
        command: [python3, -c, "import time; time.sleep(1)"]
"""


@pytest.fixture(scope="module")
def app(lab: Lab) -> Iterator[App]:
    apply(lab, APP)
    yield {
        "echo": wait_pods(lab, NS, "app=echo", count=4),
        "pinned": wait_pods(lab, NS, "app=pinned", count=1),
    }
    lab.kubectl("delete", "namespace", NS, "--ignore-not-found", "--wait=false")


def eventually(what: str, check: Callable[[], object], *, timeout: float = 30.0) -> None:
    """Wait until `check()` returns nothing (falsy); fail with its last answer."""
    deadline = time.monotonic() + timeout
    while left := check():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: {left}")
        time.sleep(0.5)


def test_nodes_are_ready_with_kubelet_containerd_and_dual_stack_pod_cidrs(lab: Lab) -> None:
    nodes = {n["metadata"]["name"]: n for n in lab.nodes()}
    assert sorted(nodes) == [n.name for n in lab.cfg.all_nodes]
    clusters = [ipaddress.ip_network(c) for c in CLUSTER_CIDRS]
    for addrs in lab.cfg.all_nodes:
        node = nodes[addrs.name]
        info = node["status"]["nodeInfo"]
        assert info["kubeletVersion"] == "v1.37.2"
        assert info["containerRuntimeVersion"].startswith("containerd://2.4.")
        ready = [c for c in node["status"]["conditions"] if c["type"] == "Ready"]
        assert ready[0]["status"] == "True", ready
        internal = [a["address"] for a in node["status"]["addresses"] if a["type"] == "InternalIP"]
        assert internal == [addrs.ipv4, addrs.ipv6]
        cidrs = [ipaddress.ip_network(c) for c in node["spec"]["podCIDRs"]]
        assert [c.version for c in cidrs] == [4, 6]
        assert all(
            c.overlaps(cl) and c.prefixlen > cl.prefixlen for c, cl in zip(cidrs, clusters, strict=True)
        )
    # The CNI config came from a DaemonSet, one pod per node: Stockade's agents (whose init
    # containers install stockade-cni), or the lab's own installer.
    selector = "app.kubernetes.io/component=agent" if lab.cfg.cni == "stockade" else "app=lab-cni-installer"
    installers = pods(lab, "kube-system", selector)
    assert sorted(p["spec"]["nodeName"] for p in installers) == sorted(nodes)


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


def _in_cidrs(ips: list[str], cidrs: list[str]) -> bool:
    nets = [ipaddress.ip_network(c) for c in cidrs]
    return sorted(ipaddress.ip_address(ip).version for ip in ips) == [4, 6] and all(
        any(ipaddress.ip_address(ip) in n for n in nets) for ip in ips
    )


def test_pods_run_on_both_nodes_with_addresses_from_their_pod_cidrs(lab: Lab, app: App) -> None:
    cidrs = {n["metadata"]["name"]: n["spec"]["podCIDRs"] for n in lab.nodes()}
    assert {str(p["spec"]["nodeName"]) for p in app["echo"]} == {"node-1", "node-2"}
    for pod in app["echo"] + app["pinned"]:
        ips = [i["ip"] for i in pod["status"]["podIPs"]]
        assert ipaddress.ip_address(ips[0]).version == 4, pod_name(pod)
        assert _in_cidrs(ips, cidrs[str(pod["spec"]["nodeName"])]), (pod_name(pod), ips)
    # EndpointSlices list every replica as ready: kubelet's status is what the controllers use. The
    # EndpointSlice controller follows pod status asynchronously (it batches updates), so a pod that
    # just turned Ready may be missing for a moment: wait for it, boundedly.
    want = {i["ip"] for p in app["echo"] for i in p["status"]["podIPs"]}

    def missing() -> set[str]:
        slices = json.loads(
            lab.kubectl(
                "get", "endpointslices", "-n", NS, "-l", "kubernetes.io/service-name=echo", "-o", "json"
            ).stdout
        )["items"]
        ready = {
            ep["addresses"][0]
            for s in slices
            for ep in s.get("endpoints", [])
            if ep["conditions"].get("ready")
        }
        return want ^ ready

    eventually("EndpointSlices of echo differ from its pods' addresses (symmetric difference)", missing)


def test_kubelet_probes_pass_through_the_node(lab: Lab, app: App) -> None:
    # Several liveness periods (1 s, 2 failures): a probe failing from the node would restart the
    # container and turn it unready.
    time.sleep(4)
    for pod in pods(lab, NS, "app=echo"):
        (status,) = pod["status"]["containerStatuses"]
        assert (status["ready"], status["restartCount"]) == (True, 0), pod_name(pod)


@pytest.mark.parametrize("family", [4, 6], ids=["ipv4", "ipv6"])
def test_pods_reach_each_other_across_nodes_by_pod_ip(lab: Lab, app: App, family: Family) -> None:
    prober = Prober(endpoints(lab, app["echo"]))
    node_of = {pod_name(p): p["spec"]["nodeName"] for p in app["echo"]}
    ports: list[tuple[Protocol, int]] = [("TCP", 8080), ("UDP", 5353), ("SCTP", 9999), ("TCP", 8081)]
    results = prober.reachability(None, ports, family)
    assert any(node_of[s] != node_of[d] for s, d, _, _ in results), "no cross-node pair probed"

    # Nothing serves 8081: refused (RST), not silence. SCTP INIT is answered by the pod agent's
    # raw socket and by the pod's kernel (ABORT): either answer shows the packet arrived.
    def as_expected(key: tuple[str, str, Protocol, int], outcome: str, reachable: bool) -> bool:
        if key[3] == 8081:
            return outcome == "refused"
        return reachable if key[2] == "SCTP" else outcome == "connected"

    wrong = {k: r.outcome for k, r in results.items() if not as_expected(k, r.outcome, r.reachable)}
    assert not wrong, f"IPv{family}: unexpected outcomes {wrong}"


def test_service_cluster_ips_answer_from_both_nodes(lab: Lab, app: App) -> None:
    prober = Prober(endpoints(lab, app["echo"]))
    echo_ips = wait_proxied(lab, NS, "echo")
    pinned_ips = wait_proxied(lab, NS, "pinned")
    assert sorted(ipaddress.ip_address(ip).version for ip in echo_ips + pinned_ips) == [4, 4, 6, 6]
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


def test_daemonsets_with_and_without_host_network_run_on_every_node(lab: Lab, app: App) -> None:
    apply(lab, DAEMONSETS)
    cidrs = {n["metadata"]["name"]: n["spec"]["podCIDRs"] for n in lab.nodes()}
    node_ips = {n.name: {n.ipv4, n.ipv6} for n in lab.cfg.all_nodes}
    for name, host in (("ds-pod", False), ("ds-host", True)):
        got = wait_pods(lab, NS, f"app={name}", count=len(node_ips))
        assert sorted(p["spec"]["nodeName"] for p in got) == sorted(node_ips)
        for pod in got:
            ips = [i["ip"] for i in pod["status"]["podIPs"]]
            if host:
                assert set(ips) == node_ips[pod["spec"]["nodeName"]], pod_name(pod)
            else:
                assert _in_cidrs(ips, cidrs[pod["spec"]["nodeName"]]), (pod_name(pod), ips)
    lab.kubectl("delete", "-n", NS, "daemonset/ds-pod", "daemonset/ds-host")
    wait_gone(lab, NS, "app in (ds-pod, ds-host)")


def test_statefulset_and_job_complete(lab: Lab, app: App) -> None:
    apply(lab, STATEFUL_AND_JOB)
    db = wait_pods(lab, NS, "app=db", count=2)
    assert sorted(p["metadata"]["name"] for p in db) == ["db-0", "db-1"]
    lab.kubectl("wait", "-n", NS, "job/once", "--for=condition=Complete", "--timeout=120s")
    done = pods(lab, NS, "app=once")
    assert [p["status"]["phase"] for p in done] == ["Succeeded", "Succeeded"]
    # A finished pod runs nothing any more: kubelet stopped its sandbox too.
    for pod in done:
        node, uid = pod["spec"]["nodeName"], pod["metadata"]["uid"]
        still = set(pod_containers(lab, node, uid)) & set(running_tasks(lab, node))
        assert not still, f"{pod_name(pod)}: still running {still}"
    lab.kubectl("delete", "-n", NS, "statefulset/db", "job/once", "--cascade=foreground")
    wait_gone(lab, NS, "app in (db, once)")


def _node_net(netns_name: str) -> tuple[set[str], dict[str, str]]:
    """Links, and host routes (/32, /128) by destination with the link they leave by, in a node
    namespace: what CNI ADD creates for pods (a host-side veth and a route to each address)."""
    with NetNS(netns_name) as ns:
        names = {int(link["index"]): str(link.get("ifname")) for link in ns.link("dump")}
        routes = {
            str(r.get("dst")): names.get(r.get("oif"), "?")
            for r in ns.route("dump", table=254)
            if r["dst_len"] in (32, 128) and r.get("dst")
        }
    return set(names.values()), routes


def _netns_files(lab: Lab, node: str) -> dict[str, int]:
    """Network namespace files in the node's /run/netns (its own mount namespace) -> inode."""
    script = "for f in /run/netns/*; do [ -e $f ] && echo ${f##*/} $(stat -L -c %i $f); done; true"
    out = subprocess.run(lab.in_node(node, ["sh", "-c", script]), capture_output=True, text=True, check=True)
    return {name: int(ino) for name, ino in (line.split() for line in out.stdout.splitlines())}


def _allocations(lab: Lab, node: str) -> set[str]:
    """Addresses the node's IPAM holds: stockade-cni's (one file per address under its IPAM
    directory; released ones wait in quarantine/, a directory not listed here) or host-local's
    leases (--cni lab)."""
    script = "ls /var/lib/stockade/ipam/* /var/lib/cni/networks/* 2>/dev/null; true"
    out = subprocess.run(lab.in_node(node, ["sh", "-c", script]), capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_deleting_the_workloads_removes_containers_sandboxes_and_addresses(lab: Lab, app: App) -> None:
    victims = app["echo"] + app["pinned"]
    uids = {str(p["metadata"]["uid"]) for p in victims}
    ips = {i["ip"] for p in victims for i in p["status"]["podIPs"]}
    # Each victim's host-side link: the one its node's route to the pod leaves by (other pods of
    # the session may run on the nodes, with links of their own).
    host_links = {
        n.name: {link for dst, link in _node_net(n.netns)[1].items() if dst in ips} for n in lab.cfg.all_nodes
    }
    assert sum(map(len, host_links.values())) == len(victims), host_links
    # Each victim's network namespace file (containerd's /run/netns/cni-*), found by the inode of
    # its sandbox's namespace.
    inodes = {os.stat(f"/proc/{sandbox_pid(lab, p)}/ns/net").st_ino for p in victims}
    pod_netns = {
        n.name: {f for f, ino in _netns_files(lab, n.name).items() if ino in inodes}
        for n in lab.cfg.all_nodes
    }
    assert sum(map(len, pod_netns.values())) == len(victims), pod_netns
    allocated = set().union(*(_allocations(lab, n.name) for n in lab.cfg.all_nodes))
    assert ips <= allocated, f"addresses without an IPAM allocation: {ips - allocated}"
    lab.kubectl("delete", "-n", NS, "deployment/echo", "deployment/pinned", "service/echo", "service/pinned")
    wait_gone(lab, NS, "app in (echo, pinned)")

    def left_on(node: str, netns_name: str) -> list[str]:
        found = []
        tasks = running_tasks(lab, node)
        for uid in uids:
            found += [f"running container {c}" for c in pod_containers(lab, node, uid) if c in tasks]
        links, routes = _node_net(netns_name)
        found += [f"link {link}" for link in links & host_links[node]]
        found += [f"route {r}" for r in set(routes) & ips]
        # Inside the node's mount namespace: the pods' netns files (containerd names them cni-*)
        # and their address allocations.
        listing = set(_netns_files(lab, node)) | _allocations(lab, node)
        found += [f"netns {f}" for f in listing if f in pod_netns[node]]
        found += [f"IPAM allocation {f}" for f in listing if f in ips]
        cgroups = subprocess.run(
            ["find", f"/sys/fs/cgroup/pids/{lab.cfg.prefix}{node}", "-name", "pod*"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        found += [f"cgroup of {u}" for u in uids if u in cgroups or u.replace("-", "_") in cgroups]
        return found

    for node in lab.cfg.all_nodes:
        eventually(f"{node.name} keeps what its pods had", functools.partial(left_on, node.name, node.netns))
