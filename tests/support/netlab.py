"""The network-namespace lab: one node netns and N pod netns, routed the way Stockade's CNI does it.

Topology (names carry the creator's pid so leftovers of a crashed run can be found and removed)::

    stk-k<pid>-<n>-node            stk-k<pid>-<n>-<pod>
    ┌─────────────────────┐        ┌──────────────────────────┐
    │ lo: 169.254.1.1/32  │        │ eth0: 10.244.1.10/32     │
    │     InternalIPs     │  veth  │       fd00:10:244:1::a/128│
    │ stkv0: fe80::1/64 ──┼────────┼─ default via 169.254.1.1 onlink
    │ 10.244.1.10/32 dev stkv0     │   default via fe80::1     │
    │ fd00:..::a/128 dev stkv0     └──────────────────────────┘
    └─────────────────────┘

- Each pod is reached through a /32 and a /128 route to its own host-side veth, and sends
  everything to the node: IPv4 to 169.254.1.1 (a local address of the node, so every veth
  answers ARP for it), IPv6 to fe80::1 (configured on every host-side veth). Pod-to-pod traffic
  therefore crosses the node's `forward` hook, pod-to-node traffic its `input` hook.
- Forwarding is on (v4 and v6); DAD is off everywhere so addresses work at once; rp_filter is
  off so that anti-spoofing is the ruleset's job (and testable).
- ARP and NDP are left dynamic, as on a real node: a ruleset that drops neighbour discovery
  shows up as broken IPv6 reachability. `flush_neighbours()` makes every step start cold.

All netlink work runs in one worker thread per namespace (setns affects only the calling
thread), so the lab needs no `ip` command and no forks apart from the pod agents and `nft`.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import contextlib
import itertools
import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from pyroute2 import Conntrack, IPRoute, netns

from compiler import naming
from tests.support.addressing import DEFAULT_NODE_IPV4, DEFAULT_NODE_IPV6, Family, PodAddress
from tests.support.agents import AgentError, AgentProcess, spawn_agent, wait_ready
from tests.support.probe import PodEndpoint

T = TypeVar("T")

NETNS_DIR = Path("/run/netns")
RUN_DIR = Path("/run/stk")
NAME_PREFIX = "stk-k"
_LEFTOVER = re.compile(r"^stk-k(\d+)-")

GATEWAY4 = "169.254.1.1"
GATEWAY6 = "fe80::1"

IFA_F_NODAD = 0x02
RTNH_F_ONLINK = 0x04
RT_SCOPE_LINK = 253
NUD_NOARP = 0x40
NUD_PERMANENT = 0x80

_lab_numbers = itertools.count()


class LabError(RuntimeError):
    """The lab could not be built, used or torn down."""


class NftError(LabError):
    def __init__(self, message: str, ruleset: str) -> None:
        super().__init__(message)
        self.ruleset = ruleset


@dataclass(frozen=True)
class LabPod:
    """One pod of the lab. `name` is the caller's key (e.g. ``x/a``)."""

    name: str
    netns: str
    host_ifname: str
    ipv4: str
    ipv6: str
    control: str

    def address(self, family: Family) -> str:
        return self.ipv4 if family == 4 else self.ipv6

    def endpoint(self) -> PodEndpoint:
        return PodEndpoint(
            name=self.name, netns=self.netns, control=self.control, ipv4=self.ipv4, ipv6=self.ipv6
        )


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "pod"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def cleanup_leftovers() -> list[str]:
    """Remove namespaces and run dirs of labs whose creating process is gone. Returns what went."""
    removed: list[str] = []
    if NETNS_DIR.is_dir():
        for name in sorted(os.listdir(NETNS_DIR)):
            m = _LEFTOVER.match(name)
            if m and not _pid_alive(int(m.group(1))):
                with contextlib.suppress(OSError):
                    netns.remove(name)
                    removed.append(name)
    if RUN_DIR.is_dir():
        for entry in RUN_DIR.iterdir():
            m = re.match(r"^k(\d+)-", entry.name)
            if m and not _pid_alive(int(m.group(1))):
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(str(entry))
    return removed


def _write_sysctl(key: str, value: str) -> None:
    with open(Path("/proc/sys") / key.replace(".", "/"), "w") as f:
        f.write(value)


class _NsWorker:
    """A thread living in one network namespace; netlink sockets it opens belong to that netns."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"netns-{name}", initializer=self._enter
        )
        self._ipr: Any = None

    def _enter(self) -> None:
        netns.setns(self.name, flags=0)

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        return self._pool.submit(fn, *args).result(timeout=60)

    def ipr(self) -> Any:
        """The worker's IPRoute; call only from inside `call`."""
        if self._ipr is None:
            self._ipr = IPRoute()
        return self._ipr

    def close(self) -> None:
        def close_ipr() -> None:
            if self._ipr is not None:
                self._ipr.close()
                self._ipr = None

        with contextlib.suppress(Exception):
            self._pool.submit(close_ipr).result(timeout=10)
        self._pool.shutdown(wait=True)


