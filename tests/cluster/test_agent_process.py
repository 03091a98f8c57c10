"""``stockade agent`` as installed, a process on the node: the console script, its flags, its
kubeconfig, the applier it builds (libnftables in its own network namespace, as a DaemonSet with
hostNetwork runs it on a node), the CNI socket, and SIGTERM.

The node is a network namespace; the control plane runs on that namespace's loopback, so the agent
process shares the namespace of the nftables it programs and still reaches the API server. The test
makes its API calls from the same namespace (``cp.here()``).
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from compiler.loader import load_manifests
from compiler.plan import build_plan
from controller import cniclient
from controller.cniproto import PodReport
from tests.cluster.apiserver import ControlPlane, control_plane, free_port
from tests.cluster.lab.kube import MERGE
from tests.kernel.test_render_load import scratch_netns
from tests.support.nodelab import PODS, UDP_PORT, entered, has_table, kernel, kernel_of, routed_pods

pytestmark = pytest.mark.cluster

NODE = "n1"
NS = "x"
LISTS = ("/apis/networking.k8s.io/v1/networkpolicies", "/api/v1/pods", "/api/v1/namespaces", "/api/v1/nodes")
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
class AgentProcess:
    proc: subprocess.Popen[bytes]
    url: str
    log: Path
    cni_socket: Path

    def get(self, path: str) -> int:
        try:
            with urllib.request.urlopen(self.url + path, timeout=5) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as exc:
            return exc.code
        except OSError:
            return 0  # not listening yet


def oracle_kernel(cp: ControlPlane) -> dict[str, Any]:
    with cp.here():
        sources = [(path, json.dumps(cp.kube.get(path))) for path in LISTS]
    return kernel_of(build_plan(load_manifests(sources).model, node=NODE))


def wait_until(what: str, check: Any, *, timeout: float, agent: AgentProcess) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if agent.proc.poll() is not None:
            raise AssertionError(
                f"the agent exited ({agent.proc.returncode}):\n{agent.log.read_text()[-3000:]}"
            )
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f}s\n{agent.log.read_text()[-3000:]}")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def node() -> Iterator[tuple[str, dict[str, str]]]:
    with scratch_netns("agentproc") as ns, contextlib.ExitStack() as stack:
        with entered(ns):
            pods = stack.enter_context(routed_pods(ns))  # also brings the namespace's loopback up
        yield ns, pods


@pytest.fixture(scope="module")
def cp(node: tuple[str, dict[str, str]]) -> Iterator[ControlPlane]:
    with control_plane(netns=node[0]) as plane, plane.here():
        kube = plane.kube
        kube.create("/api/v1/nodes", {"metadata": {"name": NODE}, "spec": {"podCIDRs": ["10.244.1.0/24"]}})
        kube.create("/api/v1/namespaces", {"metadata": {"name": NS}})
        for name, ip in PODS.items():
            spec = {"nodeName": NODE, "containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10.2"}]}
            kube.create(
                f"/api/v1/namespaces/{NS}/pods",
                {"metadata": {"name": name, "labels": {"app": name}}, "spec": spec},
            )
            status = {"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}}
            kube.patch(f"/api/v1/namespaces/{NS}/pods/{name}/status", status, kind=MERGE)
        yield plane


@pytest.fixture(scope="module")
def agent(
    node: tuple[str, dict[str, str]], cp: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AgentProcess]:
    ns = node[0]
    workdir = tmp_path_factory.mktemp("agent")
    port = free_port()
    socket_path = workdir / "cni.sock"
    log = workdir / "agent.log"
    argv = [
        str(Path(sys.executable).parent / "stockade"),
        "agent",
        "--node",
        NODE,
        "--kubeconfig",
        str(cp.kubeconfig),
        "--listen",
        f"127.0.0.1:{port}",
        "--check-interval",
        "1",
        "--cni-socket",
        str(socket_path),
    ]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{ns}", *argv], stdout=out, stderr=subprocess.STDOUT
        )
    running = AgentProcess(proc, f"http://127.0.0.1:{port}", log, socket_path)
    try:
        yield running
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_ready_and_the_kernel_holds_the_plan(
    agent: AgentProcess, cp: ControlPlane, node: tuple[str, dict[str, str]]
) -> None:
    with cp.here():  # the agent's /readyz listens on the node namespace's loopback
        wait_until("/readyz 200", lambda: agent.get("/readyz") == 200, timeout=60, agent=agent)
    expected = oracle_kernel(cp)
    wait_until(
        "the plan in the kernel",
        lambda: has_table(node[0]) and kernel(node[0]) == expected,
        timeout=10,
        agent=agent,
    )


def test_a_policy_reaches_the_kernel(
    agent: AgentProcess, cp: ControlPlane, node: tuple[str, dict[str, str]]
) -> None:
    with cp.here():
        cp.kube.create(f"/apis/networking.k8s.io/v1/namespaces/{NS}/networkpolicies", B_FROM_A)
    expected = oracle_kernel(cp)
    wait_until("the policy in the kernel", lambda: kernel(node[0]) == expected, timeout=10, agent=agent)


def test_the_cni_socket_answers_once_the_pod_is_in_the_kernel(
    agent: AgentProcess, cp: ControlPlane, node: tuple[str, dict[str, str]]
) -> None:
    with cp.here():
        created = cp.kube.create(
            f"/api/v1/namespaces/{NS}/pods",
            {
                "metadata": {"name": "c", "labels": {"app": "b"}},
                "spec": {
                    "nodeName": NODE,
                    "containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10.2"}],
                },
            },
        )
    cniclient.add_pod(
        PodReport(created["metadata"]["uid"], NS, "c", "sandbox-c", ("10.244.1.4",)),
        path=str(agent.cni_socket),
        timeout=10,
    )
    assert "10.244.1.4" in json.dumps(kernel(node[0])["map"])
    assert agent.cni_socket.stat().st_mode & 0o777 == 0o600


def test_sigterm_stops_the_agent_and_the_kernel_keeps_the_ruleset(
    agent: AgentProcess, node: tuple[str, dict[str, str]]
) -> None:
    before = kernel(node[0])
    agent.proc.send_signal(signal.SIGTERM)
    assert agent.proc.wait(timeout=30) == 0, agent.log.read_text()[-3000:]
    assert kernel(node[0]) == before
