"""A node network namespace for driving ``stockade-cni`` as a container runtime does.

The plugin runs as a separate process inside the node's namespace (``nsenter --net``), with the
CNI_* environment and the configuration on stdin, exactly as containerd runs it; ``cnitool``
(libcni, built by tests/tools/build.sh) drives it the same way for the cnitool tests. Pod
sandboxes are network namespaces the lab creates and always removes. Inspection (links,
routes) runs through pyroute2 in a thread inside the namespace, never through ``ip``.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyroute2 import netns

from tests.support.netlab import _NsWorker

PLUGIN = Path(sys.executable).parent / "stockade-cni"
TOOLS = Path(os.environ.get("STOCKADE_TOOLS_DIR", "/var/cache/stockade/tools"))
LIBCNI_CACHE = Path("/var/lib/cni/results")
NODE_V4 = "10.99.0.1"
NODE_V6 = "fd00:99::1"
POD_CIDR4 = "10.99.1.0/24"
POD_CIDR6 = "fd00:99:1::/64"

_numbers = itertools.count()


def cnitool_path() -> Path:
    path = TOOLS / "bin" / "cnitool"
    if not path.exists():
        raise RuntimeError(f"cnitool is not built: run tests/tools/build.sh cnitool (looked for {path})")
    return path


@dataclass(frozen=True)
class PluginRun:
    returncode: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout) if self.stdout.strip() else None

    @property
    def error_code(self) -> int | None:
        data = self.json()
        return data.get("code") if self.returncode != 0 and isinstance(data, dict) else None


@dataclass(frozen=True)
class Snapshot:
    """What a CNI command may leave behind."""

    links: frozenset[str]
    routes: frozenset[str]
    allocations: frozenset[str]
    partial_files: frozenset[str]


@dataclass
class CniLab:
    lab_id: str = field(default_factory=lambda: f"k{os.getpid()}-c{next(_numbers)}")
    pod_cidrs: tuple[str, ...] = (POD_CIDR4, POD_CIDR6)
    plugin: Path = PLUGIN  # what the runtime executes (the bench also runs an installed launcher)

    def __post_init__(self) -> None:
        self.node = f"stk-{self.lab_id}-node"
        self.network = f"stk-{self.lab_id}"
        self.tmp = Path(tempfile.mkdtemp(prefix=f"stk-{self.lab_id}-"))
        self.ipam_dir = self.tmp / "ipam"
        self.conf_dir = self.tmp / "net.d"
        self.bin_dir = self.tmp / "bin"
        self.agent_socket = str(self.tmp / "agent" / "cni.sock")
        self.pods: list[str] = []
        self._worker: _NsWorker | None = None
        self._pod_numbers = itertools.count()

    # --- lifecycle ---

    def __enter__(self) -> CniLab:
        try:
            netns.create(self.node)
            self._worker = _NsWorker(self.node)
            self._worker.call(self._setup_node)
            self.conf_dir.mkdir()
            self.bin_dir.mkdir()
            os.symlink(self.plugin, self.bin_dir / "stockade-cni")
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._worker is not None:
            self._worker.close()
            self._worker = None
        for name in [*self.pods, self.node]:
            with contextlib.suppress(OSError):
                netns.remove(name)
        self.pods.clear()
        for path in LIBCNI_CACHE.glob(f"{self.network}-*"):
            path.unlink(missing_ok=True)
        shutil.rmtree(self.tmp, ignore_errors=True)

    def _setup_node(self) -> None:
        assert self._worker is not None
        ipr = self._worker.ipr()
        lo = ipr.link_lookup(ifname="lo")[0]
        ipr.link("set", index=lo, state="up")
        ipr.addr("add", index=lo, address=NODE_V4, prefixlen=32)
        ipr.addr("add", index=lo, address=NODE_V6, prefixlen=128, flags=0x02)

    def mark_agent_ready(self) -> None:
        """What the agent writes next to its socket once its first plan is in the kernel
        (controller.cniproto.ready_marker): STATUS needs it while the plugin waits for the agent."""
        marker = Path(self.agent_socket).parent / "agent-ready"
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text("{}\n")

    def new_pod(self) -> str:
        name = f"stk-{self.lab_id}-p{next(self._pod_numbers)}"
        netns.create(name)
        self.pods.append(name)
        return name

    def remove_pod(self, name: str) -> None:
        netns.remove(name)
        self.pods.remove(name)

    @staticmethod
    def netns_path(name: str) -> str:
        return f"/run/netns/{name}"

    # --- configuration ---

    def conf(self, version: str = "1.1.0", **overrides: Any) -> dict[str, Any]:
        conf: dict[str, Any] = {
            "cniVersion": version,
            "name": self.network,
            "type": "stockade-cni",
            "podCIDRs": list(self.pod_cidrs),
            "ipamDir": str(self.ipam_dir),
            "agentSocket": self.agent_socket,
            "agentTimeoutSeconds": 5,
            "quarantineSeconds": 0,
        }
        conf.update(overrides)
        return {k: v for k, v in conf.items() if v is not None}

    def write_conflist(self, version: str = "1.1.0", **overrides: Any) -> None:
        plugin = self.conf(version, **overrides)
        del plugin["cniVersion"], plugin["name"]
        conflist = {"cniVersion": version, "name": self.network, "plugins": [plugin]}
        (self.conf_dir / f"10-{self.network}.conflist").write_text(json.dumps(conflist))

    # --- running the plugin ---

    def run(
        self,
        command: str,
        *,
        conf: dict[str, Any] | bytes | None = None,
        container_id: str = "",
        pod: str | None = None,
        ifname: str = "eth0",
        args: str = "",
        env: dict[str, str] | None = None,
        timeout: float = 60,
    ) -> PluginRun:
        proc = self.start(
            command, conf=conf, container_id=container_id, pod=pod, ifname=ifname, args=args, env=env
        )
        stdout, stderr = proc.communicate(timeout=timeout)  # stdin was written and closed by start()
        return PluginRun(proc.returncode, stdout.decode(), stderr.decode())

    def start(
        self,
        command: str,
        *,
        conf: dict[str, Any] | bytes | None = None,
        container_id: str = "",
        pod: str | None = None,
        ifname: str = "eth0",
        args: str = "",
        env: dict[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        data = (
            conf
            if isinstance(conf, bytes)
            else json.dumps(conf if conf is not None else self.conf()).encode()
        )
        environ = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "CNI_COMMAND": command,
            "CNI_PATH": str(self.bin_dir),
        }
        if container_id:
            environ["CNI_CONTAINERID"] = container_id
        if pod is not None:
            environ["CNI_NETNS"] = self.netns_path(pod) if not pod.startswith("/") else pod
        if ifname:
            environ["CNI_IFNAME"] = ifname
        if args:
            environ["CNI_ARGS"] = args
        environ.update(env or {})
        proc = subprocess.Popen(
            ["nsenter", f"--net={self.netns_path(self.node)}", str(self.plugin)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=environ,
        )
        assert proc.stdin is not None
        proc.stdin.write(data)
        proc.stdin.close()
        proc.stdin = None  # written and closed: communicate() must not touch it again
        return proc

    def cnitool(self, verb: str, pod: str, *, args: str = "") -> PluginRun:
        environ = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "CNI_PATH": str(self.bin_dir),
            "NETCONFPATH": str(self.conf_dir),
        }
        if args:
            environ["CNI_ARGS"] = args
        result = subprocess.run(
            [
                "nsenter",
                f"--net={self.netns_path(self.node)}",
                str(cnitool_path()),
                verb,
                self.network,
                self.netns_path(pod),
            ],
            capture_output=True,
            text=True,
            env=environ,
            timeout=60,
            check=False,
        )
        return PluginRun(result.returncode, result.stdout, result.stderr)

    # --- inspection ---

    def snapshot(self) -> Snapshot:
        assert self._worker is not None

        def read() -> tuple[frozenset[str], frozenset[str]]:
            assert self._worker is not None
            ipr = self._worker.ipr()
            links = frozenset(str(link.get_attr("IFLA_IFNAME")) for link in ipr.get_links())
            routes = frozenset(
                f"{r.get_attr('RTA_DST')}/{r['dst_len']}"
                for family in (socket.AF_INET, socket.AF_INET6)
                for r in ipr.get_routes(family=family, table=254)
                if r.get_attr("RTA_DST") is not None
                and r.get_attr("RTA_DST").startswith(("10.99.1.", "10.99.3.", "fd00:99:1:"))
            )
            return links, routes

        links, routes = self._worker.call(read)
        network_dir = self.ipam_dir / self.network
        files = sorted(network_dir.iterdir()) if network_dir.exists() else []
        allocations = frozenset(
            p.name
            for p in files
            if p.is_file() and p.name not in ("lock",) and not p.name.startswith(("last-", ".tmp-"))
        )
        partial = (
            frozenset(str(p) for p in network_dir.rglob(".tmp-*")) if network_dir.exists() else frozenset()
        )
        return Snapshot(links=links, routes=routes, allocations=allocations, partial_files=partial)

    def in_node(self, fn: Any, *args: Any) -> Any:
        assert self._worker is not None
        return self._worker.call(fn, *args)

    def in_pod(self, pod: str, fn: Any, *args: Any) -> Any:
        worker = _NsWorker(pod)
        try:
            return worker.call(fn, *args)
        finally:
            worker.close()


def listen(address: str, port: int = 0) -> socket.socket:
    """A listening TCP socket (call inside a namespace's worker)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((address, port))
    sock.listen(8)
    sock.settimeout(5)
    return sock


def connect(address: str, port: int, timeout: float = 3.0) -> str:
    """Connect, read what the server sends (call inside a namespace's worker)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect((address, port))
        return sock.recv(64).decode()


def serve_once(server: socket.socket, reply: bytes) -> threading.Thread:
    """Answer one connection with ``reply`` and tell who connected (the peer's address)."""
    seen: list[str] = []

    def run() -> None:
        with contextlib.suppress(OSError):
            conn, peer = server.accept()
            with conn:
                seen.append(peer[0])
                conn.sendall(reply + b" " + peer[0].encode())

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread
