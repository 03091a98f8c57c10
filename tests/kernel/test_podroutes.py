"""controller.podroutes against a real routing table: a scratch network namespace holding pod
veths routed the stockade-cni way, and routes that look alike but are not a pod's host route.

The reader runs in a child process that entered the namespace (its netlink socket and interface
names are those of the namespace it runs in), and prints what it read as JSON.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from pyroute2 import netns

pytestmark = pytest.mark.kernel

# Builds the routing table, then reads it: (setup, all(), of(ASKED)) as JSON.
_CHILD = r"""
import json, socket, sys
from pyroute2 import IPRoute, netns
netns.setns(sys.argv[1], flags=0)
from controller.podroutes import RoutedSources

LINK = 253
with IPRoute() as ipr:
    def veth(name):
        ipr.link("add", ifname=name, kind="veth", peer={"ifname": "p-" + name})
        index = ipr.link_lookup(ifname=name)[0]
        ipr.link("set", index=index, state="up")
        return index
    a, b, c, up = veth("stka"), veth("stkb"), veth("stkc"), veth("up0")
    # Pod a, dual-stack, as stockade-cni routes it (fe80::1/64 on the host veth, for NDP).
    ipr.addr("add", index=a, address="fe80::1", prefixlen=64, flags=2)
    ipr.route("add", dst="10.244.1.2/32", oif=a, scope=LINK)
    ipr.route("add", dst="fd00:1::2/128", oif=a, family=socket.AF_INET6)
    ipr.route("add", dst="10.244.1.3/32", oif=b, scope=LINK)  # pod b, IPv4 only
    ipr.route("add", dst="10.244.9.0/24", oif=c, scope=LINK)  # a network, not one address
    # Not the main table: not listed; but a rule sends lookups there, so asking finds it (as fib).
    ipr.route("add", dst="10.244.1.4/32", oif=b, scope=LINK, table=100)
    ipr.rule("add", table=100, priority=100)
    ipr.route("add", dst="10.244.1.99/32", type="blackhole")  # not unicast
    ipr.route("add", dst="10.244.5.5/32", oif=up, scope=LINK)  # an uplink's, not a pod's
    ipr.route("add", dst="fd00:5::5/128", oif=up, family=socket.AF_INET6)
reader = RoutedSources()
everything = reader.all()
asked = reader.of(json.loads(sys.argv[2]))
again = reader.all()  # the socket is kept and reused
reader.close()
print(json.dumps([sorted([s.ifname, s.address] for s in x) for x in (everything, asked, again)]))
"""

ASKED = [
    "10.244.1.2",
    "fd00:1::2",
    "10.244.1.3",
    "10.244.9.5",
    "10.244.1.4",
    "10.244.1.99",
    "10.244.5.5",
    "fd00:5::5",
    "fe80::5",
    "192.0.2.200",  # no route at all
]
PODS = [["stka", "10.244.1.2"], ["stka", "fd00:1::2"], ["stkb", "10.244.1.3"]]


@contextlib.contextmanager
def scratch_netns() -> Iterator[str]:
    name = f"stkpr{os.getpid()}"
    netns.create(name)
    try:
        yield name
    finally:
        netns.remove(name)  # every link and route in it goes with it


def read_in(ns: str) -> list[Any]:
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    result = subprocess.run(
        [sys.executable, "-c", _CHILD, ns, json.dumps(ASKED)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=root,
        env={**os.environ, "PYTHONPATH": root},
    )
    assert result.returncode == 0, result.stderr
    return list(json.loads(result.stdout))


def test_the_reader_finds_exactly_the_pods_host_routes() -> None:
    with scratch_netns() as ns:
        everything, asked, again = read_in(ns)
    assert everything == PODS
    # The route each address matches, filtered alike; 10.244.1.4 is found where the rule says.
    assert asked == sorted([*PODS, ["stkb", "10.244.1.4"]])
    assert again == PODS
