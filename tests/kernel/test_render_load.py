"""Rendered plans in the kernel: text and JSON load to the same ruleset, deltas converge, and a
small routed node enforces allow / deny / fail-closed / anti-spoofing with real packets.

Self-contained: every network namespace and link here is created by a fixture of this file and
removed by it, even when a test fails. Text loads with ``nft -f`` inside the namespace (nsenter);
JSON loads through the libnftables Python binding in a child process that entered the namespace
with ``pyroute2.netns.setns``, as the node agent will.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import os
import random
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pyroute2 import IPRoute, netns

from compiler import naming
from compiler.cluster import ClusterModel, PodSource
from compiler.incremental import NodeCompiler, render_delta_json
from compiler.model import Namespace, NetworkPolicy, Node, Pod
from compiler.plan import build_plan
from compiler.render_json import render_json
from compiler.render_nft import render_nft
from tests.unit import clustergen, hostile

pytestmark = pytest.mark.kernel

_names = itertools.count()
_JSON_CHILD = """
import json, sys
from pyroute2 import netns
netns.setns(sys.argv[1], flags=0)
import nftables
nft = nftables.Nftables()
rc, out, err = nft.json_cmd(json.load(sys.stdin))
sys.stderr.write(err)
sys.exit(rc)
"""


@contextlib.contextmanager
def scratch_netns(role: str) -> Iterator[str]:
    name = f"stkr{os.getpid()}-{next(_names)}-{role}"
    netns.create(name)
    try:
        yield name
    finally:
        netns.remove(name)


def nsexec(
    ns: str, *argv: str, stdin: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["nsenter", f"--net=/run/netns/{ns}", *argv],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} in {ns} failed: {result.stderr.strip()}")
    return result


def load_text(ns: str, text: str) -> None:
    nsexec(ns, "nft", "-f", "-", stdin=text)


def load_json(ns: str, doc: dict[str, Any]) -> None:
    result = subprocess.run(
        [sys.executable, "-c", _JSON_CHILD, ns],
        input=json.dumps(doc),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"libnftables rejected the JSON in {ns}: {result.stderr.strip()}"


def listing(ns: str) -> dict[str, Any]:
    """``nft -j list table inet stockade``, without handles and counter values, elements sorted;
    objects by kind and name, rules in chain order."""
    doc = json.loads(nsexec(ns, "nft", "-j", "list", "table", "inet", "stockade").stdout)
    out: dict[str, Any] = {"table": [], "chain": {}, "set": {}, "map": {}, "rule": {}}
    for obj in doc["nftables"]:
        ((kind, body),) = obj.items()
        if kind == "metainfo":
            continue
        body = {k: v for k, v in body.items() if k != "handle"}
        if "elem" in body:
            body["elem"] = sorted(body["elem"], key=lambda e: json.dumps(e, sort_keys=True))
        if kind == "rule":
            body["expr"] = [{"counter": None} if "counter" in e else e for e in body["expr"]]
            out["rule"].setdefault(body["chain"], []).append(body)
        elif kind == "table":
            out["table"].append(body)
        else:
            out[kind][body["name"]] = body
    return out


@pytest.fixture(scope="module")
def pair() -> Iterator[tuple[str, str]]:
    with scratch_netns("text") as text_ns, scratch_netns("json") as json_ns:
        yield text_ns, json_ns


def _tiny() -> ClusterModel:
    return clustergen.random_model(11, pods=4, policies=2)


MODELS = [
    pytest.param(lambda: clustergen.random_model(0), "n1", id="random-0"),
    pytest.param(lambda: clustergen.random_model(1), "n2", id="random-1"),
    pytest.param(lambda: clustergen.random_model(2, pods=30, policies=8), "n3", id="random-2-larger"),
    pytest.param(_tiny, "n1", id="tiny"),
    pytest.param(hostile.model, hostile.NODE, id="hostile-api-text"),
    pytest.param(lambda: clustergen.random_model(4), "unknown-node", id="unknown-node"),
    pytest.param(ClusterModel, "n1", id="empty-cluster"),
    pytest.param(
        lambda: dataclasses.replace(
            clustergen.random_model(0),
            pod_sources=frozenset(
                {PodSource("stk0a1b2c3d4e5f", "10.244.1.2"), PodSource("stk9", "fd00:1::2")}
            ),
        ),
        "n1",
        id="pod-sources",
    ),
]


@pytest.mark.parametrize(("make", "node"), MODELS)
def test_text_and_json_load_to_the_same_ruleset(pair: tuple[str, str], make: Any, node: str) -> None:
    text_ns, json_ns = pair
    plan = build_plan(make(), node=node)
    text, doc = render_nft(plan), render_json(plan)
    for _ in range(2):  # the replace idiom loads over itself
        load_text(text_ns, text)
        load_json(json_ns, doc)
    from_text, from_json = listing(text_ns), listing(json_ns)
    assert from_text == from_json
    assert set(from_text["chain"]) == {c.name for c in plan.chains}
    assert set(from_text["set"]) == {s.name for s in plan.sets}
    assert sum(map(len, from_text["rule"].values())) == sum(len(c.rules) for c in plan.chains)
    kernel_comments = {r["comment"] for rules in from_text["rule"].values() for r in rules}
    assert kernel_comments == {r.comment for c in plan.chains for r in c.rules}


@pytest.mark.parametrize("seed", [pytest.param(s, id=f"seed-{s}") for s in (5, 6, 7)])
def test_delta_after_full_load_equals_a_fresh_load(pair: tuple[str, str], seed: int) -> None:
    incremental_ns, fresh_ns = pair
    current = clustergen.random_model(seed)
    compiler = NodeCompiler(current, node="n1")
    load_json(incremental_ns, render_json(compiler.plan))
    rng = random.Random(seed)
    for step in range(12):
        old, new, current = clustergen.random_change(rng, current)
        delta = compiler.update_pod(old, new)
        if not delta.empty:
            load_json(incremental_ns, render_delta_json(delta))
        load_text(fresh_ns, render_nft(build_plan(current, node="n1")))
        assert listing(incremental_ns) == listing(fresh_ns), (
            f"step {step}: {old and old.key} -> {new and new.key}"
        )


# --- a routed node with real packets ---------------------------------------------------------------

NODE = "n1"
GW4 = "169.254.1.1"
UNDERLAY4, UNDERLAY6 = "192.168.0.1", "fd00:192::1"  # the node's address towards the outside
OUTSIDE4, OUTSIDE6 = "192.168.0.254", "fd00:192::fe"
PODS: dict[str, tuple[str, str]] = {
    "a": ("10.244.1.2", "fd00:1::2"),
    "b": ("10.244.1.3", "fd00:1::3"),
    "c": ("10.244.1.4", "fd00:1::4"),
    "d": ("10.244.1.5", "fd00:1::5"),  # wired by "the CNI" but not in the plan yet
}
IN_MODEL = ("a", "b", "c")
TCP_PORTS = (80, 81)
SCOPE_LINK = 253  # a route without a gateway: the destination is on the link
UDP_PORT = 5353

_SERVER = """
import socket, sys, threading
log = open(sys.argv[1], "a", buffering=1)
def tcp(family, port):
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    s.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", port)); s.listen(64)
    while True:
        c, _ = s.accept(); c.close()
