"""Reading ``nft -j list table`` back: listings written here by hand in the form nft 1.0.6
prints them (handles, counter values, one-address intervals as bare addresses)."""

from __future__ import annotations

from typing import Any

import pytest

from compiler.naming import rule_comment
from controller.applier import Backoff
from controller.kernelstate import ISOLATION, RuleKey, differences, isolation_keys, read_listing, rule_key

T = {"family": "inet", "table": "stockade"}


def listing(*objects: dict[str, Any]) -> dict[str, Any]:
    return {"nftables": [{"metainfo": {"version": "1.0.6", "json_schema_version": 1}}, *objects]}


KERNEL = listing(
    {"table": {"family": "inet", "name": "stockade", "handle": 4}},
    {"chain": {**T, "name": "ingress-1", "handle": 1}},
    {
        "chain": {
            **T,
            "name": "forward",
            "handle": 2,
            "type": "filter",
            "hook": "forward",
            "prio": 0,
            "policy": "accept",
        }
    },
    {
        "set": {
            **T,
            "name": "cidrs-v4",
            "handle": 3,
            "type": "ipv4_addr",
            "flags": ["interval"],
            "elem": ["10.0.0.1", {"prefix": {"addr": "10.1.0.0", "len": 16}}],
        }
    },
    {
        "set": {
            **T,
            "name": "cidrs-v6",
            "handle": 5,
            "type": "ipv6_addr",
            "flags": ["interval"],
            "elem": ["fd00::1"],
        }
    },
    {"set": {**T, "name": "pods-v4", "handle": 6, "type": "ipv4_addr", "elem": ["10.244.1.2"]}},
    {
        "map": {
            **T,
            "name": "dispatch",
            "handle": 7,
            "type": "ipv4_addr",
            "map": "verdict",
            "elem": [["10.244.1.2", {"jump": {"target": "ingress-1"}}]],
        }
    },
    {
        "rule": {
            **T,
            "chain": "ingress-1",
            "handle": 8,
            "comment": "x/allow ingress[2]",
            "expr": [{"counter": {"packets": 3, "bytes": 180}}, {"accept": None}],
        }
    },
    {"rule": {**T, "chain": "forward", "handle": 9, "expr": [{"drop": None}]}},
)


def test_handles_counter_values_and_bare_interval_addresses_are_undone() -> None:
    table = read_listing(KERNEL)
    state = table.state
    assert table.foreign == ()
    assert state.chains["forward"].declaration == {
        **T,
        "name": "forward",
        "type": "filter",
        "hook": "forward",
        "prio": 0,
        "policy": "accept",
    }
    assert state.chains["ingress-1"].rules == (
        {
            "rule": {
                **T,
                "chain": "ingress-1",
                "comment": "x/allow ingress[2]",
                "expr": [{"counter": None}, {"accept": None}],
            }
        },
    )
    assert state.chains["forward"].rules[0]["rule"]["comment"] == ""
    assert sorted(state.containers["cidrs-v4"].elements.values(), key=str) == sorted(
        [{"prefix": {"addr": "10.0.0.1", "len": 32}}, {"prefix": {"addr": "10.1.0.0", "len": 16}}], key=str
    )
    assert list(state.containers["cidrs-v6"].elements.values()) == [
        {"prefix": {"addr": "fd00::1", "len": 128}}
    ]
    assert list(state.containers["pods-v4"].elements.values()) == ["10.244.1.2"]  # not an interval set
    assert state.containers["dispatch"].kind == "map"
    assert "handle" not in state.containers["dispatch"].declaration
    ((counter),) = table.counters
    assert (counter.chain, counter.comment, counter.packets, counter.bytes) == (
        "ingress-1",
        "x/allow ingress[2]",
        3,
        180,
    )


