"""Overlay benchmark: pod-to-pod throughput and connection rate ACROSS TWO NODES over Stockade's
VXLAN overlay, with and without Stockade's table. Prints figures; needs root, nginx and wrk.

    apt-get install nginx-light wrk conntrack
    .venv/bin/python tests/bench/overlay.py [--rounds 10] [--seconds 2]

Two node network namespaces joined by an underlay veth (192.0.2.1, 192.0.2.2), each with the
overlay device and entries :func:`controller.overlay.sync` builds from the two nodes (as the
agent does from Node objects); one pod per node, attached by the real ``stockade-cni`` ADD (its
veth, /32 route, proxy ARP, MTU for the VXLAN overhead): the server (nginx, one worker) on
``node-00``, the client (wrk, one thread) on ``node-01``. Every packet leaves the client's node
through its forward hook, is encapsulated and crosses the underlay (the nodes' output and input
hooks see the UDP packets), is decapsulated and forwarded again to the server.

Configurations, switched in both nodes at once:

- ``none``: no table at all (ruleset flushed: not even conntrack runs);
- ``conntrack``: tests/bench/dataplane.py's one-rule table (``ct state established accept`` in
  forward), the floor of any stateful policy: what Stockade's table costs beyond it is its own;
- ``stockade``: in each node, the ruleset ``stockade compile`` produces for it from the compile
  benchmark's 10,000-pod, 1,000-policy cluster (``node-00`` and ``node-01``) with the two bench
  pods added (each isolated: the server admits only the client on its port, the client may reach
  only the server and DNS; tests/bench/dataplane.py's ``bench_model``, client on ``node-01``).

The table is loaded from its JSON file when switched on (not timed) and flushed when switched
off. Workloads as in tests/bench/dataplane.py (reused from it): ``new`` (``Connection: close``:
requests/s are new connections/s), ``keepalive`` and ``throughput`` (a 16 MiB file over 4
connections). Each round runs each workload under every configuration back to back, in an order
rotated from round to round; ratios (stockade / none, conntrack / none, stockade / conntrack)
are taken per round, for the rate and for the CPU time of every task on the path per request
(dataplane.py's measure: wrk, nginx's worker, ksoftirqd). Target (issue 9): throughput with the
table within 5 % of without. The load average is printed: on a shared machine the per-round
ratios are the figure to trust.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script from anywhere

from pyroute2 import IPRoute  # the bench may touch the world; the compiler never does

from compiler import naming
from controller import overlay
from controller.overlay import OverlayNode
from tests.bench import dataplane
from tests.bench.dataplane import (
    CONNTRACK_ONLY,
    WORKLOADS,
    Lab,
    bench_model,
    fmt,
    ksoftirqd,
    nginx,
    nsrun,
    stockade_ruleset,
    wrk,
)
from tests.support.cnilab import CniLab

SERVER_NODE, CLIENT_NODE = "node-00", "node-01"
# Inside each node's podCIDR of the synthetic cluster (10.<n>.0.0/16), unused by its pods: the
# CNI hands the bench pods addresses from these, and the overlay routes them.
POD_CIDRS = {SERVER_NODE: "10.0.200.0/24", CLIENT_NODE: "10.1.200.0/24"}
UNDERLAY = {SERVER_NODE: "192.0.2.1", CLIENT_NODE: "192.0.2.2"}
CONFIGS = ("none", "conntrack", "stockade")
TARGETS = {"throughput": 0.95}  # stockade / none, issue 9


def _join(one: CniLab, two: CniLab) -> None:
    """The underlay: a veth between the two node namespaces, an address on each end."""

    def make(peer_ns: str, address: str) -> None:
        with IPRoute() as ipr:
            ipr.link("add", ifname="ul0", kind="veth", peer={"ifname": "ul0", "net_ns_fd": peer_ns})
            index = ipr.link_lookup(ifname="ul0")[0]
            ipr.addr("add", index=index, address=address, prefixlen=24)
            ipr.link("set", index=index, state="up")

    def peer(address: str) -> None:
        with IPRoute() as ipr:
            index = ipr.link_lookup(ifname="ul0")[0]
            ipr.addr("add", index=index, address=address, prefixlen=24)
            ipr.link("set", index=index, state="up")

    one.in_node(make, two.node, UNDERLAY[SERVER_NODE])
    two.in_node(peer, UNDERLAY[CLIENT_NODE])


def _attach(lab: CniLab, name: str) -> tuple[str, str]:
    """A pod sandbox attached by stockade-cni ADD: (namespace name, its IPv4 address)."""
    pod = lab.new_pod()
    run = lab.run("ADD", conf=lab.conf(waitForAgent=False), container_id=f"bench-{name}", pod=pod)
    if run.returncode:
        dataplane.fail(f"stockade-cni ADD of the {name} pod failed: {run.stderr or run.stdout}")
    return pod, str(run.json()["ips"][0]["address"]).split("/")[0]


@contextlib.contextmanager
def two_nodes(work: Path) -> Iterator[tuple[CniLab, CniLab, Lab, str]]:
    """The two nodes, the overlay between them, the pods; yields them and the client's address."""
    with (
        CniLab(pod_cidrs=(POD_CIDRS[SERVER_NODE],)) as one,
        CniLab(pod_cidrs=(POD_CIDRS[CLIENT_NODE],)) as two,
    ):
        _join(one, two)
        nodes = [OverlayNode(n, (UNDERLAY[n],), (POD_CIDRS[n],)) for n in (SERVER_NODE, CLIENT_NODE)]
        one.in_node(overlay.sync, nodes[0], nodes)
        two.in_node(overlay.sync, nodes[1], nodes)
        server, server_ip = _attach(one, "server")
        client, client_ip = _attach(two, "client")
        # wrk's `Connection: close` runs open tens of thousands of connections (as dataplane.py).
        nsrun(client, "sysctl", "-qw", "net.ipv4.ip_local_port_range=1024 65000", "net.ipv4.tcp_tw_reuse=1")
        yield (
            one,
            two,
            Lab(node=one.node, server=server, client=client, work=work, server_ip=server_ip),
            client_ip,
        )


