"""compiler.basechains: the host-wide checks judge pod traffic only, never the node's uplinks."""

from __future__ import annotations

import pytest

from compiler.basechains import base_chains, tier_chains
from compiler.errors import OptionError
from compiler.ir import (
    ACCEPT,
    DROP,
    Chain,
    CtStateIn,
    FibSaddrIifMissing,
    IfnamePrefix,
    IifnameSaddrInSet,
    Rule,
    is_description,
)
from compiler.model import Family
from compiler.options import CompileOptions
from compiler.plan import build_plan
from compiler.render_nft import render_nft
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