def test_what_a_plan_never_has_is_reported_as_foreign() -> None:
    table = read_listing(
        listing(
            {"table": {"family": "inet", "name": "stockade", "handle": 4, "flags": ["dormant"]}},
            {"flowtable": {**T, "name": "ft", "handle": 2, "hook": "ingress", "prio": 0, "dev": ["lo"]}},
        )
    )
    assert table.foreign == ("table flags ['dormant']", "flowtable ft")


def test_differences_name_each_object_once() -> None:
    kernel = read_listing(KERNEL).state
    changed = read_listing(
        listing(
            {
                "chain": {
                    **T,
                    "name": "forward",
                    "handle": 2,
                    "type": "filter",
                    "hook": "forward",
                    "prio": 10,
                    "policy": "accept",
                }
            },
            {"chain": {**T, "name": "extra", "handle": 1}},
            {"set": {**T, "name": "pods-v4", "handle": 6, "type": "ipv4_addr", "elem": ["10.244.1.3"]}},
        )
    ).state
    assert differences(changed, kernel) == (
        "chain extra: not in the plan",
        "chain forward: declaration differs",
        "chain ingress-1: missing",
        "set cidrs-v4: missing",
        "set cidrs-v6: missing",
        "map dispatch: missing",
        "set pods-v4: 1 elements missing, 1 extra, or differing",
    )
    assert differences(kernel, kernel) == ()


RULE_KEYS = [
    pytest.param("x/allow ingress[2]", RuleKey("x", "allow", "ingress", 2), id="plain"),
    pytest.param("kube-system/a.b-c egress[10]", RuleKey("kube-system", "a.b-c", "egress", 10), id="dots"),
    pytest.param(
        rule_comment("ns/" + "p" * 200, "egress", index=1),
        RuleKey("ns", "p" * 112 + "...", "egress", 1),
        id="cut-long-name",
    ),
    pytest.param("ingress isolation: x/a", None, id="isolation-rule"),
    pytest.param("established and related", None, id="base-rule"),
    pytest.param("x/allow sideways[1]", None, id="no-direction"),
]


@pytest.mark.parametrize(("comment", "key"), RULE_KEYS)
def test_rule_keys_are_read_from_comments(comment: str, key: RuleKey | None) -> None:
    assert rule_key(comment) == key


ISOLATION_KEYS = [
    pytest.param(
        "ingress isolation: x/a, y/b",
        ("x/a", "y/b"),
        [RuleKey("x", "a", "ingress", ISOLATION), RuleKey("y", "b", "ingress", ISOLATION)],
        id="every-isolating-policy",
    ),
    # The comment is cut at 128 bytes; the policies come from the plan's chain, not from it.
    pytest.param(
        "egress isolation: x/a, x/...",
        ("x/a", "x/bb", "x/cc"),
        [
            RuleKey("x", "a", "egress", ISOLATION),
            RuleKey("x", "bb", "egress", ISOLATION),
            RuleKey("x", "cc", "egress", ISOLATION),
        ],
        id="cut-comment",
    ),
    pytest.param("x/allow ingress[2]", ("x/allow",), [], id="a-policy-rule"),
    pytest.param("ingress isolation: x/a", (), [], id="not-a-per-pod-chain"),
    pytest.param("sideways isolation: x/a", ("x/a",), [], id="no-direction"),
]


@pytest.mark.parametrize(("comment", "isolating", "keys"), ISOLATION_KEYS)
def test_isolation_drops_count_under_each_isolating_policy(
    comment: str, isolating: tuple[str, ...], keys: list[RuleKey]
) -> None:
    assert isolation_keys(comment, isolating) == keys


@pytest.mark.parametrize(
    ("backoff", "delays"),
    [
        pytest.param(Backoff(), [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0], id="default"),
        pytest.param(Backoff(initial=1, factor=3, cap=10), [1, 3, 9, 10], id="capped"),
    ],
)
def test_backoff_grows_and_is_capped(backoff: Backoff, delays: list[float]) -> None:
    assert [backoff.delay(n) for n in range(1, len(delays) + 1)] == delays
