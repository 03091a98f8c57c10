"""The VXLAN overlay between nodes: one device per node, and for every other node a route to its
podCIDRs, a neighbour entry and an FDB entry towards its InternalIP.

::

    node A (InternalIP 192.0.2.1, podCIDR 10.244.1.0/24)   node B (192.0.2.2, 10.244.2.0/24)
    stockade.vx  mac mac(A)  10.244.1.0/32                 stockade.vx  mac mac(B)  10.244.2.0/32
    10.244.2.0/24 via 10.244.2.0 dev stockade.vx onlink    10.244.1.0/24 via 10.244.1.0 ... onlink
    neigh 10.244.2.0 lladdr mac(B) permanent               neigh 10.244.1.0 lladdr mac(A)
    fdb mac(B) dst 192.0.2.2 self permanent                fdb mac(A) dst 192.0.2.1

Everything derives from Node objects, so nothing is configured per node by hand and a joining
node is reachable as soon as the agents see it: each node's VTEP address is the network address
of each of its podCIDRs (the IPAM never hands it to a pod) and its VXLAN MAC is a hash of the
node's name (stable across InternalIP changes; locally administered). Pod traffic of both
families rides one underlay family (the local node's IPv4 InternalIP when it has one).
Decapsulated traffic from node B's pods arrives on ``stockade.vx`` and the route back to its
source is the same device, so the reverse-path check passes.

:func:`desired` is pure (node list in, state out); :func:`sync` reads the device's state from
the kernel, applies only the differences, and returns what it changed.
"""

from __future__ import annotations

import hashlib
import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from compiler.ifnames import VXLAN_INTERFACE, VXLAN_PORT
from compiler.model import Node
from controller.errors import UsageError

# The VXLAN network identifier and UDP port (IANA's 4789) of Stockade's overlay.
DEFAULT_VNI = 4242
DEFAULT_PORT = VXLAN_PORT
# Routes Stockade installs carry this protocol number, so sync removes only its own
# (unassigned in iproute2's rt_protos; the kernel's own routes use 2).
RTPROT_STOCKADE = 83
OVERHEAD = {4: 50, 6: 70}  # outer Ethernet 14 + IP 20/40 + UDP 8 + VXLAN 8
NUD_PERMANENT = 0x80
NTF_SELF = 0x02
IFA_F_NODAD = 0x02
RTNH_F_ONLINK = 0x04
RTPROT_KERNEL = 2


@dataclass(frozen=True)
class OverlayNode:
    """What the overlay needs of a Node: its name, InternalIP(s) and podCIDRs."""

    name: str
    internal_ips: tuple[str, ...]
    pod_cidrs: tuple[str, ...]

    def underlay(self, family: int) -> str | None:
        return next((a for a in self.internal_ips if ipaddress.ip_address(a).version == family), None)


def overlay_node(node: Node) -> OverlayNode:
    """The overlay's view of a Node object (what the agent's Node watch feeds :func:`sync`)."""
    return OverlayNode(name=node.metadata.name, internal_ips=node.internal_ips(), pod_cidrs=node.pod_cidrs())


@dataclass(frozen=True, order=True)
class Route:
    dst: str  # a peer's podCIDR
    gateway: str  # the peer's VTEP address in it


@dataclass(frozen=True, order=True)
class Neighbour:
    address: str
    mac: str


@dataclass(frozen=True, order=True)
class Fdb:
    mac: str
    dst: str  # the peer's InternalIP


@dataclass(frozen=True)
class Device:
    name: str
    vni: int
    port: int
    local: str
    mac: str
    mtu: int | None


@dataclass(frozen=True)
class OverlayState:
    device: Device
    addresses: frozenset[str] = frozenset()  # the local VTEP addresses, as host prefixes
    routes: frozenset[Route] = frozenset()
    neighbours: frozenset[Neighbour] = frozenset()
    fdb: frozenset[Fdb] = frozenset()
    skipped: tuple[str, ...] = ()  # peers left out, and why


@dataclass
class SyncReport:
    device_created: bool = False
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return self.device_created or bool(self.added or self.removed)


def vtep_mac(node_name: str) -> str:
    """A stable locally administered unicast MAC for a node's VXLAN device."""
    h = hashlib.sha256(f"stockade-vtep\0{node_name}".encode()).digest()
    return ":".join(f"{b:02x}" for b in (0x0E, *h[:5]))


def vtep_address(pod_cidr: str) -> str:
    return str(ipaddress.ip_network(pod_cidr).network_address)


def _host_prefix(address: str) -> str:
    return f"{address}/{ipaddress.ip_address(address).max_prefixlen}"


