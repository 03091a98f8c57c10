"""compiler.basechains: the host-wide checks judge pod traffic only, never the node's uplinks."""

from __future__ import annotations

import pytest

from compiler.basechains import base_chains, tier_chains
from compiler.cluster import ClusterModel
from compiler.errors import OptionError
from compiler.ir import (
    ACCEPT,
    DROP,
    NOTRACK,
    Chain,
    CtStateIn,
    DportIn,
    FibSaddrIifMissing,
    IfnamePrefix,
    IifnameSaddrInSet,
    Rule,
    Verdict,
    is_description,
)
from compiler.model import Family, Node
from compiler.options import CompileOptions
from compiler.plan import build_plan
from compiler.render_nft import render_nft
from compiler.render_nft import rule_text as _rule_text
from tests.unit import clustergen

FAMILY_CASES = [pytest.param((4, 6), id="dual-stack-podcidrs"), pytest.param((), id="no-podcidrs")]


def _host_wide(rule: Rule) -> bool:
    """A drop that does not come from a policy: anti-spoofing or an invalid conntrack state."""
    return rule.action == DROP and any(
        isinstance(m, FibSaddrIifMissing) or (isinstance(m, CtStateIn) and "invalid" in m.states)
        for m in rule.matches
    )


def _chains(families: tuple[Family, ...]) -> dict[str, Chain]:
    return {c.name: c for c in base_chains(families, options=CompileOptions())}


@pytest.mark.parametrize("families", FAMILY_CASES)
def test_every_host_wide_drop_is_scoped_to_pod_interfaces(families: tuple[Family, ...]) -> None:
    chains = _chains(families)
    checks = [(c.name, r) for c in chains.values() for r in c.rules if _host_wide(r)]
    assert {name for name, _ in checks} == {"prerouting", "forward"}
    for name, rule in checks:
        scopes = [m for m in rule.matches if isinstance(m, IfnamePrefix)]
        assert [s.prefix for s in scopes] == ["stk"], f"{name}: {rule.comment!r} is not scoped to pods"


def test_anti_spoofing_looks_up_known_pairs_then_the_route() -> None:
    """Known (interface . address) pairs are accepted after one set lookup per family; whatever
    misses meets the route lookup, which alone decides what is dropped."""
    rules = _chains((4, 6))["prerouting"].rules
    assert [(r.matches, r.action) for r in rules] == [
        ((IifnameSaddrInSet(4, "pod-sources-v4"),), ACCEPT),
        ((IifnameSaddrInSet(6, "pod-sources-v6"),), ACCEPT),
        ((IfnamePrefix("iifname", "stk"), FibSaddrIifMissing()), DROP),
    ]
    assert [r.counter for r in rules] == [False, False, True]  # the drops are counted, hits not


@pytest.mark.parametrize("chain", ["prerouting", "forward", "input"])
def test_base_chains_carry_no_rule_that_only_describes(chain: str) -> None:
    """Every packet on a hook walks its base chain: a description rule there would be one more
    rule per packet, so the description rides on the first real rule's comment instead."""
    rules = _chains((4, 6))[chain].rules
    assert not any(is_description(r) for r in rules)
    assert rules[0].comment.startswith(f"{_chains((4, 6))[chain].note}: ")
    assert not rules[0].comment.endswith("...")  # the note and the rule's own comment both fit


def test_invalid_state_is_dropped_from_and_to_pods_only() -> None:
    invalid = [r for r in _chains((4, 6))["forward"].rules if _host_wide(r)]
    keys = [m.key for r in invalid for m in r.matches if isinstance(m, IfnamePrefix)]
    assert keys == ["iifname", "oifname"]


def test_replies_are_accepted_before_any_host_wide_check() -> None:
    forward = [r for r in _chains((4, 6))["forward"].rules if not is_description(r)]
    assert forward[0].matches == (CtStateIn(("established", "related")),)


