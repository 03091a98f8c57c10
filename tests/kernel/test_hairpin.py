"""Hairpin: a pod reaches itself through a Service even when a policy isolates it, and the
isolation still holds for everyone else. With real packets, IPv4 and IPv6.

The Service is what kube-proxy makes of one: in the node's namespace, a DNAT rule sends a virtual
IP to pod a, and hairpin traffic (source = destination = a after DNAT) is masqueraded on the way
out, as kube-proxy marks it, so that a's kernel accepts the packet (a packet arriving with one of
its own addresses as the source is a martian). Between the two, in ``forward``, Stockade sees
source = destination = a's address. The routed node, its pods and servers are test_render_load's
lab; the NAT table is created and removed here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest

from compiler.model import NetworkPolicy
from compiler.plan import build_plan
from compiler.render_json import render_json
from tests.kernel.test_render_load import NODE, PODS, Lab, lab, lab_model, load_json, nsexec

pytestmark = pytest.mark.kernel

__all__ = ["lab"]  # the routed node of test_render_load, one per module

VIP = {4: "10.96.0.10", 6: "fd00:96::10"}
PORT = 80
NAT_TABLE = "stk_test_service"  # a test table of its own: Stockade's table is not touched


def _service_ruleset() -> str:
    a4, a6 = PODS["a"]
    return f"""table inet {NAT_TABLE} {{
	chain dstnat {{
		type nat hook prerouting priority dstnat; policy accept;
		ip daddr {VIP[4]} tcp dport {PORT} dnat ip to {a4}
		ip6 daddr {VIP[6]} tcp dport {PORT} dnat ip6 to {a6}
	}}
	chain srcnat {{
		type nat hook postrouting priority srcnat; policy accept;
		ip saddr {a4} ip daddr {a4} masquerade
		ip6 saddr {a6} ip6 daddr {a6} masquerade
	}}
}}
"""


@pytest.fixture
def service(lab: Lab) -> Iterator[None]:
    nsexec(lab.node, "nft", "-f", "-", stdin=_service_ruleset())
    try:
        yield
    finally:
        nsexec(lab.node, "nft", "delete", "table", "inet", NAT_TABLE)


ISOLATE_A = NetworkPolicy.model_validate(
    {
        "metadata": {"name": "a-isolated", "namespace": "x"},
        "spec": {"podSelector": {"matchLabels": {"app": "a"}}, "policyTypes": ["Ingress", "Egress"]},
    }
)


@pytest.mark.parametrize("family", [4, 6])
def test_isolated_pod_reaches_itself_through_a_service(
    lab: Lab,
    service: None,
    family: int,
) -> None:
    base = lab_model()
    model = dataclasses.replace(base, policies=(*base.policies, ISOLATE_A))
    load_json(lab.node, render_json(build_plan(model, node=NODE)))
    nsexec(lab.node, "conntrack", "-F", check=False)
    vip, a = VIP[family], PODS["a"][0 if family == 4 else 1]
    assert lab.probe("a", [(vip, PORT)]) == [True], "a to itself through the Service"
    assert lab.probe("b", [(vip, PORT), (a, PORT)]) == [False, False], "a admits nobody else"
    assert lab.probe("a", [(PODS["b"][0 if family == 4 else 1], PORT)]) == [False], "nor sends elsewhere"
