"""The pod's links, addresses and routes, through netlink (pyroute2): the routing model.

::

    node netns                                 pod netns (CNI_NETNS)
    stk<hash> (host veth)  ───── veth ─────  CNI_IFNAME
      fe80::1/64, proxy_arp                    10.244.1.5/32, fd00:10:244:1::5/128
    10.244.1.5/32 dev stk<hash>                default via 169.254.1.1 onlink
    fd00:10:244:1::5/128 dev stk<hash>         default via fe80::1
                                               169.254.1.1, fe80::1 -> host veth MAC (permanent)

Pods are routed, not bridged: every packet of a pod crosses the node's forward (or input) hook.
The pod's next hops are link-local, so no node address is spent per pod and the same
configuration works on every node. The pod's neighbour entries for them are permanent (the
pod never has to resolve its gateway); proxy ARP on the host veth answers anything else the
pod asks for, and fe80::1 on the host veth answers NDP.

The veth pair is created with its peer directly in the pod's namespace under its final name (one
netlink request), so a crash never leaves a pod-side interface under a temporary name. The pod
namespace is reached with a netlink socket opened inside it (setns there and back on this
thread: the plugin is single-threaded, and a socket keeps the namespace it was made in). Netlink
goes through :mod:`controller.cni.rtnl` (pyroute2's messages, without ``IPRoute``'s start-up).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pyroute2.netlink.exceptions import NetlinkError

from controller.cni.errors import INTERFACE_CONFLICT, LINK_FAILURE, CniError
from controller.cni.ipam import Address
from controller.cni.netns import inside, netns_fd
from controller.cni.rtnl import Rtnl

GATEWAY4 = "169.254.1.1"
GATEWAY6 = "fe80::1"
IFA_F_NODAD = 0x02
RTNH_F_ONLINK = 0x04
RT_SCOPE_LINK = 253
NUD_PERMANENT = 0x80
# VXLAN encapsulation: outer Ethernet 14 + IPv4 20 (IPv6 40) + UDP 8 + VXLAN 8.
OVERHEAD_V4 = 50
OVERHEAD_V6 = 70
FALLBACK_UPLINK_MTU = 1500


@dataclass(frozen=True)
class PodLink:
    host_ifname: str
    host_mac: str
    pod_ifname: str
    pod_mac: str
    sandbox: str


def default_mtu(ipr: Rtnl) -> int:
    """The uplink's MTU minus the VXLAN overhead: the uplink is the default route's device (IPv4
    first: the overlay prefers an IPv4 underlay)."""
    for family, overhead in ((socket.AF_INET, OVERHEAD_V4), (socket.AF_INET6, OVERHEAD_V6)):
        for route in ipr.get_routes(family):
            oif = route.get_attr("RTA_OIF")
            if route["dst_len"] != 0 or oif is None:
                continue
            link = ipr.get_link(oif)
            if link is not None:
                return int(link.get_attr("IFLA_MTU")) - overhead
    return FALLBACK_UPLINK_MTU - OVERHEAD_V6


@contextlib.contextmanager
def ipr_in(fd: int, path: str) -> Iterator[Rtnl]:
    """A netlink socket that lives in the namespace ``fd``."""
    with inside(fd, path):
        ipr = Rtnl()
    try:
        yield ipr
    finally:
        ipr.close()


def _index(ipr: Rtnl, ifname: str) -> int | None:
    return ipr.link_index(ifname)


def _sysctl(key: str, value: str) -> None:
    path = Path("/proc/sys") / key
    if path.read_text().strip() != value:
        path.write_text(value)


def remove_host_link(ipr: Rtnl, host_ifname: str) -> bool:
    """Delete the pod's veth pair by its host end (the peer goes with it). False: it was gone."""
    index = _index(ipr, host_ifname)
    if index is None:
        return False
    try:
        ipr.del_link(index)
    except NetlinkError as exc:
        if exc.code != 19:  # ENODEV: deleted meanwhile
            raise CniError(LINK_FAILURE, f"cannot delete {host_ifname}", str(exc)) from exc
    return True


