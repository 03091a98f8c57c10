"""The overlay's desired state from a node list (pure): who gets routes, neighbours and FDB
entries, and who is left out. Expected values are written out by hand."""

from __future__ import annotations

import pytest

from compiler.model import Node
from controller.errors import UsageError
from controller.overlay import Fdb, Neighbour, OverlayNode, Route, desired, overlay_node, vtep_mac

A = OverlayNode("a", ("192.0.2.1", "2001:db8::1"), ("10.244.1.0/24", "fd00:10:244:1::/64"))
B = OverlayNode("b", ("192.0.2.2", "2001:db8::2"), ("10.244.2.0/24", "fd00:10:244:2::/64"))
C_V6_ONLY = OverlayNode("c", ("2001:db8::3",), ("10.244.3.0/24",))
D_NO_CIDRS = OverlayNode("d", ("192.0.2.4",), ())


def test_two_nodes_dual_stack_over_v4() -> None:
    state = desired(A, [A, B])
    mac_b = vtep_mac("b")
    assert state.device.local == "192.0.2.1" and state.device.mac == vtep_mac("a")
    assert state.addresses == {"10.244.1.0/32", "fd00:10:244:1::/128"}
    assert state.routes == {
        Route("10.244.2.0/24", "10.244.2.0"),
        Route("fd00:10:244:2::/64", "fd00:10:244:2::"),
    }
    assert state.neighbours == {Neighbour("10.244.2.0", mac_b), Neighbour("fd00:10:244:2::", mac_b)}
    assert state.fdb == {Fdb(mac_b, "192.0.2.2")}


def test_v6_underlay_when_asked() -> None:
    state = desired(A, [A, B], underlay_family=6)
    assert state.device.local == "2001:db8::1"
    assert state.fdb == {Fdb(vtep_mac("b"), "2001:db8::2")}


@pytest.mark.parametrize(
    ("node", "reason"),
    [(C_V6_ONLY, "c: no IPv4 InternalIP"), (D_NO_CIDRS, "d: no podCIDRs yet")],
    ids=["no-underlay-address", "no-pod-cidrs"],
)
def test_peers_left_out_say_why(node: OverlayNode, reason: str) -> None:
    state = desired(A, [A, node])
    assert state.skipped == (reason,)
    assert not state.routes and not state.fdb and not state.neighbours


def test_local_node_without_underlay_address_is_an_error() -> None:
    with pytest.raises(UsageError, match="no IPv4 InternalIP"):
        desired(C_V6_ONLY, [A], underlay_family=4)


def test_macs_are_stable_local_unicast_and_distinct() -> None:
    macs = {vtep_mac(f"node-{i}") for i in range(200)}
    assert len(macs) == 200
    for mac in macs:
        first = int(mac.split(":")[0], 16)
        assert first & 0x02 and not first & 0x01  # locally administered, unicast
    assert vtep_mac("a") == vtep_mac("a")


def test_same_input_same_state_whatever_the_order() -> None:
    assert desired(A, [B, A, D_NO_CIDRS]) == desired(A, [D_NO_CIDRS, A, B])


def test_from_a_node_object() -> None:
    node = Node.model_validate(
        {
            "metadata": {"name": "n1", "uid": "u1"},
            "spec": {"podCIDR": "10.244.1.0/24", "podCIDRs": ["10.244.1.0/24", "fd00:10:244:1::/64"]},
            "status": {
                "addresses": [
                    {"type": "Hostname", "address": "n1"},
                    {"type": "InternalIP", "address": "192.0.2.1"},
                    {"type": "ExternalIP", "address": "198.51.100.1"},
                ]
            },
        }
    )
    assert overlay_node(node) == OverlayNode("n1", ("192.0.2.1",), ("10.244.1.0/24", "fd00:10:244:1::/64"))
