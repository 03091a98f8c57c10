"""Pod sandboxes: what the container runtime does for a pod, without containers.

A sandbox is the pod's network namespace, its CNI attachment, and one pod agent
(`tests.support.podagent`) that serves every declared container port and answers probes on
a UNIX control socket. Each sandbox is recorded in `<node dir>/pods/<uid>.json` before its
namespace exists, so the lab's clean-up finds it even if the stand-in dies half-way.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pyroute2 import NetNS, netns

from . import cni
from .state import Proc, pids_in_netns, proc_of, terminate, write_json
from .underlay import in_netns

log = logging.getLogger("standin.sandbox")

REPO = Path(__file__).resolve().parents[3]
AGENT_READY_TIMEOUT = 15.0


@dataclass
class Sandbox:
    uid: str
    namespace: str
    name: str
    netns: str  # "" for a host-network pod
    socket: str
    ips: list[str] = field(default_factory=list)
    agent: Proc | None = None
    network: dict[str, Any] | None = None  # the CNI config list used at ADD, for DEL
    network_file: str = ""
    cni_result: dict[str, Any] | None = None
    started_at: str = ""

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


def container_ports(pod: dict[str, Any]) -> dict[str, list[int]]:
    """Declared ports by protocol, from containers and restartable (sidecar) init containers."""
    spec = pod.get("spec", {})
    containers = list(spec.get("containers", []))
    containers += [c for c in spec.get("initContainers", []) if c.get("restartPolicy") == "Always"]
    out: dict[str, list[int]] = {"TCP": [], "UDP": [], "SCTP": []}
    for c in containers:
        for p in c.get("ports", []) or []:
            port = int(p["containerPort"])
            proto = str(p.get("protocol", "TCP"))
            if port not in out[proto]:
                out[proto].append(port)
    return out


class Sandboxes:
    """Creates and removes sandboxes for one node; the stand-in serialises calls per pod."""

    def __init__(
        self, *, node_dir: Path, lab_prefix: str, conf_dir: Path, cni_path: str, node_netns: str
    ) -> None:
        self.pods_dir = node_dir / "pods"
        self.pods_dir.mkdir(parents=True, exist_ok=True)
        self.sock_dir = node_dir / "sock"
        self.sock_dir.mkdir(parents=True, exist_ok=True)
        self.prefix = lab_prefix
        self.conf_dir = conf_dir
        self.cni_path = cni_path
        self.node_netns = node_netns

    def _record(self, sb: Sandbox) -> None:
        write_json(self.pods_dir / f"{sb.uid}.json", asdict(sb))

    def recorded(self) -> list[Sandbox]:
        out = []
        for f in sorted(self.pods_dir.glob("*.json")):
            raw = json.loads(f.read_text())
            raw["agent"] = Proc(**raw["agent"]) if raw.get("agent") else None
            out.append(Sandbox(**raw))
        return out

    def network_ready(self) -> bool:
        return cni.load_network(self.conf_dir) is not None

    def setup(self, pod: dict[str, Any], *, host_ips: list[str]) -> Sandbox:
        meta = pod["metadata"]
        uid = str(meta["uid"])
        host_network = bool(pod["spec"].get("hostNetwork"))
        sb = Sandbox(
            uid=uid,
            namespace=meta["namespace"],
            name=meta["name"],
            netns="" if host_network else f"{self.prefix}pod-{uid}",
            socket=str(self.sock_dir / f"{uid}.sock"),
        )
        self._record(sb)
        try:
            if host_network:
                sb.ips = list(host_ips)
            else:
                self._attach(sb)
            self._start_agent(sb, container_ports(pod))
        except Exception:
            self.teardown(sb)
            raise
        sb.started_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self._record(sb)
        return sb

    def _invocation(self, sb: Sandbox) -> cni.Invocation:
        return cni.Invocation(
            container_id=sb.uid,
            netns_path=f"/run/netns/{sb.netns}",
            ifname="eth0",
            args={
                "K8S_POD_NAMESPACE": sb.namespace,
                "K8S_POD_NAME": sb.name,
                "K8S_POD_INFRA_CONTAINER_ID": sb.uid,
                "K8S_POD_UID": sb.uid,
            },
        )

    def _attach(self, sb: Sandbox) -> None:
        net = cni.load_network(self.conf_dir)
        if net is None:
            raise RuntimeError(f"no CNI network configured in {self.conf_dir}")
        netns.create(sb.netns)
        with NetNS(sb.netns) as ns:
            # The runtime, not the CNI plugin, brings the pod's loopback up.
            ns.link("set", index=ns.link_lookup(ifname="lo")[0], state="up")
        sb.network, sb.network_file = net.conf, str(net.file)
        self._record(sb)  # DEL must run with this config even if the dir changes meanwhile
        sb.cni_result = cni.add(net, self._invocation(sb), cni_path=self.cni_path)
        sb.ips = cni.result_ips(sb.cni_result)
        if not sb.ips:
            raise RuntimeError(f"CNI ADD for {sb.key} returned no IPs: {sb.cni_result}")
        self._record(sb)

    def _start_agent(self, sb: Sandbox, ports: dict[str, list[int]]) -> None:
        argv = [
            sys.executable,
            "-m",
            "tests.support.podagent",
            "--control",
            sb.socket,
            "--tcp",
            ",".join(map(str, ports["TCP"])),
            "--udp",
            ",".join(map(str, ports["UDP"])),
            "--sctp",
            ",".join(map(str, ports["SCTP"])),
        ]
        if sb.netns:
            argv = in_netns(sb.netns, argv)
        logfile = self.pods_dir / f"{sb.uid}.log"
        with logfile.open("ab") as out:
            # The agent sets PDEATHSIG: it goes when the stand-in (its parent) goes, as a
            # runtime's containers would without their runtime in this lab.
            proc = subprocess.Popen(
                argv, cwd=REPO, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
            )
        sb.agent = proc_of(proc.pid, "agent", sb.netns or self.node_netns)
        self._record(sb)
        deadline = time.monotonic() + AGENT_READY_TIMEOUT
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"pod agent for {sb.key} exited {proc.returncode}: {logfile.read_text()[-800:]}"
                )
            if _ping(sb.socket):
                return
            time.sleep(0.05)
        raise RuntimeError(f"pod agent for {sb.key} did not answer on {sb.socket}")

    def teardown(self, sb: Sandbox) -> None:
        """Stop the agent, CNI DEL, remove the namespace and the record. Safe to repeat."""
        if sb.agent is not None:
            terminate([sb.agent], timeout=3.0)
        if sb.netns and sb.network is not None:
            net = cni.Network(file=Path(sb.network_file), conf=sb.network)
            try:
                cni.delete(net, self._invocation(sb), cni_path=self.cni_path, prev=sb.cni_result)
            except (cni.CNIError, subprocess.TimeoutExpired) as exc:
                log.warning("CNI DEL for %s: %s", sb.key, exc)
        if sb.netns and sb.netns in netns.listnetns():
            terminate([proc_of(p, "stray") for p in pids_in_netns([sb.netns])], timeout=2.0)
            netns.remove(sb.netns)
        with contextlib.suppress(FileNotFoundError):
            Path(sb.socket).unlink()
        (self.pods_dir / f"{sb.uid}.json").unlink(missing_ok=True)


def _ping(path: str) -> bool:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(1.0)
            s.connect(path)
            s.sendall(b"ping\n")
            return s.recv(16).startswith(b"pong")
    except OSError:
        return False
