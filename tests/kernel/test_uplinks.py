"""A node with two uplinks and asymmetric routing keeps working with Stockade's ruleset loaded,
while a pod still cannot send with a source address that is not its own.

The host-wide checks (strict reverse path, ``ct state invalid drop``) must judge pod traffic
only. On a node with several NICs, ECMP or policy routing, a packet may arrive on one uplink
while the route back to its source uses another, and a routed flow may cross the node in one
direction only; both are normal there, and neither is pod traffic::

    X (client) eth0 ══ up0 ┐                 ┌ stk-p0 ══ eth0 P (pod 10.244.1.2, fd00:1::2)
                           N (node, Stockade)
    Y (server) eth0 ══ up1 ┘
    X eth1 ═════════════════ Y eth1      (a path between X and Y that bypasses N)

- to the pod: X sends from its eth1 address through up0; N's route back to that address goes
  via up1 and Y. Strict reverse path everywhere would drop X's packets on up0.
- forwarded, one way: X reaches Y through N, Y answers X directly, so N sees X's side only and
  conntrack calls X's ACKs and data ``invalid``. Dropping invalid everywhere would break it.

Self-contained: every namespace, link and process is made by this file's fixture and removed
by it, even when a test fails.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyroute2 import IPRoute

from compiler import naming
from compiler.cluster import ClusterModel
from compiler.model import Namespace, NetworkPolicy, Node, Pod
from compiler.plan import build_plan
from compiler.render_json import render_json
from tests.kernel.test_render_load import load_json, nsexec, scratch_netns

pytestmark = pytest.mark.kernel

NODE = "n1"
POD_IF = f"{naming.POD_INTERFACE_PREFIX}-p0"
PORT = 8080
UDP_PORT = 5353
SCOPE_LINK = 253


@dataclasses.dataclass(frozen=True)
class Plan:
    """Addresses of one family."""

    up0: str  # N on the link to X
    x0: str  # X on that link
    up1: str  # N on the link to Y
    y0: str  # Y on that link
    x1: str  # X on the X-Y link (the source N routes back via up1)
    y1: str  # Y on the X-Y link
    pod: str
    prefix: int  # of the three links
    pod_cidr: str
    x1_net: str
    up0_net: str
    up1_net: str
    foreign: str  # an address the pod borrows


V4 = Plan(
    up0="192.0.2.1",
    x0="192.0.2.2",
    up1="198.51.100.1",
    y0="198.51.100.2",
    x1="203.0.113.2",
    y1="203.0.113.3",
    pod="10.244.1.2",
    prefix=24,
    pod_cidr="10.244.1.0/24",
    x1_net="203.0.113.0/24",
    up0_net="192.0.2.0/24",
    up1_net="198.51.100.0/24",
    foreign="203.0.113.77",
)
V6 = Plan(
    up0="2001:db8:a::1",
    x0="2001:db8:a::2",
    up1="2001:db8:b::1",
    y0="2001:db8:b::2",
    x1="2001:db8:c::2",
    y1="2001:db8:c::3",
    pod="fd00:1::2",
    prefix=64,
    pod_cidr="fd00:1::/64",
    x1_net="2001:db8:c::/64",
    up0_net="2001:db8:a::/64",
    up1_net="2001:db8:b::/64",
    foreign="2001:db8:c::77",
)
PLANS = {4: V4, 6: V6}

_SERVER = """
import socket, sys, threading
log = open(sys.argv[1], "a", buffering=1)
def serve(family):
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    s.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", int(sys.argv[2]))); s.listen(16)
    while True:
        c, _ = s.accept()
        with c:
            c.settimeout(5)
            try:
                c.sendall(b"echo " + c.recv(64))
            except OSError:
                pass
def udp(family):
    s = socket.socket(family, socket.SOCK_DGRAM)
    if family == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    s.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", int(sys.argv[3])))
    while True:
        data, src = s.recvfrom(512); log.write(f"{src[0]} {data.decode()}\\n")
