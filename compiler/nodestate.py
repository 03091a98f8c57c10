"""The node's compiled state, kept up to date pod by pod, and its snapshot as a NodePlan.

One code path builds everything: a full compile creates a state from the model and snapshots
it (:func:`compiler.plan.build_plan`); the incremental path (:mod:`compiler.incremental`)
replaces one pod, policy or namespace at a time and turns the :class:`StateChange` it gets back
into a delta. The state is composed of parts with one job each:

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
from compiler.cluster import ClusterModel, PodSource
from compiler.dispatch import Dispatch, Dispatched, LocalEntry
from compiler.ir import DIRECTIONS, FAMILIES, NodePlan
from compiler.model import NAMESPACE_NAME_LABEL, Direction, Family, LabelSelector, NetworkPolicy, Pod
from compiler.options import DEFAULT_OPTIONS, CompileOptions
from compiler.peersets import Element, Selection, merge_spans
from compiler.podchains import ChainBuild, PodChains, policy_namespace, policy_uid
from compiler.podindex import PodIndex, namespace_of, pod_addresses
from compiler.podsources import Changes, changes, source_set, usable_sources
from compiler.selectors import matches
from compiler.snapshot import node_plan


@dataclass(frozen=True)
class StateChange:
    """What replacing one pod, policy or namespace changed: the set and chain names that existed
    before, the peer set elements that left and came (per set that existed before), and the
    dispatch of every address whose pod was refreshed, as it was before."""

    sets_before: frozenset[str]
    chains_before: frozenset[str]
    elements: Mapping[str, tuple[set[Element], set[Element]]]
    dispatch_before: Mapping[str, Dispatched]


class NodeState:
    """Sets, maps and chains of one node, derived from the pods, policies and namespaces."""

    def __init__(self, model: ClusterModel, *, node: str, options: CompileOptions = DEFAULT_OPTIONS) -> None:
        self.node = node
        self._node_notes, self._cidrs = _node_cidrs(model, node)
        self.notes = (*(str(d) for d in model.policy_defects), *self._node_notes)  # rules that match nothing
        # Per policy UID, its sort key (the agent's model order) and its defects, for the notes.
        self._defects: dict[str, tuple[tuple[str, str, str], tuple[str, ...]]] = {}
        by_key: dict[str, list[str]] = {}
        for d in model.policy_defects:
            by_key.setdefault(d.policy, []).append(str(d))
        for policy in model.policies:
            self._defects[policy_uid(policy)] = (_order(policy), tuple(by_key.pop(policy.key, ())))
        self._ns_labels = {ns.metadata.name: ns.effective_labels() for ns in model.namespaces}
        self.index = PodIndex(model.pods)
        self._selection = Selection(self.index, self._namespace_labels)
        self.store = ChainStore(self._selection)
        self.dispatch = Dispatch()
        self._chains = PodChains(model.policies)
        underlay, underlay_notes = _underlay(model, node)
        self._node_notes = (*self._node_notes, *underlay_notes)
        self.notes = (*self.notes, *underlay_notes)
        self._base = base_chains(
            tuple(f for f in FAMILIES if self._cidrs[f]), options=options, underlay=underlay
        )
        self._prefix = options.pod_interface_prefix
        self._sources, self._source_notes = usable_sources(model.pod_sources, prefix=self._prefix)
        self.source_sets = {f: source_set(f, self._sources[f]) for f in FAMILIES}
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
                sources=tuple(self.source_sets.values()),
                notes=(*self.notes, *self._source_notes),
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
        elements = self._update_elements(before, self.store.contributions(addresses))
        owners_after = {self.index.owner.get(a) for a in addresses}
        dispatch_before = self._refresh(k for k in {key, *owners_before, *owners_after} if k is not None)
        return StateChange(sets_before, chains_before, elements, dispatch_before)

    def replace_policy(
        self, uid: str, policy: NetworkPolicy | None, *, defects: tuple[str, ...]
    ) -> StateChange:
        """Make ``policy`` (as :func:`compiler.defects.usable_policy` made it usable; None removes
        it) the policy ``uid``, with the notes of its ``defects``, and refresh the local pods its
        old or new version selects. Peer sets come and go with the chains that use them; no set
        that stays changes, since a set's elements depend on its selector, not on the policy."""
        self._snapshot = None
        sets_before, chains_before = frozenset(self.store.specs), frozenset(self.store.chains)
        old = self._chains.replace(uid, policy)
        affected: set[str] = set()
        for version in (old, policy):
            if version is None:
                continue
            ns, selector = policy_namespace(version), version.spec.pod_selector
            affected |= {
                k
                for k in self.dispatch.entries
                if namespace_of(pod := self.index.pods[k]) == ns and matches(selector, pod.metadata.labels)
            }
        if policy is None:
            self._defects.pop(uid, None)
        else:
            self._defects[uid] = (_order(policy), defects)
        ordered = sorted(self._defects.values(), key=lambda item: item[0])
        self.notes = (*(n for _, notes in ordered for n in notes), *self._node_notes)
        dispatch_before = self._refresh(affected)
        return StateChange(sets_before, chains_before, {}, dispatch_before)

    def replace_namespace(self, name: str, labels: Mapping[str, str] | None) -> StateChange:
        """Give namespace ``name`` these labels (None: it is not declared, and has only its name
        label), and move its pods' addresses in or out of the peer sets whose namespace selector
        now decides otherwise. Which policies isolate a pod does not depend on namespace labels."""
        self._snapshot = None
        sets_before, chains_before = frozenset(self.store.specs), frozenset(self.store.chains)
        addresses = {a for k in self.index.select(name, LabelSelector()) for a in self.index.addresses(k)}
        before = self.store.contributions(addresses)
        if labels is None:
            self._ns_labels.pop(name, None)
        else:
            self._ns_labels[name] = {**labels, NAMESPACE_NAME_LABEL: name}
        self._selection.relabelled(name)
        elements = self._update_elements(before, self.store.contributions(addresses))
        return StateChange(sets_before, chains_before, elements, {})

    def replace_sources(self, sources: frozenset[PodSource]) -> Changes:
        """Make ``sources`` the node's routed pod sources; per family, the pairs that left and came."""
        usable, notes = usable_sources(sources, prefix=self._prefix)
        changed = changes(self._sources, usable)
        if notes != self._source_notes or any(gone or came for gone, came in changed.values()):
            self._snapshot = None
        self._sources, self._source_notes = usable, notes
        for family, (gone, came) in changed.items():
            if gone or came:
                self.source_sets[family] = source_set(family, usable[family])
        return changed

    def _namespace_labels(self, name: str) -> Mapping[str, str]:
        # An undeclared namespace exists as implied by its pods and policies: name label only.
        return self._ns_labels.get(name) or {NAMESPACE_NAME_LABEL: name}

    def _update_elements(
        self, before: dict[str, set[Element]], after: dict[str, set[Element]]
    ) -> dict[str, tuple[set[Element], set[Element]]]:
        """Move the peer set elements from ``before`` to ``after``; what actually left and came."""
        elements: dict[str, tuple[set[Element], set[Element]]] = {}
        for name in sorted(before.keys() | after.keys()):
            gone = before.get(name, set()) - after.get(name, set())
            came = after.get(name, set()) - before.get(name, set())
            if gone or came:
                left, added = self.store.update_elements(name, gone=gone, came=came)
                if left or added:
                    elements[name] = (left, added)
        return elements

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


def _order(policy: NetworkPolicy) -> tuple[str, str, str]:
    """Where a policy's notes go: the agent's model lists policies by namespace, name, UID."""
    return (policy.metadata.namespace or "", policy.metadata.name, policy_uid(policy))


def _underlay(model: ClusterModel, node: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The node's InternalIPs (the overlay's tunnel endpoints), canonical and sorted, and a note
    for each that is not an address."""
    obj = model.node(node)
    if obj is None:
        return (), ()
    found: set[ipaddress.IPv4Address | ipaddress.IPv6Address] = set()
    notes: list[str] = []
    for text in obj.internal_ips():
        try:
            found.add(ipaddress.ip_address(text))
        except ValueError:
            notes.append(
                f"node {naming.sanitize(node)!r}: InternalIP {naming.sanitize(text)!r} is not an address;"
                " its VXLAN packets are tracked"
            )
    return tuple(str(a) for a in sorted(found, key=lambda a: (a.version, int(a)))), tuple(notes)


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