@pytest.mark.parametrize("chain", ["forward", "input"])
def test_replies_pay_no_counter(chain: str) -> None:
    """Nearly every forwarded packet is a reply: counting them would be their one cost beyond
    conntrack, and a count of them says nothing about any policy."""
    established = [
        r for r in _chains((4, 6))[chain].rules if CtStateIn(("established", "related")) in r.matches
    ]
    assert [r.counter for r in established] == [False]


@pytest.mark.parametrize("families", FAMILY_CASES)
def test_every_chain_says_what_it_is_for_in_its_first_rule(families: tuple[Family, ...]) -> None:
    for chain in base_chains(families, options=CompileOptions(pod_interface_prefix="a" * 14)):
        assert chain.note and chain.rules[0].comment.startswith(f"{chain.note}: "), chain.name
        assert not chain.rules[0].comment.endswith("..."), chain.name  # fits with the longest prefix
    for chain in tier_chains():
        assert is_description(chain.rules[0]) and chain.rules[0].comment == chain.note, chain.name
        assert chain.note, chain.name


@pytest.mark.parametrize("prefix", ["veth", "cali", "lxc", "a" * 14, "pod_1.x-"])
def test_the_prefix_option_reaches_the_ruleset(prefix: str) -> None:
    options = CompileOptions(pod_interface_prefix=prefix)
    plan_text = render_nft(build_plan(clustergen.random_model(1), node="n1", options=options))
    assert f'iifname "{prefix}*" fib saddr . iif oif missing' in plan_text
    assert f'ct state invalid oifname "{prefix}*"' in plan_text
    assert '"stk*"' not in plan_text


@pytest.mark.parametrize(
    "prefix",
    [
        pytest.param("", id="empty"),
        pytest.param("a b", id="space"),
        pytest.param('x"', id="quote"),
        pytest.param("st*", id="wildcard"),
        pytest.param("a\\", id="backslash"),
        pytest.param("a" * 15, id="no-room-for-a-suffix"),
        pytest.param("é", id="non-ascii"),
    ],
)
def test_unusable_prefixes_are_refused(prefix: str) -> None:
    with pytest.raises(OptionError, match="pod interface prefix"):
        CompileOptions(pod_interface_prefix=prefix)


UNDERLAY = ("192.0.2.1", "fd00:ffff::1")


def render_rule(rule: Rule) -> str:
    return _rule_text(rule).split(" comment ")[0]


def _untracking(chains: dict[str, Chain]) -> dict[str, list[str]]:
    return {
        name: [render_rule(r) for r in chain.rules if r.action == NOTRACK] for name, chain in chains.items()
    }


@pytest.mark.parametrize(
    ("options", "underlay", "expected"),
    [
        pytest.param(
            CompileOptions(),
            UNDERLAY,
            {
                "prerouting": [
                    "ip daddr 192.0.2.1 udp dport 4789 notrack",
                    "ip6 daddr fd00:ffff::1 udp dport 4789 notrack",
                ],
                "input": [],
                "forward": [],
                "output": [
                    "ip saddr 192.0.2.1 udp dport 4789 notrack",
                    "ip6 saddr fd00:ffff::1 udp dport 4789 notrack",
                ],
            },
            id="overlay-on-dual-stack-node",
        ),
        pytest.param(
            CompileOptions(overlay_port=8472),
            UNDERLAY[:1],
            {
                "prerouting": ["ip daddr 192.0.2.1 udp dport 8472 notrack"],
                "input": [],
                "forward": [],
                "output": ["ip saddr 192.0.2.1 udp dport 8472 notrack"],
            },
            id="other-port",
        ),
        pytest.param(
            CompileOptions(overlay_port=None),
            UNDERLAY,
            {"prerouting": [], "input": [], "forward": []},
            id="no-overlay",
        ),
        pytest.param(
            CompileOptions(), (), {"prerouting": [], "input": [], "forward": []}, id="no-internal-ip"
        ),
    ],
)
def test_only_the_overlays_own_tunnel_packets_are_untracked(
    options: CompileOptions, underlay: tuple[str, ...], expected: dict[str, list[str]]
) -> None:
    """VXLAN to and from the node's own InternalIPs on the overlay's port, nothing else: another
    plugin's tunnel (--no-overlay) and forwarded UDP are conntrack's as before. The output chain
    exists only to untrack them."""
    chains = {c.name: c for c in base_chains((4, 6), options=options, underlay=underlay)}
    assert _untracking(chains) == expected


