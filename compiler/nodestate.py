"""The node's compiled state, kept up to date pod by pod, and its snapshot as a NodePlan.

One code path builds everything: a full compile creates a state from the model and snapshots
it (:func:`compiler.plan.build_plan`); the incremental path (:mod:`compiler.incremental`)
replaces one pod at a time and turns the :class:`StateChange` it gets back into a delta. The
state is composed of parts with one job each:

- :class:`~compiler.podindex.PodIndex`: the pods and which one owns each address;
- :class:`~compiler.podchains.PodChains`: which policies isolate a pod, and its chain;
- :class:`~compiler.chainstore.ChainStore`: the live per-pod chains and peer sets, reference-counted;
- :class:`~compiler.dispatch.Dispatch`: the local pods, the dispatch maps and local-pods sets;
- :func:`~compiler.snapshot.node_plan`: all of it as frozen plan values.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from compiler import naming
from compiler.basechains import base_chains, tier_chains
from compiler.chainstore import ChainStore
from compiler.cluster import ClusterModel
from compiler.dispatch import Dispatch, Dispatched, LocalEntry
from compiler.ir import DIRECTIONS, FAMILIES, NodePlan
from compiler.model import Direction, Family, Pod
from compiler.options import DEFAULT_OPTIONS, CompileOptions
from compiler.peersets import Element, Selection, merge_spans
from compiler.podchains import ChainBuild, PodChains
from compiler.podindex import PodIndex, pod_addresses
from compiler.snapshot import node_plan


@dataclass(frozen=True)
class StateChange:
    """What replacing one pod changed: the set and chain names that existed before, the peer
    set elements that left and came (per set that existed before), and the dispatch of every
    address whose pod was refreshed, as it was before."""

    sets_before: frozenset[str]
    chains_before: frozenset[str]
    elements: Mapping[str, tuple[set[Element], set[Element]]]
    dispatch_before: Mapping[str, Dispatched]


class NodeState:
    """Sets, maps and chains of one node, derived from the pods, policies and namespaces."""

    def __init__(self, model: ClusterModel, *, node: str, options: CompileOptions = DEFAULT_OPTIONS) -> None:
        self.node = node
        notes, self._cidrs = _node_cidrs(model, node)
        self.notes = (*(str(d) for d in model.policy_defects), *notes)  # rules that match nothing
        self.index = PodIndex(model.pods)
        self.store = ChainStore(Selection(self.index, model.namespace_labels))
        self.dispatch = Dispatch()
        self._chains = PodChains(model.policies)
        self._base = base_chains(tuple(f for f in FAMILIES if self._cidrs[f]), options=options)
        self._tiers = tier_chains()
        self._snapshot: NodePlan | None = None
        self._refresh(k for k, p in self.index.pods.items() if self._is_local(p))

    def snapshot(self) -> NodePlan:
        if self._snapshot is None:
            self._snapshot = node_plan(
                node=self.node,
                base=self._base,
                tiers=self._tiers,
                store=self.store,
                dispatch=self.dispatch,
                cidrs=self._cidrs,
                notes=self.notes,
            )
        return self._snapshot

    def replace_pod(self, key: str, pod: Pod | None) -> StateChange:
        """Make ``pod`` the index's pod ``key`` (a UID; None removes it), and bring the peer sets
        and the dispatch of every pod whose addresses this touches up to date."""
        self._snapshot = None
        sets_before, chains_before = frozenset(self.store.specs), frozenset(self.store.chains)
        addresses = set(self.index.addresses(key)) | set(pod_addresses(pod) if pod is not None else ())
        owners_before = {self.index.owner.get(a) for a in addresses}
        before = self.store.contributions(addresses)
        self.index.remove(key)
        if pod is not None:
            self.index.add(pod)
        after = self.store.contributions(addresses)
        elements: dict[str, tuple[set[Element], set[Element]]] = {}
        for name in sorted(before.keys() | after.keys()):
            gone = before.get(name, set()) - after.get(name, set())
            came = after.get(name, set()) - before.get(name, set())
            if gone or came:
                left, added = self.store.update_elements(name, gone=gone, came=came)
                if left or added:
                    elements[name] = (left, added)
        owners_after = {self.index.owner.get(a) for a in addresses}
        dispatch_before = self._refresh(k for k in {key, *owners_before, *owners_after} if k is not None)
        return StateChange(sets_before, chains_before, elements, dispatch_before)

    # --- local pods --------------------------------------------------------------------------------

    def _is_local(self, pod: Pod) -> bool:
        return pod.spec.node_name == self.node and not pod.spec.host_network

    def _refresh(self, keys: Iterable[str]) -> dict[str, Dispatched]:
        """Recompute the dispatch of these pods, by UID (their owned addresses and chains); return
        the dispatch every address involved had before."""
        keys = sorted(set(keys))
        fresh: dict[str, LocalEntry] = {}
        builds: dict[str, ChainBuild] = {}
        for key in keys:
            entry = self._entry(key, builds)
            if entry is not None:
                fresh[key] = entry
        # Reference new chains before releasing old ones, so a chain (and its sets) that a pod
        # keeps is never dropped and re-created.
        for entry in fresh.values():
            for name in (entry.ingress, entry.egress):
                if name is not None:
                    self.store.acquire(builds[name])
        stale = [old for old in (self.dispatch.entries.get(k) for k in keys) if old is not None]
        touched = {a for entry in (*stale, *fresh.values()) for a in entry.addresses}
        before = {a: self.dispatch.lookup(a) for a in touched}
        for key in keys:
            old = self.dispatch.remove(key)
            if old is not None:
                for name in (old.ingress, old.egress):
                    if name is not None:
                        self.store.release(name)
        for key, entry in fresh.items():
            self.dispatch.add(key, entry)
        return before

    def _entry(self, key: str, builds: dict[str, ChainBuild]) -> LocalEntry | None:
        pod = self.index.pods.get(key)
        if pod is None or not self._is_local(pod):
            return None
        owned = self.index.owned(key)
        if not owned:
            return None
        names: dict[Direction, str | None] = {}
        for direction in DIRECTIONS:
            build = self._chains.chain_for(pod, direction)
            names[direction] = None if build is None else build[0].name
            if build is not None:
                builds[build[0].name] = build
        return LocalEntry(pod.key, owned, names["ingress"], names["egress"])


def _node_cidrs(
    model: ClusterModel, node: str
) -> tuple[tuple[str, ...], dict[Family, list[tuple[int, int]]]]:
    """Notes about the node and its podCIDRs as merged spans per family."""
    cidrs: dict[Family, list[tuple[int, int]]] = {4: [], 6: []}
    obj = model.node(node)
    if obj is None:
        return (
            f"node {naming.sanitize(node)!r} is not in the model: compiled without fail-closed rules",
        ), cidrs
    notes: list[str] = []
    for text in obj.pod_cidrs():
        try:
            net = ipaddress.ip_network(text, strict=False)
        except ValueError:
            notes.append(
                f"node {naming.sanitize(node)!r}: podCIDR {naming.sanitize(text)!r} is not a CIDR; ignored"
            )
            continue
        family: Family = 4 if net.version == 4 else 6
        cidrs[family].append((int(net.network_address), int(net.broadcast_address)))
    if not cidrs[4] and not cidrs[6]:
        notes.append(f"node {naming.sanitize(node)!r} has no podCIDRs: compiled without fail-closed rules")
    return tuple(notes), {4: merge_spans(cidrs[4]), 6: merge_spans(cidrs[6])}
