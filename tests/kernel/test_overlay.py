"""The VXLAN overlay between two nodes (network namespaces joined by a veth underlay), each with
a pod attached by stockade-cni: pods reach each other over IPv4 and IPv6, on an IPv4 or an IPv6
underlay; sync converges when a node leaves or moves, and changes nothing when nothing changed."""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from pyroute2 import IPRoute

from compiler.cluster import ClusterModel
from compiler.ifnames import VXLAN_INTERFACE, VXLAN_PORT
from compiler.model import Namespace, Node, Pod
from compiler.options import CompileOptions
from compiler.plan import build_plan
from compiler.render_json import render_json
from controller import overlay
from controller.overlay import OverlayNode
from tests.kernel.test_render_load import load_json
from tests.support.cnilab import CniLab, connect, listen, serve_once

UNDERLAY = {4: ("192.0.2.1", "192.0.2.2", 24), 6: ("fd00:ffff::1", "fd00:ffff::2", 64)}


@dataclass
class TwoNodes:
    one: CniLab
    two: CniLab
    node1: OverlayNode
    node2: OverlayNode


def strict_reverse_path() -> None:
    """Strict rp_filter on every interface of the node (inside its worker): decapsulated pod
    traffic must come in on the interface the route back to its source uses."""
    for key in ("all", "default"):
        with open(f"/proc/sys/net/ipv4/conf/{key}/rp_filter", "w") as f:
            f.write("1")


def _join(one: CniLab, two: CniLab, family: int) -> None:
    first, second, prefixlen = UNDERLAY[family]

    def make() -> None:
        strict_reverse_path()
        with IPRoute() as ipr:
            ipr.link("add", ifname="ul0", kind="veth", peer={"ifname": "ul0", "net_ns_fd": two.node})
            index = ipr.link_lookup(ifname="ul0")[0]
            ipr.addr("add", index=index, address=first, prefixlen=prefixlen, flags=0x02)
            ipr.link("set", index=index, state="up")

    def peer() -> None:
        strict_reverse_path()
        with IPRoute() as ipr:
            index = ipr.link_lookup(ifname="ul0")[0]
            ipr.addr("add", index=index, address=second, prefixlen=prefixlen, flags=0x02)
            ipr.link("set", index=index, state="up")

    one.in_node(make)
    two.in_node(peer)


@pytest.fixture(params=[4, 6], ids=["v4-underlay", "v6-underlay"])
def nodes(request: pytest.FixtureRequest) -> Iterator[TwoNodes]:
    family = request.param
    with (
        CniLab(pod_cidrs=("10.99.1.0/24", "fd00:99:1::/64")) as one,
        CniLab(pod_cidrs=("10.99.2.0/24", "fd00:99:2::/64")) as two,
    ):
        _join(one, two, family)
        first, second, _ = UNDERLAY[family]
        yield TwoNodes(
            one=one,
            two=two,
            node1=OverlayNode("node-1", (first,), one.pod_cidrs),
            node2=OverlayNode("node-2", (second,), two.pod_cidrs),
        )


def _state() -> dict[str, Any]:
    """The overlay device's routes, neighbours and FDB entries (inside a node's worker)."""
    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=VXLAN_INTERFACE)
        if not found:
            return {"device": False}
        index = found[0]
        return {
            "device": True,
            "routes": sorted(
                f"{r.get_attr('RTA_DST')}/{r['dst_len']} via {r.get_attr('RTA_GATEWAY')}"
                for family in (socket.AF_INET, socket.AF_INET6)
                for r in ipr.get_routes(family=family, oif=index, table=254)
                if r.get_attr("RTA_GATEWAY")
            ),
            "neigh": sorted(
                f"{n.get_attr('NDA_DST')} {n.get_attr('NDA_LLADDR')}"
                for family in (socket.AF_INET, socket.AF_INET6)
                for n in ipr.get_neighbours(family=family, ifindex=index)
                if n["state"] & 0x80  # permanent (multicast entries are NOARP)
            ),
            "fdb": sorted(
                f"{f.get_attr('NDA_LLADDR')} {f.get_attr('NDA_DST')}"
                for f in ipr.fdb("dump", ifindex=index)
                if f["ifindex"] == index and f.get_attr("NDA_DST")
            ),
        }