def udp(family):
    s = socket.socket(family, socket.SOCK_DGRAM)
    if family == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    s.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", int(sys.argv[2])))
    while True:
        data, src = s.recvfrom(512); log.write(f"{src[0]} {data.decode()}\\n")
for f in (socket.AF_INET, socket.AF_INET6):
    for p in map(int, sys.argv[3:]):
        threading.Thread(target=tcp, args=(f, p), daemon=True).start()
    threading.Thread(target=udp, args=(f,), daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
"""

_CLIENT = """
import json, socket, sys
from concurrent.futures import ThreadPoolExecutor
def connect(target):
    host, port = target.rsplit(" ", 1)
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    s.settimeout(1.0)
    try:
        s.connect((host, int(port))); return True
    except OSError:
        return False
    finally:
        s.close()
with ThreadPoolExecutor(32) as pool:
    print(json.dumps(list(pool.map(connect, sys.argv[1:]))))
"""

_SEND = """
import socket, sys
src, dst, port, payload = sys.argv[1:5]
s = socket.socket(socket.AF_INET6 if ":" in dst else socket.AF_INET, socket.SOCK_DGRAM)
s.bind((src, 0)); s.sendto(payload.encode(), (dst, int(port)))
"""


def _pod(name: str, labels: dict[str, str]) -> Pod:
    v4, v6 = PODS[name]
    return Pod.model_validate(
        {
            "metadata": {"name": name, "namespace": "x", "labels": labels},
            "spec": {"nodeName": NODE, "containers": [{"ports": [{"containerPort": 80, "name": "http"}]}]},
            "status": {"phase": "Running", "podIP": v4, "podIPs": [{"ip": v4}, {"ip": v6}]},
        }
    )


def lab_model() -> ClusterModel:
    """b admits a on TCP/http and UDP 5353; c may only reach the outside network on TCP 80."""
    b_ingress = NetworkPolicy.model_validate(
        {
            "metadata": {"name": "b-from-a", "namespace": "x"},
            "spec": {
                "podSelector": {"matchLabels": {"app": "b"}},
                "ingress": [
                    {
                        "from": [{"podSelector": {"matchLabels": {"app": "a"}}}],
                        "ports": [{"port": "http"}, {"protocol": "UDP", "port": UDP_PORT}],
                    }
                ],
            },
        }
    )
    c_egress = NetworkPolicy.model_validate(
        {
            "metadata": {"name": "c-out", "namespace": "x"},
            "spec": {
                "podSelector": {"matchLabels": {"app": "c"}},
                "policyTypes": ["Egress"],
                "egress": [
                    {
                        "to": [
                            {"ipBlock": {"cidr": "192.168.0.0/24"}},
                            {"ipBlock": {"cidr": "fd00:192::/64"}},
                        ],
                        "ports": [{"port": 80}],
                    }
                ],
            },
        }
    )
    return ClusterModel(
        namespaces=(Namespace.model_validate({"metadata": {"name": "x"}}),),
        pods=tuple(_pod(n, {"app": n}) for n in IN_MODEL),
        policies=(b_ingress, c_egress),
        nodes=(
            Node.model_validate(
                {"metadata": {"name": NODE}, "spec": {"podCIDRs": ["10.244.1.0/24", "fd00:1::/64"]}}
            ),
        ),
    )


@dataclasses.dataclass
class Lab:
    node: str
    netns: dict[str, str]  # pod name or "outside" -> netns
    logs: dict[str, Path]

    def probe(self, src: str, targets: list[tuple[str, int]]) -> list[bool]:
        ns = self.node if src == "node" else self.netns[src]
        args = [f"{host} {port}" for host, port in targets]
        return list(json.loads(nsexec(ns, sys.executable, "-c", _CLIENT, *args).stdout))

    def send_udp(self, src_ns: str, src: str, dst: str, payload: str) -> None:
        nsexec(self.netns[src_ns], sys.executable, "-c", _SEND, src, dst, str(UDP_PORT), payload)

    def received(self, name: str) -> str:
        return self.logs[name].read_text()


def _sysctl(ns: str, *settings: str) -> None:
    nsexec(ns, "sysctl", "-qw", *settings)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """node netns routing four pod netns (/32 + /128 routes to each veth, proxy ARP, default
    routes via the node) and an "outside" netns on the node's underlay link."""
    logs_dir = tmp_path_factory.mktemp("lab")
    servers: list[subprocess.Popen[str]] = []
    with contextlib.ExitStack() as stack:
        node = stack.enter_context(scratch_netns("node"))
        names = {name: stack.enter_context(scratch_netns(name)) for name in (*PODS, "outside")}
        _sysctl(
            node,
            "net.ipv4.ip_forward=1",
            "net.ipv6.conf.all.forwarding=1",
            "net.ipv4.conf.all.rp_filter=0",  # anti-spoofing is the ruleset's job here
            "net.ipv4.conf.default.rp_filter=0",
            "net.ipv6.conf.default.accept_dad=0",
        )
        for ns in names.values():
            _sysctl(ns, "net.ipv6.conf.default.accept_dad=0", "net.ipv6.conf.all.accept_dad=0")
        with IPRoute(netns=node) as ipr:
            ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
            ipr.link("add", ifname="up0", kind="veth", peer={"ifname": "eth0", "net_ns_fd": names["outside"]})
            up = ipr.link_lookup(ifname="up0")[0]
            ipr.link("set", index=up, state="up")
            ipr.addr("add", index=up, address=UNDERLAY4, prefixlen=24)
            ipr.addr("add", index=up, address=UNDERLAY6, prefixlen=64)
            ipr.route("add", dst="0.0.0.0/0", gateway=OUTSIDE4)
            ipr.route("add", dst="::/0", gateway=OUTSIDE6, family=socket.AF_INET6)
            for i, (name, (v4, v6)) in enumerate(PODS.items()):
                host = f"{naming.POD_INTERFACE_PREFIX}{i}"  # the CNI's prefix: anti-spoofing applies
                ipr.link("add", ifname=host, kind="veth", peer={"ifname": "eth0", "net_ns_fd": names[name]})
                idx = ipr.link_lookup(ifname=host)[0]
                ipr.link("set", index=idx, state="up")
                ipr.addr("add", index=idx, address="fe80::1", prefixlen=64)
                ipr.route("add", dst=f"{v4}/32", oif=idx, scope=SCOPE_LINK)
                ipr.route("add", dst=f"{v6}/128", oif=idx, family=socket.AF_INET6)
                # Answer ARP for the gateway at once: the default proxy_delay holds replies back
                # for a random time that a first connection attempt may not survive.
                _sysctl(node, f"net.ipv4.conf.{host}.proxy_arp=1", f"net.ipv4.neigh.{host}.proxy_delay=0")
        with IPRoute(netns=names["outside"]) as ipr:
            ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
            eth = ipr.link_lookup(ifname="eth0")[0]
            ipr.link("set", index=eth, state="up")
            ipr.addr("add", index=eth, address=OUTSIDE4, prefixlen=24)
            ipr.addr("add", index=eth, address=OUTSIDE6, prefixlen=64)
            ipr.route("add", dst="10.244.1.0/24", gateway=UNDERLAY4)
            ipr.route("add", dst="fd00:1::/64", gateway=UNDERLAY6, family=socket.AF_INET6)
        for name, (v4, v6) in PODS.items():
            with IPRoute(netns=names[name]) as ipr:
                ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
                eth = ipr.link_lookup(ifname="eth0")[0]
                ipr.link("set", index=eth, state="up")
                ipr.addr("add", index=eth, address=v4, prefixlen=32)
                ipr.addr("add", index=eth, address=v6, prefixlen=128)
                ipr.route("add", dst=f"{GW4}/32", oif=eth, scope=SCOPE_LINK)
                ipr.route("add", dst="0.0.0.0/0", gateway=GW4, oif=eth)
                ipr.route("add", dst="::/0", gateway="fe80::1", oif=eth, family=socket.AF_INET6)
        logs = {}
        for name in (*PODS, "outside", "node"):
            logs[name] = logs_dir / f"{name}.log"
            ns = node if name == "node" else names[name]
            server = subprocess.Popen(
                [
                    *("nsenter", f"--net=/run/netns/{ns}", sys.executable, "-c", _SERVER, str(logs[name])),
                    *map(str, (UDP_PORT, *TCP_PORTS)),
                ],
                stdout=subprocess.PIPE,
                text=True,
            )
            servers.append(server)
            stack.callback(_stop, server)
            assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        lab = Lab(node=node, netns=names, logs=logs)
        for name in (*PODS, "outside"):  # resolve neighbours once, with no ruleset in the way
            lab.probe(name, [(_addr("node", family), 81) for family in (4, 6)])
        yield lab


def _stop(process: subprocess.Popen[str]) -> None:
    process.kill()
    process.wait(timeout=10)


def _addr(name: str, family: int) -> str:
    if name == "outside":
        return OUTSIDE4 if family == 4 else OUTSIDE6
    if name == "node":
        return UNDERLAY4 if family == 4 else UNDERLAY6
    return PODS[name][0 if family == 4 else 1]


# (source, destination, TCP port) -> connects? Sources are pods, the outside network, or the
# node itself; destinations pods, the outside network, or the node.
EXPECTED = {
    ("a", "b", 80): True,  # b admits a on http (named port, resolved on b)
    ("a", "b", 81): False,  # ... and nothing else
    ("c", "b", 80): False,  # b admits only a
    ("outside", "b", 80): False,
    ("node", "b", 80): True,  # the node (kubelet probes) always reaches its pods
    ("a", "c", 80): True,  # c is not isolated for ingress
    ("c", "a", 80): False,  # c is isolated for egress: only the outside network on 80
    ("c", "outside", 80): True,
    ("c", "outside", 81): False,
    ("c", "node", 80): True,  # the node's underlay address is in c's ipBlock (input hook)
    ("c", "node", 81): False,
    ("a", "node", 81): True,
    ("a", "outside", 81): True,
    ("outside", "a", 80): True,
    ("a", "d", 80): False,  # d has a route but no plan entry: fail closed, both ways
    ("d", "outside", 80): False,
    ("outside", "d", 80): False,
}


@pytest.mark.parametrize("family", [4, 6])
def test_routed_node_enforces_the_plan(lab: Lab, family: int) -> None:
    load_json(lab.node, render_json(build_plan(lab_model(), node=NODE)))
    nsexec(lab.node, "conntrack", "-F", check=False)
    got: dict[tuple[str, str, int], bool] = {}
    for src in sorted({s for s, _, _ in EXPECTED}):
        keys = [k for k in EXPECTED if k[0] == src]
        answers = lab.probe(src, [(_addr(d, family), port) for _, d, port in keys])
        got.update(zip(keys, answers, strict=True))
    wrong = {k: v for k, v in got.items() if v != EXPECTED[k]}
    assert not wrong, f"IPv{family}: these connected (True) or did not (False) against the plan: {wrong}"


def _anti_spoof_drops(lab: Lab) -> int:
    chain = json.loads(
        nsexec(lab.node, "nft", "-j", "list", "chain", "inet", "stockade", "prerouting").stdout
    )
    rules = [o["rule"] for o in chain["nftables"] if "rule" in o]
    counter = next(
        e["counter"]
        for r in rules
        if r["comment"].startswith("anti-spoofing")
        for e in r["expr"]
        if "counter" in e
    )
    return int(counter["packets"])


def test_pods_cannot_borrow_addresses(lab: Lab) -> None:
    """c claims a's address (which b admits) and an outside address; both are dropped on the
    way in, while a's genuine datagram and the same policy check pass."""
    load_json(lab.node, render_json(build_plan(lab_model(), node=NODE)))
    a4, c_ns = PODS["a"][0], lab.netns["c"]
    with IPRoute(netns=c_ns) as ipr:
        eth = ipr.link_lookup(ifname="eth0")[0]
        ipr.addr("add", index=eth, address=a4, prefixlen=32)
        ipr.addr("add", index=eth, address="192.168.0.77", prefixlen=32)
    try:
        before = _anti_spoof_drops(lab)
        lab.send_udp("a", a4, PODS["b"][0], "genuine")
        lab.send_udp("c", a4, PODS["b"][0], "spoofed-a")
        lab.send_udp("c", "192.168.0.77", OUTSIDE4, "spoofed-outside")
        time.sleep(0.5)
        assert f"{a4} genuine" in lab.received("b")
        assert "spoofed-a" not in lab.received("b")
        assert "spoofed-outside" not in lab.received("outside")
        assert _anti_spoof_drops(lab) - before >= 2
    finally:
        with IPRoute(netns=c_ns) as ipr:
            eth = ipr.link_lookup(ifname="eth0")[0]
            ipr.addr("del", index=eth, address=a4, prefixlen=32)
            ipr.addr("del", index=eth, address="192.168.0.77", prefixlen=32)


def test_pod_churn_through_a_delta(lab: Lab) -> None:
    """d appears in the model: one delta makes it reachable (it is not isolated), and a label
    change that brings it under b's policy isolates it, without reloading the table."""
    model = lab_model()
    compiler = NodeCompiler(model, node=NODE)
    load_json(lab.node, render_json(compiler.plan))
    nsexec(lab.node, "conntrack", "-F", check=False)
    d4 = PODS["d"][0]
    assert lab.probe("a", [(d4, 80)]) == [False]
    load_json(lab.node, render_delta_json(compiler.update_pod(None, _pod("d", {"app": "d"}))))
    assert lab.probe("a", [(d4, 80), (d4, 81)]) == [True, True]
    assert lab.probe("c", [(d4, 80)]) == [False]  # c's egress still applies
    load_json(
        lab.node, render_delta_json(compiler.update_pod(_pod("d", {"app": "d"}), _pod("d", {"app": "b"})))
    )
    nsexec(lab.node, "conntrack", "-F", check=False)
    assert lab.probe("a", [(d4, 80), (d4, 81)]) == [True, False]  # now isolated like b
    final = dataclasses.replace(model, pods=(*model.pods, _pod("d", {"app": "b"})))
    assert compiler.plan == build_plan(final, node=NODE)


def _claimant(name: str, addresses: str, labels: dict[str, str], **meta: Any) -> Pod:
    """A pod of x listing the addresses of lab pod ``addresses`` (or none: ""), with ``meta``."""
    status: dict[str, Any] = {"phase": meta.pop("phase", "Running")}
    if addresses:
        v4, v6 = PODS[addresses]
        status |= {"podIP": v4, "podIPs": [{"ip": v4}, {"ip": v6}]}
    return Pod.model_validate(
        {
            "metadata": {"name": name, "namespace": "x", "labels": labels, **meta},
            "spec": {"nodeName": NODE},
            "status": status,
        }
    )


OLD_T, NEW_T = "2026-03-01T10:00:00Z", "2026-03-01T10:00:07Z"
D_UID = "00000000-0000-4000-8000-00000000000d"


@pytest.mark.parametrize(
    ("claimants", "cni", "d_reachable"),
    [
        pytest.param(
            # The old pod finished; the new one ("d", on d's veth) has no status address yet.
            [
                _claimant("a-old", "d", {"app": "a"}, phase="Succeeded"),
                _claimant("d", "", {"app": "d"}, uid=D_UID),
            ],
            {},
            False,  # nobody owns the address yet: fail closed, not a's identity
            id="finished-before-new-status",
        ),
        pytest.param(
            [
                _claimant("a-old", "d", {"app": "a"}, phase="Failed"),
                _claimant("d", "", {"app": "d"}, uid=D_UID),
            ],
            {D_UID: PODS["d"]},
            True,  # the CNI plugin says whose sandbox holds it: d's, before the API does
            id="finished-and-cni-report",
        ),
        pytest.param(
            [
                _claimant("a-old", "d", {"app": "a"}, creationTimestamp=OLD_T, deletionTimestamp=NEW_T),
                _claimant("d", "d", {"app": "d"}, creationTimestamp=NEW_T, uid=D_UID),
            ],
            {},
            True,  # two live claims: the pod being deleted loses (its name sorts first)
            id="terminating-old-and-new",
        ),
    ],
)
@pytest.mark.parametrize("family", [4, 6])
def test_reused_address_does_not_carry_a_finished_pods_identity(
    lab: Lab, family: int, claimants: list[Pod], cni: dict[str, tuple[str, str]], d_reachable: bool
) -> None:
    """b admits pods app=a. The address now on d's veth was a's-like pod "a-old"'s; packets from d
    must not pass b's policy as that pod (before: they did, until d's own status arrived)."""
    base = lab_model()
    model = dataclasses.replace(base, pods=(*base.pods, *claimants), cni_addresses=cni)
    load_json(lab.node, render_json(build_plan(model, node=NODE)))
    nsexec(lab.node, "conntrack", "-F", check=False)
    b, d = _addr("b", family), _addr("d", family)
    assert lab.probe("d", [(b, 80)]) == [False]  # not a's identity
    assert lab.probe("a", [(b, 80)]) == [True]  # the real a still passes the same rule
    assert lab.probe("a", [(d, 80)]) == [d_reachable]  # d: reachable only once it owns its address
