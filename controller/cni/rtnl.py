"""A small synchronous rtnetlink client for the plugin: pyroute2's message classes over a plain
``AF_NETLINK`` socket.

Why not ``pyroute2.IPRoute``: the plugin is a process the runtime starts for every sandbox, and
importing ``IPRoute`` (its asyncio core, request filters, mock backend, ``pyroute2.netns`` with
its process helpers) was most of an ADD's time. The plugin needs a dozen request kinds, each one
message and one acknowledgement, so it builds them with pyroute2's message classes
(``ifinfmsg``, ``ifaddrmsg``, ``rtmsg``, ``ndmsg``: the encoding and decoding stay pyroute2's)
and does the socket work itself. Errors are pyroute2's :class:`NetlinkError` with the kernel's
errno, as ``IPRoute`` raises them.

Entering a namespace is :mod:`controller.cni.netns` (``setns(2)``), not ``pyroute2.netns``,
whose import pulls in multiprocessing helpers.
"""

from __future__ import annotations

import errno
import socket
import struct
from collections.abc import Iterator
from typing import Any

from pyroute2.netlink import (
    NLM_F_ACK,
    NLM_F_CREATE,
    NLM_F_DUMP,
    NLM_F_EXCL,
    NLM_F_REPLACE,
    NLM_F_REQUEST,
    NLMSG_DONE,
    NLMSG_ERROR,
)
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl import (
    RTM_DELLINK,
    RTM_GETADDR,
    RTM_GETLINK,
    RTM_GETROUTE,
    RTM_NEWADDR,
    RTM_NEWLINK,
    RTM_NEWNEIGH,
    RTM_NEWROUTE,
)
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.ndmsg import ndmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

NETLINK_ROUTE = 0
IFF_UP = 0x1
RT_TABLE_MAIN = 254
RTPROT_BOOT = 3  # what `ip route add` and IPRoute use for routes a tool (not a daemon) made
RTN_UNICAST = 1
_HEADER = struct.Struct("=IHHII")  # struct nlmsghdr: length, type, flags, sequence, port id
_ERRNO = struct.Struct("=i")
_RECV_BYTES = 1 << 16

Msg = Any  # a decoded pyroute2 message (a dict subclass with get_attr)

ADD = NLM_F_CREATE | NLM_F_EXCL
REPLACE = NLM_F_CREATE | NLM_F_REPLACE


