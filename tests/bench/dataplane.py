"""Data-plane benchmark: what Stockade's ruleset costs per packet. Prints figures; needs root.

    apt-get install nginx-light wrk     # or nginx; not in .ci/setup: CI does not run benchmarks
    .venv/bin/python tests/bench/dataplane.py [--rounds 15] [--seconds 2] [--configs none,conntrack,stockade]

Two pods in network namespaces, routed the Stockade way through a node namespace (a /32 route to
each pod's host-side veth, named with the CNI's prefix; the pods' default route via the node), a
server pod running nginx (one worker) and a client pod running wrk (one thread). The node
namespace forwards every packet between them, so every packet crosses its ruleset.

Configurations of the node's ruleset:

- ``none``: no table at all (not even conntrack runs); measured in a block of its own before the
  others, so it has medians but no per-round ratios;
- ``conntrack``: one table with one chain, ``ct state established accept`` in forward: the floor
  of any stateful policy, and the reference the targets are measured against;
- ``stockade``: the ruleset ``stockade compile`` produces for ``node-00`` of the synthetic
  10,000-pod, 1,000-policy cluster of ``tests/bench/compile.py``, with the two bench pods added
  to it (namespace ``bench``: the server admits only the client on its port, the client may
  only reach the server and DNS), so new connections take the full path: egress dispatch, the
  client's egress chain, ingress dispatch, the server's ingress chain;
- ``antispoof`` (diagnostic, not a target): ``conntrack`` plus Stockade's ``prerouting`` chain
  alone (the plan's own rules and its ``pod-sources`` sets, filled), to show what anti-spoofing
  costs by itself: one set lookup for the bench pods' packets;
- ``antispoof-fib`` (diagnostic): ``conntrack`` plus the route lookup alone, for every packet
  from a pod (``iifname "stk*" fib saddr . iif oif missing drop``): the check before the fast
  path, and what a pod the agent has not read the routes of yet still gets;
- ``hook`` (diagnostic): ``antispoof-fib`` with the route lookup replaced by a mark compare that
  never holds, to tell the cost of a prerouting chain from the cost of the ``fib`` lookup.

The ``stockade`` and ``antispoof`` rulesets hold the two bench pods' (interface . address) pairs,
as the node agent fills them from the routes the lab installs.

Workloads, each ``--seconds`` long: ``new`` (wrk with ``Connection: close``: requests/s are new
connections/s), ``keepalive`` (requests/s over ``--connections`` kept-alive connections) and
``throughput`` (bytes/s of a 16 MiB file over 4 connections). Rounds are interleaved: every table
is loaded once and switched on and off with nft's ``dormant`` flag, and each round runs each
workload under every configuration back to back, in an order rotated from round to round, so
the measurements a ratio compares are seconds apart. The figures are medians over rounds, and
the ratio of a configuration to ``conntrack`` is computed per round and then summarized (median,
min-max): on a shared machine that is the figure to trust.

nginx and wrk are pinned to different CPUs when there are two or more (``--no-pin`` to leave
scheduling alone). The load average before and after is printed: other work on the machine
shows up as noise, and the per-round ratios say how much.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script from anywhere

from pyroute2 import IPRoute, netns  # the bench may touch the world; the compiler never does

from compiler import naming
from compiler.cluster import ClusterModel, PodSource
from compiler.ir import IifnameSaddrInSet, NodePlan
from compiler.model import Namespace, NetworkPolicy, Node, Pod
from compiler.plan import build_plan
from compiler.render_json import render_json
from compiler.render_nft import rule_text, set_text
from tests.bench.compile import synthetic_cluster

NODE = "node-00"  # podCIDR 10.0.0.0/16 in the synthetic cluster
SERVER_IP, CLIENT_IP = "10.0.200.10", "10.0.200.20"  # inside node-00's podCIDR, unused by its pods
# The bench pods' host-side veths (the CNI's prefix: the ruleset's pod-only checks apply).
HOST_IFNAMES = {
    "server": f"{naming.POD_INTERFACE_PREFIX}bser",
    "client": f"{naming.POD_INTERFACE_PREFIX}bcli",
}
GATEWAY = "169.254.1.1"  # on the node's lo: every pod veth answers ARP for it
PORT = 8080
BIG_BYTES = 16 * 1024 * 1024
SCOPE_LINK = 253
WORKLOADS = ("new", "keepalive", "throughput")
CONFIGS = ("none", "conntrack", "stockade", "antispoof", "antispoof-fib", "hook")
TARGETS = {"new": 0.95, "keepalive": 0.97, "throughput": 0.97}  # of conntrack only

# Each configuration is one table; all are loaded once and switched with the ``dormant`` flag (a
# dormant table's chains are off their hooks), so rounds can alternate quickly without reloading.
TABLES = {
    "conntrack": "bench_conntrack",
    "hook": "bench_hook",
    "antispoof": "bench_antispoof",
    "antispoof-fib": "bench_antispoof_fib",
    "stockade": naming.TABLE,
}
CONNTRACK_ONLY = """
table inet bench_conntrack {
    flags dormant
    chain forward {
        type filter hook forward priority filter; policy accept;
        ct state established accept
    }
}
"""


def with_prerouting(table: str, rules: list[str], sets: tuple[str, ...] = ()) -> str:
    """``conntrack`` plus a prerouting chain at Stockade's priority holding ``rules`` (and
    ``sets``, nft text blocks, for them)."""
    body = "".join(f"        {rule}\n" for rule in rules)
    return CONNTRACK_ONLY.replace("bench_conntrack", table).replace(
        "    flags dormant\n",
        "    flags dormant\n" + "".join(f"{block}\n" for block in sets) + "    chain prerouting {\n"
        "        type filter hook prerouting priority raw; policy accept;\n"
        f"{body}    }}\n",
    )


def antispoof_only(plan: NodePlan) -> str:
    """``conntrack`` plus the plan's ``prerouting`` chain and the sets it uses, nothing else."""
    chain = plan.chain(naming.CHAIN_PREROUTING)
    assert chain is not None
    used = {m.set_name for r in chain.rules for m in r.matches if isinstance(m, IifnameSaddrInSet)}
    sets = tuple("\n".join(set_text(s)) for s in plan.sets if s.name in used)
    return with_prerouting("bench_antispoof", [rule_text(r) for r in chain.rules], sets)


