"""Plan to plan: the libnftables commands that turn a table holding one plan into another.

A full load (:func:`compiler.render_json.render_json`) swaps the whole table, which resets every
counter and re-creates every set. :func:`diff_plans` instead changes only what differs, so a
policy or namespace change keeps the counters of every rule it does not touch, and an agent can
adopt a table it finds on start (or repair drift) by diffing the plan it believes is loaded
against the one it wants.

The comparison is generic over the plan: chains, sets and maps are compared by name and by the
libnftables JSON they render to, so a field added to the IR (a comment, a flag) is diffed without
changing this module. Per object:

- a set or map in both plans with the same declaration keeps its identity: only elements (or map
  entries, by key) that differ are deleted and added. A declaration that differs (type, flags,
  comment) cannot be changed in place: the object is deleted and created again;
- a chain in both plans with the same declaration and the same rules is left alone, so its rules
  keep their counters. If its rules differ, it is flushed and refilled (libnftables JSON removes
  or replaces a single rule only by kernel handle, which a pure diff does not know; per-pod
  chains are named by their content, so a changed policy gives new chains rather than refilled
  ones). A chain whose declaration differs (hook, priority, comment) is deleted and created again.

:func:`diff_states` does the same from a :class:`TableState`, which the agent also builds from
``nft -j list table`` to diff from what the kernel really holds (adoption, drift repair).

The commands are one transaction, ordered so that no command references a missing object and
nothing is deleted while something still references it:

1. flush every chain that is refilled, re-created or removed (their rules may name objects that go);
2. delete elements and map entries that go or change (and entries that jump to a re-created chain);
3. delete maps that are removed or re-declared, then re-declared sets, then re-created chains;
4. add chains (new and re-created), empty;
5. add sets and maps (new and re-declared) with their elements: entries jump to chains that exist;
6. add elements and map entries to the sets and maps that stay;
7. add the rules of new, re-created and refilled chains: every set, map and chain they name exists;
8. delete removed chains, then removed sets: nothing references them any more.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from compiler.ir import Chain, NodePlan, PlanSet, VerdictMap
from compiler.render_json import Json, chain_json, elements_cmd, map_json, ref_json, rule_json, set_json


@dataclass(frozen=True)
class Container:
    """A set or a map as the kernel holds it: its declaration and its elements by key."""

    kind: str  # "set" or "map"
    declaration: Json
    elements: dict[str, Any]  # canonical key -> the element as libnftables JSON

    def key_of(self, element: Any) -> Any:
        """What deletes the element: a map entry by its key, a set element by itself."""
        return element[0] if self.kind == "map" else element


@dataclass(frozen=True)
class ChainState:
    """A chain's declaration (``{"family": ..., "name": ..., "hook": ...}``) and its rules, each
    as ``{"rule": {...}}``, in order."""

    declaration: Json
    rules: tuple[Json, ...]


@dataclass(frozen=True)
class TableState:
    """Table ``inet stockade`` as libnftables JSON, object by object: what :func:`diff_states`
    compares. :func:`plan_state` builds it from a plan; the node agent builds it from what
    ``nft -j list table`` shows, so it can diff from what the kernel actually holds."""

    chains: dict[str, ChainState]
    containers: dict[str, Container]


def plan_state(plan: NodePlan, *, reuse: tuple[NodePlan, TableState] | None = None) -> TableState:
    """The plan object by object. With ``reuse`` (a previous plan and its state), an object of
    ``plan`` that *is* (identity, not equality) the previous plan's object of the same name keeps
    its converted form: the incremental compiler hands out the same frozen objects for whatever
    a change did not touch, so converting a 10,000-pod plan after one change costs what it touched.
    """
    if reuse is None:
        return TableState(chains=_chains(plan), containers=_containers(plan))
    before, state = reuse
    old_boxes: dict[str, PlanSet | VerdictMap] = {b.name: b for b in (*before.sets, *before.maps)}
    old_chains: dict[str, object] = {c.name: c for c in before.chains}
    boxes: dict[str, Container] = {}
    for box in (*plan.sets, *plan.maps):
        kept, prev = state.containers.get(box.name), old_boxes.get(box.name)
        if kept is not None and prev is box:
            boxes[box.name] = kept
        elif kept is not None and type(prev) is type(box):
            boxes[box.name] = _updated(prev, kept, box)
        else:
            boxes[box.name] = _container(box)
    chains: dict[str, ChainState] = {}
    for chain in plan.chains:
        was = state.chains.get(chain.name)
        chains[chain.name] = was if was is not None and old_chains.get(chain.name) is chain else _chain(chain)
    return TableState(chains=chains, containers=boxes)


def canonical(value: Any) -> str:
    """The key of a set element or a map entry's key in :attr:`Container.elements`."""
    if (
        isinstance(value, str)
        and value.isascii()
        and value.isprintable()
        and not ('"' in value or "\\" in value)
    ):
        # An address: what json.dumps gives, without an encoder per call (a 10,000-pod plan has
        # tens of thousands of elements, and the dispatch maps are converted after every change
        # of a local pod).
        return f'"{value}"'
    return _CANONICAL.encode(value)


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"))