def desired(
    local: OverlayNode,
    nodes: Iterable[OverlayNode],
    *,
    vni: int = DEFAULT_VNI,
    port: int = DEFAULT_PORT,
    mtu: int | None = None,
    underlay_family: int | None = None,
) -> OverlayState:
    """The overlay state node ``local`` should have, given every node of the cluster."""
    family = underlay_family or (4 if local.underlay(4) else 6)
    local_ip = local.underlay(family)
    if local_ip is None:
        which = f"IPv{family} InternalIP" if local.internal_ips else "InternalIP (status.addresses)"
        raise UsageError(f"node {local.name} has no {which} for the VXLAN underlay")
    device = Device(
        name=VXLAN_INTERFACE, vni=vni, port=port, local=local_ip, mac=vtep_mac(local.name), mtu=mtu
    )
    routes, neighbours, fdb, skipped = set(), set(), set(), []
    for node in sorted(nodes, key=lambda n: n.name):
        if node.name == local.name:
            continue
        remote = node.underlay(family)
        if remote is None:
            skipped.append(f"{node.name}: no IPv{family} InternalIP")
            continue
        if not node.pod_cidrs:
            skipped.append(f"{node.name}: no podCIDRs yet")
            continue
        mac = vtep_mac(node.name)
        fdb.add(Fdb(mac=mac, dst=remote))
        for cidr in node.pod_cidrs:
            gateway = vtep_address(cidr)
            routes.add(Route(dst=str(ipaddress.ip_network(cidr)), gateway=gateway))
            neighbours.add(Neighbour(address=gateway, mac=mac))
    return OverlayState(
        device=device,
        addresses=frozenset(_host_prefix(vtep_address(c)) for c in local.pod_cidrs),
        routes=frozenset(routes),
        neighbours=frozenset(neighbours),
        fdb=frozenset(fdb),
        skipped=tuple(skipped),
    )


# --- the kernel side ---


def _device_matches(link: Any, device: Device) -> bool:
    info = link.get_attr("IFLA_LINKINFO")
    if info is None or info.get_attr("IFLA_INFO_KIND") != "vxlan":
        return False
    data = info.get_attr("IFLA_INFO_DATA")
    local = data.get_attr("IFLA_VXLAN_LOCAL") or data.get_attr("IFLA_VXLAN_LOCAL6")
    return bool(
        data.get_attr("IFLA_VXLAN_ID") == device.vni
        and data.get_attr("IFLA_VXLAN_PORT") == device.port
        and local is not None
        and ipaddress.ip_address(local) == ipaddress.ip_address(device.local)
    )


def _uplink_mtu(ipr: Any, local: str) -> int:
    for addr in ipr.get_addr():
        if addr.get_attr("IFA_ADDRESS") and ipaddress.ip_address(
            addr.get_attr("IFA_ADDRESS")
        ) == ipaddress.ip_address(local):
            return int(ipr.get_links(addr["index"])[0].get_attr("IFLA_MTU"))
    return 1500


def _ensure_device(ipr: Any, device: Device, report: SyncReport) -> int:
    found = ipr.link_lookup(ifname=device.name)
    if found and not _device_matches(ipr.get_links(found[0])[0], device):
        ipr.link("del", index=found[0])  # VNI, port or local address changed: only a new device can
        report.removed.append(f"device {device.name}")
        found = []
    family = ipaddress.ip_address(device.local).version
    mtu = device.mtu or _uplink_mtu(ipr, device.local) - OVERHEAD[family]
    if not found:
        local = {"vxlan_local": device.local} if family == 4 else {"vxlan_local6": device.local}
        ipr.link(
            "add",
            ifname=device.name,
            kind="vxlan",
            vxlan_id=device.vni,
            vxlan_port=device.port,
            vxlan_learning=0,
            address=device.mac,
            mtu=mtu,
            **local,
        )
        report.device_created = True
        found = ipr.link_lookup(ifname=device.name)
    index = int(found[0])
    link = ipr.get_links(index)[0]
    if link.get_attr("IFLA_ADDRESS") != device.mac or link.get_attr("IFLA_MTU") != mtu:
        ipr.link("set", index=index, address=device.mac, mtu=mtu)
    ipr.link("set", index=index, state="up")
    return index


def _current(ipr: Any, index: int) -> tuple[set[str], set[Route], set[Neighbour], set[Fdb]]:
    addresses = {
        f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}"
        for a in ipr.get_addr(index=index)
        if not ipaddress.ip_address(a.get_attr("IFA_ADDRESS")).is_link_local
    }
    routes = {
        Route(dst=f"{r.get_attr('RTA_DST')}/{r['dst_len']}", gateway=str(r.get_attr("RTA_GATEWAY")))
        for family in (socket.AF_INET, socket.AF_INET6)
        for r in ipr.get_routes(family=family, oif=index, table=254)
        if r["proto"] == RTPROT_STOCKADE and r.get_attr("RTA_GATEWAY") is not None
    }
    neighbours = {
        Neighbour(address=str(n.get_attr("NDA_DST")), mac=str(n.get_attr("NDA_LLADDR")))
        for family in (socket.AF_INET, socket.AF_INET6)
        for n in ipr.get_neighbours(family=family, ifindex=index)
        if n["state"] & NUD_PERMANENT and n.get_attr("NDA_LLADDR")
    }
    fdb = {
        Fdb(mac=str(f.get_attr("NDA_LLADDR")), dst=str(f.get_attr("NDA_DST")))
        for f in ipr.fdb("dump", ifindex=index)
        if f["ifindex"] == index and f.get_attr("NDA_DST") is not None
    }
    return addresses, routes, neighbours, fdb


