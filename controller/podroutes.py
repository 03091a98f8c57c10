"""The pod sources the node routes: (host-side pod interface, address) from the routing table.

stockade-cni routes each pod's addresses to its host-side veth (``10.244.1.5/32 dev stk<hash>``,
:mod:`controller.cni.links`); those routes are exactly what the ruleset's reverse-path check
(``fib saddr . iif``) consults. The agent hands them to the compiler as
``ClusterModel.pod_sources``, so that a pod's packets from its own address pass anti-spoofing
with one set lookup instead of a route lookup (:mod:`compiler.basechains`).

- :meth:`RoutedSources.all` lists the main table's unicast routes to one address (/32, /128)
  whose device is a pod interface (its name has the prefix): at start and in the periodic check.
- :meth:`RoutedSources.of` asks the kernel which route each given address matches
  (``RTM_GETROUTE`` with ``RTM_F_FIB_MATCH``: the route entry itself, with its prefix length
  and table), with the same filter: for the addresses of one pod the CNI plugin reports or
  forgets, one request per address instead of a dump of every route on the node.

Both only ever report routes the kernel holds, and a pair is used only to skip a lookup that
would pass; an error here costs speed (the ``fib`` lookup checks every packet), never safety.
The listing reads the main table, where stockade-cni puts pod routes; ip rules are not evaluated
(asking does follow them), so on a node whose rules send a pod's own address through another
table's route, the listing's pair stands for that address all the same.
Interface names come from ``if_indextoname`` (one ioctl) rather than a dump of every link.
One netlink socket serves every call, under a lock: callers are the agent's executor threads.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterable, Iterator
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from compiler.cluster import PodSource
from compiler.ifnames import POD_INTERFACE_PREFIX

RT_TABLE_MAIN = 254
RTN_UNICAST = 1
RTM_F_FIB_MATCH = 0x2000  # return the matching route entry, not a route made for the address
HOST_LENGTH = {socket.AF_INET: 32, socket.AF_INET6: 128}


class RoutedSources:
    """Reads pod sources from the routing table of the network namespace it is used in (its
    socket is opened at the first call; interface names are read in the calling thread's
    namespace, so every call must come from that one)."""

    def __init__(self, *, prefix: str = POD_INTERFACE_PREFIX) -> None:
        self.prefix = prefix
        self._lock = threading.Lock()
        self._ipr: Any = None

    def all(self) -> frozenset[PodSource]:
        """Every main-table unicast route to one address whose device is a pod interface."""
        found: set[PodSource] = set()
        with self._socket() as ipr:
            for family in HOST_LENGTH:
                for route in ipr.get_routes(family=family, table=RT_TABLE_MAIN):
                    source = self._source(route)
                    if source is not None:
                        found.add(source)
        return frozenset(found)

    def of(self, addresses: Iterable[str]) -> frozenset[PodSource]:
        """The pairs of ``addresses``: those whose matching route is such a route."""
        found: set[PodSource] = set()
        with self._socket() as ipr:
            for address in addresses:
                try:
                    routes = ipr.route("get", dst=address, flags=RTM_F_FIB_MATCH)
                except NetlinkError:
                    continue  # no route at all (ENETUNREACH): nothing to skip a lookup for
                for route in routes:
                    source = self._source(route)
                    if source is not None:
                        found.add(source)
        return frozenset(found)

    def close(self) -> None:
        with self._lock:
            if self._ipr is not None:
                self._ipr.close()
                self._ipr = None

    def _source(self, route: Any) -> PodSource | None:
        """The pair of a route, if it is a pod's host route: unicast, in the main table, to one
        address, through one device whose name has the prefix."""
        if route["type"] != RTN_UNICAST or route["dst_len"] != HOST_LENGTH.get(route["family"]):
            return None
        if route.get_attr("RTA_TABLE", route["table"]) != RT_TABLE_MAIN:
            return None
        address, oif = route.get_attr("RTA_DST"), route.get_attr("RTA_OIF")
        if address is None or oif is None:
            return None  # a multipath route has no single device: not a pod's
        try:
            name = socket.if_indextoname(oif)
        except OSError:
            return None  # the device went meanwhile
        return PodSource(name, address) if name.startswith(self.prefix) else None

    @contextlib.contextmanager
    def _socket(self) -> Iterator[Any]:
        with self._lock:
            if self._ipr is None:
                self._ipr = IPRoute()
            try:
                yield self._ipr
            except Exception:
                # A socket in an unknown state (a netlink error mid-dump) is not reused.
                self._ipr.close()
                self._ipr = None
                raise
