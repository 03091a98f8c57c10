"""A node for applier tests: a fresh network namespace that the calling thread enters (so a
libnftables context created there manages it), optionally two routed pods, a small model with
two policies, and oracles that read and change the table with the ``nft`` command only.

The no-window probe (:class:`TableProbe`) uses its own libnftables context, never
:mod:`controller.nft`.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import nftables
from pyroute2 import IPRoute, netns

from compiler.cluster import ClusterModel
from compiler.ir import NodePlan
from compiler.model import Namespace, NetworkPolicy, Node, Pod
from compiler.plan import build_plan
from compiler.render_json import render_json
from controller.nft import LISTING_LOCK
from tests.kernel.test_render_load import listing, nsexec, scratch_netns

NODE = "n1"
PODS = {"a": "10.244.1.2", "b": "10.244.1.3"}
GATEWAY = "169.254.1.1"
UDP_PORT = 5353
SCOPE_LINK = 253


@contextlib.contextmanager
def entered(ns: str) -> Iterator[None]:
    """This thread (and the threads it starts from now on) in ``ns``; back home afterwards."""
    home = os.open(f"/proc/self/task/{threading.get_native_id()}/ns/net", os.O_RDONLY)
    try:
        netns.setns(ns, flags=0)
        try:
            yield
        finally:
            netns.setns(home)
    finally:
        os.close(home)


@contextlib.contextmanager
def node_netns() -> Iterator[str]:
    """A fresh namespace, entered by this thread for the duration."""
    with scratch_netns("applier") as ns, entered(ns):
        yield ns


def kernel(ns: str) -> dict[str, Any]:
    return listing(ns)


def has_table(ns: str) -> bool:
    return nsexec(ns, "nft", "list", "table", "inet", "stockade", check=False).returncode == 0


def cli_packets(ns: str) -> dict[str, list[int]]:
    """Packets of every rule, by rule comment, from `nft -j list table` (the oracle's own parse)."""
    doc = json.loads(nsexec(ns, "nft", "-j", "list", "table", "inet", "stockade").stdout)
    out: dict[str, list[int]] = {}
    for obj in doc["nftables"]:
        rule = obj.get("rule")
        if rule is None:
            continue
        for e in rule["expr"]:
            if "counter" in e:
                out.setdefault(rule.get("comment", ""), []).append(e["counter"]["packets"])
    return out


def cli_counters(ns: str) -> dict[str, int]:
    """Packets by rule comment, summed over the rules that carry it."""
    return {comment: sum(packets) for comment, packets in cli_packets(ns).items()}


# --- the model: b admits a on UDP 5353; a may send to b, and to an outside range on a TCP port ----


def _pod(name: str) -> Pod:
    return Pod.model_validate(
        {
            "metadata": {"name": name, "namespace": "x", "uid": f"uid-{name}", "labels": {"app": name}},
            "spec": {"nodeName": NODE},
            "status": {"phase": "Running", "podIP": PODS[name], "podIPs": [{"ip": PODS[name]}]},
        }
    )


def model(*, outside_port: int = 80, extra_policy: bool = False) -> ClusterModel:
    policies = [
        NetworkPolicy.model_validate(
            {
                "metadata": {"name": "b-from-a", "namespace": "x"},
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
        ),
        NetworkPolicy.model_validate(
            {
                "metadata": {"name": "a-out", "namespace": "x"},
                "spec": {
                    "podSelector": {"matchLabels": {"app": "a"}},
                    "policyTypes": ["Egress"],
                    "egress": [
                        {"to": [{"ipBlock": {"cidr": "192.168.0.0/24"}}], "ports": [{"port": outside_port}]},
                        {
                            "to": [{"podSelector": {"matchLabels": {"app": "b"}}}],
                            "ports": [{"protocol": "UDP", "port": UDP_PORT}],
                        },
                    ],
                },
            }
        ),
    ]
    if extra_policy:
        policies.append(
            NetworkPolicy.model_validate(
                {
                    "metadata": {"name": "deny-c", "namespace": "x"},
                    "spec": {"podSelector": {"matchLabels": {"app": "c"}}},
                }
            )
        )
    return ClusterModel(
        namespaces=(Namespace.model_validate({"metadata": {"name": "x", "uid": "uid-x"}}),),
        pods=tuple(_pod(n) for n in PODS),
        policies=tuple(policies),
        nodes=(Node.model_validate({"metadata": {"name": NODE}, "spec": {"podCIDRs": ["10.244.1.0/24"]}}),),
    )


def plan(**kwargs: Any) -> NodePlan:
    return build_plan(model(**kwargs), node=NODE)


@contextlib.contextmanager
def routed_pods(node: str) -> Iterator[dict[str, str]]:
    """Pods a and b as network namespaces, routed through ``node`` (/32 route to each veth,
    proxy ARP for the gateway), so a -> b crosses the node's forward hook."""
    with contextlib.ExitStack() as stack:
        pods = {name: stack.enter_context(scratch_netns(name)) for name in PODS}
        nsexec(node, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv4.conf.all.rp_filter=0")
        with IPRoute() as ipr:  # this thread is in `node`
            ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
            ipr.addr("add", index=ipr.link_lookup(ifname="lo")[0], address=GATEWAY, prefixlen=32)
            for i, (name, address) in enumerate(PODS.items()):
                host = f"veth{i}"
                ipr.link("add", ifname=host, kind="veth", peer={"ifname": "eth0", "net_ns_fd": pods[name]})
                idx = ipr.link_lookup(ifname=host)[0]
                ipr.link("set", index=idx, state="up")
                ipr.route("add", dst=f"{address}/32", oif=idx, scope=SCOPE_LINK)
                nsexec(node, "sysctl", "-qw", f"net.ipv4.conf.{host}.proxy_arp=1")
                nsexec(node, "sysctl", "-qw", f"net.ipv4.neigh.{host}.proxy_delay=0")
        for name, address in PODS.items():
            with IPRoute(netns=pods[name]) as ipr:
                ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
                eth = ipr.link_lookup(ifname="eth0")[0]
                ipr.link("set", index=eth, state="up")
                ipr.addr("add", index=eth, address=address, prefixlen=32)
                ipr.route("add", dst=f"{GATEWAY}/32", oif=eth, scope=SCOPE_LINK)
                ipr.route("add", dst="0.0.0.0/0", gateway=GATEWAY, oif=eth)
        yield pods


def send_udp(pod_ns: str, src: str, dst: str, count: int, *, port: int = UDP_PORT) -> None:
    """``count`` datagrams from ``src`` (inside ``pod_ns``) to ``dst``: a thread that enters the
    pod's namespace, so no process is started."""
    failure: list[BaseException] = []

    def run() -> None:
        try:
            netns.setns(pod_ns, flags=0)
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.bind((src, 0))
                for i in range(count):
                    s.sendto(f"probe {i}".encode(), (dst, port))
        except BaseException as exc:
            failure.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    worker.join(timeout=10)
    assert not failure, failure


def wait_for(condition: Callable[[], bool], *, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def kernel_of(wanted: NodePlan) -> dict[str, Any]:
    """What a fresh load of ``wanted`` lists, in a namespace of its own (nft CLI)."""
    with scratch_netns("fresh") as fresh:
        nsexec(fresh, "nft", "-j", "-f", "-", stdin=json.dumps(render_json(wanted)))
        return kernel(fresh)


def load_with_counters(ns: str, wanted: NodePlan, packets: int) -> None:
    """Load ``wanted`` with the nft command, every rule's counter starting at ``packets``."""
    commands = []
    for command in render_json(wanted)["nftables"]:
        rule = command.get("add", {}).get("rule")
        if rule is not None:
            expr = [
                {"counter": {"packets": packets, "bytes": 64 * packets}} if "counter" in e else e
                for e in rule["expr"]
            ]
            commands.append({"add": {"rule": {**rule, "expr": expr}}})
        else:
            commands.append(command)
    nsexec(ns, "nft", "-j", "-f", "-", stdin=json.dumps({"nftables": commands}))


class TableProbe:
    """A thread listing table ``inet stockade`` in a loop with its own libnftables context; it
    records every listing without the table or without rules. ``pause``: seconds between two
    listings (0: back to back; a pause keeps the loop from taking a whole core on a shared host).
    Each listing holds :data:`controller.nft.LISTING_LOCK`, as the applier's do: two listings at
    once abort the process with libnftables 1.0.6."""

    def __init__(self, *, pause: float = 0.0) -> None:
        self.pause = pause
        self.listings = 0
        self.gaps: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)  # started here: inherits this netns

    def _run(self) -> None:
        nft = nftables.Nftables()
        nft.set_json_output(True)
        query = {"nftables": [{"list": {"table": {"family": "inet", "name": "stockade"}}}]}
        while not self._stop.is_set():
            with LISTING_LOCK:  # the applier under test lists too: libnftables 1.0.6 (controller.nft)
                rc, out, err = nft.json_cmd(query)
            self.listings += 1
            if rc != 0:
                self.gaps.append(f"no table: {err.strip()}")
            elif not any("rule" in o for o in out["nftables"]):
                self.gaps.append("a table without rules")
            if self.pause:
                self._stop.wait(self.pause)

    def __enter__(self) -> TableProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