def _family(address: str) -> int:
    version = ipaddress.ip_address(address.split("/", maxsplit=1)[0]).version
    return socket.AF_INET if version == 4 else socket.AF_INET6


def apply(ipr: Any, state: OverlayState) -> SyncReport:
    """Make the kernel's overlay equal ``state``: additions before removals (a moving peer keeps
    a path for as long as possible), only differences touched."""
    report = SyncReport()
    index = _ensure_device(ipr, state.device, report)
    addresses, routes, neighbours, fdb = _current(ipr, index)
    for prefix in sorted(state.addresses - addresses):
        address, length = prefix.split("/")
        ipr.addr(
            "add",
            index=index,
            address=address,
            prefixlen=int(length),
            family=_family(address),
            flags=IFA_F_NODAD,
        )
        report.added.append(f"address {prefix}")
    # One remote per MAC (one MAC per node): a node that moved gets its entry replaced in place.
    have: dict[str, set[str]] = {}
    for entry in fdb:
        have.setdefault(entry.mac, set()).add(entry.dst)
    for entry in sorted(state.fdb - fdb):
        if len(have.get(entry.mac, ())) > 1:  # not ours to keep several: start over for this MAC
            ipr.fdb("del", ifindex=index, lladdr=entry.mac, flags=NTF_SELF)
        ipr.fdb(
            "replace", ifindex=index, lladdr=entry.mac, dst=entry.dst, state=NUD_PERMANENT, flags=NTF_SELF
        )
        report.added.append(f"fdb {entry.mac} dst {entry.dst}")
    for neighbour in sorted(state.neighbours - neighbours):
        ipr.neigh(
            "replace",
            dst=neighbour.address,
            lladdr=neighbour.mac,
            ifindex=index,
            state=NUD_PERMANENT,
            family=_family(neighbour.address),
        )
        report.added.append(f"neigh {neighbour.address} {neighbour.mac}")
    for route in sorted(state.routes - routes):
        ipr.route(
            "replace",
            dst=route.dst,
            gateway=route.gateway,
            oif=index,
            flags=RTNH_F_ONLINK,
            proto=RTPROT_STOCKADE,
            family=_family(route.dst),
        )
        report.added.append(f"route {route.dst} via {route.gateway}")
    for route in sorted(routes - state.routes):
        ipr.route("del", dst=route.dst, gateway=route.gateway, oif=index, family=_family(route.dst))
        report.removed.append(f"route {route.dst} via {route.gateway}")
    for neighbour in sorted(neighbours - state.neighbours):
        ipr.neigh("del", dst=neighbour.address, ifindex=index, family=_family(neighbour.address))
        report.removed.append(f"neigh {neighbour.address} {neighbour.mac}")
    wanted_macs = {entry.mac for entry in state.fdb}
    for entry in sorted(fdb - state.fdb):
        if entry.mac not in wanted_macs:  # a wanted MAC's old remote was replaced above
            ipr.fdb("del", ifindex=index, lladdr=entry.mac, dst=entry.dst, flags=NTF_SELF)
        report.removed.append(f"fdb {entry.mac} dst {entry.dst}")
    for prefix in sorted(addresses - state.addresses):
        address, length = prefix.split("/")
        ipr.addr("del", index=index, address=address, prefixlen=int(length), family=_family(address))
        report.removed.append(f"address {prefix}")
    return report


def sync(
    local: OverlayNode,
    nodes: Iterable[OverlayNode],
    *,
    ipr: Any = None,
    vni: int = DEFAULT_VNI,
    port: int = DEFAULT_PORT,
    mtu: int | None = None,
) -> SyncReport:
    """Converge this node's overlay to ``nodes`` (joining, leaving, moving nodes); idempotent."""
    state = desired(local, nodes, vni=vni, port=port, mtu=mtu)
    if ipr is not None:
        return apply(ipr, state)
    from pyroute2 import IPRoute  # noqa: PLC0415 - the agent imports this module without netlink

    with IPRoute() as own:
        return apply(own, state)


def remove(*, ipr: Any = None) -> bool:
    """Delete the overlay device (its routes, neighbours and FDB go with it). False: none."""
    from pyroute2 import IPRoute  # noqa: PLC0415

    own = ipr or IPRoute()
    try:
        found = own.link_lookup(ifname=VXLAN_INTERFACE)
        if found:
            own.link("del", index=found[0])
        return bool(found)
    finally:
        if ipr is None:
            own.close()