def _containers(plan: NodePlan) -> dict[str, Container]:
    return {box.name: _container(box) for box in (*plan.sets, *plan.maps)}


def _container(box: PlanSet | VerdictMap) -> Container:
    if isinstance(box, VerdictMap):
        body = map_json(box)["map"]
        entries = body.pop("elem", [])
        return Container("map", body, {canonical(e[0]): e for e in entries})
    body = set_json(box)["set"]
    elements = body.pop("elem", [])
    return Container("set", body, {canonical(e): e for e in elements})


def _updated(prev: PlanSet | VerdictMap, kept: Container, box: PlanSet | VerdictMap) -> Container:
    """``box``'s container from ``kept``, the container of ``prev`` (same name and kind), by
    converting only the elements that changed: a peer set of thousands of addresses that gained
    one costs one element, not thousands. Elements keep ``kept``'s order with new ones last."""
    if isinstance(box, VerdictMap):
        assert isinstance(prev, VerdictMap)
        old_entries, new_entries = set(prev.entries), set(box.entries)
        gone_maps = dataclasses.replace(box, entries=tuple(old_entries - new_entries))
        came_maps = dataclasses.replace(box, entries=tuple(new_entries - old_entries))
        fresh = _container(came_maps)
        gone_keys = {canonical(e[0]) for e in map_json(gone_maps)["map"].get("elem", [])}
    else:
        assert not isinstance(prev, VerdictMap)
        old_elements, new_elements = set(prev.elements), set(box.elements)
        gone_set = dataclasses.replace(box, elements=tuple(old_elements - new_elements))  # type: ignore[arg-type]
        came_set = dataclasses.replace(box, elements=tuple(new_elements - old_elements))  # type: ignore[arg-type]
        fresh = _container(came_set)
        gone_keys = {canonical(e) for e in set_json(gone_set)["set"].get("elem", [])}
    if fresh.declaration != kept.declaration:
        return _container(box)  # re-declared (a comment or type changed): convert it whole
    elements = {k: e for k, e in kept.elements.items() if k not in gone_keys}
    elements.update(fresh.elements)
    return Container(kept.kind, kept.declaration, elements)


def _chains(plan: NodePlan) -> dict[str, ChainState]:
    return {c.name: _chain(c) for c in plan.chains}


def _chain(chain: Chain) -> ChainState:
    return ChainState(chain_json(chain)["chain"], tuple(rule_json(chain.name, r) for r in chain.rules))