def _device_mac() -> str:
    with IPRoute() as ipr:
        return str(ipr.get_links(ipr.link_lookup(ifname=VXLAN_INTERFACE)[0])[0].get_attr("IFLA_ADDRESS"))


def _add_pod(lab: CniLab) -> tuple[str, list[str]]:
    pod = lab.new_pod()
    run = lab.run("ADD", container_id=f"{lab.lab_id}-pod", pod=pod)
    assert run.returncode == 0, run
    return pod, [entry["address"].split("/")[0] for entry in run.json()["ips"]]


def _talk(src: tuple[CniLab, str, str], dst: tuple[CniLab, str, str]) -> str:
    (src_lab, src_pod, _), (dst_lab, dst_pod, dst_address) = src, dst
    server = dst_lab.in_pod(dst_pod, listen, dst_address)
    try:
        thread = serve_once(server, b"hello")
        answer: str = src_lab.in_pod(src_pod, connect, dst_address, server.getsockname()[1])
        thread.join(5)
        return answer
    finally:
        server.close()


def test_pods_on_two_nodes_talk_over_v4_and_v6(nodes: TwoNodes) -> None:
    all_nodes = [nodes.node1, nodes.node2]
    report1 = nodes.one.in_node(overlay.sync, nodes.node1, all_nodes)
    report2 = nodes.two.in_node(overlay.sync, nodes.node2, all_nodes)
    assert report1.device_created and report2.device_created
    pod_a, addr_a = _add_pod(nodes.one)
    pod_b, addr_b = _add_pod(nodes.two)
    for family in (0, 1):
        answer = _talk((nodes.one, pod_a, addr_a[family]), (nodes.two, pod_b, addr_b[family]))
        assert answer == f"hello {addr_a[family]}"  # no NAT: the pod's own address arrives
        answer = _talk((nodes.two, pod_b, addr_b[family]), (nodes.one, pod_a, addr_a[family]))
        assert answer == f"hello {addr_b[family]}"

    # Nothing changed: sync touches nothing.
    again = nodes.one.in_node(overlay.sync, nodes.node1, all_nodes)
    assert not again.changed, again


def test_sync_follows_nodes_leaving_and_moving(nodes: TwoNodes) -> None:
    all_nodes = [nodes.node1, nodes.node2]
    nodes.one.in_node(overlay.sync, nodes.node1, all_nodes)
    nodes.two.in_node(overlay.sync, nodes.node2, all_nodes)
    mac2 = nodes.two.in_node(_device_mac)  # node 1 must point at node 2's real device
    state = nodes.one.in_node(_state)
    assert state["routes"] == ["10.99.2.0/24 via 10.99.2.0", "fd00:99:2::/64 via fd00:99:2::"]
    assert state["neigh"] == sorted([f"10.99.2.0 {mac2}", f"fd00:99:2:: {mac2}"])
    assert state["fdb"] == [f"{mac2} {nodes.node2.internal_ips[0]}"]

    moved_ip = "192.0.2.7" if "." in nodes.node2.internal_ips[0] else "fd00:ffff::7"
    moved = OverlayNode("node-2", (moved_ip,), nodes.node2.pod_cidrs)
    report = nodes.one.in_node(overlay.sync, nodes.node1, [nodes.node1, moved])
    assert report.added == [f"fdb {mac2} dst {moved_ip}"], report
    assert report.removed == [f"fdb {mac2} dst {nodes.node2.internal_ips[0]}"], report
    assert nodes.one.in_node(_state)["fdb"] == [f"{mac2} {moved_ip}"]

    report = nodes.one.in_node(overlay.sync, nodes.node1, [nodes.node1])
    assert len(report.removed) == 5, report  # 2 routes, 2 neighbours, 1 FDB entry
    assert nodes.one.in_node(_state) == {"device": True, "routes": [], "neigh": [], "fdb": []}

    assert nodes.one.in_node(overlay.remove) is True
    assert nodes.one.in_node(_state) == {"device": False}