class Rtnl:
    """One NETLINK_ROUTE socket in the namespace this thread is in when it is made."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
        try:
            self._sock.bind((0, 0))
        except BaseException:
            self._sock.close()
            raise
        self._seq = 0

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> Rtnl:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the protocol ---

    def request(self, msg: Msg, *, kind: int, flags: int = 0, dump: bool = False) -> list[Msg]:
        """Send ``msg`` as message type ``kind``; a dump returns every message of the answer,
        anything else waits for the kernel's acknowledgement and returns what came before it.
        A kernel error raises NetlinkError."""
        self._seq += 1
        seq = self._seq
        msg["header"]["type"] = kind
        msg["header"]["flags"] = NLM_F_REQUEST | (NLM_F_DUMP if dump else NLM_F_ACK) | flags
        msg["header"]["sequence_number"] = seq
        msg["header"]["pid"] = 0
        msg.encode()
        self._sock.send(msg.data)
        cls = type(msg)
        out: list[Msg] = []
        while True:
            data = self._sock.recv(_RECV_BYTES)
            for offset, length, mtype, mseq in _messages(data):
                if mseq != seq:
                    continue  # an answer to an earlier request that was given up on
                if mtype == NLMSG_DONE:
                    return out
                if mtype == NLMSG_ERROR:
                    (code,) = _ERRNO.unpack_from(data, offset + _HEADER.size)
                    if code:
                        raise NetlinkError(-code)
                    return out
                reply = cls(data, offset=offset, length=length)
                reply.decode()
                out.append(reply)

    # --- links ---

    def link_index(self, ifname: str) -> int | None:
        """The index of ``ifname`` in this namespace, None when there is none."""
        found = self.get_link(ifname=ifname)
        return None if found is None else int(found["index"])

    def get_link(self, index: int = 0, *, ifname: str = "") -> Msg | None:
        msg = ifinfmsg()
        msg["index"] = index
        if ifname:
            msg["attrs"] = [["IFLA_IFNAME", ifname]]
        try:
            replies = self.request(msg, kind=RTM_GETLINK)
        except NetlinkError as exc:
            if exc.code == errno.ENODEV:
                return None
            raise
        return replies[0] if replies else None

    def get_links(self) -> list[Msg]:
        return self.request(ifinfmsg(), kind=RTM_GETLINK, dump=True)

    def add_veth(self, *, ifname: str, peer: str, peer_netns_fd: int, mtu: int) -> None:
        """A veth pair whose peer is created directly in another namespace under its final name."""
        msg = ifinfmsg()
        msg["attrs"] = [
            ["IFLA_IFNAME", ifname],
            ["IFLA_MTU", mtu],
            [
                "IFLA_LINKINFO",
                {
                    "attrs": [
                        ["IFLA_INFO_KIND", "veth"],
                        [
                            "IFLA_INFO_DATA",
                            {
                                "attrs": [
                                    [
                                        "VETH_INFO_PEER",
                                        {
                                            "attrs": [
                                                ["IFLA_IFNAME", peer],
                                                ["IFLA_NET_NS_FD", peer_netns_fd],
                                                ["IFLA_MTU", mtu],
                                            ]
                                        },
                                    ]
                                ]
                            },
                        ],
                    ]
                },
            ],
        ]
        self.request(msg, kind=RTM_NEWLINK, flags=ADD)

    def del_link(self, index: int) -> None:
        msg = ifinfmsg()
        msg["index"] = index
        self.request(msg, kind=RTM_DELLINK)

    def set_up(self, index: int) -> None:
        msg = ifinfmsg()
        msg["index"] = index
        msg["flags"] = IFF_UP
        msg["change"] = IFF_UP
        self.request(msg, kind=RTM_NEWLINK)

    # --- addresses, routes, neighbours ---

    def add_addr(self, index: int, address: str, prefixlen: int, *, flags: int = 0) -> None:
        msg = ifaddrmsg()
        msg["family"] = _family(address)
        msg["prefixlen"] = prefixlen
        msg["flags"] = flags
        msg["index"] = index
        attrs = [["IFA_ADDRESS", address]]
        if msg["family"] == socket.AF_INET:
            attrs.append(["IFA_LOCAL", address])  # IPv4 keeps the local address apart from the peer's
        msg["attrs"] = attrs
        self.request(msg, kind=RTM_NEWADDR, flags=ADD)

    def get_addrs(self, index: int) -> list[Msg]:
        return [a for a in self.request(ifaddrmsg(), kind=RTM_GETADDR, dump=True) if a["index"] == index]

    def add_route(
        self,
        dst: str,
        dst_len: int,
        *,
        oif: int,
        gateway: str | None = None,
        scope: int = 0,
        flags: int = 0,
        replace: bool = False,
    ) -> None:
        msg = rtmsg()
        msg["family"] = _family(dst)
        msg["dst_len"] = dst_len
        msg["table"] = RT_TABLE_MAIN
        msg["proto"] = RTPROT_BOOT
        msg["scope"] = scope
        msg["type"] = RTN_UNICAST
        msg["flags"] = flags
        attrs: list[list[Any]] = [["RTA_OIF", oif]]
        if dst_len:  # a default route carries no destination (as `ip route add default` sends it)
            attrs.append(["RTA_DST", dst])
        if gateway is not None:
            attrs.append(["RTA_GATEWAY", gateway])
        msg["attrs"] = attrs
        self.request(msg, kind=RTM_NEWROUTE, flags=REPLACE if replace else ADD)

    def get_routes(self, family: int) -> list[Msg]:
        """The main table's routes of ``family``."""
        msg = rtmsg()
        msg["family"] = family
        return [r for r in self.request(msg, kind=RTM_GETROUTE, dump=True) if _table(r) == RT_TABLE_MAIN]

    def replace_neigh(self, index: int, dst: str, lladdr: str, *, state: int) -> None:
        msg = ndmsg()
        msg["family"] = _family(dst)
        msg["ifindex"] = index
        msg["state"] = state
        msg["attrs"] = [["NDA_DST", dst], ["NDA_LLADDR", lladdr]]
        self.request(msg, kind=RTM_NEWNEIGH, flags=REPLACE)


def _messages(data: bytes) -> Iterator[tuple[int, int, int, int]]:
    """(offset, length, type, sequence) of each message in one datagram."""
    offset = 0
    while offset + _HEADER.size <= len(data):
        length, mtype, _flags, seq, _pid = _HEADER.unpack_from(data, offset)
        if length < _HEADER.size:
            return  # malformed: never loop on it
        yield offset, length, mtype, seq
        offset += (length + 3) & ~3  # messages are 4-byte aligned


def _family(address: str) -> int:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def _table(route: Msg) -> int:
    table = route.get_attr("RTA_TABLE")
    return int(table) if table is not None else int(route["table"])
