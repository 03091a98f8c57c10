"""diff_plans in the kernel: a table holding ``old`` plus the diff is the table a fresh load of
``new`` gives, and rules the change does not touch keep their counters.

For random pairs of clusters (unrelated ones, pod churn, policy edits, namespace relabels, the
node's podCIDRs changing; ``tests.unit.clustergen.random_pair``) compiled for one node: load
``old`` through libnftables with every rule's counter set to its own non-zero value, apply
``diff_plans(old, new)`` as one libnftables transaction, and compare ``nft -j list table inet
stockade`` with a fresh load of ``new`` in a second namespace (handles and counter values left
out). Then the way back, ``diff_plans(new, old)``, on the same table. Examples are few (each
costs six loads); CI (``CI`` set) runs a fixed sequence; ``STOCKADE_PLANDIFF_EXAMPLES`` changes
the count.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compiler.ir import NodePlan
from compiler.plan import build_plan
from compiler.plandiff import diff_plans
from compiler.render_json import render_json
from tests.kernel.test_render_load import listing, load_json, nsexec, scratch_netns
from tests.unit import clustergen

pytestmark = pytest.mark.kernel

Counters = dict[str, list[tuple[str, Any]]]  # chain -> [(rule without handle and counter, counter)]


@pytest.fixture(scope="module")
def namespaces() -> Iterator[tuple[str, str]]:
    with scratch_netns("diff") as diff_ns, scratch_netns("fresh") as fresh_ns:
        yield diff_ns, fresh_ns


def with_counters(doc: dict[str, Any]) -> dict[str, Any]:
    """The full load with rule number i counting i packets and 100 * i bytes, so a rule that is
    deleted and added again (counting from zero) cannot pass for one that stayed."""
    out: list[dict[str, Any]] = []
    number = 0
    for command in doc["nftables"]:
        rule = command.get("add", {}).get("rule")
        if rule is None:
            out.append(command)
        else:
            number += 1
            expr = [
                {"counter": {"packets": number, "bytes": 100 * number}} if "counter" in e else e
                for e in rule["expr"]
            ]
            out.append({"add": {"rule": {**rule, "expr": expr}}})
    return {"nftables": out}


def counters(ns: str) -> Counters:
    doc = json.loads(nsexec(ns, "nft", "-j", "list", "table", "inet", "stockade").stdout)
    out: Counters = {}
    for obj in doc["nftables"]:
        rule = obj.get("rule")
        if rule is None:
            continue
        counter = next((e["counter"] for e in rule["expr"] if "counter" in e), None)
        bare = {k: v for k, v in rule.items() if k != "handle"}
        bare["expr"] = [e for e in rule["expr"] if "counter" not in e]
        out.setdefault(rule["chain"], []).append((json.dumps(bare, sort_keys=True), counter))
    return out


def redeclared(before: dict[str, Any], after: dict[str, Any]) -> set[str]:
    """Sets, maps and chains whose declaration changed under the same name: they are re-created,
    and so are the rules that name them."""
    names = set()
    for kind in ("set", "map", "chain"):
        names |= {
            n
            for n, body in after[kind].items()
            if n in before[kind] and {**before[kind][n], "elem": 0} != {**body, "elem": 0}
        }
    return names


def check_step(namespaces: tuple[str, str], old: NodePlan, new: NodePlan) -> None:
    diff_ns, fresh_ns = namespaces
    before, counted = listing(diff_ns), counters(diff_ns)
    assert before == listing_of(fresh_ns, old), "the table does not hold the old plan"
    load_json(diff_ns, diff_plans(old, new))  # one transaction
    after = listing_of(fresh_ns, new)
    assert listing(diff_ns) == after
    now = counters(diff_ns)
    gone = redeclared(before, after)
    kept = [
        chain
        for chain, rules in counted.items()
        if [r for r, _ in now.get(chain, [])] == [r for r, _ in rules]
        and not any(f'"@{n}"' in r or f'"target": "{n}"' in r for r, _ in rules for n in gone)
    ]
    for chain in kept:
        assert now[chain] == counted[chain], f"chain {chain} is unchanged but its counters are not"
    assert any(counted[c] for c in kept) or not counted, (
        "no rule survived: the example tests nothing about counters"
    )


def listing_of(ns: str, plan: NodePlan) -> dict[str, Any]:
    load_json(ns, render_json(plan))
    return listing(ns)


@settings(
    max_examples=int(os.environ.get("STOCKADE_PLANDIFF_EXAMPLES", "30")),
    deadline=None,
    derandomize=bool(os.environ.get("CI")),
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    seed=st.integers(0, 10**6),
    kind=st.sampled_from(clustergen.PAIR_KINDS),
    node=st.sampled_from(clustergen.NODES),
)
def test_diff_gives_what_a_fresh_load_gives_and_keeps_counters(
    namespaces: tuple[str, str], seed: int, kind: str, node: str
) -> None:
    old_model, new_model = clustergen.random_pair(seed, kind)
    old, new = build_plan(old_model, node=node), build_plan(new_model, node=node)
    diff_ns, _ = namespaces
    load_json(diff_ns, with_counters(render_json(old)))
    check_step(namespaces, old, new)
    check_step(namespaces, new, old)