def _overlay_model(nodes: TwoNodes, pods: dict[str, list[tuple[str, list[str]]]]) -> ClusterModel:
    """Both nodes (podCIDRs, InternalIP) and their pods, no policy: what the agents compile."""
    node_objects = tuple(
        Node.model_validate(
            {
                "metadata": {"name": n.name},
                "spec": {"podCIDRs": list(n.pod_cidrs)},
                "status": {"addresses": [{"type": "InternalIP", "address": n.internal_ips[0]}]},
            }
        )
        for n in (nodes.node1, nodes.node2)
    )
    pod_objects = tuple(
        Pod.model_validate(
            {
                "metadata": {"name": name, "namespace": "x", "uid": f"uid-{name}"},
                "spec": {"nodeName": node, "containers": [{}]},
                "status": {"phase": "Running", "podIPs": [{"ip": a} for a in addresses]},
            }
        )
        for node, on_node in pods.items()
        for name, addresses in on_node
    )
    namespaces = (Namespace.model_validate({"metadata": {"name": "x"}}),)
    return ClusterModel(namespaces=namespaces, pods=pod_objects, policies=(), nodes=node_objects)


def _tunnel_entries() -> tuple[int, int]:
    """(conntrack entries of UDP to the VXLAN port, of TCP) in the node's namespace, IPv4 and IPv6
    (inside its worker: thread-self, since the worker thread is the one in the namespace)."""
    udp = tcp = 0
    with open("/proc/thread-self/net/nf_conntrack") as table:
        for line in table:
            fields = line.split()  # "ipv4 2 udp 17 29 src=... dst=... sport=... dport=4789 ..."
            dport = next((f.split("=")[1] for f in fields if f.startswith("dport=")), None)
            udp += fields[2] == "udp" and dport == str(VXLAN_PORT)
            tcp += fields[2] == "tcp"
    return udp, tcp


@pytest.mark.parametrize("untracked", [False, True], ids=["overlay-port-off", "overlay-port-on"])
def test_vxlan_packets_are_not_tracked_and_pod_flows_are(nodes: TwoNodes, untracked: bool) -> None:
    """With each node's compiled ruleset loaded, pod flows across the overlay are tracked (stateful
    policy needs them) and the tunnel's UDP packets are not: every one of them would be an
    unreplied entry of its own. Compiled without the overlay port, they are: the control."""
    all_nodes = [nodes.node1, nodes.node2]
    nodes.one.in_node(overlay.sync, nodes.node1, all_nodes)
    nodes.two.in_node(overlay.sync, nodes.node2, all_nodes)
    pod_a, addr_a = _add_pod(nodes.one)
    pod_b, addr_b = _add_pod(nodes.two)
    model = _overlay_model(nodes, {"node-1": [(pod_a, addr_a)], "node-2": [(pod_b, addr_b)]})
    options = CompileOptions() if untracked else CompileOptions(overlay_port=None)
    for lab, name in ((nodes.one, "node-1"), (nodes.two, "node-2")):
        # A fresh namespace: no entries until a table that uses conntrack is loaded.
        load_json(lab.node, render_json(build_plan(model, node=name, options=options)))
    for family in (0, 1):
        answer = _talk((nodes.one, pod_a, addr_a[family]), (nodes.two, pod_b, addr_b[family]))
        assert answer == f"hello {addr_a[family]}"
    for lab in (nodes.one, nodes.two):
        udp, tcp = lab.in_node(_tunnel_entries)
        assert tcp >= 2, "the pod flows (IPv4 and IPv6) are tracked on both nodes"
        assert (udp == 0) == untracked, f"{udp} VXLAN entries in {lab.node}"