def create(
    ipr: Rtnl,
    *,
    host_ifname: str,
    pod_ifname: str,
    netns_path: str,
    addresses: list[Address],
    mtu: int,
) -> PodLink:
    """The veth pair, addresses, routes and neighbours of one pod; raises CniError, leaving the
    caller to remove the host link (which removes everything here)."""
    with netns_fd(netns_path) as fd, ipr_in(fd, netns_path) as pod:
        if _index(pod, pod_ifname) is not None:
            raise CniError(
                INTERFACE_CONFLICT,
                f"the sandbox already has an interface {pod_ifname} that is not Stockade's "
                f"(no {host_ifname} on the node); choose another CNI_IFNAME or remove it",
            )
        try:
            ipr.add_veth(ifname=host_ifname, peer=pod_ifname, peer_netns_fd=fd, mtu=mtu)
        except NetlinkError as exc:
            raise CniError(
                LINK_FAILURE, f"cannot create the veth pair {host_ifname}/{pod_ifname}", str(exc)
            ) from exc
        try:
            host_link, pod_link = ipr.get_link(ifname=host_ifname), pod.get_link(ifname=pod_ifname)
            if host_link is None or pod_link is None:
                raise CniError(
                    LINK_FAILURE, f"the veth pair {host_ifname}/{pod_ifname} vanished after creation"
                )
            host, inner = int(host_link["index"]), int(pod_link["index"])
            host_mac = str(host_link.get_attr("IFLA_ADDRESS"))
            pod_mac = str(pod_link.get_attr("IFLA_ADDRESS"))
            _configure_host(ipr, host, host_ifname=host_ifname, addresses=addresses)
            _configure_pod(pod, inner, addresses=addresses, host_mac=host_mac)
        except NetlinkError as exc:
            raise CniError(LINK_FAILURE, f"cannot configure {host_ifname}/{pod_ifname}", str(exc)) from exc
        except OSError as exc:
            raise CniError(LINK_FAILURE, f"cannot configure {host_ifname}/{pod_ifname}", str(exc)) from exc
    return PodLink(
        host_ifname=host_ifname, host_mac=host_mac, pod_ifname=pod_ifname, pod_mac=pod_mac, sandbox=netns_path
    )


def _configure_host(ipr: Rtnl, index: int, *, host_ifname: str, addresses: list[Address]) -> None:
    _sysctl(f"net/ipv4/conf/{host_ifname}/proxy_arp", "1")
    # Forwarding is what routes pods at all; enabling it per family only when that family has pods.
    if any(a.version == 4 for a in addresses):
        _sysctl("net/ipv4/ip_forward", "1")
    if any(a.version == 6 for a in addresses):
        _sysctl("net/ipv6/conf/all/forwarding", "1")
        ipr.add_addr(index, GATEWAY6, 64, flags=IFA_F_NODAD)
    ipr.set_up(index)
    for address in addresses:
        if address.version == 4:
            ipr.add_route(str(address), 32, oif=index, scope=RT_SCOPE_LINK, replace=True)
        else:
            ipr.add_route(str(address), 128, oif=index, replace=True)


def _configure_pod(pod: Rtnl, index: int, *, addresses: list[Address], host_mac: str) -> None:
    lo = _index(pod, "lo")
    if lo is not None:
        pod.set_up(lo)
    pod.set_up(index)
    for address in addresses:
        if address.version == 4:
            pod.add_addr(index, str(address), 32)
            pod.replace_neigh(index, GATEWAY4, host_mac, state=NUD_PERMANENT)
            pod.add_route("0.0.0.0", 0, gateway=GATEWAY4, oif=index, flags=RTNH_F_ONLINK)
        else:
            pod.add_addr(index, str(address), 128, flags=IFA_F_NODAD)
            pod.replace_neigh(index, GATEWAY6, host_mac, state=NUD_PERMANENT)
            pod.add_route("::", 0, gateway=GATEWAY6, oif=index)


def check(
    ipr: Rtnl, *, host_ifname: str, pod_ifname: str, netns_path: str, addresses: list[Address]
) -> list[str]:
    """What differs from the routing model for this pod (empty: all is as ADD made it)."""
    problems: list[str] = []
    host = _index(ipr, host_ifname)
    if host is None:
        return [f"the host veth {host_ifname} is missing"]
    routes = {
        (r.get_attr("RTA_DST"), r["dst_len"])
        for family in (socket.AF_INET, socket.AF_INET6)
        for r in ipr.get_routes(family)
        if r.get_attr("RTA_OIF") == host
    }
    for address in addresses:
        if (str(address), address.max_prefixlen) not in routes:
            problems.append(f"the node has no route {address}/{address.max_prefixlen} dev {host_ifname}")
    with netns_fd(netns_path) as fd, ipr_in(fd, netns_path) as pod:
        inner = _index(pod, pod_ifname)
        if inner is None:
            return [*problems, f"the sandbox has no interface {pod_ifname}"]
        link = pod.get_link(inner)
        peer = link.get_attr("IFLA_LINK") if link is not None else None
        if peer != host:
            problems.append(f"{pod_ifname} in the sandbox is not the peer of {host_ifname}")
        have = {ipaddress.ip_address(a.get_attr("IFA_ADDRESS")) for a in pod.get_addrs(inner)}
        problems += [f"{pod_ifname} lacks the address {a}" for a in addresses if a not in have]
        defaults = {
            r.get_attr("RTA_GATEWAY")
            for family in (socket.AF_INET, socket.AF_INET6)
            for r in pod.get_routes(family)
            if r["dst_len"] == 0 and r.get_attr("RTA_OIF") == inner
        }
        for address in addresses:
            gateway = GATEWAY4 if address.version == 4 else GATEWAY6
            if gateway not in defaults:
                problems.append(f"the sandbox has no default route via {gateway} dev {pod_ifname}")
    return problems


def pod_side_absent(netns_path: str, pod_ifname: str) -> bool:
    """True when the sandbox (if it still exists) has no ``pod_ifname``."""
    if not netns_path or not os.path.exists(netns_path):
        return True
    try:
        with netns_fd(netns_path) as fd, ipr_in(fd, netns_path) as pod:
            return _index(pod, pod_ifname) is None
    except CniError:
        return True
