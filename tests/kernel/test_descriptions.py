"""``nft list table inet stockade`` tells a person what each chain and set is for, after a load
through libnftables JSON (the applier's path).

nftables 1.0.6's JSON parser drops the ``comment`` of chains, sets and maps without an error
(the text parser keeps them), while rule comments reach the kernel. So every chain says what it is
for in its first rule (base chains, which every packet walks, in their first real rule's comment;
the others in a comment-only rule), and every per-pod chain then describes each set it
uses. The first test pins the finding itself: when it fails, libnftables carries those
comments and the plan can use them directly.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import pytest

from compiler.ir import AddrInSet, DaddrProtoPortInSet, NodePlan, is_description
from compiler.plan import build_plan
from compiler.render_json import render_json
from tests.kernel.test_render_load import NODE, lab_model, load_json, nsexec, scratch_netns

pytestmark = pytest.mark.kernel


@pytest.fixture(scope="module")
def ns() -> Iterator[str]:
    with scratch_netns("about") as name:
        yield name


def _blocks(listing: str) -> dict[str, list[str]]:
    """``chain``/``set``/``map`` name -> the lines of its block in ``nft list table`` output."""
    blocks: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in listing.splitlines():
        head = re.fullmatch(r"\t(?:chain|set|map) (\S+) \{", line)
        if head:
            current = blocks.setdefault(head.group(1), [])
        elif line == "\t}":
            current = None
        elif current is not None:
            current.append(line.strip())
    return blocks


def test_libnftables_json_drops_chain_and_set_comments(ns: str) -> None:
    doc = {
        "nftables": [
            {"add": {"table": {"family": "inet", "name": "probe"}}},
            {"add": {"chain": {"family": "inet", "table": "probe", "name": "c", "comment": "chain text"}}},
            {
                "add": {
                    "set": {
                        "family": "inet",
                        "table": "probe",
                        "name": "s",
                        "type": "ipv4_addr",
                        "comment": "set text",
                    }
                }
            },
        ]
    }
    load_json(ns, doc)
    try:
        listing = nsexec(ns, "nft", "list", "table", "inet", "probe").stdout
    finally:
        nsexec(ns, "nft", "delete", "table", "inet", "probe")
    assert "chain text" not in listing and "set text" not in listing, (
        "libnftables now keeps chain/set comments: describe chains and sets with real comments"
    )


def _plan() -> NodePlan:
    """Pod peers and ipBlocks: pods-* and cidrs-* sets, ingress and egress chains."""
    plan = build_plan(lab_model(), node=NODE)
    kinds = {s.name.split("-")[0] for s in plan.sets}
    assert {"pods", "cidrs"} <= kinds and len(plan.pod_chains) >= 2, "a plan with both kinds of peers"
    return plan


def test_every_chain_and_every_set_a_chain_uses_is_described(ns: str) -> None:
    plan = _plan()
    load_json(ns, render_json(plan))
    blocks = _blocks(nsexec(ns, "nft", "list", "table", "inet", "stockade").stdout)
    described_sets: set[str] = set()
    for chain in plan.chains:
        lines = [line for line in blocks[chain.name] if not line.startswith("type filter hook")]
        if chain in plan.base_chains:  # on every packet's path: the note rides on the first rule
            assert f' comment "{chain.note}: ' in lines[0] and not lines[0].startswith("continue")
        else:
            assert lines[0] == f'continue comment "{chain.note}"', chain.name
        described_sets |= {
            m.group(1) for line in lines if (m := re.fullmatch(r'continue comment "set (\S+): .+"', line))
        }
    used = {
        m.set_name
        for chain in plan.pod_chains
        for rule in chain.rules
        for m in rule.matches
        if isinstance(m, AddrInSet | DaddrProtoPortInSet)
    }
    assert used and used == described_sets
    for name in used:  # and the description says what the set holds, as the plan does
        note = next(s.note for s in plan.sets if s.name == name)
        assert any(note[:60] in line for block in blocks.values() for line in block), name


def test_descriptions_survive_a_json_listing(ns: str) -> None:
    """The applier reads the table back as JSON: description rules list as plain rules, no error."""
    plan = _plan()
    load_json(ns, render_json(plan))
    result = nsexec(ns, "nft", "-j", "list", "table", "inet", "stockade")
    assert result.stderr == ""
    rules = [o["rule"] for o in json.loads(result.stdout)["nftables"] if "rule" in o]
    descriptions = [r for r in rules if r["expr"] == [{"continue": None}]]
    expected = [r for c in plan.chains for r in c.rules if is_description(r)]
    assert sorted(r["comment"] for r in descriptions) == sorted(r.comment for r in expected)