def test_untracking_comes_after_the_pod_rules() -> None:
    """A pod's packet leaves prerouting at its first rule; the tunnel rules cost pods nothing."""
    rules = {c.name: c for c in base_chains((4, 6), underlay=UNDERLAY)}["prerouting"].rules
    kinds = [r.action == NOTRACK for r in rules]
    assert kinds == [False, False, False, True, True]


def test_the_output_chain_hooks_before_conntrack() -> None:
    output = {c.name: c for c in base_chains((4, 6), underlay=UNDERLAY)}["output"]
    assert output.hook is not None and (output.hook.hook, output.hook.priority) == ("output", -300)
    assert all(not r.counter for r in output.rules)  # every tunnel packet passes: no count


@pytest.mark.parametrize("port", [0, 65536, -1])
def test_an_overlay_port_out_of_range_is_refused(port: int) -> None:
    with pytest.raises(OptionError, match="overlay port"):
        CompileOptions(overlay_port=port)


def test_the_nodes_internal_ips_reach_the_plan_and_a_bad_one_is_noted() -> None:
    node = Node.model_validate(
        {
            "metadata": {"name": "n1"},
            "spec": {"podCIDRs": ["10.244.1.0/24"]},
            "status": {
                "addresses": [
                    {"type": "InternalIP", "address": "FD00:FFFF:0::1"},
                    {"type": "InternalIP", "address": "10.0.0.300"},
                    {"type": "ExternalIP", "address": "203.0.113.9"},
                ]
            },
        }
    )
    plan = build_plan(ClusterModel(namespaces=(), pods=(), policies=(), nodes=(node,)), node="n1")
    text = render_nft(plan)
    assert "ip6 daddr fd00:ffff::1 udp dport 4789 notrack" in text  # canonical
    assert "203.0.113.9" not in text  # an ExternalIP is not the overlay's endpoint
    assert any("InternalIP '10.0.0.300' is not an address" in n for n in plan.notes)


@pytest.mark.parametrize("chain", ["input", "forward"])
@pytest.mark.parametrize(
    ("options", "dropped"),
    [
        pytest.param(CompileOptions(), ['iifname "stk*" udp dport 4789 counter drop'], id="overlay"),
        pytest.param(
            CompileOptions(pod_interface_prefix="veth", overlay_port=8472),
            ['iifname "veth*" udp dport 8472 counter drop'],
            id="other-prefix-and-port",
        ),
        pytest.param(CompileOptions(overlay_port=None), [], id="no-overlay"),
    ],
)
def test_pods_cannot_send_to_the_overlays_port(
    chain: str, options: CompileOptions, dropped: list[str]
) -> None:
    """VXLAN from a pod (to this node or through it) is dropped right after the replies, before
    any policy could allow it: a decapsulated frame may carry any source address."""
    rules = {c.name: c for c in base_chains((4, 6), options=options)}[chain].rules
    tunnel = [
        i
        for i, r in enumerate(rules)
        if any(isinstance(m, DportIn) and m.protocol == "UDP" for m in r.matches)
    ]
    assert [render_rule(rules[i]) for i in tunnel] == dropped
    established = next(i for i, r in enumerate(rules) if CtStateIn(("established", "related")) in r.matches)
    assert all(i > established for i in tunnel)
    dispatch = [i for i, r in enumerate(rules) if not isinstance(r.action, Verdict)]
    assert all(i < min(dispatch) for i in tunnel)