def antispoof_fib_only(prefix: str) -> str:
    """``conntrack`` plus the route lookup for every packet from a pod interface."""
    return with_prerouting("bench_antispoof_fib", [f'iifname "{prefix}*" fib saddr . iif oif missing drop'])


def hook_only(prefix: str) -> str:
    """``antispoof-fib`` without the route lookup: the same hook and name compare, then a mark
    compare that never holds. What ``antispoof-fib`` costs beyond this is the ``fib`` lookup."""
    return with_prerouting("bench_hook", [f'iifname "{prefix}*" meta mark 0xdead drop'])


# wrk prints its summary as one JSON line, so nothing depends on its human-readable units.
WRK_SCRIPT = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('{"requests": %d, "bytes": %d, "duration_us": %d, "errors": %d}\\n',
    summary.requests, summary.bytes, summary.duration,
    e.connect + e.read + e.write + e.status + e.timeout))
end
"""

NGINX_CONF = """
user root;
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 10000000;
    keepalive_timeout 120;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    server {{
        listen {ip}:{port} backlog=4096;
        root {tmp}/www;
        location = / {{ return 200 "ok\\n"; }}
    }}
}}
"""


def fail(message: str) -> NoReturn:
    print(f"dataplane bench: {message}", file=sys.stderr)
    raise SystemExit(2)


def preflight() -> dict[str, str]:
    if os.geteuid() != 0:
        fail("needs root (network namespaces, nftables)")
    tools = {name: shutil.which(name) for name in ("nginx", "wrk", "nft", "nsenter", "conntrack")}
    missing = [name for name, path in tools.items() if path is None]
    if missing:
        fail(f"missing {', '.join(missing)}: apt-get install nginx-light wrk nftables util-linux conntrack")
    return {name: str(path) for name, path in tools.items()}


# --- the cluster and the rulesets -------------------------------------------------------------------


def bench_model(
    *,
    server_ip: str = SERVER_IP,
    client_ip: str = CLIENT_IP,
    client_node: str = NODE,
    internal_ips: Mapping[str, str] | None = None,
) -> ClusterModel:
    """The synthetic cluster plus namespace ``bench``: server on node-00 and client (on node-00
    unless ``client_node`` says otherwise: the overlay bench puts it on another node), each
    isolated; ``internal_ips`` replaces those nodes' InternalIPs (the overlay bench's underlay,
    which the compiled ruleset names to untrack the tunnel's packets)."""
    base = synthetic_cluster(pods=10_000, namespaces=500, policies=1_000, nodes=20)
    nodes = tuple(
        n
        if n.metadata.name not in (internal_ips or {})
        else Node.model_validate(
            {
                **n.model_dump(mode="json", by_alias=True, exclude_none=True),
                "status": {"addresses": [{"type": "InternalIP", "address": internal_ips[n.metadata.name]}]},  # type: ignore[index]
            }
        )
        for n in base.nodes
    )
    bench_ns = Namespace.model_validate(
        {"metadata": {"name": "bench", "labels": {"team": "team-0", "env": "prod"}}}
    )

    def pod(name: str, ip: str, app: str, ports: list[dict[str, Any]], node: str = NODE) -> Pod:
        return Pod.model_validate(
            {
                "metadata": {"name": name, "namespace": "bench", "labels": {"app": app, "tier": "frontend"}},
                "spec": {"nodeName": node, "containers": [{"ports": ports}]},
                "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]},
            }
        )

    server = pod("server", server_ip, "bench-server", [{"containerPort": PORT, "name": "http"}])
    client = pod("client", client_ip, "bench-client", [], client_node)
    policies = [
        {
            "metadata": {"name": "default-deny"},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]},
        },
        {
            "metadata": {"name": "server-from-client"},
            "spec": {
                "podSelector": {"matchLabels": {"app": "bench-server"}},
                "ingress": [
                    {
                        "from": [{"podSelector": {"matchLabels": {"app": "bench-client"}}}],
                        "ports": [{"port": "http"}],
                    }
                ],
            },
        },
        {
            "metadata": {"name": "client-to-server-and-dns"},
            "spec": {
                "podSelector": {"matchLabels": {"app": "bench-client"}},
                "policyTypes": ["Egress"],
                "egress": [
                    {
                        "to": [{"podSelector": {"matchLabels": {"app": "bench-server"}}}],
                        "ports": [{"port": PORT}],
                    },
                    {
                        "to": [
                            {"namespaceSelector": {}, "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}
                        ],
                        "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
                    },
                ],
            },
        },
    ]
    for p in policies:
        p["metadata"]["namespace"] = "bench"  # type: ignore[index]
    return ClusterModel(
        namespaces=(*base.namespaces, bench_ns),
        pods=(*base.pods, server, client),
        policies=(*base.policies, *(NetworkPolicy.model_validate(p) for p in policies)),
        nodes=nodes,
        # The pairs the node agent reads from the lab's routes (a /32 to each pod's veth).
        pod_sources=frozenset(
            {PodSource(HOST_IFNAMES["server"], server_ip), PodSource(HOST_IFNAMES["client"], client_ip)}
        ),
    )


