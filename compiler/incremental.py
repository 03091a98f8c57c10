"""Pod churn without reloading chains: set elements, map entries, and whole per-pod chains only.

A pod that appears, leaves, or changes labels, ports, phase or addresses changes:

- elements of the peer sets its addresses are (or were) in, and of the named-port sets;
- if it runs on this node: its entries in the dispatch maps and the local-pods sets, and, when
  the policies isolating it change, which per-pod chain it dispatches to. Chains are named by
  content, so that is a new chain added (if no other pod uses it yet) and an unused one removed,
  along with sets only they used. No existing chain is ever rewritten.

Policies, namespaces and nodes changing is not churn: compile the plan again and load it whole.

The plan :class:`NodeCompiler` keeps after any sequence of updates equals ``build_plan`` of the
resulting model (tests/unit/test_incremental.py checks it on random changes), and
:func:`render_delta_json` turns a delta into one libnftables transaction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from compiler.cluster import ClusterModel, with_cni_addresses
from compiler.ir import Chain, MapEntry, NodePlan, PlanSet, Verdict, VerdictMap
from compiler.model import Pod
from compiler.nodestate import NodeState
from compiler.options import DEFAULT_OPTIONS, CompileOptions
from compiler.peersets import CidrSetSpec, Element
from compiler.podindex import addr_key, family_of, pod_addresses
from compiler.render_json import (
    chain_json,
    elements_cmd,
    map_entry_json,
    ref_json,
    rule_json,
    set_elements,
    set_json,
)


@dataclass(frozen=True)
class PlanDelta:
    """What changes in the kernel, in the order :func:`render_delta_json` applies it.

    ``add_elements`` / ``delete_elements`` and the map entry fields hold sets and maps that carry
    only the elements or entries to add or delete. A map entry whose verdict changes is deleted
    and added again.
    """

    add_sets: tuple[PlanSet, ...] = ()
    add_chains: tuple[Chain, ...] = ()
    delete_elements: tuple[PlanSet, ...] = ()
    add_elements: tuple[PlanSet, ...] = ()
    delete_map_entries: tuple[VerdictMap, ...] = ()
    add_map_entries: tuple[VerdictMap, ...] = ()
    delete_chains: tuple[str, ...] = ()
    delete_sets: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not any(
            (
                self.add_sets,
                self.add_chains,
                self.delete_elements,
                self.add_elements,
                self.delete_map_entries,
                self.add_map_entries,
                self.delete_chains,
                self.delete_sets,
            )
        )


@dataclass
class _Journal:
    sets: set[str]
    chains: set[str]
    elements: dict[str, frozenset[Element]] = field(default_factory=dict)
    maps: dict[str, dict[str, Verdict]] = field(default_factory=dict)


class NodeCompiler(NodeState):
    """A node's compiled state that follows pod churn; ``plan`` is always the full current plan.

    Pods are identified by UID: an event about a pod names it by ``metadata.uid``, so a late
    DELETE of a pod's previous incarnation (a StatefulSet pod re-created under the same name)
    removes that incarnation only. Addresses the CNI plugin reports (:meth:`update_cni`) apply
    by the rules of :mod:`compiler.cluster`.
    """

    def __init__(self, model: ClusterModel, *, node: str, options: CompileOptions = DEFAULT_OPTIONS) -> None:
        self._journal: _Journal | None = None
        self._api: dict[str, Pod] = {p.uid: p for p in model.api_pods}
        self._cni: dict[str, tuple[str, ...]] = dict(model.cni_addresses)
        super().__init__(model, node=node, options=options)

    @property
    def plan(self) -> NodePlan:
        return self.snapshot()

    def touch_set(self, name: str) -> None:
        j = self._journal
        if j is not None and name not in j.elements and name in self.elements:
            j.elements[name] = frozenset(self.elements[name])

    def touch_map(self, name: str) -> None:
        j = self._journal
        if j is not None and name not in j.maps:
            j.maps[name] = dict(self.maps[name])

    def update_pod(self, old: Pod | None, new: Pod | None) -> PlanDelta:
        """Apply one pod event, as the API shows the pod: added (old None), deleted (new None) or
        changed.

        The compiler's own record of the pod (by UID) is what is replaced; ``old`` only names it,
        so a missed or repeated event still converges on the state of ``new``. Should this raise
        (an InternalError), the state is undefined: build a new compiler from the model.
        """
        subject = new if new is not None else old
        if subject is None:
            return PlanDelta()
        if old is not None and new is not None and old.uid != new.uid:
            raise ValueError(f"update_pod: {old.key} changed UID ({old.uid} -> {new.uid}): two pods")
        uid = subject.uid
        if new is None:
            self._api.pop(uid, None)
        else:
            self._api[uid] = new
        return self._replace(uid)

    def update_cni(self, uid: str, addresses: tuple[str, ...]) -> PlanDelta:
        """The CNI plugin reports the addresses of pod ``uid``'s sandbox (none: it was torn down).
        A report for a pod the API has not shown yet is kept until it arrives."""
        if addresses:
            self._cni[uid] = tuple(addresses)
        else:
            self._cni.pop(uid, None)
        return self._replace(uid) if uid in self._api else PlanDelta()

    def _replace(self, key: str) -> PlanDelta:
        """Make the index's pod ``key`` (a UID) the current effective pod, and record the delta."""
        api = self._api.get(key)
        new = None if api is None else with_cni_addresses(api, self._cni.get(key))
        self._journal = _Journal(sets=set(self.specs), chains=set(self.chains))
        self._snapshot = None
        try:
            addresses = set(self.index.addresses(key)) | set(pod_addresses(new) if new is not None else ())
            owners_before = {self.index.owner.get(a) for a in addresses}
            before = self._contributions(addresses)
            self.index.remove(key)
            if new is not None:
                self.index.add(new)
            after = self._contributions(addresses)
            for name in sorted(before.keys() | after.keys()):
                gone = before.get(name, set()) - after.get(name, set())
                came = after.get(name, set()) - before.get(name, set())
                if gone or came:
                    self.touch_set(name)
                    self.elements[name] -= gone
                    self.elements[name] |= came
            owners_after = {self.index.owner.get(a) for a in addresses}
            self.refresh_locals(k for k in {key, *owners_before, *owners_after} if k is not None)
            return self._delta(self._journal)
        finally:
            self._journal = None

    def _contributions(self, addresses: set[str]) -> dict[str, set[Element]]:
        """Per pod-dependent set, the elements these addresses put in it now."""
        out: dict[str, set[Element]] = {}
        families = {family_of(a) for a in addresses}
        for name, spec in self.specs.items():
            if isinstance(spec, CidrSetSpec) or spec.family not in families:
                continue
            found: set[Element] = set()
            for address in addresses:
                found |= self.selection.contribution(spec, address)
            if found:
                out[name] = found
        return out

    def _delta(self, j: _Journal) -> PlanDelta:
        added_sets = sorted(set(self.specs) - j.sets)
        deleted_sets = sorted(j.sets - set(self.specs))
        delete_elements: list[PlanSet] = []
        add_elements: list[PlanSet] = []
        for name in sorted(j.elements):
            if name in deleted_sets or name in added_sets or name not in self.elements:
                continue
            now, was = self.elements[name], j.elements[name]
            if was - now:
                delete_elements.append(self.plan_set(name, was - now))
            if now - was:
                add_elements.append(self.plan_set(name, now - was))
        delete_entries: list[VerdictMap] = []
        add_entries: list[VerdictMap] = []
        for name in sorted(j.maps):
            was_map, now_map = j.maps[name], self.maps[name]
            gone = [a for a, v in was_map.items() if now_map.get(a) != v]
            came = [a for a, v in now_map.items() if was_map.get(a) != v]
            if gone:
                # Deleting takes the key only; the verdict shown is the one being replaced.
                family, direction = self.map_shapes[name]
                entries = tuple(MapEntry(a, was_map[a]) for a in sorted(gone, key=addr_key))
                delete_entries.append(VerdictMap(name, family, direction, entries))
            if came:
                add_entries.append(self.plan_map(name, came))
        return PlanDelta(
            add_sets=tuple(self.plan_set(n) for n in added_sets),
            add_chains=tuple(self.chains[n] for n in sorted(set(self.chains) - j.chains)),
            delete_elements=tuple(delete_elements),
            add_elements=tuple(add_elements),
            delete_map_entries=tuple(delete_entries),
            add_map_entries=tuple(add_entries),
            delete_chains=tuple(sorted(j.chains - set(self.chains))),
            delete_sets=tuple(deleted_sets),
        )