for f in (socket.AF_INET, socket.AF_INET6):
    threading.Thread(target=serve, args=(f,), daemon=True).start()
    threading.Thread(target=udp, args=(f,), daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
"""

# Connect from a chosen source, send a line, and print what came back ("" when nothing did).
_EXCHANGE = """
import socket, sys
src, dst, port = sys.argv[1:4]
s = socket.socket(socket.AF_INET6 if ":" in dst else socket.AF_INET)
s.settimeout(3.0)
try:
    s.bind((src, 0)); s.connect((dst, int(port))); s.sendall(b"ping")
    print(s.recv(64).decode())
except OSError:
    print("")
"""

_SEND = """
import socket, sys
src, dst, port, payload = sys.argv[1:5]
s = socket.socket(socket.AF_INET6 if ":" in dst else socket.AF_INET, socket.SOCK_DGRAM)
s.bind((src, 0)); s.sendto(payload.encode(), (dst, int(port)))
"""


@dataclasses.dataclass
class Uplinks:
    node: str
    netns: dict[str, str]  # "x", "y", "pod" -> netns
    logs: dict[str, Path]

    def exchange(self, who: str, src: str, dst: str) -> str:
        return nsexec(self.netns[who], sys.executable, "-c", _EXCHANGE, src, dst, str(PORT)).stdout.strip()

    def send_udp(self, who: str, src: str, dst: str, payload: str) -> None:
        nsexec(self.netns[who], sys.executable, "-c", _SEND, src, dst, str(UDP_PORT), payload)


def model() -> ClusterModel:
    """P is isolated for ingress and admits the X-Y network on PORT: the policy path is exercised too."""
    pod = Pod.model_validate(
        {
            "metadata": {"name": "p", "namespace": "x", "labels": {"app": "p"}},
            "spec": {"nodeName": NODE, "containers": [{"ports": [{"containerPort": PORT}]}]},
            "status": {"phase": "Running", "podIP": V4.pod, "podIPs": [{"ip": V4.pod}, {"ip": V6.pod}]},
        }
    )
    admit = NetworkPolicy.model_validate(
        {
            "metadata": {"name": "from-x", "namespace": "x"},
            "spec": {
                "podSelector": {"matchLabels": {"app": "p"}},
                "ingress": [
                    {
                        "from": [{"ipBlock": {"cidr": V4.x1_net}}, {"ipBlock": {"cidr": V6.x1_net}}],
                        "ports": [{"port": PORT}],
                    }
                ],
            },
        }
    )
    node = Node.model_validate({"metadata": {"name": NODE}, "spec": {"podCIDRs": [V4.pod_cidr, V6.pod_cidr]}})
    return ClusterModel(
        namespaces=(Namespace.model_validate({"metadata": {"name": "x"}}),),
        pods=(pod,),
        policies=(admit,),
        nodes=(node,),
    )


def _sysctl(ns: str, *settings: str) -> None:
    nsexec(ns, "sysctl", "-qw", *settings)


def _veth(ns: str, name: str, peer_ns: str, peer: str) -> None:
    with IPRoute(netns=ns) as ipr:
        ipr.link("add", ifname=name, kind="veth", peer={"ifname": peer, "net_ns_fd": peer_ns})


def _configure(ns: str, links: dict[str, list[str]], routes: list[dict[str, object]]) -> None:
    """Bring lo and ``links`` up with their addresses (one prefix length per family), then add routes."""
    with IPRoute(netns=ns) as ipr:
        ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
        for name, addresses in links.items():
            idx = ipr.link_lookup(ifname=name)[0]
            ipr.link("set", index=idx, state="up")
            for cidr in addresses:
                address, _, length = cidr.partition("/")
                ipr.addr("add", index=idx, address=address, prefixlen=int(length))
        for route in routes:
            dst = str(route["dst"])
            family = socket.AF_INET6 if ":" in dst else socket.AF_INET
            args = {k: v for k, v in route.items() if k != "dev"}
            if "dev" in route:
                args["oif"] = ipr.link_lookup(ifname=str(route["dev"]))[0]
            ipr.route("add", family=family, **args)


def _stop(process: subprocess.Popen[str]) -> None:
    process.kill()
    process.wait(timeout=10)


@pytest.fixture(scope="module")
def uplinks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Uplinks]:
    logs_dir = tmp_path_factory.mktemp("uplinks")
    with contextlib.ExitStack() as stack:
        node = stack.enter_context(scratch_netns("node"))
        ns = {name: stack.enter_context(scratch_netns(name)) for name in ("x", "y", "pod")}
        # The kernel's own reverse-path filter stays off: the ruleset is what is under test.
        no_rp = ("net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0")
        no_dad = ("net.ipv6.conf.default.accept_dad=0", "net.ipv6.conf.all.accept_dad=0")
        _sysctl(node, "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1", *no_rp, *no_dad)
        _sysctl(ns["y"], "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1", *no_rp, *no_dad)
        _sysctl(ns["x"], *no_rp, *no_dad)
        _sysctl(ns["pod"], *no_dad)
        _veth(node, "up0", ns["x"], "eth0")
        _veth(node, "up1", ns["y"], "eth0")
        _veth(node, POD_IF, ns["pod"], "eth0")
        _veth(ns["x"], "eth1", ns["y"], "eth1")
        v4, v6 = V4, V6
        _configure(
            node,
            {
                "up0": [f"{v4.up0}/{v4.prefix}", f"{v6.up0}/{v6.prefix}"],
                "up1": [f"{v4.up1}/{v4.prefix}", f"{v6.up1}/{v6.prefix}"],
                POD_IF: ["fe80::1/64"],
                "lo": ["169.254.1.1/32"],  # the pod's IPv4 gateway: a local address answers ARP
            },
            [
                {"dst": f"{v4.pod}/32", "dev": POD_IF, "scope": SCOPE_LINK},
                {"dst": f"{v6.pod}/128", "dev": POD_IF},
                # The way back to X's eth1 network is via Y: asymmetric for X's packets on up0.
                {"dst": v4.x1_net, "gateway": v4.y0},
                {"dst": v6.x1_net, "gateway": v6.y0},
            ],
        )
        _configure(
            ns["x"],
            {
                "eth0": [f"{v4.x0}/{v4.prefix}", f"{v6.x0}/{v6.prefix}"],
                "eth1": [f"{v4.x1}/{v4.prefix}", f"{v6.x1}/{v6.prefix}"],
            },
            [
                {"dst": v4.pod_cidr, "gateway": v4.up0},
                {"dst": v6.pod_cidr, "gateway": v6.up0},
                {"dst": v4.up1_net, "gateway": v4.up0},
                {"dst": v6.up1_net, "gateway": v6.up0},
            ],
        )
        _configure(
            ns["y"],
            {
                "eth0": [f"{v4.y0}/{v4.prefix}", f"{v6.y0}/{v6.prefix}"],
                "eth1": [f"{v4.y1}/{v4.prefix}", f"{v6.y1}/{v6.prefix}"],
            },
            [
                # Y answers X's up0 network directly over eth1: N sees one direction only.
                {"dst": v4.up0_net, "gateway": v4.x1},
                {"dst": v6.up0_net, "gateway": v6.x1},
                {"dst": v4.pod_cidr, "gateway": v4.up1},
                {"dst": v6.pod_cidr, "gateway": v6.up1},
            ],
        )
        _configure(
            ns["pod"],
            {"eth0": [f"{v4.pod}/32", f"{v6.pod}/128"]},
            [
                {"dst": "169.254.1.1/32", "dev": "eth0", "scope": SCOPE_LINK},
                {"dst": "0.0.0.0/0", "gateway": "169.254.1.1", "dev": "eth0"},
                {"dst": "::/0", "gateway": "fe80::1", "dev": "eth0"},
            ],
        )
        logs: dict[str, Path] = {}
        for name in ("y", "pod"):
            logs[name] = logs_dir / f"{name}.log"
            logs[name].touch()
            server = subprocess.Popen(
                [
                    *("nsenter", f"--net=/run/netns/{ns[name]}", sys.executable, "-c", _SERVER),
                    *(str(logs[name]), str(PORT), str(UDP_PORT)),
                ],
                stdout=subprocess.PIPE,
                text=True,
            )
            stack.callback(_stop, server)
            assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        lab = Uplinks(node=node, netns=ns, logs=logs)
        # Without a ruleset every path works: the topology itself is sound.
        for plan in (V4, V6):
            assert lab.exchange("x", plan.x1, plan.pod) == "echo ping", f"topology: X -> pod ({plan.pod})"
            assert lab.exchange("x", plan.x0, plan.y0) == "echo ping", f"topology: X -> Y ({plan.y0})"
        load_json(node, render_json(build_plan(model(), node=NODE)))
        yield lab


def _anti_spoof_drops(lab: Uplinks) -> int:
    doc = json.loads(nsexec(lab.node, "nft", "-j", "list", "chain", "inet", "stockade", "prerouting").stdout)
    return sum(
        int(e["counter"]["packets"])
        for o in doc["nftables"]
        if "rule" in o and o["rule"]["comment"].startswith("anti-spoofing")
        for e in o["rule"]["expr"]
        if "counter" in e
    )


@pytest.mark.parametrize("family", [4, 6])
def test_a_pod_answers_a_client_whose_route_back_is_another_uplink(uplinks: Uplinks, family: int) -> None:
    plan = PLANS[family]
    assert uplinks.exchange("x", plan.x1, plan.pod) == "echo ping"


@pytest.mark.parametrize("family", [4, 6])
def test_a_flow_the_node_sees_one_way_is_forwarded(uplinks: Uplinks, family: int) -> None:
    plan = PLANS[family]
    assert uplinks.exchange("x", plan.x0, plan.y0) == "echo ping"


@pytest.mark.parametrize("family", [4, 6])
def test_a_pod_still_cannot_borrow_an_address(uplinks: Uplinks, family: int) -> None:
    """The pod sends once from its own address and once from an address of X's network: only
    the genuine datagram reaches Y, and the anti-spoofing rule counts the other."""
    plan = PLANS[family]
    with IPRoute(netns=uplinks.netns["pod"]) as ipr:
        eth = ipr.link_lookup(ifname="eth0")[0]
        ipr.addr("add", index=eth, address=plan.foreign, prefixlen=32 if family == 4 else 128)
    try:
        before = _anti_spoof_drops(uplinks)
        uplinks.send_udp("pod", plan.pod, plan.y0, f"genuine-v{family}")
        uplinks.send_udp("pod", plan.foreign, plan.y0, f"spoofed-v{family}")
        deadline = time.monotonic() + 3
        while f"genuine-v{family}" not in uplinks.logs["y"].read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)  # the spoofed datagram was sent second: give it the same chance
        received = uplinks.logs["y"].read_text()
        assert f"{plan.pod} genuine-v{family}" in received
        assert f"spoofed-v{family}" not in received
        assert _anti_spoof_drops(uplinks) - before >= 1
    finally:
        with IPRoute(netns=uplinks.netns["pod"]) as ipr:
            eth = ipr.link_lookup(ifname="eth0")[0]
            ipr.addr("del", index=eth, address=plan.foreign, prefixlen=32 if family == 4 else 128)