def stockade_ruleset(
    work: Path, *, model: ClusterModel | None = None, node: str = NODE
) -> tuple[Path, NodePlan, str]:
    """The ruleset ``node`` gets for ``model`` (default: :func:`bench_model`) as a libnftables JSON
    file in ``work``, its plan, and a one-line summary of it."""
    started = time.perf_counter()
    plan = build_plan(model or bench_model(), node=node)
    path = work / f"stockade-{node}.json"
    path.write_text(json.dumps(render_json(plan)))
    rules = sum(len(c.rules) for c in plan.chains)
    elements = sum(len(s.elements) for s in plan.sets)
    summary = (
        f"{len(plan.local_pods)} local pods, {len(plan.chains)} chains, {rules} rules, "
        f"{len(plan.sets)} sets ({elements} elements); compiled in {time.perf_counter() - started:.1f}s"
    )
    return path, plan, summary


# --- the lab ------------------------------------------------------------------------------------------


@dataclass
class Lab:
    node: str
    server: str
    client: str
    work: Path
    server_ip: str = SERVER_IP


def nsrun(
    ns: str, *argv: str, check: bool = True, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["nsenter", f"--net=/run/netns/{ns}", *argv], input=stdin, capture_output=True, text=True, check=False
    )
    if check and result.returncode != 0:
        fail(f"{' '.join(argv)} in {ns}: {result.stderr.strip()}")
    return result