def references(value: Any) -> Iterator[str]:
    """Names of the sets, maps (``@name``) and chains (jump and goto targets) a piece of
    libnftables JSON refers to; sets, maps and chains of one table never share a name."""
    if isinstance(value, str):
        if value.startswith("@"):
            yield value[1:]
    elif isinstance(value, list):
        for item in value:
            yield from references(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            if key in ("jump", "goto") and isinstance(item, dict):
                yield str(item["target"])
            else:
                yield from references(item)


def _names_referenced(values: Iterable[Any]) -> set[str]:
    return {name for value in values for name in references(value)}


def diff_plans(old: NodePlan, new: NodePlan) -> dict[str, Any]:
    """One libnftables transaction that turns table ``inet stockade`` holding ``old`` into one
    holding ``new``; ``{"nftables": []}`` when they are equal."""
    if (old.family, old.table) != (new.family, new.table):
        raise ValueError(f"diff_plans: table {old.family} {old.table} is not {new.family} {new.table}")
    return diff_states(plan_state(old), plan_state(new))


def diff_states(old: TableState, new: TableState) -> dict[str, Any]:
    """:func:`diff_plans` for table states: the one transaction from a table holding ``old``."""
    old_chains, new_chains = old.chains, new.chains
    old_boxes, new_boxes = old.containers, new.containers

    redeclared = {
        n
        for n in old_boxes.keys() & new_boxes.keys()
        if old_boxes[n] is not new_boxes[n]
        and (old_boxes[n].kind, old_boxes[n].declaration) != (new_boxes[n].kind, new_boxes[n].declaration)
    }
    recreated = {
        n
        for n in old_chains.keys() & new_chains.keys()
        if old_chains[n] is not new_chains[n] and old_chains[n].declaration != new_chains[n].declaration
    }
    vanishing = redeclared | recreated  # objects that disappear for a moment inside the transaction
    # An object that *is* the old one (plan_state with reuse) is unchanged: compared for free.
    refilled = {
        n
        for n in old_chains.keys() & new_chains.keys()
        if n not in recreated
        and (
            (old_chains[n] is not new_chains[n] and old_chains[n].rules != new_chains[n].rules)
            or (vanishing and _names_referenced(old_chains[n].rules) & vanishing)
        )
    }
    removed_chains = [n for n in old_chains if n not in new_chains]
    removed_boxes = [n for n in old_boxes if n not in new_boxes]
    kept_boxes = [n for n in new_boxes if n in old_boxes and n not in redeclared]

    cmds: list[Json] = []
    # 1. Empty every chain whose rules go, so nothing below is still referenced by an old rule.
    for name in old_chains:
        if old_chains[name].rules and (name in refilled or name in recreated or name not in new_chains):
            cmds.append({"flush": ref_json("chain", name)})
    # 2. and 6. Elements of the sets and maps that stay.
    removals: list[Json] = []
    additions: list[Json] = []
    for name in kept_boxes:
        was, now = old_boxes[name], new_boxes[name]
        if was is now and not (recreated and was.kind == "map"):
            continue
        stale = {k for k, e in was.elements.items() if recreated and _names_referenced([e]) & recreated}
        gone = [was.key_of(e) for k, e in was.elements.items() if now.elements.get(k) != e or k in stale]
        came = [e for k, e in now.elements.items() if was.elements.get(k) != e or k in stale]
        if gone:
            removals.append(elements_cmd("delete", name, gone))
        if came:
            additions.append(elements_cmd("add", name, came))
    cmds += removals
    # 3. Objects that are re-declared or removed and that nothing references now.
    doomed_maps = [
        n for n in old_boxes if old_boxes[n].kind == "map" and (n in redeclared or n not in new_boxes)
    ]
    cmds += [{"delete": ref_json("map", n)} for n in doomed_maps]
    cmds += [
        {"delete": ref_json("set", n)} for n in old_boxes if old_boxes[n].kind == "set" and n in redeclared
    ]
    cmds += [{"delete": ref_json("chain", n)} for n in old_chains if n in recreated]
    # 4. and 5. New objects, chains first: map entries and rules jump to them.
    cmds += [
        {"add": {"chain": new_chains[n].declaration}}
        for n in new_chains
        if n in recreated or n not in old_chains
    ]
    for name, box in new_boxes.items():
        if name in redeclared or name not in old_boxes:
            body = dict(box.declaration)
            if box.elements:
                body["elem"] = list(box.elements.values())
            cmds.append({"add": {box.kind: body}})
    cmds += additions
    # 7. Rules, in each chain's order; every object they name exists by now.
    for name, chain in new_chains.items():
        if name in refilled or name in recreated or name not in old_chains:
            cmds += [{"add": rule} for rule in chain.rules]
    # 8. What is gone for good.
    cmds += [{"delete": ref_json("chain", n)} for n in removed_chains]
    cmds += [{"delete": ref_json("set", n)} for n in removed_boxes if old_boxes[n].kind == "set"]
    return {"nftables": cmds}
