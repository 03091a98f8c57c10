"""Oracles of the overlay's end-to-end test: what a node's kernel holds, read with pyroute2 in a
thread inside the node's namespace (``Node.call``), written independently of
``controller.overlay``; and the hand-made changes the test inflicts on a node."""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

from pyroute2 import IPRoute

from tests.cluster.overlaylab import Node, pod_cidrs, underlay_address


def overlay_entries() -> dict[str, set[str]]:
    """Routes, neighbours and FDB entries on the VXLAN device (inside a node's namespace)."""
    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname="stockade.vx")
        if not found:
            return {"routes": set(), "neigh": set(), "fdb": set()}
        index = found[0]
        return {
            "routes": {
                f"{r.get_attr('RTA_DST')}/{r['dst_len']}"
                for family in (socket.AF_INET, socket.AF_INET6)
                for r in ipr.get_routes(family=family, oif=index, table=254)
                if r.get_attr("RTA_GATEWAY")
            },
            "neigh": {
                str(n.get_attr("NDA_DST"))
                for family in (socket.AF_INET, socket.AF_INET6)
                for n in ipr.get_neighbours(family=family, ifindex=index)
                if n["state"] & 0x80  # permanent
            },
            "fdb": {
                str(f.get_attr("NDA_DST"))
                for f in ipr.fdb("dump", ifindex=index)
                if f["ifindex"] == index and f.get_attr("NDA_DST")
            },
        }


def entries_of(index: int) -> dict[str, set[str]]:
    """What every other node must hold for node ``index`` (written out, not derived by the module)."""
    v4, v6 = pod_cidrs(index)
    return {
        "routes": {v4, v6},
        "neigh": {
            str(ipaddress.ip_network(v4).network_address),
            str(ipaddress.ip_network(v6).network_address),
        },
        "fdb": {underlay_address(index)},
    }


def holds(node: Node, index: int) -> dict[str, bool]:
    have = node.call(overlay_entries)
    return {kind: wanted <= have[kind] for kind, wanted in entries_of(index).items()}


def lacks(node: Node, index: int) -> bool:
    have = node.call(overlay_entries)
    return all(not (wanted & have[kind]) for kind, wanted in entries_of(index).items())


def remove_by_hand(index: int) -> None:
    """What an operator's slip does: node ``index``'s v4 route and FDB entry deleted (inside a node)."""
    v4, _ = pod_cidrs(index)
    remote = underlay_address(index)
    with IPRoute() as ipr:
        device = ipr.link_lookup(ifname="stockade.vx")[0]
        ipr.route("del", dst=v4, oif=device)
        for entry in ipr.fdb("dump", ifindex=device):
            if entry["ifindex"] == device and entry.get_attr("NDA_DST") == remote:
                ipr.fdb("del", ifindex=device, lladdr=entry.get_attr("NDA_LLADDR"), dst=remote)


def add_underlay_address(address: str) -> None:
    with IPRoute() as ipr:
        ipr.addr("add", index=ipr.link_lookup(ifname="ul0")[0], address=address, prefixlen=24)


def leftovers(addresses: list[str]) -> dict[str, Any]:
    """Pod links and routes to pod addresses (inside a node's namespace)."""
    wanted = {ipaddress.ip_address(a) for a in addresses}
    with IPRoute() as ipr:
        links = sorted(
            str(link.get_attr("IFLA_IFNAME"))
            for link in ipr.get_links()
            if str(link.get_attr("IFLA_IFNAME")).startswith("stk")
        )
        routes = sorted(
            f"{r.get_attr('RTA_DST')}/{r['dst_len']}"
            for family in (socket.AF_INET, socket.AF_INET6)
            for r in ipr.get_routes(family=family, table=254)
            if r.get_attr("RTA_DST") and ipaddress.ip_address(r.get_attr("RTA_DST")) in wanted
        )
    return {"links": links, "routes": routes}


def pod_links() -> list[str]:
    with IPRoute() as ipr:
        return sorted(str(link.get_attr("IFLA_IFNAME")) for link in ipr.get_links())
