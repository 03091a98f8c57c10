"""compiler.peersets: span arithmetic, and the one peer all ipBlocks of a rule make."""

from __future__ import annotations

import ipaddress

import pytest

from compiler.model import IPBlock
from compiler.peersets import block_peer, merge_spans


def _span(first: str, last: str) -> tuple[int, int]:
    return int(ipaddress.ip_address(first)), int(ipaddress.ip_address(last))


@pytest.mark.parametrize(
    ("spans", "merged"),
    [
        pytest.param([], [], id="none"),
        pytest.param([(5, 9), (1, 3)], [(1, 3), (5, 9)], id="sorted"),
        pytest.param([(1, 3), (4, 9)], [(1, 9)], id="adjacent"),
        pytest.param([(1, 10), (2, 3), (9, 12)], [(1, 12)], id="overlapping"),
    ],
)
def test_merge_spans(spans: list[tuple[int, int]], merged: list[tuple[int, int]]) -> None:
    assert merge_spans(spans) == merged


@pytest.mark.parametrize(
    ("blocks", "v4"),
    [
        pytest.param(
            [("10.0.0.0/8", ["10.1.0.0/16"]), ("10.1.0.0/16", ["10.1.1.0/24"])],
            [_span("10.0.0.0", "10.1.0.255"), _span("10.1.2.0", "10.255.255.255")],
            id="overlapping-blocks-each-keep-their-own-except",
        ),
        pytest.param(
            [("10.0.0.0/24", ["10.0.0.0/25"]), ("10.0.0.0/24", [])],
            [_span("10.0.0.0", "10.0.0.255")],
            id="a-block-without-except-restores-the-hole",
        ),
        pytest.param(
            [("10.0.0.7/24", ["10.0.0.128/25"])],
            [_span("10.0.0.0", "10.0.0.127")],
            id="host-bits-are-ignored",
        ),
        pytest.param([("fd00::/8", [])], [], id="ipv6-only"),
    ],
)
def test_block_peer_is_the_union_of_cidr_minus_except(
    blocks: list[tuple[str, list[str]]], v4: list[tuple[int, int]]
) -> None:
    peer = block_peer([IPBlock.model_validate({"cidr": c, "except": e}) for c, e in blocks])
    assert list(peer.v4) == v4