def switch(nodes: tuple[CniLab, CniLab], config: str, tables: dict[str, Path]) -> None:
    for lab, node in zip(nodes, (SERVER_NODE, CLIENT_NODE), strict=True):
        nsrun(lab.node, "nft", "flush", "ruleset")
        if config == "stockade":
            nsrun(lab.node, "nft", "-j", "-f", str(tables[node]))
        elif config == "conntrack":
            nsrun(lab.node, "nft", "-f", "-", stdin=CONNTRACK_ONLY.replace("    flags dormant\n", ""))
        nsrun(lab.node, "conntrack", "-F", check=False)  # every configuration starts from no flows


def report(results: dict[str, dict[str, list[float]]], costs: dict[str, dict[str, list[float]]]) -> bool:
    print("\nrates, medians over rounds (min-max); CPU per request (throughput: per MiB), median:")
    for workload in WORKLOADS:
        for config in CONFIGS:
            values, cpu = results[config][workload], costs[config][workload]
            print(
                f"  {workload:<10} {config:<9} {fmt(workload, statistics.median(values))}"
                f"  ({fmt(workload, min(values)).strip()} - {fmt(workload, max(values)).strip()})"
                f"  {statistics.median(cpu):8.1f} us"
            )
    ok = True
    print("\nper-round ratios: rate; CPU (the reference's CPU / this one's). median (min-max) [rounds]")
    for workload in WORKLOADS:
        for config, base in (("stockade", "none"), ("conntrack", "none"), ("stockade", "conntrack")):
            pairs = list(zip(results[config][workload], results[base][workload], strict=True))
            ratios = [v / b for v, b in pairs]
            cpu = [b / v for v, b in zip(costs[config][workload], costs[base][workload], strict=True)]
            median = statistics.median(ratios)
            verdict = ""
            if (config, base) == ("stockade", "none") and workload in TARGETS:
                passed = median >= TARGETS[workload]
                ok = ok and passed
                verdict = f"  target >= {TARGETS[workload]:.2f}: {'met' if passed else 'NOT met'}"
            print(
                f"  {workload:<10} {config}/{base:<9} rate {median:.3f} ({min(ratios):.3f}-{max(ratios):.3f})"
                f" cpu {statistics.median(cpu):.3f} ({min(cpu):.3f}-{max(cpu):.3f})"
                f" [{' '.join(f'{r:.2f}' for r in ratios)}]{verdict}"
            )
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--seconds", type=int, default=2, help="length of each measurement")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections (new, keepalive)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin nginx and wrk to CPUs")
    args = parser.parse_args()
    dataplane.preflight()
    server_cpu, client_cpu = (None, None) if args.no_pin else dataplane.cpus()
    print(
        f"date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}; kernel {platform.release()}; {os.cpu_count()} CPUs"
    )
    print(f"nginx pinned to CPU {server_cpu}, wrk to CPU {client_cpu}" if server_cpu else "not pinned")
    print(f"load average before: {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")
    work = Path(tempfile.mkdtemp(prefix="stockade-overlay-"))
    try:
        with two_nodes(work) as (one, two, lab, client_ip):
            print(
                f"server {lab.server_ip} on {SERVER_NODE}, client {client_ip} on {CLIENT_NODE}, "
                f"over {naming.VXLAN_INTERFACE}"
            )
            model = bench_model(
                server_ip=lab.server_ip, client_ip=client_ip, client_node=CLIENT_NODE, internal_ips=UNDERLAY
            )
            tables = {}
            for node in (SERVER_NODE, CLIENT_NODE):
                tables[node], _, summary = stockade_ruleset(work, model=model, node=node)
                print(f"stockade ruleset for {node}: {summary}")
            results: dict[str, dict[str, list[float]]] = {c: {w: [] for w in WORKLOADS} for c in CONFIGS}
            costs: dict[str, dict[str, list[float]]] = {c: {w: [] for w in WORKLOADS} for c in CONFIGS}
            with nginx(lab, cpu=server_cpu) as workers:
                pinned = [c for c in (server_cpu, client_cpu) if c is not None]
                watched = workers + ksoftirqd(pinned or [str(c) for c in os.sched_getaffinity(0)])
                for round_no in range(args.rounds):
                    shift = round_no % len(CONFIGS)
                    order = CONFIGS[shift:] + CONFIGS[:shift]
                    for workload in WORKLOADS:
                        for config in order:
                            switch((one, two), config, tables)
                            rate, cost = wrk(
                                lab,
                                workload,
                                seconds=args.seconds,
                                connections=args.connections,
                                cpu=client_cpu,
                                watched=watched,
                            )
                            results[config][workload].append(rate)
                            costs[config][workload].append(cost)
                    print(
                        f"round {round_no + 1}/{args.rounds} done ({', '.join(order)}); load "
                        f"{' '.join(Path('/proc/loadavg').read_text().split()[:3])}",
                        flush=True,
                    )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"load average after: {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")
    ok = report(results, costs)
    print(
        "\ntarget met"
        if ok
        else "\ntarget NOT met (see the ratios above; on a shared machine, rerun quieter)"
    )


if __name__ == "__main__":
    main()
