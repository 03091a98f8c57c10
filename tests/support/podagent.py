"""The pod agent: serves TCP, UDP and SCTP inside a pod's network namespace and probes on request.

Run inside the pod's netns (the lab starts it with ``nsenter --net=/run/netns/NAME``)::

    python -m tests.support.podagent --control /run/stk/LAB/x-a.sock --tcp 80,81 --udp 80,81 --sctp 80,81

Serving, on every address of the pod, IPv4 and IPv6:
- TCP: accept, echo until the peer closes.
- UDP: echo each datagram to its sender.
- SCTP: answer INIT with INIT-ACK (ABORT for a port not served) over raw sockets, since the
  kernel may have no SCTP stack (see `tests.support.sctp`).

Control: a UNIX stream socket (UNIX sockets live in the filesystem, so they cross network
namespaces). One request per line, answered in any order as probes finish, so a client may
pipeline hundreds of probes on one connection:

    ping                                   -> pong
    probe ID DST PROTO PORT TIMEOUT        -> ID OUTCOME ELAPSED_MS DETAIL

PROTO is TCP, UDP or SCTP; TIMEOUT in seconds; OUTCOME one of
- ``connected``: TCP handshake done / UDP echo / SCTP INIT-ACK with our tag received;
- ``refused``: TCP RST, ICMP port unreachable, SCTP ABORT: a host answered, nothing served the port;
- ``unreachable``: an ICMP error other than port unreachable (e.g. a reject rule, no route);
- ``blocked``: no answer within TIMEOUT (drops are silent);
- ``error``: the probe could not be sent (DETAIL says why).
UDP and SCTP probes are retransmitted three times within TIMEOUT, so one lost datagram is not
mistaken for a policy drop.

The agent exits when its stdin closes or its parent dies, so a crashed test leaves no agents.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import errno
import ipaddress
import os
import random
import signal
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

from tests.support import sctp

IPPROTO_SCTP = 132
PR_SET_PDEATHSIG = 1
RETRANSMITS = 3


@dataclass(frozen=True)
class ProbeOutcome:
    outcome: str
    detail: str = ""


def _ports(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split(",") if p.strip()) if text else ()


def _family(address: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET


def _classify_error(exc: OSError) -> ProbeOutcome:
    if exc.errno == errno.ECONNREFUSED:
        return ProbeOutcome("refused", os.strerror(exc.errno))
    if exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EACCES, errno.EPERM, errno.ECONNRESET):
        return ProbeOutcome("unreachable", os.strerror(exc.errno or 0))
    return ProbeOutcome("error", f"{type(exc).__name__}: {exc}")


# --- serving ---------------------------------------------------------------------------------


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(4096):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()


class _UdpEcho(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # The selector loop's datagram transport does not subclass DatagramTransport.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.transport.sendto(data, addr)

    def error_received(self, exc: Exception) -> None:  # an ICMP error for an echo: nothing to do
        pass


def _bound_socket(family: socket.AddressFamily, kind: socket.SocketKind, port: int) -> socket.socket:
    sock = socket.socket(family, kind)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    sock.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", port))
    sock.setblocking(False)
    return sock


class _Sctp:
    """One raw socket per family: answers INITs and routes INIT-ACK/ABORT to waiting probes."""

    def __init__(self, loop: asyncio.AbstractEventLoop, ports: Sequence[int]) -> None:
        self._loop = loop
        self._ports = frozenset(ports)
        self._waiting: dict[int, asyncio.Future[ProbeOutcome]] = {}
        self._socks: dict[socket.AddressFamily, socket.socket] = {}
        self._next_port = random.randint(33000, 60000)
        for family in (socket.AF_INET, socket.AF_INET6):
            sock = socket.socket(family, socket.SOCK_RAW, IPPROTO_SCTP)
            sock.setblocking(False)
            self._socks[family] = sock
            loop.add_reader(sock.fileno(), self._readable, family)

    def _readable(self, family: socket.AddressFamily) -> None:
        sock = self._socks[family]
        while True:
            try:
                data, addr = sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            if family == socket.AF_INET:
                data = sctp.strip_ipv4_header(data)
            packet = sctp.parse(data)
            if packet is not None:
                self._handle(family, packet, str(addr[0]))

    def _handle(self, family: socket.AddressFamily, packet: sctp.Packet, peer: str) -> None:
        if packet.chunk == sctp.CHUNK_INIT and packet.vtag == 0 and packet.initiate_tag:
            if packet.dport in self._ports:
                reply = sctp.init_ack(
                    sport=packet.dport,
                    dport=packet.sport,
                    peer_tag=packet.initiate_tag,
                    tag=random.randint(1, 0xFFFFFFFF),
                    tsn=random.randint(0, 0xFFFFFFFF),
                    cookie=os.urandom(8),
                )
            else:
                reply = sctp.abort(sport=packet.dport, dport=packet.sport, peer_tag=packet.initiate_tag)
            with contextlib.suppress(OSError):
                self._socks[family].sendto(reply, (peer, 0))
            return
        waiter = self._waiting.get(packet.vtag)
        if waiter is None or waiter.done():
            return
        if packet.chunk == sctp.CHUNK_INIT_ACK:
            waiter.set_result(ProbeOutcome("connected"))
        elif packet.chunk == sctp.CHUNK_ABORT:
            waiter.set_result(ProbeOutcome("refused", "ABORT"))

    def _source_port(self) -> int:
        self._next_port = 33000 + (self._next_port - 33000 + 1) % 27000
        return self._next_port

    async def probe(self, dst: str, port: int, timeout: float) -> ProbeOutcome:
        family = _family(dst)
        tag = random.randint(1, 0xFFFFFFFF)
        while tag in self._waiting:
            tag = random.randint(1, 0xFFFFFFFF)
        packet = sctp.init(sport=self._source_port(), dport=port, tag=tag, tsn=random.randint(0, 0xFFFFFFFF))
        waiter: asyncio.Future[ProbeOutcome] = self._loop.create_future()
        self._waiting[tag] = waiter
        try:
            for _ in range(RETRANSMITS):
                try:
                    self._socks[family].sendto(packet, (dst, 0))
                except OSError as exc:
                    return _classify_error(exc)
                with contextlib.suppress(asyncio.TimeoutError):
                    return await asyncio.wait_for(asyncio.shield(waiter), timeout / RETRANSMITS)
            return ProbeOutcome("blocked", "no INIT-ACK")
        finally:
            del self._waiting[tag]
            if not waiter.done():
                waiter.cancel()


# --- probing ---------------------------------------------------------------------------------


async def _tcp_attempt(dst: str, port: int) -> ProbeOutcome:
    loop = asyncio.get_running_loop()
    sock = socket.socket(_family(dst), socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        await loop.sock_connect(sock, (dst, port))
        return ProbeOutcome("connected")
    except OSError as exc:
        return _classify_error(exc)
    finally:
        sock.close()


async def probe_tcp(dst: str, port: int, timeout: float) -> ProbeOutcome:
    # The kernel retransmits a SYN only after a second; a fresh connection attempt every
    # timeout/3 makes one lost SYN cost a third of the timeout, not a false "blocked".
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    attempts: list[asyncio.Task[ProbeOutcome]] = []
    try:
        for i in range(RETRANSMITS):
            attempts.append(asyncio.create_task(_tcp_attempt(dst, port)))
            until = deadline if i == RETRANSMITS - 1 else min(deadline, loop.time() + timeout / RETRANSMITS)
            done, _ = await asyncio.wait(
                attempts, timeout=max(0.0, until - loop.time()), return_when=asyncio.FIRST_COMPLETED
            )
            if done:
                return next(iter(done)).result()
        return ProbeOutcome("blocked", "no SYN-ACK")
    finally:
        for attempt in attempts:
            attempt.cancel()


async def probe_udp(dst: str, port: int, timeout: float) -> ProbeOutcome:
    loop = asyncio.get_running_loop()
    sock = socket.socket(_family(dst), socket.SOCK_DGRAM)
    sock.setblocking(False)
    nonce = os.urandom(16)
    try:
        sock.connect((dst, port))  # UDP connect: no packet, only fixes the peer
        deadline = loop.time() + timeout
        for attempt in range(RETRANSMITS):
            sock.send(nonce)
            until = loop.time() + timeout / RETRANSMITS if attempt < RETRANSMITS - 1 else deadline
            while (left := until - loop.time()) > 0:
                try:
                    data = await asyncio.wait_for(loop.sock_recv(sock, 2048), left)
                except TimeoutError:
                    break
                if data == nonce:
                    return ProbeOutcome("connected")
        return ProbeOutcome("blocked", "no echo")
    except OSError as exc:
        return _classify_error(exc)
    finally:
        sock.close()


class Agent:
    def __init__(self, *, tcp: Sequence[int], udp: Sequence[int], sctp_ports: Sequence[int]) -> None:
        self.tcp = tuple(tcp)
        self.udp = tuple(udp)
        self.sctp_ports = tuple(sctp_ports)
        self._sctp: _Sctp | None = None
        self._servers: list[asyncio.AbstractServer] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        for port in self.tcp:
            for family in (socket.AF_INET, socket.AF_INET6):
                sock = _bound_socket(family, socket.SOCK_STREAM, port)
                self._servers.append(await asyncio.start_server(_echo, sock=sock, backlog=1024))
        for port in self.udp:
            for family in (socket.AF_INET, socket.AF_INET6):
                sock = _bound_socket(family, socket.SOCK_DGRAM, port)
                await loop.create_datagram_endpoint(_UdpEcho, sock=sock)
        self._sctp = _Sctp(loop, self.sctp_ports)

    async def probe(self, dst: str, proto: str, port: int, timeout: float) -> ProbeOutcome:
        if proto == "TCP":
            return await probe_tcp(dst, port, timeout)
        if proto == "UDP":
            return await probe_udp(dst, port, timeout)
        if proto == "SCTP":
            assert self._sctp is not None
            return await self._sctp.probe(dst, port, timeout)
        return ProbeOutcome("error", f"unknown protocol {proto}")

    async def _answer(self, writer: asyncio.StreamWriter, words: list[str]) -> None:
        ident = words[1] if len(words) > 1 else "?"
        started = time.monotonic()
        try:
            if len(words) != 6:
                raise ValueError("usage: probe ID DST PROTO PORT TIMEOUT")
            _, _, dst, proto, port, timeout = words
            ipaddress.ip_address(dst)
            result = await self.probe(dst, proto.upper(), int(port), float(timeout))
        except (ValueError, OSError) as exc:
            result = ProbeOutcome("error", str(exc))
        elapsed_ms = (time.monotonic() - started) * 1000
        detail = result.detail.replace("\n", " ")
        with contextlib.suppress(OSError, RuntimeError):
            writer.write(f"{ident} {result.outcome} {elapsed_ms:.1f} {detail}".rstrip().encode() + b"\n")

    async def control(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                words = line.decode(errors="replace").split()
                if words == ["ping"]:
                    writer.write(b"pong\n")
                elif words and words[0] == "probe":
                    task = asyncio.create_task(self._answer(writer, words))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
                else:
                    writer.write(b"error unknown request\n")
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass


def _die_with_parent(parent: int) -> None:
    # nsenter execs us, so our parent is the process that started the lab; if it dies we go too.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if parent and os.getppid() != parent:
        sys.exit("podagent: parent already gone")


async def main_async(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    stop = loop.create_future()

    def request_stop() -> None:
        if not stop.done():
            stop.set_result(None)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, request_stop)

    def stdin_readable() -> None:
        try:
            data = os.read(0, 4096)
        except OSError:
            data = b""
        if not data:
            request_stop()

    if args.watch_stdin:
        loop.add_reader(0, stdin_readable)
    agent = Agent(tcp=_ports(args.tcp), udp=_ports(args.udp), sctp_ports=_ports(args.sctp))
    await agent.serve()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(args.control)
    # The control socket appears last: once it answers, everything else is serving.
    server = await asyncio.start_unix_server(agent.control, path=args.control, limit=1 << 20)
    try:
        await stop
    finally:
        server.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(args.control)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="podagent", description=__doc__.splitlines()[0] if __doc__ else None
    )
    parser.add_argument("--control", required=True, help="path of the UNIX control socket")
    parser.add_argument("--tcp", default="", help="comma-separated TCP ports to serve")
    parser.add_argument("--udp", default="", help="comma-separated UDP ports to serve")
    parser.add_argument("--sctp", default="", help="comma-separated SCTP ports to answer")
    parser.add_argument("--parent", type=int, default=0, help="exit when this process (our parent) dies")
    parser.add_argument("--watch-stdin", action="store_true", help="exit when stdin reaches EOF")
    args = parser.parse_args(argv)
    _die_with_parent(args.parent)
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
