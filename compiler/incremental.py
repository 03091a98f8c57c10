"""Pod churn without reloading chains: set elements, map entries, and whole per-pod chains only.

A pod that appears, leaves, or changes labels, ports, phase or addresses changes:

- elements of the peer sets its addresses are (or were) in, and of the named-port sets;
- if it runs on this node: its entries in the dispatch maps and the local-pods sets, and, when
  the policies isolating it change, which per-pod chain it dispatches to. Chains are named by
  content, so that is a new chain added (if no other pod uses it yet) and an unused one removed,
  along with sets only they used. No existing chain is ever rewritten.

A policy that is added, changed or deleted (:meth:`NodeCompiler.update_policy`) refreshes only
the local pods its old or new version selects: they move to chains named by their new content
(added, with the peer sets only they use) and the chains nobody uses any more go. A namespace
whose labels change (:meth:`NodeCompiler.update_namespace`) moves its pods' addresses in or out of
the peer sets with a namespace selector. The node's routed pod sources
(:meth:`NodeCompiler.update_sources`) are elements of the ``pod-sources`` sets. A node changing
(its podCIDRs: the base chains) is not churn: compile the plan again.

The plan :class:`NodeCompiler` keeps after any sequence of updates equals ``build_plan`` of the
resulting model (tests/unit/test_incremental.py checks it on random changes), and
:func:`render_delta_json` turns a delta into one libnftables transaction.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from compiler import naming
from compiler.cluster import ClusterModel, PodSource, with_cni_addresses
from compiler.defects import usable_policy
from compiler.ir import DIRECTIONS, Chain, MapEntry, NodePlan, PlanSet, VerdictMap
from compiler.model import Direction, Family, Namespace, NetworkPolicy, Pod
from compiler.nodestate import NodeState, StateChange
from compiler.options import DEFAULT_OPTIONS, CompileOptions
from compiler.podchains import policy_uid
from compiler.podindex import addr_key, family_of
from compiler.podsources import source_set
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


class NodeCompiler:
    """A node's compiled state that follows pod churn; ``plan`` is always the full current plan.

    Pods are identified by UID: an event about a pod names it by ``metadata.uid``, so a late
    DELETE of a pod's previous incarnation (a StatefulSet pod re-created under the same name)
    removes that incarnation only. Addresses the CNI plugin reports (:meth:`update_cni`) apply
    by the rules of :mod:`compiler.cluster`. The compiled state is a
    :class:`~compiler.nodestate.NodeState`; this class keeps the pods as the API and the CNI
    plugin show them and turns each change of the state into a :class:`PlanDelta`.
    """

    def __init__(self, model: ClusterModel, *, node: str, options: CompileOptions = DEFAULT_OPTIONS) -> None:
        self._api: dict[str, Pod] = {p.uid: p for p in model.api_pods}
        self._cni: dict[str, tuple[str, ...]] = dict(model.cni_addresses)
        self._state = NodeState(model, node=node, options=options)

    @property
    def plan(self) -> NodePlan:
        return self._state.snapshot()

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

    def update_sources(self, sources: Iterable[PodSource]) -> PlanDelta:
        """The node's routed pod sources are now ``sources`` (all of them, as the node agent last
        read them from the routing table): the pairs that left and came, as set elements."""
        changed = self._state.replace_sources(frozenset(sources))
        gone = [source_set(f, left) for f, (left, _) in changed.items() if left]
        came = [source_set(f, added) for f, (_, added) in changed.items() if added]
        return PlanDelta(delete_elements=tuple(gone), add_elements=tuple(came))

    def update_policy(self, old: NetworkPolicy | None, new: NetworkPolicy | None) -> PlanDelta:
        """Apply one NetworkPolicy event: added (old None), deleted (new None) or changed. Like
        :meth:`update_pod`, the record replaced is the one under the policy's UID; a policy with
        defects is compiled as :func:`compiler.defects.usable_policy` makes it."""
        subject = new if new is not None else old
        if subject is None:
            return PlanDelta()
        uid = policy_uid(subject)
        if old is not None and new is not None and policy_uid(old) != uid:
            raise ValueError(
                f"update_policy: {old.key} changed UID ({policy_uid(old)} -> {uid}): two policies"
            )
        if new is None:
            return self._delta(self._state.replace_policy(uid, None, defects=()))
        usable, defects = usable_policy(new)
        return self._delta(self._state.replace_policy(uid, usable, defects=tuple(str(d) for d in defects)))

    def update_namespace(self, old: Namespace | None, new: Namespace | None) -> PlanDelta:
        """Apply one Namespace event: added (old None), deleted (new None) or relabelled. A deleted
        namespace is still implied by any pod or policy in it, with only its name label."""
        subject = new if new is not None else old
        if subject is None:
            return PlanDelta()
        name = subject.metadata.name
        if old is not None and new is not None and old.metadata.name != name:
            raise ValueError(f"update_namespace: {old.metadata.name} renamed to {name}: two namespaces")
        labels = None if new is None else new.effective_labels()
        return self._delta(self._state.replace_namespace(name, labels))

    def _replace(self, uid: str) -> PlanDelta:
        """Make pod ``uid``'s effective form (API object and CNI addresses) the state's, and
        return the delta."""
        api = self._api.get(uid)
        new = None if api is None else with_cni_addresses(api, self._cni.get(uid))
        return self._delta(self._state.replace_pod(uid, new))

    def _delta(self, change: StateChange) -> PlanDelta:
        store, dispatch = self._state.store, self._state.dispatch
        sets_now, chains_now = set(store.specs), set(store.chains)
        deleted_sets = change.sets_before - sets_now
        delete_elements: list[PlanSet] = []
        add_elements: list[PlanSet] = []
        for name, (left, came) in change.elements.items():
            if name in deleted_sets:
                continue
            if left:
                delete_elements.append(store.plan_set(name, left))
            if came:
                add_elements.append(store.plan_set(name, came))
        # Dispatch: per address, the map entries and local-pods set membership that changed.
        local_gone: dict[Family, list[str]] = {}
        local_came: dict[Family, list[str]] = {}
        map_gone: dict[tuple[Direction, Family], list[MapEntry]] = {}
        map_came: dict[tuple[Direction, Family], list[str]] = {}
        for address, was in change.dispatch_before.items():
            now = dispatch.lookup(address)
            if was == now:
                continue
            family = family_of(address)
            if now is None:
                local_gone.setdefault(family, []).append(address)
            elif was is None:
                local_came.setdefault(family, []).append(address)
            for slot, direction in enumerate(DIRECTIONS):
                old_verdict = None if was is None else was[slot]
                new_verdict = None if now is None else now[slot]
                if old_verdict == new_verdict:
                    continue
                if old_verdict is not None:
                    # Deleting takes the key only; the verdict shown is the one being replaced.
                    map_gone.setdefault((direction, family), []).append(MapEntry(address, old_verdict))
                if new_verdict is not None:
                    map_came.setdefault((direction, family), []).append(address)
        for f, addresses in local_gone.items():
            delete_elements += [dispatch.local_set(f, addresses), dispatch.hairpin_set(f, addresses)]
        for f, addresses in local_came.items():
            add_elements += [dispatch.local_set(f, addresses), dispatch.hairpin_set(f, addresses)]
        delete_entries = [
            VerdictMap(
                naming.dispatch_map(d, f), f, d, tuple(sorted(entries, key=lambda e: addr_key(e.address)))
            )
            for (d, f), entries in map_gone.items()
        ]
        add_entries = [dispatch.plan_map(d, f, addresses) for (d, f), addresses in map_came.items()]
        return PlanDelta(
            add_sets=tuple(store.plan_set(n) for n in sorted(sets_now - change.sets_before)),
            add_chains=tuple(store.chains[n] for n in sorted(chains_now - change.chains_before)),
            delete_elements=tuple(sorted(delete_elements, key=lambda s: s.name)),
            add_elements=tuple(sorted(add_elements, key=lambda s: s.name)),
            delete_map_entries=tuple(sorted(delete_entries, key=lambda m: m.name)),
            add_map_entries=tuple(sorted(add_entries, key=lambda m: m.name)),
            delete_chains=tuple(sorted(change.chains_before - chains_now)),
            delete_sets=tuple(sorted(deleted_sets)),
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