@contextlib.contextmanager
def lab() -> Iterator[Lab]:
    tag = f"stkb{os.getpid()}"
    names = {role: f"{tag}-{role}" for role in ("node", "server", "client")}
    created: list[str] = []
    work = Path(tempfile.mkdtemp(prefix="stockade-dataplane-"))
    try:
        for name in names.values():
            netns.create(name)
            created.append(name)
        nsrun(
            names["node"],
            *("sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv4.conf.all.rp_filter=0"),
            "net.ipv4.conf.default.rp_filter=0",
        )
        with IPRoute(netns=names["node"]) as ipr:
            lo = ipr.link_lookup(ifname="lo")[0]
            ipr.link("set", index=lo, state="up")
            ipr.addr("add", index=lo, address=GATEWAY, prefixlen=32)
            for role, ip in (("server", SERVER_IP), ("client", CLIENT_IP)):
                host = HOST_IFNAMES[role]
                ipr.link("add", ifname=host, kind="veth", peer={"ifname": "eth0", "net_ns_fd": names[role]})
                idx = ipr.link_lookup(ifname=host)[0]
                ipr.link("set", index=idx, state="up")
                ipr.route("add", dst=f"{ip}/32", oif=idx, scope=SCOPE_LINK)
        for role, ip in (("server", SERVER_IP), ("client", CLIENT_IP)):
            with IPRoute(netns=names[role]) as ipr:
                ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
                eth = ipr.link_lookup(ifname="eth0")[0]
                ipr.link("set", index=eth, state="up")
                ipr.addr("add", index=eth, address=ip, prefixlen=32)
                ipr.route("add", dst=f"{GATEWAY}/32", oif=eth, scope=SCOPE_LINK)
                ipr.route("add", dst="0.0.0.0/0", gateway=GATEWAY, oif=eth)
        # wrk's `Connection: close` runs open tens of thousands of connections: let the client
        # reuse ports in TIME_WAIT rather than run out of them.
        nsrun(
            names["client"],
            *("sysctl", "-qw", "net.ipv4.ip_local_port_range=1024 65000", "net.ipv4.tcp_tw_reuse=1"),
        )
        yield Lab(node=names["node"], server=names["server"], client=names["client"], work=work)
    finally:
        for name in reversed(created):
            netns.remove(name)
        shutil.rmtree(work, ignore_errors=True)


@contextlib.contextmanager
def nginx(lab: Lab, *, cpu: str | None) -> Iterator[list[int]]:
    """nginx serving in the server pod; yields the worker's pid."""
    tmp = lab.work / "nginx"
    (tmp / "www").mkdir(parents=True)
    (tmp / "www" / "big").write_bytes(os.urandom(BIG_BYTES))
    conf = tmp / "nginx.conf"
    conf.write_text(NGINX_CONF.format(tmp=tmp, ip=lab.server_ip, port=PORT))
    pin = ["taskset", "-c", cpu] if cpu is not None else []
    proc = subprocess.Popen(
        [*pin, "nsenter", f"--net=/run/netns/{lab.server}", "nginx", "-p", str(tmp), "-c", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 10
        while nsrun(
            lab.client, "wrk", "-t1", "-c1", "-d1s", f"http://{lab.server_ip}:{PORT}/", check=False
        ).returncode:
            if proc.poll() is not None or time.monotonic() > deadline:
                fail(f"nginx did not start: {proc.stderr.read() if proc.stderr else ''}")
            time.sleep(0.2)
        workers = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        yield [int(pid) for pid in workers]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def load_all(lab: Lab, stockade_json: Path, plan: NodePlan) -> None:
    """Every configuration's table, all dormant."""
    nsrun(lab.node, "nft", "-f", "-", stdin=CONNTRACK_ONLY)
    nsrun(lab.node, "nft", "-f", "-", stdin=antispoof_only(plan))
    nsrun(lab.node, "nft", "-f", "-", stdin=antispoof_fib_only(naming.POD_INTERFACE_PREFIX))
    nsrun(lab.node, "nft", "-f", "-", stdin=hook_only(naming.POD_INTERFACE_PREFIX))
    nsrun(lab.node, "nft", "-j", "-f", str(stockade_json))
    nsrun(lab.node, "nft", "add", "table", "inet", naming.TABLE, "{ flags dormant; }")


def switch(lab: Lab, config: str) -> None:
    """Only ``config``'s table on its hooks (``none``: no table at all, so conntrack is off too)."""
    if config == "none":
        nsrun(lab.node, "nft", "flush", "ruleset")
        return
    for other, table in TABLES.items():
        if other != config:
            nsrun(lab.node, "nft", "add", "table", "inet", table, "{ flags dormant; }")
    nsrun(lab.node, "nft", "add", "table", "inet", TABLES[config])  # without flags: awake
    nsrun(lab.node, "conntrack", "-F", check=False)  # every configuration starts from no flows


def runtime_ns(pids: list[int]) -> int:
    """CPU time the tasks have run, in ns (``/proc/PID/schedstat``: exact, not tick-sampled).
    Without IRQ time accounting, softirq work (forwarding through the node namespace, the
    ruleset included) is charged to the task it interrupted, or to ksoftirqd."""
    return sum(int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) for pid in pids)


def ksoftirqd(cpu_ids: list[str]) -> list[int]:
    wanted = {f"ksoftirqd/{c}" for c in cpu_ids}
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "comm").read_text().strip() in wanted:
                    found.append(int(entry.name))
    return found


