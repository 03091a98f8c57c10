"""The pure parts of tests/support: SCTP encoding, addressing, symbolic CIDRs, matrix rendering."""

from __future__ import annotations

import struct

import pytest

from tests.support import sctp
from tests.support.addressing import FAMILIES, Family, allocate, host_prefix, supernet
from tests.support.conformance import LAB_ADDRESSES, load_cases, resolve_cidr, serving_ports
from tests.support.probe import all_pairs, render_comparison, render_matrix


@pytest.mark.parametrize(
    ("data", "crc"),
    [
        pytest.param(b"123456789", 0xE3069283, id="check-value"),
        pytest.param(b"", 0x00000000, id="empty"),
        pytest.param(bytes(32), 0x8A9136AA, id="32-zeros"),  # RFC 3720 B.4
        pytest.param(bytes([0xFF] * 32), 0x62A8AB43, id="32-ones"),  # RFC 3720 B.4
    ],
)
def test_crc32c_known_values(data: bytes, crc: int) -> None:
    assert sctp.crc32c(data) == crc


def test_init_parses_back_and_carries_a_valid_checksum() -> None:
    packet = sctp.init(sport=40000, dport=80, tag=0xDEADBEEF, tsn=7)
    assert len(packet) % 4 == 0
    assert sctp.parse(packet) == sctp.Packet(
        sport=40000, dport=80, vtag=0, chunk=sctp.CHUNK_INIT, initiate_tag=0xDEADBEEF
    )
    corrupt = packet[:-1] + bytes([packet[-1] ^ 1])
    assert sctp.parse(corrupt) is None


def test_init_ack_answers_with_the_peer_tag() -> None:
    packet = sctp.init_ack(sport=80, dport=40000, peer_tag=0xDEADBEEF, tag=5, tsn=1, cookie=b"12345678")
    parsed = sctp.parse(packet)
    assert parsed == sctp.Packet(
        sport=80, dport=40000, vtag=0xDEADBEEF, chunk=sctp.CHUNK_INIT_ACK, initiate_tag=5
    )
    # The state cookie parameter (type 7) follows the fixed INIT-ACK fields.
    assert struct.unpack_from("!HH", packet, 12 + 4 + 16) == (sctp.PARAM_STATE_COOKIE, 12)


def test_abort_carries_the_peer_tag() -> None:
    parsed = sctp.parse(sctp.abort(sport=80, dport=40000, peer_tag=9))
    assert parsed is not None
    assert (parsed.chunk, parsed.vtag) == (sctp.CHUNK_ABORT, 9)


def test_ipv4_header_is_stripped_by_its_length() -> None:
    header = bytes([0x46]) + bytes(23)  # IHL 6: 24 bytes
    assert sctp.strip_ipv4_header(header + b"payload") == b"payload"


def test_allocation_gives_both_families_the_same_host_ids() -> None:
    pods = allocate(["x/a", "x/b"], cidr4="10.0.0.0/24", cidr6="fd00::/64", first=10)
    assert [(p.ipv4, p.ipv6) for p in pods] == [("10.0.0.10", "fd00::a"), ("10.0.0.11", "fd00::b")]
    with pytest.raises(ValueError, match="duplicate"):
        allocate(["x/a", "x/a"])
    with pytest.raises(ValueError, match="do not fit"):
        allocate([f"p{i}" for i in range(300)])


@pytest.mark.parametrize(
    ("text", "family", "cidr"),
    [
        pytest.param("{x/b}/host", 4, "10.244.1.11/32", id="host-v4"),
        pytest.param("{x/b}/host", 6, "fd00:10:244:1::b/128", id="host-v6"),
        pytest.param("{x/b}/4", 4, "0.0.0.0/4", id="slash4-v4"),
        pytest.param("{x/b}/4", 6, "f000::/4", id="slash4-v6"),
        pytest.param("{z/c}/28", 4, "10.244.1.16/28", id="slash28"),
        pytest.param("192.168.0.0/16", 4, "192.168.0.0/16", id="literal"),
    ],
)
def test_symbolic_cidrs(text: str, family: Family, cidr: str) -> None:
    by_name = {a.name: a for a in LAB_ADDRESSES}
    assert resolve_cidr(text, family, by_name) == cidr


def test_every_pod_lies_in_every_pods_slash4() -> None:
    for family in FAMILIES:
        nets = {supernet(a.address(family), 4) for a in LAB_ADDRESSES}
        assert len(nets) == 1
    assert host_prefix("10.0.0.1") == "10.0.0.1/32"


def test_the_lab_serves_every_port_the_cases_probe() -> None:
    served = serving_ports()
    for case in load_cases():
        for step in case.steps:
            for proto, port in step.blocked:
                assert port in served[proto], (case.id, proto, port)


def test_matrix_rendering() -> None:
    names = ["a", "b", "c"]
    matrix = {pair: pair != ("a", "c") for pair in all_pairs(names)}
    assert render_matrix(matrix, names=names, title="t") == "t\n- a b c\na - . X\nb . - .\nc . . -"
    out = render_comparison(matrix, {**matrix, ("a", "c"): True}, names=names)
    assert "a -> c: expected blocked, measured reachable" in out
    same = render_comparison(matrix, matrix, names=names)
    assert same.split("comparison (X = differs)\n")[1] == "- a b c\na - . .\nb . - .\nc . . -"
