"""Anti-spoofing with the fast path filled: real packets from pods through a routed node.

The node routes three pods the stockade-cni way (a /32 and a /128 to each host veth, fe80::1/64
on it, proxy ARP); the plan's ``pod-sources`` sets hold the pairs of pods a and b, as the agent
would read them, and not those of pod c (attached, its routes in place, but not read yet). Pod a
holds extra addresses it tries to send from: b's (another local pod), a remote pod's and an
external one; pod c tries a's. A UDP receiver on the node's own address logs what arrives (the
plan has no policy, and none of the claimed addresses is fail-closed in ``input``, so only
anti-spoofing stands between a spoofed packet and the receiver).

Self-contained: every namespace, link and process is made by the fixture and removed by it.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pyroute2 import IPRoute, netns

from compiler.cluster import ClusterModel, PodSource
from compiler.model import Namespace, Node, Pod
from compiler.plan import build_plan
from compiler.render_json import render_json
from tests.kernel.test_render_load import load_json, nsexec

pytestmark = pytest.mark.kernel

NODE = "n1"
GW4, GW6 = "169.254.1.1", "fe80::1"
NODE4, NODE6 = "192.0.2.1", "2001:db8:ff::1"  # the node's own addresses (on lo): the receiver
PORT = 5354
SCOPE_LINK = 253
IFA_F_NODAD = 0x02
PODS: dict[str, tuple[str, str]] = {
    "a": ("10.244.1.2", "fd00:1::2"),
    "b": ("10.244.1.3", "fd00:1::3"),
    "c": ("10.244.1.4", "fd00:1::4"),
}
HOST = {name: f"stk{name}" for name in PODS}  # the CNI's prefix: anti-spoofing applies
REMOTE = ("10.244.2.5", "fd00:2::5")  # a pod of another node
EXTERNAL = ("203.0.113.9", "2001:db8::9")
# What each pod may try to send from, besides its own addresses.
CLAIMS = {"a": (PODS["b"], REMOTE, EXTERNAL), "c": (PODS["a"],)}
KNOWN = ("a", "b")  # pods whose pairs the agent has read

_RECEIVER = """
import socket, sys, threading
log = open(sys.argv[1], "a", buffering=1)
def udp(family, address):
    s = socket.socket(family, socket.SOCK_DGRAM)
    s.bind((address, int(sys.argv[2])))
    while True:
        data, src = s.recvfrom(512); log.write(f"{src[0]} {data.decode()}\\n")
