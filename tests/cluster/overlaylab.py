"""Nodes without kubelets for the overlay's end-to-end test: a hub network namespace holding the
underlay bridge and a bare control plane (etcd + kube-apiserver listening on the bridge), and one
network namespace per node, joined to the bridge by a veth, running a real ``stockade agent``
process (real applier, real overlay, CNI socket).

Everything a kubelet and a container runtime would do is done here as they do it:

- a Node object is created through the API with its podCIDRs, and its InternalIP is written
  through the status subresource;
- ``stockade-cni install`` writes the node's launcher and conflist; a pod sandbox is a network
  namespace, attached by executing the installed launcher with the CNI environment (``CNI_ARGS``
  with the K8S_POD_* keys, as containerd passes them) and the plugin's configuration on stdin, in
  the form libcni derives from a conflist (``cniVersion`` and ``name`` copied into the plugin's
  object); DEL the same way;
- the pod's ``status.podIPs`` are then patched through the status subresource.

Pods talk through :class:`Pod` (a thread inside the pod's namespace) to :class:`Server`s
listening in other pods. Nodes' VXLAN state is read with pyroute2 in a thread inside the node.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute, netns

from tests.cluster.lab.kube import MERGE, Kube
from tests.support.netlab import _NsWorker

BIN = Path(sys.executable).parent
HUB_ADDRESS = "192.0.2.254"  # the bridge in the hub: where the apiserver listens
AGENT_PORT = 9542
PORT = 8080  # every pod's server
IFF_NODAD = 0x02


def underlay_address(index: int) -> str:
    return f"192.0.2.{index}"


def pod_cidrs(index: int) -> tuple[str, str]:
    return f"10.244.{index}.0/24", f"fd00:10:244:{index}::/64"


def _sysctl(key: str, value: str) -> None:
    Path("/proc/sys", key).write_text(value)


def make_hub(name: str) -> None:
    """The hub namespace (created empty): loopback and the bridge ``br0`` up, with its address."""
    netns.create(name)
    with IPRoute(netns=name) as ipr:
        ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
        ipr.link("add", ifname="br0", kind="bridge")
        index = ipr.link_lookup(ifname="br0")[0]
        ipr.addr("add", index=index, address=HUB_ADDRESS, prefixlen=24)
        ipr.link("set", index=index, state="up")


@dataclass
class AgentProcess:
    proc: subprocess.Popen[bytes]
    log: Path

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


@dataclass
class Node:
    """One node: its namespace (``self.netns``) on the underlay, its CNI files and its agent."""

    name: str
    index: int
    hub: str
    root: Path
    kube: Kube
    netns: str = ""
    agent: AgentProcess | None = None
    plugin_conf: dict[str, Any] = field(default_factory=dict)
    worker: _NsWorker | None = None

    def __post_init__(self) -> None:
        self.netns = f"{self.hub}-{self.name}"
        self.dir = self.root / self.name
        self.socket = self.dir / "run" / "cni.sock"
        self.ipam = self.dir / "ipam"
        self.bin = self.dir / "bin"

    # --- the namespace and its underlay ---

    def create(self) -> None:
        netns.create(self.netns)
        self.worker = _NsWorker(self.netns)
        peer = f"ul-{self.name}"
        with IPRoute(netns=self.hub) as hub:
            hub.link("add", ifname=peer, kind="veth", peer={"ifname": "ul0", "net_ns_fd": self.netns})
            index = hub.link_lookup(ifname=peer)[0]
            hub.link("set", index=index, master=hub.link_lookup(ifname="br0")[0], state="up")
        self.worker.call(self._setup)

    def _setup(self) -> None:
        # Strict reverse-path filtering on every interface: decapsulated pod traffic must arrive on
        # the device the route back to its source uses (the overlay device), or it is dropped.
        for key in ("all", "default"):
            _sysctl(f"net/ipv4/conf/{key}/rp_filter", "1")
        with IPRoute() as ipr:
            ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
            index = ipr.link_lookup(ifname="ul0")[0]
            ipr.addr("add", index=index, address=underlay_address(self.index), prefixlen=24)
            ipr.link("set", index=index, state="up")

    def close(self) -> None:
        self.stop_agent()
        if self.worker is not None:
            self.worker.close()
            self.worker = None
        with contextlib.suppress(OSError):
            netns.remove(self.netns)  # its links (veth, VXLAN, pod veths' host ends) go with it

    def call(self, fn: Any, *args: Any) -> Any:
        assert self.worker is not None
        return self.worker.call(fn, *args)

    # --- the API objects a kubelet would write ---

    def register(self) -> dict[str, Any]:
        created = self.kube.create(
            "/api/v1/nodes",
            {"metadata": {"name": self.name}, "spec": {"podCIDRs": list(pod_cidrs(self.index))}},
        )
        status = {"status": {"addresses": [{"type": "InternalIP", "address": underlay_address(self.index)}]}}
        self.kube.patch(f"/api/v1/nodes/{self.name}/status", status, kind=MERGE)
        return created

    # --- the CNI installer and the agent, as the DaemonSet runs them ---

    def install_cni(self) -> None:
        conf_dir = self.dir / "net.d"
        argv = [str(BIN / "stockade-cni"), "install", "--bin-dir", str(self.bin), "--conf-dir", str(conf_dir)]
        for cidr in pod_cidrs(self.index):
            argv += ["--pod-cidr", cidr]
        argv += ["--ipam-dir", str(self.ipam), "--agent-socket", str(self.socket), "--agent-timeout", "10"]
        subprocess.run(argv, check=True, capture_output=True)
        conflist = json.loads((conf_dir / "10-stockade.conflist").read_text())
        (plugin,) = conflist["plugins"]
        self.plugin_conf = {"cniVersion": conflist["cniVersion"], "name": conflist["name"], **plugin}

    def start_agent(self, kubeconfig: Path) -> None:
        self.socket.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        log = self.dir / "agent.log"
        argv = [str(BIN / "stockade"), "agent", "--node", self.name, "--kubeconfig", str(kubeconfig)]
        argv += [
            "--listen",
            f"127.0.0.1:{AGENT_PORT}",
            "--check-interval",
            "1",
            "--cni-socket",
            str(self.socket),
        ]
        with log.open("ab") as out:
            proc = subprocess.Popen(
                ["nsenter", f"--net=/run/netns/{self.netns}", *argv], stdout=out, stderr=subprocess.STDOUT
            )
        self.agent = AgentProcess(proc, log)

    def stop_agent(self) -> None:
        if self.agent is None or self.agent.proc.poll() is not None:
            return
        self.agent.proc.send_signal(signal.SIGTERM)
        try:
            self.agent.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.agent.proc.kill()
            self.agent.proc.wait()

    def agent_ready(self) -> bool:
        assert self.agent is not None
        if self.agent.proc.poll() is not None:
            raise AssertionError(f"the agent of {self.name} exited:\n{self.agent.tail()}")

        def ask() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{AGENT_PORT}/readyz", timeout=2) as resp:
                    return bool(resp.status == 200)
            except (urllib.error.URLError, OSError):
                return False

        return bool(self.call(ask))

    def cni(self, command: str, *, container_id: str, pod: Pod) -> dict[str, Any] | None:
        """The installed launcher, run as a runtime runs it; the ADD result, None for DEL."""
        pod_args = {
            "K8S_POD_NAMESPACE": pod.namespace,
            "K8S_POD_NAME": pod.name,
            "K8S_POD_INFRA_CONTAINER_ID": container_id,
            "K8S_POD_UID": pod.uid,
        }
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": container_id,
            "CNI_NETNS": f"/run/netns/{pod.netns}",
            "CNI_IFNAME": "eth0",
            "CNI_PATH": str(self.bin),
            "CNI_ARGS": ";".join(["IgnoreUnknown=1", *(f"{k}={v}" for k, v in pod_args.items())]),
        }
        run = subprocess.run(
            ["nsenter", f"--net=/run/netns/{self.netns}", str(self.bin / "stockade-cni")],
            input=json.dumps(self.plugin_conf).encode(),
            env=env,
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert run.returncode == 0, (
            f"CNI {command} of {pod.namespace}/{pod.name}: {run.stdout!r} {run.stderr!r}"
        )
        return json.loads(run.stdout) if command == "ADD" else None


@dataclass
class Pod:
    """A pod: its API object, its sandbox (a network namespace) and a thread inside it."""

    namespace: str
    name: str
    node: Node
    uid: str = ""
    netns: str = ""
    addresses: tuple[str, ...] = ()
    worker: _NsWorker | None = None
    server: Server | None = None

    def __post_init__(self) -> None:
        self.netns = f"{self.node.hub}-{self.namespace}-{self.name}"
        self.container_id = f"sandbox-{self.namespace}-{self.name}-{os.getpid()}"

    def create(self) -> None:
        body = {
            "metadata": {"name": self.name, "labels": {"app": self.name}},
            "spec": {
                "nodeName": self.node.name,
                "containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10.2"}],
            },
        }
        self.uid = self.node.kube.create(f"/api/v1/namespaces/{self.namespace}/pods", body)["metadata"]["uid"]
        netns.create(self.netns)
        self.worker = _NsWorker(self.netns)

    def add(self) -> None:
        """CNI ADD (returns once the agent programmed the pod)."""
        result = self.node.cni("ADD", container_id=self.container_id, pod=self)
        assert result is not None
        self.addresses = tuple(ip["address"].split("/")[0] for ip in result["ips"])

    def report_status(self) -> None:
        """What the kubelet writes once the sandbox is up."""
        status = {
            "status": {
                "phase": "Running",
                "podIP": self.addresses[0],
                "podIPs": [{"ip": a} for a in self.addresses],
            }
        }
        self.node.kube.patch(
            f"/api/v1/namespaces/{self.namespace}/pods/{self.name}/status", status, kind=MERGE
        )

    def serve(self) -> None:
        assert self.worker is not None
        self.server = Server(self.worker.call(_listen))

    def delete(self) -> None:
        """CNI DEL, then the API object, as the kubelet tears a pod down."""
        self.close_server()
        self.node.cni("DEL", container_id=self.container_id, pod=self)
        self.node.kube.delete(
            f"/api/v1/namespaces/{self.namespace}/pods/{self.name}", {"gracePeriodSeconds": 0}
        )

    def address(self, family: int) -> str:
        return next(a for a in self.addresses if (":" in a) == (family == 6))

    def reach(self, other: Pod, family: int, *, timeout: float = 1.0) -> bool:
        """Whether a TCP connection to ``other``'s server succeeds and arrives from our own address."""
        assert self.worker is not None
        source = self.address(family)
        answer = self.worker.call(_connect, other.address(family), timeout)
        assert answer in (None, source), f"{self.name} -> {other.name}: seen as {answer}, not {source}"
        return answer is not None

    def close_server(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None

    def close(self) -> None:
        self.close_server()
        if self.worker is not None:
            self.worker.close()
            self.worker = None
        with contextlib.suppress(OSError):
            netns.remove(self.netns)


def _listen() -> socket.socket:
    """A dual-stack listener on every address of the pod (called inside the pod's namespace)."""
    sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.bind(("::", PORT))
    sock.listen(64)
    return sock


def _connect(address: str, timeout: float) -> str | None:
    """The source address the server saw, or None when no connection was made in ``timeout``
    (a dropped SYN; one attempt only when ``timeout`` is under TCP's 1 s retransmission)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect((address, PORT))
            return sock.recv(64).decode().strip() or None
        except OSError:
            return None


class Server:
    """Answers every connection with the address it came from (unmapped), until closed."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, peer = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn, contextlib.suppress(OSError):
                conn.sendall(peer[0].removeprefix("::ffff:").encode() + b"\n")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()


def wait_until(what: str, check: Any, *, timeout: float, nodes: tuple[Node, ...] = ()) -> float:
    """Seconds until ``check()`` held; fails with the agents' logs after ``timeout``."""
    started = time.monotonic()
    while not check():
        for node in nodes:
            if node.agent is not None and node.agent.proc.poll() is not None:
                raise AssertionError(f"{what}: the agent of {node.name} exited:\n{node.agent.tail()}")
        if time.monotonic() - started > timeout:
            logs = "\n".join(f"--- {n.name}\n{n.agent.tail()}" for n in nodes if n.agent is not None)
            raise AssertionError(f"{what}: not within {timeout:.0f}s\n{logs}")
        time.sleep(0.1)
    return time.monotonic() - started


def make_root() -> Path:
    return Path(tempfile.mkdtemp(prefix="stockade-overlay-"))


def remove_root(root: Path) -> None:
    shutil.rmtree(root, ignore_errors=True)