class NetLab:
    """A node netns and one netns per pod. Use as a context manager, or call start()/stop()."""

    def __init__(
        self,
        pods: Sequence[PodAddress],
        *,
        node_ipv4: str = DEFAULT_NODE_IPV4,
        node_ipv6: str = DEFAULT_NODE_IPV6,
    ) -> None:
        self.lab_id = f"k{os.getpid()}-{next(_lab_numbers)}"
        self.node_netns = f"stk-{self.lab_id}-node"
        self.node_ipv4 = node_ipv4
        self.node_ipv6 = node_ipv6
        self.run_dir = RUN_DIR / self.lab_id
        pod_map: dict[str, LabPod] = {}
        for i, pod in enumerate(pods):
            slug = _slug(pod.name)
            ns = f"stk-{self.lab_id}-{slug}"
            if any(p.netns == ns for p in pod_map.values()) or pod.name in pod_map:
                raise LabError(f"pod names collide: {pod.name!r}")
            pod_map[pod.name] = LabPod(
                name=pod.name,
                netns=ns,
                host_ifname=f"{naming.POD_INTERFACE_PREFIX}v{i}",  # the CNI prefix: anti-spoofing applies
                ipv4=pod.ipv4,
                ipv6=pod.ipv6,
                control=str(self.run_dir / f"{slug}.sock"),
            )
        self.pods: Mapping[str, LabPod] = pod_map
        self._workers: dict[str, _NsWorker] = {}
        self._created: list[str] = []
        self._agents: dict[str, AgentProcess] = {}
        self._started = False
        self.setup_seconds = 0.0

    # --- lifecycle --------------------------------------------------------------------------

    def __enter__(self) -> NetLab:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        started = time.monotonic()
        cleanup_leftovers()
        atexit.register(self.stop)
        self._started = True
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self._create_netns(self.node_netns)
            self._workers[self.node_netns].call(self._setup_node)
            for pod in self.pods.values():
                self._create_netns(pod.netns)
                self._workers[pod.netns].call(_setup_pod_early)
                self._workers[self.node_netns].call(self._add_veth, pod)
                self._workers[pod.netns].call(_setup_pod_late, pod)
        except BaseException:
            self.stop()
            raise
        self.setup_seconds = time.monotonic() - started

    def _create_netns(self, name: str) -> None:
        if (NETNS_DIR / name).exists():
            raise LabError(f"netns {name} already exists")
        netns.create(name)
        self._created.append(name)
        self._workers[name] = _NsWorker(name)

    def stop(self) -> None:
        """Tear everything down (idempotent, best effort; raises if something stayed behind)."""
        if not self._started:
            return
        self._started = False
        atexit.unregister(self.stop)
        problems: list[str] = []
        self.stop_agents()
        for worker in self._workers.values():
            worker.close()
        self._workers.clear()
        for name in reversed(self._created):
            try:
                netns.remove(name)
            except OSError as exc:
                problems.append(f"netns {name}: {exc}")
        self._created.clear()
        shutil.rmtree(self.run_dir, ignore_errors=True)
        if problems:
            raise LabError("lab teardown incomplete: " + "; ".join(problems))

    # --- namespace setup (run inside the worker threads) ----------------------------------

    def _setup_node(self) -> None:
        for key, value in (
            ("net.ipv4.ip_forward", "1"),
            ("net.ipv6.conf.all.forwarding", "1"),
            ("net.ipv6.conf.default.forwarding", "1"),
            ("net.ipv6.conf.all.accept_dad", "0"),
            ("net.ipv6.conf.default.accept_dad", "0"),
            ("net.ipv4.conf.all.rp_filter", "0"),
            ("net.ipv4.conf.default.rp_filter", "0"),
        ):
            _write_sysctl(key, value)
        ipr = self._workers[self.node_netns].ipr()
        lo = ipr.link_lookup(ifname="lo")[0]
        ipr.link("set", index=lo, state="up")
        ipr.addr("add", index=lo, address=GATEWAY4, prefixlen=32)
        ipr.addr("add", index=lo, address=self.node_ipv4, prefixlen=32)
        ipr.addr("add", index=lo, address=self.node_ipv6, prefixlen=128, flags=IFA_F_NODAD)

    def _add_veth(self, pod: LabPod) -> None:
        ipr = self._workers[self.node_netns].ipr()
        ipr.link("add", ifname=pod.host_ifname, kind="veth", peer={"ifname": "eth0", "net_ns_fd": pod.netns})
        idx = ipr.link_lookup(ifname=pod.host_ifname)[0]
        ipr.link("set", index=idx, state="up")
        ipr.addr("add", index=idx, address=GATEWAY6, prefixlen=64, flags=IFA_F_NODAD)
        ipr.route("add", dst=f"{pod.ipv4}/32", oif=idx, scope=RT_SCOPE_LINK)
        ipr.route("add", dst=f"{pod.ipv6}/128", oif=idx, family=socket.AF_INET6)

    # --- pod agents ---------------------------------------------------------------------------

    def start_agents(
        self,
        *,
        tcp: Sequence[int] = (),
        udp: Sequence[int] = (),
        sctp: Sequence[int] = (),
        wait: float = 30.0,
    ) -> None:
        """Start one pod agent per pod and wait until every one answers on its control socket."""
        if not self._started:
            raise LabError("start the lab before its agents")
        for pod in self.pods.values():
            self._agents[pod.name] = spawn_agent(
                name=pod.name,
                netns=pod.netns,
                control=pod.control,
                log=self.run_dir / f"{_slug(pod.name)}.log",
                tcp=tcp,
                udp=udp,
                sctp=sctp,
            )
        try:
            wait_ready(list(self._agents.values()), timeout=wait)
        except AgentError as exc:
            raise LabError(str(exc)) from exc

    def agent_log(self, name: str) -> str:
        return self._agents[name].log_text() if name in self._agents else ""

    def agent_processes(self) -> list[subprocess.Popen[bytes]]:
        return [agent.proc for agent in self._agents.values()]

    def stop_agents(self) -> None:
        for agent in self._agents.values():
            agent.stop()
        self._agents.clear()

    def endpoints(self) -> tuple[PodEndpoint, ...]:
        return tuple(pod.endpoint() for pod in self.pods.values())

    # --- node operations ----------------------------------------------------------------------

    def run_in(
        self, netns_name: str, argv: Sequence[str], *, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside one of the lab's namespaces."""
        return subprocess.run(
            ["nsenter", f"--net={NETNS_DIR / netns_name}", *argv],
            input=input,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def call_in(self, netns_name: str, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(*args)` in a thread inside the namespace (sockets it opens live there)."""
        return self._workers[netns_name].call(fn, *args)

    def load_nft(self, ruleset: str) -> None:
        """`nft -f -` in the node netns; raises NftError with nft's message on failure."""
        result = self.run_in(self.node_netns, ["nft", "-f", "-"], input=ruleset)
        if result.returncode != 0:
            raise NftError(f"nft -f failed ({result.returncode}): {result.stderr.strip()}", ruleset)

    def list_ruleset(self) -> str:
        return self.run_in(self.node_netns, ["nft", "list", "ruleset"]).stdout

    def flush_ruleset(self) -> None:
        self.load_nft("flush ruleset\n")

    def flush_conntrack(self) -> None:
        def flush() -> None:
            ct = Conntrack()
            try:
                ct.flush()
            finally:
                ct.close()

        self.call_in(self.node_netns, flush)

    def flush_neighbours(self) -> None:
        """Forget every learnt ARP/NDP entry, in the node and in the pods."""
        for name in [self.node_netns, *(p.netns for p in self.pods.values())]:
            worker = self._workers[name]
            worker.call(_flush_neighbours, worker)

    def reset_flows(self) -> None:
        """Make the next probes start cold: no conntrack entries, no neighbour entries."""
        self.flush_conntrack()
        self.flush_neighbours()


# --- helpers run inside pod worker threads --------------------------------------------------------


def _setup_pod_early() -> None:
    # Before the veth moves in: a device takes the netns "default" settings when it arrives.
    for key, value in (
        ("net.ipv6.conf.all.accept_dad", "0"),
        ("net.ipv6.conf.default.accept_dad", "0"),
        ("net.ipv6.conf.all.accept_ra", "0"),
        ("net.ipv6.conf.default.accept_ra", "0"),
        ("net.ipv6.conf.default.router_solicitations", "0"),
    ):
        _write_sysctl(key, value)
    with IPRoute() as ipr:
        ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")


def _setup_pod_late(pod: LabPod) -> None:
    with IPRoute() as ipr:
        idx = ipr.link_lookup(ifname="eth0")[0]
        ipr.link("set", index=idx, state="up")
        ipr.addr("add", index=idx, address=pod.ipv4, prefixlen=32)
        ipr.addr("add", index=idx, address=pod.ipv6, prefixlen=128, flags=IFA_F_NODAD)
        ipr.route("add", dst="0.0.0.0/0", gateway=GATEWAY4, oif=idx, flags=RTNH_F_ONLINK)
        ipr.route("add", dst="::/0", gateway=GATEWAY6, oif=idx, family=socket.AF_INET6)


def _flush_neighbours(worker: _NsWorker) -> None:
    ipr = worker.ipr()
    for entry in ipr.neigh("dump"):
        if entry["state"] & (NUD_NOARP | NUD_PERMANENT):
            continue
        with contextlib.suppress(Exception):
            ipr.neigh("del", dst=entry.get_attr("NDA_DST"), ifindex=entry["ifindex"], family=entry["family"])
