"""The lab's default network on real nodes (kubelet + containerd): stockade-cni attaches the pods and
the agents' VXLAN overlay is the only path between nodes.

Pods on different nodes reach each other (IPv4 and IPv6) through `stockade.vx`: the kernel's route
to the peer pod's address leaves by the VXLAN device, the device's counters move, and no route to
another node's podCIDR leaves by the underlay. A pod whose container connects as its very first
act is already subject to its namespace's isolating policy (blocked or allowed exactly as the
policy says, on its first SYN). A third node joins the running lab and is reached from pods on the
first two without restarting anything; when it leaves and its Node object is deleted, its routes,
neighbour and FDB entries go from the other nodes. The oracles read the kernel with pyroute2 and
share nothing with controller/overlay.py.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pyroute2 import NetNS

from tests.cluster.lab import Lab, LabError
from tests.cluster.lab.config import NodeAddrs
from tests.cluster.lab.nodes import TEST_POD_IMAGE
from tests.cluster.lab.workloads import apply, endpoints, pod_name, pods, wait_pods
from tests.support.probe import Family, Prober, ProbeRequest

pytestmark = pytest.mark.cluster

NS = "ovlnet"
VXLAN = "stockade.vx"  # written out here: the oracle does not import the code under test
NUD_PERMANENT = 0x80
# Seconds for the agents to follow a Node object (their watch, one overlay sync, a loaded host).
FOLLOW_WITHIN = 30.0


def _server(name: str, node: str, namespace: str = NS) -> str:
    return f"""
apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: {namespace}, labels: {{app: {name}}}}}
spec:
  nodeSelector: {{kubernetes.io/hostname: {node}}}
  terminationGracePeriodSeconds: 1
  containers:
  - name: agent
    image: {TEST_POD_IMAGE}
    imagePullPolicy: Never
    args: [--control, /tmp/agent.sock, --tcp, "8080"]
    readinessProbe: {{tcpSocket: {{port: 8080}}, periodSeconds: 1}}
