"""The agent with the real applier: a real kube-apiserver on one side, nftables in a network
namespace standing for the node on the other, pods routed through it. Objects created through the
API end up in the kernel as a fresh load of ``build_plan`` of the same objects would; traffic a
named policy allows is counted under that policy in ``/metrics``; a hand-flushed table is
repaired within the check interval; a restarted agent adopts the table without a moment without
rules.

Only the libnftables context lives in the node's namespace (created there, it stays bound to it);
the agent itself, and its API connections, stay in the host's, where the API server listens.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from compiler.loader import load_manifests
from compiler.plan import build_plan
from controller import cniclient
from controller.applier import Applier
from controller.cniproto import PodForget, PodReport
from controller.nft import Nft
from tests.cluster.agentrun import AGENT_OPTIONS, RunningAgent, running_agent
from tests.cluster.apiserver import ControlPlane, control_plane, free_port
from tests.cluster.lab.kube import MERGE, Kube
from tests.kernel.test_render_load import nsexec, scratch_netns
from tests.support.nodelab import (
    PODS,
    UDP_PORT,
    TableProbe,
    entered,
    kernel,
    kernel_of,
    routed_pods,
    send_udp,
)

pytestmark = pytest.mark.cluster

NODE = "n1"
NS = "x"
BOUND = 5.0  # seconds from an API write to the kernel, generous for a loaded machine
LISTS = ("/apis/networking.k8s.io/v1/networkpolicies", "/api/v1/pods", "/api/v1/namespaces", "/api/v1/nodes")
POLICIES = f"/apis/networking.k8s.io/v1/namespaces/{NS}/networkpolicies"
B_FROM_A = {
    "metadata": {"name": "b-from-a", "namespace": NS},
    "spec": {
        "podSelector": {"matchLabels": {"app": "b"}},
        "ingress": [
            {
                "from": [{"podSelector": {"matchLabels": {"app": "a"}}}],
                "ports": [{"protocol": "UDP", "port": UDP_PORT}],
            }
        ],
    },
}


@dataclass
class Node:
    netns: str
    pods: dict[str, str]
    nft: Nft


def oracle_kernel(kube: Kube) -> dict[str, Any]:
    sources = [(path, json.dumps(kube.get(path))) for path in LISTS]
    return kernel_of(build_plan(load_manifests(sources).model, node=NODE, options=AGENT_OPTIONS))


def wait_kernel(node: Node, kube: Kube, *, since: float, bound: float = BOUND) -> float:
    expected = oracle_kernel(kube)
    while kernel_or_none(node.netns) != expected:
        assert time.monotonic() - since < bound, f"the kernel did not hold the plan within {bound}s"
        time.sleep(0.05)
    return time.monotonic() - since


def kernel_or_none(ns: str) -> dict[str, Any] | None:
    try:
        return kernel(ns)
    except AssertionError:
        return None  # no table yet (nsexec fails)


def is_ready(agent: RunningAgent) -> bool:
    assert not agent.errors, agent.errors
    try:
        return agent.get("/readyz")[0] == 200
    except OSError:
        return False


def wait_for(what: str, check: Callable[[], bool], *, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what}: not within {timeout:.0f}s"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def cp() -> Iterator[ControlPlane]:
    with control_plane() as plane:
        kube = plane.kube
        kube.create("/api/v1/nodes", {"metadata": {"name": NODE}, "spec": {"podCIDRs": ["10.244.1.0/24"]}})
        kube.create("/api/v1/namespaces", {"metadata": {"name": NS}})
        for name, ip in PODS.items():
            kube.create(
                f"/api/v1/namespaces/{NS}/pods",
                {
                    "metadata": {"name": name, "labels": {"app": name}},
                    "spec": {
                        "nodeName": NODE,
                        "containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10.2"}],
                    },
                },
            )
            status = {"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}}
            kube.patch(f"/api/v1/namespaces/{NS}/pods/{name}/status", status, kind=MERGE)
        yield plane


@pytest.fixture(scope="module")
def node() -> Iterator[Node]:
    with scratch_netns("agentnode") as ns, contextlib.ExitStack() as stack:
        with entered(ns):
            pods = stack.enter_context(routed_pods(ns))
            nft = Nft()
            nft.list_table()  # its first use, here: the context is bound to this namespace
        yield Node(ns, pods, nft)


@pytest.fixture(scope="module")
def cni_socket(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cni") / "cni.sock"


@pytest.fixture(scope="module")
def agent(cp: ControlPlane, node: Node, cni_socket: Path) -> Iterator[RunningAgent]:
    applier = Applier(nft=node.nft)
    with running_agent(
        node=NODE,
        kubeconfig=cp.kubeconfig,
        port=free_port(),
        applier=applier,
        check_interval=1.0,
        cni_socket=cni_socket,
    ) as running:
        wait_for("/readyz 200", lambda: is_ready(running), timeout=60)
        yield running


def test_the_kernel_holds_the_plan_of_the_api_objects(
    agent: RunningAgent, node: Node, cp: ControlPlane
) -> None:
    wait_kernel(node, cp.kube, since=time.monotonic())


def test_a_policy_reaches_the_kernel_and_counts_what_it_allows(
    agent: RunningAgent, node: Node, cp: ControlPlane
) -> None:
    started = time.monotonic()
    cp.kube.create(POLICIES, B_FROM_A)
    latency = wait_kernel(node, cp.kube, since=started)
    print(f"policy create -> kernel: {latency * 1000:.0f} ms")
    send_udp(node.pods["a"], PODS["a"], PODS["b"], 7)
    labels = 'direction="ingress",namespace="x",policy="b-from-a",rule="0"'
    pattern = re.compile(rf"^stockade_policy_rule_packets_total\{{{re.escape(labels)}\}} (\S+)$", re.M)

    def counted() -> float:
        found = pattern.search(agent.get("/metrics")[1])
        return float(found.group(1)) if found else 0.0

    wait_for("7 packets under b-from-a", lambda: counted() >= 7, timeout=10)


def test_a_pod_the_cni_reports_is_in_the_kernel_when_the_report_is_answered(
    agent: RunningAgent, node: Node, cp: ControlPlane, cni_socket: Path
) -> None:
    """The CNI plugin's ADD: the pod exists in the API without an address yet (kubelet reports
    it later); the socket answers only once the kernel dispatches the reported address."""
    created = cp.kube.create(
        f"/api/v1/namespaces/{NS}/pods",
        {
            "metadata": {"name": "c", "labels": {"app": "b"}},  # selected by b-from-a: isolated
            "spec": {
                "nodeName": NODE,
                "containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10.2"}],
            },
        },
    )
    report = PodReport(created["metadata"]["uid"], NS, "c", "sandbox-c", ("10.244.1.4",))
    started = time.monotonic()
    cniclient.add_pod(report, path=str(cni_socket), timeout=10)
    answered = time.monotonic() - started
    listing = nsexec(node.netns, "nft", "-j", "list", "table", "inet", "stockade").stdout
    dispatch = [
        o["map"]
        for o in json.loads(listing)["nftables"]
        if "map" in o and "10.244.1.4" in json.dumps(o["map"])
    ]
    assert dispatch, "the reported address is in no dispatch map once the CNI's ADD is answered"
    print(f"CNI ADD answered in {answered * 1000:.0f} ms, with the pod's address in the kernel")
    cniclient.del_pod(PodForget("sandbox-c", uid=report.uid), path=str(cni_socket), timeout=10)
    cp.kube.delete(f"/api/v1/namespaces/{NS}/pods/c", {"gracePeriodSeconds": 0})


def test_a_flushed_table_is_repaired_within_the_check_interval(
    agent: RunningAgent, node: Node, cp: ControlPlane
) -> None:
    wait_kernel(node, cp.kube, since=time.monotonic())
    nsexec(node.netns, "nft", "flush", "table", "inet", "stockade")
    flushed = time.monotonic()
    repaired = wait_kernel(node, cp.kube, since=flushed, bound=10)
    print(f"flush -> repaired: {repaired:.1f} s (check interval 1 s)")
    assert re.search(r"^stockade_drift_repairs_total [1-9]", agent.get("/metrics")[1], re.M)


def test_a_restarted_agent_adopts_the_table_without_a_window(
    agent: RunningAgent, node: Node, cp: ControlPlane
) -> None:
    """A second agent (a fresh applier, as after a restart) takes over the table while a probe
    lists it continuously: never missing, never without rules."""
    wait_kernel(node, cp.kube, since=time.monotonic())
    with entered(node.netns):
        probe = TableProbe()
        probe.__enter__()  # its thread starts here, in the node's namespace
        nft = Nft()
        nft.list_table()
    try:
        with running_agent(
            node=NODE, kubeconfig=cp.kubeconfig, port=free_port(), applier=Applier(nft=nft)
        ) as second:
            wait_for("/readyz 200", lambda: is_ready(second), timeout=60)
            wait_kernel(node, cp.kube, since=time.monotonic())
    finally:
        probe.__exit__(None, None, None)
    assert probe.listings > 10
    assert probe.gaps == []