def _vxlan_frame(*, vtep_mac: str, source: str, destination: str, port: int, payload: bytes) -> bytes:
    """A VXLAN packet's UDP payload by hand: the VXLAN header (VNI of Stockade's overlay), then an
    Ethernet frame to ``vtep_mac`` holding an IPv4 UDP packet from ``source`` (any address the
    sender likes) to ``destination``:``port``."""
    udp = struct.pack("!HHHH", 40000, port, 8 + len(payload), 0) + payload  # checksum 0: none (IPv4)
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45, 0, 20 + len(udp), 0, 0, 64, socket.IPPROTO_UDP, 0,
        socket.inet_aton(source), socket.inet_aton(destination),
    )  # fmt: skip
    words = struct.unpack("!10H", header)
    total = sum(words)
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    header = header[:10] + struct.pack("!H", ~total & 0xFFFF) + header[12:]
    ethernet = bytes.fromhex(vtep_mac.replace(":", "")) + bytes.fromhex("020000000001") + b"\x08\x00"
    return struct.pack("!II", 0x08 << 24, overlay.DEFAULT_VNI << 8) + ethernet + header + udp


def _udp_listener(address: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((address, port))
    sock.settimeout(1.5)
    return sock


def _received(sock: socket.socket) -> tuple[bytes, str] | None:
    try:
        data, peer = sock.recvfrom(256)
    except TimeoutError:
        return None
    finally:
        sock.close()
    return data, peer[0]


def _send_udp(address: str, port: int, data: bytes) -> None:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.sendto(data, (address, port))


@pytest.mark.parametrize("guarded", [False, True], ids=["overlay-port-off", "overlay-port-on"])
def test_a_pod_cannot_inject_packets_into_the_overlay(nodes: TwoNodes, guarded: bool) -> None:
    """A pod sends its node's VXLAN port a frame whose inner packet claims to come from a pod on
    the other node, to another pod on its own node. The node decapsulates it onto stockade.vx (the
    route back to that source, so the reverse-path check passes) and forwards it, unless the
    ruleset drops VXLAN from pods: the control (compiled without the overlay port) shows the
    injection is real, the ruleset stops it."""
    all_nodes = [nodes.node1, nodes.node2]
    nodes.one.in_node(overlay.sync, nodes.node1, all_nodes)
    nodes.two.in_node(overlay.sync, nodes.node2, all_nodes)
    attacker, attacker_ips = _add_pod(nodes.one)
    victim = nodes.one.new_pod()
    run = nodes.one.run("ADD", container_id=f"{nodes.one.lab_id}-victim", pod=victim)
    assert run.returncode == 0, run
    victim_ips = [entry["address"].split("/")[0] for entry in run.json()["ips"]]
    remote, remote_ips = _add_pod(nodes.two)
    pods = {"node-1": [(attacker, attacker_ips), (victim, victim_ips)], "node-2": [(remote, remote_ips)]}
    model = _overlay_model(nodes, pods)
    options = CompileOptions() if guarded else CompileOptions(overlay_port=None)
    for lab, name in ((nodes.one, "node-1"), (nodes.two, "node-2")):
        load_json(lab.node, render_json(build_plan(model, node=name, options=options)))

    forged = remote_ips[0]  # a pod on the other node: its address routes back via stockade.vx
    frame = _vxlan_frame(
        vtep_mac=overlay.vtep_mac("node-1"),
        source=forged,
        destination=victim_ips[0],
        port=7777,
        payload=b"forged",
    )
    listener = nodes.one.in_pod(victim, _udp_listener, victim_ips[0], 7777)
    nodes.one.in_pod(attacker, _send_udp, nodes.node1.internal_ips[0], VXLAN_PORT, frame)
    got = nodes.one.in_pod(victim, _received, listener)
    assert got == (None if guarded else (b"forged", forged))