threading.Thread(target=udp, args=(socket.AF_INET, sys.argv[3]), daemon=True).start()
threading.Thread(target=udp, args=(socket.AF_INET6, sys.argv[4]), daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
"""

# In a pod: forget the neighbours (so IPv6 needs NDP through the node's prerouting), then send
# one datagram per (source, destination, payload).
_SENDER = """
import json, socket, sys
from pyroute2 import IPRoute
with IPRoute() as ipr:
    eth = ipr.link_lookup(ifname="eth0")[0]
    for n in ipr.get_neighbours(ifindex=eth, family=socket.AF_INET6):
        ipr.neigh("del", dst=n.get_attr("NDA_DST"), ifindex=eth, family=socket.AF_INET6)
for src, dst, port, payload in json.loads(sys.argv[1]):
    s = socket.socket(socket.AF_INET6 if ":" in dst else socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((src, 0)); s.sendto(payload.encode(), (dst, port)); s.close()
"""


@dataclass
class Lab:
    node: str
    pods: dict[str, str]  # pod -> netns
    log: Path

    def send(self, pod: str, datagrams: list[tuple[str, str, str]]) -> None:
        """``(source, destination, payload)`` from ``pod``, to the receiver's port."""
        args = json.dumps([[src, dst, PORT, payload] for src, dst, payload in datagrams])
        nsexec(self.pods[pod], sys.executable, "-c", _SENDER, args)

    def received(self) -> str:
        return self.log.read_text()


def _sysctl(ns: str, *settings: str) -> None:
    nsexec(ns, "sysctl", "-qw", *settings)


@contextlib.contextmanager
def _netns(role: str) -> Iterator[str]:
    name = f"stkas{os.getpid()}-{role}"
    netns.create(name)
    try:
        yield name
    finally:
        netns.remove(name)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    log = tmp_path_factory.mktemp("antispoof") / "received.log"
    log.touch()
    with contextlib.ExitStack() as stack:
        node = stack.enter_context(_netns("node"))
        pods = {name: stack.enter_context(_netns(name)) for name in PODS}
        _sysctl(
            node,
            "net.ipv4.ip_forward=1",
            "net.ipv6.conf.all.forwarding=1",
            "net.ipv4.conf.all.rp_filter=0",  # anti-spoofing is the ruleset's job here
            "net.ipv4.conf.default.rp_filter=0",
            "net.ipv6.conf.default.accept_dad=0",
        )
        for ns in pods.values():
            _sysctl(ns, "net.ipv6.conf.default.accept_dad=0", "net.ipv6.conf.all.accept_dad=0")
        with IPRoute(netns=node) as ipr:
            lo = ipr.link_lookup(ifname="lo")[0]
            ipr.link("set", index=lo, state="up")
            for address, length in ((GW4, 32), (NODE4, 32), (NODE6, 128)):
                ipr.addr("add", index=lo, address=address, prefixlen=length)
            for name, (v4, v6) in PODS.items():
                host = HOST[name]
                ipr.link("add", ifname=host, kind="veth", peer={"ifname": "eth0", "net_ns_fd": pods[name]})
                idx = ipr.link_lookup(ifname=host)[0]
                ipr.link("set", index=idx, state="up")
                ipr.addr("add", index=idx, address=GW6, prefixlen=64, flags=IFA_F_NODAD)
                ipr.route("add", dst=f"{v4}/32", oif=idx, scope=SCOPE_LINK)
                ipr.route("add", dst=f"{v6}/128", oif=idx, family=socket.AF_INET6)
            # Remote pods and the outside world are behind the node, not behind any pod.
            ipr.route("add", dst="10.244.2.0/24", type="blackhole")
            ipr.route("add", dst="fd00:2::/64", type="blackhole", family=socket.AF_INET6)
        for name, (v4, v6) in PODS.items():
            with IPRoute(netns=pods[name]) as ipr:
                ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
                eth = ipr.link_lookup(ifname="eth0")[0]
                ipr.link("set", index=eth, state="up")
                claimed = [(v4, v6), *CLAIMS.get(name, ())]
                for c4, c6 in claimed:
                    ipr.addr("add", index=eth, address=c4, prefixlen=32)
                    ipr.addr("add", index=eth, address=c6, prefixlen=128, flags=IFA_F_NODAD)
                ipr.route("add", dst=f"{GW4}/32", oif=eth, scope=SCOPE_LINK)
                ipr.route("add", dst="0.0.0.0/0", gateway=GW4, oif=eth)
                ipr.route("add", dst="::/0", gateway=GW6, oif=eth, family=socket.AF_INET6)
        argv = ["nsenter", f"--net=/run/netns/{node}", sys.executable, "-c", _RECEIVER]
        receiver = subprocess.Popen(
            [*argv, str(log), str(PORT), NODE4, NODE6],
            stdout=subprocess.PIPE,
            text=True,
        )
        stack.callback(_stop, receiver)
        assert receiver.stdout is not None and receiver.stdout.readline().strip() == "ready"
        yield Lab(node=node, pods=pods, log=log)


def _stop(process: subprocess.Popen[str]) -> None:
    process.kill()
    process.wait(timeout=10)


def _model(sources: frozenset[PodSource]) -> ClusterModel:
    pods = tuple(
        Pod.model_validate(
            {
                "metadata": {"name": name, "namespace": "x", "uid": f"uid-{name}"},
                "spec": {"nodeName": NODE},
                "status": {"phase": "Running", "podIP": v4, "podIPs": [{"ip": v4}, {"ip": v6}]},
            }
        )
        for name, (v4, v6) in PODS.items()
    )
    node = Node.model_validate(
        {"metadata": {"name": NODE}, "spec": {"podCIDRs": ["10.244.1.0/24", "fd00:1::/64"]}}
    )
    x = Namespace.model_validate({"metadata": {"name": "x"}})
    return ClusterModel(namespaces=(x,), pods=pods, nodes=(node,), pod_sources=sources)


def _pairs(*names: str) -> frozenset[PodSource]:
    return frozenset(PodSource(HOST[n], a) for n in names for a in PODS[n])


def _drops(lab: Lab) -> int:
    doc: dict[str, Any] = json.loads(
        nsexec(lab.node, "nft", "-j", "list", "chain", "inet", "stockade", "prerouting").stdout
    )
    return sum(
        int(e["counter"]["packets"])
        for o in doc["nftables"]
        if "rule" in o
        for e in o["rule"]["expr"]
        if "counter" in e
    )


def _exchange(lab: Lab, family: int, tag: str) -> dict[str, bool]:
    """Every pod's own datagram and every claim; which arrived, by payload."""
    slot = 0 if family == 4 else 1
    dst = NODE4 if family == 4 else NODE6
    sent: dict[str, str] = {}
    for pod, (v4, v6) in PODS.items():
        own = v4 if family == 4 else v6
        datagrams = [(own, dst, f"{tag}-{pod}-own")]
        datagrams += [(claim[slot], dst, f"{tag}-{pod}-as-{claim[slot]}") for claim in CLAIMS.get(pod, ())]
        lab.send(pod, datagrams)
        sent.update({payload: src for src, _, payload in datagrams})
    time.sleep(0.5)
    log = lab.received()
    return {payload: f"{src} {payload}\n" in log for payload, src in sent.items()}


@pytest.mark.parametrize("family", [4, 6])
def test_known_pairs_pass_and_every_claim_is_dropped(lab: Lab, family: int) -> None:
    load_json(lab.node, render_json(build_plan(_model(_pairs(*KNOWN)), node=NODE)))
    before = _drops(lab)
    got = _exchange(lab, family, f"v{family}")
    slot = 0 if family == 4 else 1
    tag = f"v{family}"
    expected = {f"{tag}-{pod}-own": True for pod in PODS}  # c's by the route lookup
    expected |= {f"{tag}-a-as-{c[slot]}": False for c in CLAIMS["a"]}  # local, remote, external
    expected |= {f"{tag}-c-as-{PODS['a'][slot]}": False}  # c has no pair yet: still checked
    assert got == expected
    assert _drops(lab) - before >= 4  # the route lookup's drop counted each claim


def test_without_pairs_the_route_lookup_does_everything(lab: Lab) -> None:
    """The plan ``stockade compile`` makes from manifests: same verdicts."""
    load_json(lab.node, render_json(build_plan(_model(frozenset()), node=NODE)))
    for family in (4, 6):
        got = _exchange(lab, family, f"none{family}")
        assert {k for k, v in got.items() if v} == {f"none{family}-{pod}-own" for pod in PODS}


def test_a_pair_skips_the_route_lookup(lab: Lab) -> None:
    """What the fast path is: a pair is accepted without a route lookup. So a pair that is not a
    route (a's interface with b's address, which the agent never reads) would let the claim
    through; the agent lists only routes the kernel holds."""
    wrong = _pairs(*KNOWN) | {PodSource(HOST["a"], PODS["b"][0])}
    load_json(lab.node, render_json(build_plan(_model(wrong), node=NODE)))
    got = _exchange(lab, 4, "wrong")
    assert got["wrong-a-as-10.244.1.3"]
    assert not got["wrong-a-as-10.244.2.5"]