def render_delta_json(delta: PlanDelta) -> dict[str, Any]:
    """The delta as one libnftables transaction, objects before their users and after them in
    deletion: new sets, new chains and their rules, element and map entry changes, then chains
    (flushed, so their references to sets go) and sets nothing uses any more."""
    cmds: list[dict[str, Any]] = []
    cmds += [{"add": set_json(s)} for s in delta.add_sets]
    cmds += [{"add": chain_json(c)} for c in delta.add_chains]
    cmds += [{"add": rule_json(c.name, r)} for c in delta.add_chains for r in c.rules]
    cmds += [elements_cmd("delete", s.name, set_elements(s)) for s in delta.delete_elements]
    cmds += [elements_cmd("add", s.name, set_elements(s)) for s in delta.add_elements]
    # A map element is deleted by its key.
    cmds += [
        elements_cmd("delete", m.name, [map_entry_json(e)[0] for e in m.entries])
        for m in delta.delete_map_entries
    ]
    cmds += [
        elements_cmd("add", m.name, [map_entry_json(e) for e in m.entries]) for m in delta.add_map_entries
    ]
    for name in delta.delete_chains:
        cmds += [{"flush": ref_json("chain", name)}, {"delete": ref_json("chain", name)}]
    cmds += [{"delete": ref_json("set", n)} for n in delta.delete_sets]
    return {"nftables": cmds}