def wrk(
    lab: Lab, workload: str, *, seconds: int, connections: int, cpu: str | None, watched: list[int]
) -> tuple[float, float]:
    """requests/s (new, keepalive) or bytes/s (throughput), and the CPU time the whole path took
    per request (per MiB for throughput), in microseconds: wrk's own (its rusage), plus nginx's
    worker and ksoftirqd's (``watched``). Unlike the rate, the CPU time per request hardly depends
    on how much of the CPUs other work on the machine leaves to the bench."""
    script = lab.work / "report.lua"
    if not script.exists():
        script.write_text(WRK_SCRIPT)
    url = f"http://{lab.server_ip}:{PORT}/"
    args = ["-t1", f"-d{seconds}s", "-s", str(script), "--timeout", "5s"]
    if workload == "new":
        args += [f"-c{connections}", "-H", "Connection: close", url]
    elif workload == "keepalive":
        args += [f"-c{connections}", url]
    else:
        args += ["-c4", url + "big"]
    pin = ["taskset", "-c", cpu] if cpu is not None else []
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    others = runtime_ns(watched)
    out = subprocess.run(
        [*pin, "nsenter", f"--net=/run/netns/{lab.client}", "wrk", *args],
        capture_output=True,
        text=True,
        check=False,
    )
    others = runtime_ns(watched) - others
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    wrk_s = (after.ru_utime - children.ru_utime) + (after.ru_stime - children.ru_stime)
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode != 0 or not lines:
        fail(f"wrk {workload} failed: {out.stderr.strip() or out.stdout.strip()}")
    summary: dict[str, int] = json.loads(lines[-1])
    seconds_run = summary["duration_us"] / 1e6
    if summary["requests"] == 0:
        fail(f"wrk {workload}: no request completed ({summary})")
    errors_share = summary["errors"] / summary["requests"]
    if workload != "new" and errors_share > 0.001:
        fail(f"wrk {workload}: {summary['errors']} errors in {summary['requests']} requests")
    value = summary["bytes"] if workload == "throughput" else summary["requests"]
    units = summary["bytes"] / 2**20 if workload == "throughput" else summary["requests"]
    cpu_us = wrk_s * 1e6 + others / 1e3
    return float(value) / seconds_run, cpu_us / units


# --- the run --------------------------------------------------------------------------------------------


def cpus() -> tuple[str | None, str | None]:
    available = sorted(os.sched_getaffinity(0))
    if len(available) < 2:
        return None, None
    return str(available[0]), str(available[1])


def fmt(workload: str, value: float) -> str:
    return f"{value / 1e9:8.2f} GB/s" if workload == "throughput" else f"{value:8.0f} /s  "


def cost_report(costs: dict[str, dict[str, list[float]]], configs: list[str]) -> bool:
    """CPU time per request (per MiB): medians, and per round conntrack's cost / this cost (so,
    like the rates, above 1 is cheaper than conntrack only)."""
    print("\nCPU time per request (throughput: per MiB), all tasks on the path: median (min-max)")
    for workload in WORKLOADS:
        for config in configs:
            values = costs[config][workload]
            print(
                f"  {workload:<10} {config:<13} {statistics.median(values):8.1f} us"
                f"  ({min(values):.1f}-{max(values):.1f})"
            )
    ok = True
    if "conntrack" not in configs:
        return ok
    print("\nper-round conntrack's CPU per request / this one's: median (min-max) [per round]")
    for workload in WORKLOADS:
        base = costs["conntrack"][workload]
        for config in configs:
            if config in ("conntrack", "none"):
                continue
            ratios = [b / v for v, b in zip(costs[config][workload], base, strict=True)]
            median = statistics.median(ratios)
            verdict = ""
            if config == "stockade":
                passed = median >= TARGETS[workload]
                ok = ok and passed
                verdict = f"  target >= {TARGETS[workload]:.2f}: {'met' if passed else 'NOT met'}"
            rounds = " ".join(f"{r:.3f}" for r in ratios)
            print(
                f"  {workload:<10} {config:<13} {median:.3f} ({min(ratios):.3f}-{max(ratios):.3f})"
                f" [{rounds}]{verdict}"
            )
    return ok


