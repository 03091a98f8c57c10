"""compiler.render_json and compiler.render_nft: shape, order, escaping, and agreement."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from compiler.ir import (
    ACCEPT,
    AddrInSet,
    AddrPortElement,
    AddrPortSet,
    AddrSet,
    CtStateIn,
    DaddrProtoPortInSet,
    DportIn,
    FibSaddrIifMissing,
    Icmpv6TypeIn,
    IfnamePrefix,
    IifLoopback,
    Interval,
    IntervalSet,
    L4protoIn,
    Match,
    PlanSet,
    PortRange,
    Rule,
    VmapLookup,
)
from compiler.plan import build_plan
from compiler.render_json import match_json, render_json, rule_json, set_json
from compiler.render_nft import match_text, render_nft, rule_text, set_text
from tests.unit import clustergen, hostile

MATCHES: list[Any] = [
    pytest.param(
        AddrInSet(4, "saddr", "pods-a-v4"),
        "ip saddr @pods-a-v4",
        {
            "match": {
                "op": "==",
                "left": {"payload": {"protocol": "ip", "field": "saddr"}},
                "right": "@pods-a-v4",
            }
        },
        id="addr-in-set",
    ),
    pytest.param(
        AddrInSet(6, "daddr", "local-pods-v6", negate=True),
        "ip6 daddr != @local-pods-v6",
        {
            "match": {
                "op": "!=",
                "left": {"payload": {"protocol": "ip6", "field": "daddr"}},
                "right": "@local-pods-v6",
            }
        },
        id="addr-not-in-set",
    ),
    pytest.param(
        DportIn("TCP", (PortRange(80, 80),)),
        "tcp dport 80",
        {"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": 80}},
        id="one-port",
    ),
    pytest.param(
        DportIn("SCTP", (PortRange(5000, 5010),)),
        "sctp dport 5000-5010",
        {
            "match": {
                "op": "==",
                "left": {"payload": {"protocol": "sctp", "field": "dport"}},
                "right": {"range": [5000, 5010]},
            }
        },
        id="one-range",
    ),
    pytest.param(
        DportIn("UDP", (PortRange(53, 53), PortRange(8000, 8080))),
        "udp dport { 53, 8000-8080 }",
        {
            "match": {
                "op": "==",
                "left": {"payload": {"protocol": "udp", "field": "dport"}},
                "right": {"set": [53, {"range": [8000, 8080]}]},
            }
        },
        id="port-set",
    ),
    pytest.param(
        L4protoIn(("SCTP",)),
        "meta l4proto sctp",
        {"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": "sctp"}},
        id="protocol",
    ),
    pytest.param(
        L4protoIn(("TCP", "UDP")),
        "meta l4proto { tcp, udp }",
        {"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": {"set": ["tcp", "udp"]}}},
        id="protocols",
    ),
    pytest.param(
        DaddrProtoPortInSet(4, "named-a-v4"),
        "ip daddr . meta l4proto . th dport @named-a-v4",
        {
            "match": {
                "op": "==",
                "left": {
                    "concat": [
                        {"payload": {"protocol": "ip", "field": "daddr"}},
                        {"meta": {"key": "l4proto"}},
                        {"payload": {"protocol": "th", "field": "dport"}},
                    ]
                },
                "right": "@named-a-v4",
            }
        },
        id="named-port-concat",
    ),
    pytest.param(
        CtStateIn(("established", "related")),
        "ct state established,related",
        {"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": ["established", "related"]}},
        id="ct-state",
    ),
    pytest.param(
        IifLoopback(),
        "meta iiftype loopback",
        {"match": {"op": "==", "left": {"meta": {"key": "iiftype"}}, "right": "loopback"}},
        id="loopback",
    ),
    pytest.param(
        IfnamePrefix("iifname", "stk"),
        'iifname "stk*"',
        {"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": "stk*"}},
        id="iifname-prefix",
    ),
    pytest.param(
        IfnamePrefix("oifname", "cali"),
        'oifname "cali*"',
        {"match": {"op": "==", "left": {"meta": {"key": "oifname"}}, "right": "cali*"}},
        id="oifname-prefix",
    ),
    pytest.param(
        FibSaddrIifMissing(),
        "fib saddr . iif oif missing",
        {
            "match": {
                "op": "==",
                "left": {"fib": {"result": "oif", "flags": ["saddr", "iif"]}},
                "right": False,
            }
        },
        id="fib",
    ),
    pytest.param(
        Icmpv6TypeIn(("nd-neighbor-solicit",)),
        "icmpv6 type nd-neighbor-solicit",
        {
            "match": {
                "op": "==",
                "left": {"payload": {"protocol": "icmpv6", "field": "type"}},
                "right": "nd-neighbor-solicit",
            }
        },
        id="icmpv6",
    ),
]


@pytest.mark.parametrize(("match", "text", "js"), MATCHES)
def test_matches_render_alike(match: Match, text: str, js: dict[str, Any]) -> None:
    assert match_text(match) == text
    assert match_json(match) == js


@pytest.mark.parametrize(
    ("rule", "text", "expr_tail"),
    [
        pytest.param(
            Rule((DportIn("TCP", (PortRange(80, 80),)),), ACCEPT, "x/a ingress[0]"),
            'tcp dport 80 counter accept comment "x/a ingress[0]"',
            [{"counter": None}, {"accept": None}],
            id="counted-accept",
        ),
        pytest.param(
            Rule((), VmapLookup(6, "saddr", "dispatch-egress-v6"), "dispatch", counter=False),
            'ip6 saddr vmap @dispatch-egress-v6 comment "dispatch"',
            [
                {
                    "vmap": {
                        "key": {"payload": {"protocol": "ip6", "field": "saddr"}},
                        "data": "@dispatch-egress-v6",
                    }
                }
            ],
            id="vmap-dispatch",
        ),
    ],
)
def test_rules_render_alike(rule: Rule, text: str, expr_tail: list[Any]) -> None:
    assert rule_text(rule) == text
    body = rule_json("c", rule)["rule"]
    assert body["expr"][len(rule.matches) :] == expr_tail
    assert body["comment"] == rule.comment and body["chain"] == "c"


@pytest.mark.parametrize(
    ("plan_set", "text_lines", "body"),
    [
        pytest.param(
            AddrSet("pods-a-v4", 4, ()),
            ["\tset pods-a-v4 {", "\t\ttype ipv4_addr", "\t}"],
            {"type": "ipv4_addr"},
            id="empty-set-declared",
        ),
        pytest.param(
            IntervalSet(
                "cidrs-a-v4",
                4,
                (Interval("10.0.0.0", "10.0.255.255", 16), Interval("10.2.0.0", "10.2.0.9", None)),
            ),
            [
                "\tset cidrs-a-v4 {",
                "\t\ttype ipv4_addr",
                "\t\tflags interval",
                "\t\telements = { 10.0.0.0/16, 10.2.0.0-10.2.0.9 }",
                "\t}",
            ],
            {
                "type": "ipv4_addr",
                "flags": ["interval"],
                "elem": [{"prefix": {"addr": "10.0.0.0", "len": 16}}, {"range": ["10.2.0.0", "10.2.0.9"]}],
            },
            id="intervals",
        ),
        pytest.param(
            AddrPortSet("named-a-v6", 6, (AddrPortElement("fd00::1", "SCTP", 5000),)),
            [
                "\tset named-a-v6 {",
                "\t\ttype ipv6_addr . inet_proto . inet_service",
                "\t\telements = { fd00::1 . sctp . 5000 }",
                "\t}",
            ],
            {
                "type": ["ipv6_addr", "inet_proto", "inet_service"],
                "elem": [{"concat": ["fd00::1", "sctp", 5000]}],
            },
            id="concat",
        ),
    ],
)
def test_sets_render_alike(plan_set: PlanSet, text_lines: list[str], body: dict[str, Any]) -> None:
    assert set_text(plan_set) == text_lines
    assert set_json(plan_set) == {
        "set": {"family": "inet", "table": "stockade", "name": plan_set.name, **body}
    }


def test_long_element_lists_wrap() -> None:
    s = AddrSet("pods-a-v4", 4, tuple(f"10.0.0.{i}" for i in range(20)))
    lines = set_text(s)
    assert lines[2] == "\t\telements = {" and lines[-2] == "\t\t}"
    assert sum(line.count("10.0.0.") for line in lines) == 20


def _model() -> Any:
    return clustergen.random_model(3)


def test_json_is_one_replacing_transaction_in_dependency_order() -> None:
    plan = build_plan(_model(), node="n1")
    commands = render_json(plan)["nftables"]
    assert commands[0] == {"metainfo": {"json_schema_version": 1}}
    table = {"table": {"family": "inet", "name": "stockade"}}
    assert commands[1:4] == [{"add": table}, {"delete": table}, {"add": table}]
    kinds = [next(iter(c["add"])) for c in commands[4:]]
    assert kinds == sorted(kinds, key=["chain", "set", "map", "rule"].index)  # chains, sets, maps, rules
    assert kinds.count("chain") == len(plan.chains) and kinds.count("set") == len(plan.sets)
    assert kinds.count("rule") == sum(len(c.rules) for c in plan.chains)
    json.dumps(commands)  # plain JSON values only


def test_text_is_the_same_idiom_and_objects() -> None:
    plan = build_plan(_model(), node="n1")
    text = render_nft(plan)
    lines = [line for line in text.splitlines() if not line.startswith("#")]
    assert lines[:3] == ["table inet stockade {}", "delete table inet stockade", "table inet stockade {"]
    assert lines[-1] == "}"
    declared = re.findall(r"^\t(?:set|map|chain) (\S+) \{$", text, flags=re.M)
    assert declared == [s.name for s in plan.sets] + [m.name for m in plan.maps] + [
        c.name for c in plan.chains
    ]
    assert text.count(" comment ") == sum(len(c.rules) for c in plan.chains)


def test_base_chains_in_text() -> None:
    text = render_nft(build_plan(_model(), node="n1"))
    for line in (
        "\t\ttype filter hook prerouting priority raw; policy accept;",
        "\t\ttype filter hook input priority filter; policy accept;",
        "\t\ttype filter hook forward priority filter; policy accept;",
    ):
        assert line in text


def _outside_strings(text: str) -> str:
    """The text without `#` lines and without the contents of quoted strings."""
    kept = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    return re.sub(r'"[^"\n]*"', '""', "\n".join(kept))


def test_hostile_api_text_stays_inside_comments() -> None:
    plan = build_plan(hostile.model(), node=hostile.NODE)
    text = render_nft(plan)
    bare = _outside_strings(text)
    for fragment in hostile.BAD_FRAGMENTS:
        assert fragment not in bare
    # Every quoted string is closed on its own line; every `#` line is one line.
    for line in text.splitlines():
        assert line.count('"') % 2 == 0
    comments = [r.comment for c in plan.chains for r in c.rules]
    assert all('"' not in c and len(c.encode()) <= 128 and c.isprintable() for c in comments)
    assert any(c.endswith("... ingress[0]") for c in comments)  # the 250-char policy name was cut
    doc = render_json(plan)
    assert json.loads(json.dumps(doc)) == doc


def test_hostile_model_still_compiles_to_working_rules() -> None:
    plan = build_plan(hostile.model(), node=hostile.NODE)
    assert len(plan.local_pods) == len(hostile.VALUES)
    named = [s for s in plan.sets if isinstance(s, AddrPortSet)]
    assert named and all(e.port >= 8080 for s in named for e in s.elements)
