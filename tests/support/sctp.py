"""Just enough SCTP to probe reachability without an SCTP stack: INIT, INIT-ACK and ABORT (RFC 9260).

The kernels the lab runs on may have no SCTP sockets at all, while conntrack and nftables still
parse SCTP. So the pod agent speaks the first half of the four-way handshake over raw sockets:
a prober sends INIT with a random initiate tag; a server answers INIT-ACK carrying that tag as
its verification tag (or ABORT when nothing serves the port). An INIT-ACK back is proof that the
path works both ways, which is all a reachability probe asks.

Packets carry a correct CRC32c: conntrack checks it (and marks bad packets invalid, which a
ruleset drops), and the receiver here checks it too so a broken encoder cannot go unnoticed.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

CHUNK_INIT = 1
CHUNK_INIT_ACK = 2
CHUNK_ABORT = 6
PARAM_STATE_COOKIE = 7

_COMMON = struct.Struct("!HHII")  # source port, destination port, verification tag, checksum
_CHUNK = struct.Struct("!BBH")  # type, flags, length
_INIT_BODY = struct.Struct("!IIHHI")  # initiate tag, a_rwnd, outbound streams, inbound streams, TSN


def _crc32c_table() -> tuple[int, ...]:
    poly = 0x82F63B78  # Castagnoli, reflected
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ poly if c & 1 else c >> 1
        table.append(c)
    return tuple(table)


_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C as SCTP uses it (crc32c(b"123456789") == 0xE3069283)."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _finish(packet: bytearray) -> bytes:
    # The checksum field is zero while computing; the CRC goes on the wire little-endian
    # (RFC 9260 appendix A; Linux stores cpu_to_le32 of the CRC).
    packet[8:12] = b"\0\0\0\0"
    packet[8:12] = struct.pack("<I", crc32c(bytes(packet)))
    return bytes(packet)


def _chunk(kind: int, body: bytes, flags: int = 0) -> bytes:
    length = _CHUNK.size + len(body)
    padding = b"\0" * (-length % 4)
    return _CHUNK.pack(kind, flags, length) + body + padding


def init(*, sport: int, dport: int, tag: int, tsn: int) -> bytes:
    """An INIT: verification tag 0 (required for INIT), our initiate tag `tag` (non-zero)."""
    body = _INIT_BODY.pack(tag, 65535, 1, 1, tsn)
    return _finish(bytearray(_COMMON.pack(sport, dport, 0, 0) + _chunk(CHUNK_INIT, body)))


def init_ack(*, sport: int, dport: int, peer_tag: int, tag: int, tsn: int, cookie: bytes) -> bytes:
    """An INIT-ACK answering an INIT whose initiate tag was `peer_tag` (it becomes our vtag)."""
    cookie_param = struct.pack("!HH", PARAM_STATE_COOKIE, 4 + len(cookie)) + cookie
    cookie_param += b"\0" * (-len(cookie_param) % 4)
    body = _INIT_BODY.pack(tag, 65535, 1, 1, tsn) + cookie_param
    return _finish(bytearray(_COMMON.pack(sport, dport, peer_tag, 0) + _chunk(CHUNK_INIT_ACK, body)))


def abort(*, sport: int, dport: int, peer_tag: int) -> bytes:
    """An ABORT (T bit clear: the verification tag is the peer's initiate tag)."""
    return _finish(bytearray(_COMMON.pack(sport, dport, peer_tag, 0) + _chunk(CHUNK_ABORT, b"")))


@dataclass(frozen=True)
class Packet:
    """The parts of a received SCTP packet the agent acts on."""

    sport: int
    dport: int
    vtag: int
    chunk: int
    # The initiate tag of an INIT or INIT-ACK chunk; 0 for other chunks.
    initiate_tag: int


def parse(data: bytes) -> Packet | None:
    """Parse an SCTP packet (no IP header). None when it is too short or its CRC32c is wrong."""
    if len(data) < _COMMON.size + _CHUNK.size:
        return None
    sport, dport, vtag, _ = _COMMON.unpack_from(data)
    (wire_crc,) = struct.unpack_from("<I", data, 8)
    if crc32c(data[:8] + b"\0\0\0\0" + data[12:]) != wire_crc:
        return None
    kind, _flags, length = _CHUNK.unpack_from(data, _COMMON.size)
    initiate_tag = 0
    if kind in (CHUNK_INIT, CHUNK_INIT_ACK) and length >= _CHUNK.size + _INIT_BODY.size:
        (initiate_tag,) = struct.unpack_from("!I", data, _COMMON.size + _CHUNK.size)
    return Packet(sport=sport, dport=dport, vtag=vtag, chunk=kind, initiate_tag=initiate_tag)


def strip_ipv4_header(datagram: bytes) -> bytes:
    """IPv4 raw sockets deliver the IP header; IPv6 raw sockets do not."""
    if not datagram:
        return datagram
    ihl = (datagram[0] & 0x0F) * 4
    return datagram[ihl:]