def report(results: dict[str, dict[str, list[float]]], configs: list[str]) -> bool:
    print("\nrates, medians over rounds (min-max):")
    for workload in WORKLOADS:
        print(f"  {workload}")
        for config in configs:
            values = results[config][workload]
            print(
                f"    {config:<13} {fmt(workload, statistics.median(values))}"
                f"  ({fmt(workload, min(values)).strip()} - {fmt(workload, max(values)).strip()})"
            )
    ok = True
    if "conntrack" not in configs:
        return ok
    print("\nper-round ratio to conntrack only: median (min-max) [per round]")
    for workload in WORKLOADS:
        base = results["conntrack"][workload]
        for config in configs:
            if config in ("conntrack", "none"):  # none is not interleaved: no per-round ratio
                continue
            ratios = [v / b for v, b in zip(results[config][workload], base, strict=True)]
            median = statistics.median(ratios)
            rounds = " ".join(f"{r:.3f}" for r in ratios)
            verdict = ""
            if config == "stockade":
                target = TARGETS[workload]
                passed = median >= target
                ok = ok and passed
                verdict = f"  target >= {target:.2f}: {'met' if passed else 'NOT met'}"
            print(
                f"  {workload:<10} {config:<13} {median:.3f} ({min(ratios):.3f}-{max(ratios):.3f})"
                f" [{rounds}]{verdict}"
            )
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--seconds", type=int, default=2, help="length of each measurement")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections (new, keepalive)")
    parser.add_argument(
        "--configs",
        default="conntrack,stockade",
        help=f"comma-separated, of {CONFIGS}; none is measured in a block of its own, first",
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin nginx and wrk to CPUs")
    args = parser.parse_args()
    configs = [c for c in args.configs.split(",") if c]
    unknown = sorted(set(configs) - set(CONFIGS))
    if unknown or not configs:
        fail(f"unknown configurations {unknown}; choose from {CONFIGS}")
    preflight()
    server_cpu, client_cpu = (None, None) if args.no_pin else cpus()

    print(
        f"date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}; kernel {platform.release()}; {os.cpu_count()} CPUs"
    )
    print(f"nginx pinned to CPU {server_cpu}, wrk to CPU {client_cpu}" if server_cpu else "not pinned")
    print(f"load average before: {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")
    with lab() as bench:
        stockade_json, plan, summary = stockade_ruleset(bench.work)
        print(f"stockade ruleset for {NODE}: {summary}")
        results: dict[str, dict[str, list[float]]] = {c: {w: [] for w in WORKLOADS} for c in configs}
        costs: dict[str, dict[str, list[float]]] = {c: {w: [] for w in WORKLOADS} for c in configs}
        interleaved = [c for c in configs if c != "none"]
        watched: list[int] = []

        def measure(config: str, workload: str) -> None:
            rate, cost = wrk(
                bench,
                workload,
                seconds=args.seconds,
                connections=args.connections,
                cpu=client_cpu,
                watched=watched,
            )
            results[config][workload].append(rate)
            costs[config][workload].append(cost)

        with nginx(bench, cpu=server_cpu) as workers:
            pinned = [c for c in (server_cpu, client_cpu) if c is not None]
            watched += workers + ksoftirqd(pinned or [str(c) for c in os.sched_getaffinity(0)])
            if "none" in configs:  # no table at all: a block of its own, before the tables exist
                switch(bench, "none")
                for _ in range(args.rounds):
                    for workload in WORKLOADS:
                        measure("none", workload)
                print(f"none: {args.rounds} rounds done", flush=True)
            load_all(bench, stockade_json, plan)
            for round_no in range(args.rounds):
                shift = round_no % len(interleaved)
                order = interleaved[shift:] + interleaved[:shift]
                # Workload by workload, the configurations back to back: the measurements a ratio
                # compares are seconds apart, whatever the machine's load does over minutes.
                for workload in WORKLOADS:
                    for config in order:
                        switch(bench, config)
                        measure(config, workload)
                print(f"round {round_no + 1}/{args.rounds} done ({', '.join(order)})", flush=True)
    print(f"load average after: {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")
    rates_ok = report(results, configs)
    costs_ok = cost_report(costs, configs)
    ok = rates_ok and costs_ok
    print(
        "\ntargets met"
        if ok
        else "\ntargets NOT met (see the ratios above; on a shared machine, rerun quieter)"
    )


if __name__ == "__main__":
    main()