"""


def eventually(what: str, check: Callable[[], object], *, timeout: float = FOLLOW_WITHIN) -> None:
    """Wait until `check()` returns nothing (falsy); fail with its last answer."""
    deadline = time.monotonic() + timeout
    while left := check():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} after {timeout:.0f}s: {left}")
        time.sleep(0.3)


def _pod_cidrs(lab: Lab) -> dict[str, list[str]]:
    return {n["metadata"]["name"]: list(n["spec"].get("podCIDRs", [])) for n in lab.nodes()}


def _vxlan_view(netns: str) -> dict[str, set[str]]:
    """What a node's kernel holds on the VXLAN device: routes (by destination), permanent
    neighbours and FDB destinations; and which podCIDR-sized routes leave by any other device."""
    with NetNS(netns) as ns:
        idx = {int(link["index"]): str(link.get_attr("IFLA_IFNAME")) for link in ns.get_links()}
        vx = next((i for i, name in idx.items() if name == VXLAN), None)
        routes: set[str] = set()
        elsewhere: set[str] = set()
        for family in (socket.AF_INET, socket.AF_INET6):
            for r in ns.get_routes(family=family, table=254):
                dst = r.get_attr("RTA_DST")
                if dst is None or r["dst_len"] in (0, 32, 128):
                    continue
                net = f"{dst}/{r['dst_len']}"
                (routes if r.get_attr("RTA_OIF") == vx else elsewhere).add(
                    f"{net} dev {idx.get(r.get_attr('RTA_OIF'))}"
                )
        neigh = {
            str(n.get_attr("NDA_DST"))
            for family in (socket.AF_INET, socket.AF_INET6)
            for n in (ns.get_neighbours(family=family, ifindex=vx) if vx else [])
            if n["state"] & NUD_PERMANENT
        }
        fdb = {
            str(f.get_attr("NDA_DST"))
            for f in (ns.fdb("dump", ifindex=vx) if vx else [])
            if f["ifindex"] == vx and f.get_attr("NDA_DST")
        }
    return {"routes": routes, "elsewhere": elsewhere, "neigh": neigh, "fdb": fdb}


def _want_towards(peer: NodeAddrs, cidrs: list[str]) -> dict[str, set[str]]:
    """What a node should hold for `peer`: a route per podCIDR by the VXLAN device, a permanent
    neighbour for the peer's endpoint address (each podCIDR's network address) and an FDB entry
    towards its underlay address (IPv4: the lab's nodes have one)."""
    return {
        "routes": {f"{c} dev {VXLAN}" for c in (str(ipaddress.ip_network(c)) for c in cidrs)},
        "neigh": {str(ipaddress.ip_network(c).network_address) for c in cidrs},
        "fdb": {peer.ipv4},
    }


def _missing_towards(lab: Lab, here: NodeAddrs, peer: NodeAddrs, cidrs: list[str]) -> dict[str, set[str]]:
    have = _vxlan_view(here.netns)
    return {k: v - have[k] for k, v in _want_towards(peer, cidrs).items() if v - have[k]}


def _left_towards(lab: Lab, here: NodeAddrs, peer: NodeAddrs, cidrs: list[str]) -> dict[str, set[str]]:
    have = _vxlan_view(here.netns)
    return {k: v & have[k] for k, v in _want_towards(peer, cidrs).items() if v & have[k]}


def _path(netns: str, address: str) -> str:
    """The device the node's kernel sends a packet to `address` out of (`ip route get`)."""
    with NetNS(netns) as ns:
        (route,) = ns.route("get", dst=address)
        (link,) = ns.get_links(route.get_attr("RTA_OIF"))
        return str(link.get_attr("IFLA_IFNAME"))


def _tx_packets(netns: str) -> int:
    with NetNS(netns) as ns:
        (link,) = ns.get_links(ns.link_lookup(ifname=VXLAN)[0])
        return int(link.get_attr("IFLA_STATS64")["tx_packets"])


@pytest.fixture(scope="module")
def servers(lab: Lab) -> Iterator[dict[str, dict[str, Any]]]:
    apply(lab, f"apiVersion: v1\nkind: Namespace\nmetadata: {{name: {NS}}}\n")
    apply(lab, "---".join(_server(f"srv-{n.name}", n.name) for n in lab.cfg.all_nodes))
    try:
        ready = wait_pods(lab, NS, "", count=lab.cfg.nodes, timeout=180)
        yield {p["spec"]["nodeName"]: p for p in ready}
    finally:
        lab.kubectl("delete", "namespace", NS, "--ignore-not-found", "--wait=false", check=False)


def test_every_node_has_the_overlay_and_no_underlay_route_to_other_nodes_pods(lab: Lab) -> None:
    cidrs = _pod_cidrs(lab)
    for here in lab.cfg.all_nodes:
        view = _vxlan_view(here.netns)
        for peer in lab.cfg.all_nodes:
            if peer.name == here.name:
                continue
            missing = _missing_towards(lab, here, peer, cidrs[peer.name])
            assert not missing, f"{here.name} lacks overlay entries towards {peer.name}: {missing}"
        nets = [ipaddress.ip_network(c) for peer, c2 in cidrs.items() if peer != here.name for c in c2]
        underlay = [
            r for r in view["elsewhere"] if any(ipaddress.ip_network(r.split()[0]).overlaps(n) for n in nets)
        ]
        assert not underlay, f"{here.name} routes other nodes' pods outside the overlay: {underlay}"


@pytest.mark.parametrize("family", [4, 6], ids=["ipv4", "ipv6"])
def test_pods_on_different_nodes_reach_each_other_through_the_vxlan_device(
    lab: Lab, servers: dict[str, dict[str, Any]], family: Family
) -> None:
    eps = {ep.name: ep for ep in endpoints(lab, list(servers.values()))}
    node_of = {pod_name(p): node for node, p in servers.items()}
    netns_of = {n.name: n.netns for n in lab.cfg.all_nodes}
    pairs = [(s, d) for s in eps for d in eps if node_of[s] != node_of[d]]
    assert pairs, "no pods on different nodes"
    for src, dst in pairs:
        # The source node's kernel sends the destination pod's packets out of the VXLAN device.
        assert _path(netns_of[node_of[src]], eps[dst].address(family)) == VXLAN, (src, dst)
    before = {n: _tx_packets(ns) for n, ns in netns_of.items()}
    prober = Prober(list(eps.values()))
    results = prober.probe(
        [ProbeRequest(src=s, dst=d, protocol="TCP", port=8080, family=family) for s, d in pairs]
    )
    assert {(r.request.src, r.request.dst): r.outcome for r in results} == dict.fromkeys(pairs, "connected")
    moved = {n: _tx_packets(ns) - before[n] for n, ns in netns_of.items()}
    assert all(m > 0 for m in moved.values()), f"IPv{family}: VXLAN tx packets per node {moved}"


# --- isolated from the first packet -----------------------------------------------------------

FIRST_NS = "ovlfirst"
# The container's first act: one TCP connect per family to the server, with a timeout shorter
# than TCP's initial retransmission (1 s), so only the very first SYN counts; then it prints.
FIRST_ACT = """
import socket, sys
out = []
for addr in sys.argv[1:]:
    s = socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET)
    s.settimeout(0.9)
    try:
        s.connect((addr, 8080)); out.append("connected")
    except socket.timeout:
        out.append("timeout")
    except OSError as e:
        out.append(type(e).__name__)
print("first-act", *out, flush=True)
"""
ISOLATION = f"""
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: deny-egress, namespace: {FIRST_NS}}}
spec:
  podSelector: {{}}
  policyTypes: [Egress]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: senders-to-servers, namespace: {FIRST_NS}}}
spec:
  podSelector: {{matchLabels: {{may: send}}}}
  policyTypes: [Egress]
  egress:
  - to: [{{namespaceSelector: {{matchLabels: {{kubernetes.io/metadata.name: {NS}}}}}}}]
    ports: [{{port: 8080, protocol: TCP}}]
"""


def _first_act_pod(name: str, node: str, labels: str, addresses: list[str]) -> str:
    args = ", ".join(f'"{a}"' for a in addresses)
    script = FIRST_ACT.replace("\n", "\\n").replace('"', '\\"')
    return f"""
apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: {FIRST_NS}, labels: {{{labels}}}}}
spec:
  nodeSelector: {{kubernetes.io/hostname: {node}}}
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  containers:
  - name: first
    image: {TEST_POD_IMAGE}
    imagePullPolicy: Never
    command: [python3, -c, "{script}", {args}]
"""


def _finished(lab: Lab, name: str, *, timeout: float = 120.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        pod = lab.kube.get(f"/api/v1/namespaces/{FIRST_NS}/pods/{name}")
        if pod.get("status", {}).get("phase") in ("Succeeded", "Failed"):
            return lab.kubectl("logs", "-n", FIRST_NS, name).stdout
        if time.monotonic() > deadline:
            raise LabError(f"pod {FIRST_NS}/{name} did not finish: {pod.get('status')}")
        time.sleep(0.3)


@pytest.fixture(scope="module")
def isolated(lab: Lab) -> Iterator[None]:
    apply(lab, f"apiVersion: v1\nkind: Namespace\nmetadata: {{name: {FIRST_NS}}}\n" + "---" + ISOLATION)
    try:
        yield
    finally:
        lab.kubectl("delete", "namespace", FIRST_NS, "--ignore-not-found", "--wait=false", check=False)


@pytest.mark.parametrize(
    ("labels", "want"),
    [
        pytest.param("may: send", "connected", id="allowed-sender-connects-on-its-first-syn"),
        pytest.param("may: not", "timeout", id="isolated-sender-is-dropped-from-its-first-syn"),
    ],
)
def test_a_pod_sending_as_its_first_act_meets_its_namespace_policy(
    lab: Lab, servers: dict[str, dict[str, Any]], isolated: None, labels: str, want: str
) -> None:
    # From node-1 to the server on node-2: the first packet crosses the overlay too.
    target = servers["node-2"]
    addresses = [i["ip"] for i in target["status"]["podIPs"]]
    name = "allowed" if want == "connected" else "denied"
    apply(lab, _first_act_pod(name, "node-1", labels, addresses))
    out = _finished(lab, name)
    assert out.split() == ["first-act", want, want], out


# --- a node joining and leaving the running lab -------------------------------------------------


AGENTS = "app.kubernetes.io/component=agent"


def _agents(lab: Lab) -> dict[str, tuple[str, int]]:
    """node -> (agent pod uid, restarts summed over its containers)."""
    return {
        p["spec"]["nodeName"]: (
            p["metadata"]["uid"],
            sum(c.get("restartCount", 0) for c in p.get("status", {}).get("containerStatuses", [])),
        )
        for p in pods(lab, "kube-system", AGENTS)
    }


def test_a_third_node_joining_is_reached_from_the_first_two_without_a_restart(
    lab: Lab, servers: dict[str, dict[str, Any]]
) -> None:
    before = {n.name for n in lab.cfg.all_nodes}
    agents = {n: agent for n, agent in _agents(lab).items() if n in before}
    pids = {p.role: p.pid for p in lab.rec.processes}
    joined_at = time.monotonic()
    node = lab.add_node() if lab.cfg.nodes == 2 else lab.cfg.node(3)
    try:
        # The node turns Ready once the chart's init containers wrote its CNI config; its agent
        # (which builds its side of the overlay) starts after them.
        wait_pods(lab, "kube-system", AGENTS, count=lab.cfg.nodes, timeout=180)
        cidrs = _pod_cidrs(lab)
        first_two = [n for n in lab.cfg.all_nodes if n.name != node.name]
        for here in first_two:
            eventually(
                f"{here.name}'s overlay towards {node.name}",
                functools.partial(_missing_towards, lab, here, node, cidrs[node.name]),
            )
            eventually(
                f"{node.name}'s overlay towards {here.name}",
                functools.partial(_missing_towards, lab, node, here, cidrs[here.name]),
            )
        print(f"{node.name}: joined and on every node's overlay in {time.monotonic() - joined_at:.1f}s")
        apply(lab, _server(f"srv-{node.name}", node.name))
        new = wait_pods(lab, NS, f"app=srv-{node.name}", count=1, timeout=180)
        eps = endpoints(lab, [*servers.values(), *new])
        prober = Prober(eps)
        new_name = pod_name(new[0])
        requests = [
            ProbeRequest(src=s, dst=d, protocol="TCP", port=8080, family=f)
            for f in (4, 6)
            for old in (pod_name(p) for p in servers.values())
            for s, d in ((old, new_name), (new_name, old))
        ]
        wrong = {
            (r.request.src, r.request.dst, r.request.family): r.outcome
            for r in prober.probe(requests)
            if r.outcome != "connected"
        }
        assert not wrong, f"to and from the pod on {node.name}: {wrong}"
        # Nothing that ran before the join was restarted: the same agents, processes and pods.
        now = _agents(lab)
        assert {n: now[n] for n in agents} == agents, "an agent pod was replaced or restarted"
        assert {p.role: p.pid for p in lab.rec.processes if p.role in pids} == pids
        lab.kubectl("delete", "pod", "-n", NS, f"srv-{node.name}", "--wait=true", "--timeout=60s")
    except BaseException:
        with contextlib.suppress(LabError):
            lab.remove_node(node.name)
        raise

    # The node leaves: its machine goes, then its Node object is deleted.
    lab.remove_node(node.name)
    gone_at = time.monotonic()
    for here in lab.cfg.all_nodes:
        eventually(
            f"{here.name} still holds overlay entries towards {node.name}",
            functools.partial(_left_towards, lab, here, node, cidrs[node.name]),
        )
    print(f"{node.name}: gone from every node's overlay {time.monotonic() - gone_at:.1f}s after deletion")
    for here in lab.cfg.all_nodes:
        view = _vxlan_view(here.netns)
        stale = {r for r in view["routes"] if any(r.startswith(c) for c in cidrs[node.name])}
        assert not stale and node.ipv4 not in view["fdb"], (here.name, view)
