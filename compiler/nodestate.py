"""The node's compiled state, kept up to date object by object, and its snapshot as a NodePlan.

One code path builds everything: a full compile creates a state from the model and snapshots
it; the incremental path (:mod:`compiler.incremental`) changes one pod and records which sets,
maps and chains changed. Chains and sets are reference-counted: a per-pod chain lives while a
local pod dispatches to it, a peer set while a chain uses it.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from compiler import naming
from compiler.basechains import base_chains, tier_chains
from compiler.chains import RuleTemplate, pod_chain, templates
from compiler.cluster import ClusterModel
from compiler.errors import InternalError
from compiler.ir import (
    ACCEPT,
    CONTINUE,
    DIRECTIONS,
    FAMILIES,
    AddrPortElement,
    AddrPortSet,
    AddrSet,
    Chain,
    IntervalSet,
    LocalPod,
    MapEntry,
    NodePlan,
    PlanSet,
    Verdict,
    VerdictMap,
    jump,
)
from compiler.model import Direction, Family, NetworkPolicy, Pod, Protocol
from compiler.options import DEFAULT_OPTIONS, CompileOptions
from compiler.peersets import (
    CidrSetSpec,
    Element,
    NamedPortSetSpec,
    PodSetSpec,
    Selection,
    SetSpec,
    intervals,
    merge_spans,
    spec_key,
)
from compiler.podindex import PodIndex, addr_key, family_of, namespace_of
from compiler.selectors import matches


@dataclass(frozen=True)
class LocalEntry:
    key: str  # namespace/name, as the plan names the pod
    addresses: tuple[str, ...]
    ingress: str | None
    egress: str | None


ChainBuild = tuple[Chain, tuple[SetSpec, ...]]


class NodeState:
    """Sets, maps and chains of one node, derived from the pods, policies and namespaces."""

    def __init__(self, model: ClusterModel, *, node: str, options: CompileOptions = DEFAULT_OPTIONS) -> None:
        self.node = node
        self._policies: dict[str, list[NetworkPolicy]] = {}
        for policy in sorted(model.policies, key=lambda p: p.key):
            self._policies.setdefault(policy.metadata.namespace or "default", []).append(policy)
        self._templates: dict[tuple[str, Direction], tuple[RuleTemplate, ...]] = {}
        self._chain_cache: dict[tuple[object, ...], ChainBuild] = {}
        self.notes, self._cidrs = _node_cidrs(model, node)
        self.notes = (*(str(d) for d in model.policy_defects), *self.notes)  # rules that match nothing
        self.index = PodIndex(model.pods)
        self.selection = Selection(self.index, model.namespace_labels)
        self.local: dict[str, LocalEntry] = {}
        self.chains: dict[str, Chain] = {}
        self._chain_specs: dict[str, tuple[SetSpec, ...]] = {}
        self._chain_refs: Counter[str] = Counter()
        self.specs: dict[str, SetSpec] = {}
        self._set_refs: Counter[str] = Counter()
        self.elements: dict[str, set[Element]] = {naming.local_set(f): set() for f in FAMILIES}
        self.map_shapes: dict[str, tuple[Family, Direction]] = {
            naming.dispatch_map(d, f): (f, d) for d in DIRECTIONS for f in FAMILIES
        }
        self.maps: dict[str, dict[str, Verdict]] = {name: {} for name in self.map_shapes}
        self._base = base_chains(tuple(f for f in FAMILIES if self._cidrs[f]), options=options)
        self._tiers = tier_chains()
        self._snapshot: NodePlan | None = None
        keys = [k for k, p in self.index.pods.items() if self._is_local(p)]
        self.refresh_locals(keys)

    # --- hooks for the incremental path's journal ---------------------------------------------------

    def touch_set(self, name: str) -> None:
        """Called before a set's elements change."""

    def touch_map(self, name: str) -> None:
        """Called before a map's entries change."""

    # --- local pods --------------------------------------------------------------------------------

    def _is_local(self, pod: Pod) -> bool:
        return pod.spec.node_name == self.node and not pod.spec.host_network

    def refresh_locals(self, keys: Iterable[str]) -> None:
        """Recompute the dispatch of these pods, by UID (their owned addresses and chains)."""
        keys = sorted(set(keys))
        self._snapshot = None
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
                    self._ref_chain(builds[name])
        for key in keys:
            old = self.local.pop(key, None)
            if old is None:
                continue
            for address in old.addresses:
                self._set_dispatch(address, None)
            for name in (old.ingress, old.egress):
                if name is not None:
                    self._unref_chain(name)
        for key, entry in fresh.items():
            self.local[key] = entry
            for address in entry.addresses:
                self._set_dispatch(address, entry)

    def _entry(self, key: str, builds: dict[str, ChainBuild]) -> LocalEntry | None:
        pod = self.index.pods.get(key)
        if pod is None or not self._is_local(pod):
            return None
        owned = self.index.owned(key)
        if not owned:
            return None
        names: dict[Direction, str | None] = {}
        for direction in DIRECTIONS:
            build = self._chain_for(pod, direction)
            names[direction] = None if build is None else build[0].name
            if build is not None:
                builds[build[0].name] = build
        return LocalEntry(pod.key, owned, names["ingress"], names["egress"])

    def _set_dispatch(self, address: str, entry: LocalEntry | None) -> None:
        family = family_of(address)
        local = naming.local_set(family)
        self.touch_set(local)
        for direction in DIRECTIONS:
            name = naming.dispatch_map(direction, family)
            self.touch_map(name)
            if entry is None:
                self.maps[name].pop(address, None)
                continue
            chain = entry.ingress if direction == "ingress" else entry.egress
            unselected = ACCEPT if direction == "ingress" else CONTINUE
            self.maps[name][address] = jump(chain) if chain is not None else unselected
        if entry is None:
            self.elements[local].discard(address)
        else:
            self.elements[local].add(address)

    # --- chains ------------------------------------------------------------------------------------

    def _chain_for(self, pod: Pod, direction: Direction) -> ChainBuild | None:
        """The pod's chain for ``direction`` and its sets, or None when no policy isolates it."""
        isolating = [
            p
            for p in self._policies.get(namespace_of(pod), ())
            if direction.capitalize() in p.spec.effective_policy_types()
            and matches(p.spec.pod_selector, pod.metadata.labels)
        ]
        if not isolating:
            return None
        with_templates = tuple((p.key, self._policy_templates(p, direction)) for p in isolating)
        resolved: dict[tuple[Protocol, str], tuple[int, ...]] = {}
        if direction == "ingress":
            # Ingress named ports resolve against this pod; the chain depends on the result.
            ports = pod.container_ports()
            for proto, name in sorted({n for _, ts in with_templates for t in ts for n in t.named}):
                numbers = {p.container_port for p in ports if p.protocol == proto and p.name == name}
                resolved[(proto, name)] = tuple(sorted(numbers))
        cache_key = (direction, tuple(p.key for p in isolating), tuple(sorted(resolved.items())))
        build = self._chain_cache.get(cache_key)
        if build is None:

            def resolve(proto: Protocol, name: str) -> tuple[int, ...]:
                return resolved.get((proto, name), ())

            build = pod_chain(direction, with_templates, resolve=resolve if direction == "ingress" else None)
            self._chain_cache[cache_key] = build
        return build

    def _policy_templates(self, policy: NetworkPolicy, direction: Direction) -> tuple[RuleTemplate, ...]:
        key = (policy.key, direction)
        found = self._templates.get(key)
        if found is None:
            found = self._templates[key] = templates(policy, direction)
        return found

    def _ref_chain(self, build: ChainBuild) -> None:
        chain, specs = build
        existing = self.chains.get(chain.name)
        if existing is None:
            self.chains[chain.name] = chain
            self._chain_specs[chain.name] = specs
            for spec in specs:
                self._ref_set(spec)
        elif existing is not chain and existing != chain:
            raise InternalError(f"chain name collision: {chain.name}")
        self._chain_refs[chain.name] += 1

    def _unref_chain(self, name: str) -> None:
        self._chain_refs[name] -= 1
        if self._chain_refs[name] == 0:
            del self._chain_refs[name]
            del self.chains[name]
            for spec in self._chain_specs.pop(name):
                self._unref_set(spec.name)

    def _ref_set(self, spec: SetSpec) -> None:
        existing = self.specs.get(spec.name)
        if existing is not None and spec_key(existing) != spec_key(spec):
            raise InternalError(f"set name collision: {spec.name}")
        if existing is None:
            self.specs[spec.name] = spec
            if not isinstance(spec, CidrSetSpec):
                self.elements[spec.name] = self.selection.elements(spec)
        self._set_refs[spec.name] += 1

    def _unref_set(self, name: str) -> None:
        self._set_refs[name] -= 1
        if self._set_refs[name] == 0:
            del self._set_refs[name]
            del self.specs[name]
            self.elements.pop(name, None)

    # --- snapshot ------------------------------------------------------------------------------------

    def snapshot(self) -> NodePlan:
        if self._snapshot is None:
            self._snapshot = self._build_snapshot()
        return self._snapshot

    def plan_set(self, name: str, elements: Iterable[Element] | None = None) -> PlanSet:
        """Set ``name`` as the plan shows it; with ``elements``, holding only those (for deltas)."""
        chosen = set(self.elements.get(name, ()) if elements is None else elements)
        spec = self.specs.get(name)
        if spec is not None:
            return _plan_set(spec, chosen)
        for family in FAMILIES:
            if name == naming.local_set(family):
                return AddrSet(name, family, _sorted_addrs(chosen), "addresses of local pods")
        raise InternalError(f"unknown set {name}")

    def plan_map(self, name: str, addresses: Iterable[str] | None = None) -> VerdictMap:
        """Map ``name`` as the plan shows it; with ``addresses``, holding only their entries."""
        entries = self.maps[name]
        chosen = entries.keys() if addresses is None else addresses
        family, direction = self.map_shapes[name]
        ordered = sorted(chosen, key=addr_key)
        return VerdictMap(name, family, direction, tuple(MapEntry(a, entries[a]) for a in ordered))

    def _build_snapshot(self) -> NodePlan:
        sets: list[PlanSet] = [self.plan_set(name) for name in self.specs]
        sets += [self.plan_set(naming.local_set(f)) for f in FAMILIES]
        for family in FAMILIES:
            if self._cidrs[family]:
                spans = intervals(self._cidrs[family], family)
                sets.append(IntervalSet(naming.podcidr_set(family), family, spans, "this node's podCIDRs"))
        maps = tuple(self.plan_map(name) for name in self.map_shapes)
        local_pods = tuple(
            LocalPod(entry.key, entry.addresses, entry.ingress, entry.egress)
            for _, entry in sorted(self.local.items(), key=lambda item: (item[1].key, item[0]))
        )
        return NodePlan(
            node=self.node,
            base_chains=self._base,
            tier_chains=self._tiers,
            pod_chains=tuple(self.chains[n] for n in sorted(self.chains)),
            sets=tuple(sorted(sets, key=lambda s: s.name)),
            maps=maps,
            local_pods=local_pods,
            notes=self.notes,
        )


def _sorted_addrs(elements: Iterable[Element]) -> tuple[str, ...]:
    return tuple(sorted((e for e in elements if isinstance(e, str)), key=addr_key))


def _plan_set(spec: SetSpec, elements: set[Element]) -> PlanSet:
    if isinstance(spec, CidrSetSpec):
        return IntervalSet(
            spec.name, spec.family, intervals(spec.peer.spans(spec.family), spec.family), spec.peer.note
        )
    if isinstance(spec, PodSetSpec):
        return AddrSet(spec.name, spec.family, _sorted_addrs(elements), spec.peer.note)
    tuples = sorted((e for e in elements if isinstance(e, tuple)), key=lambda e: (addr_key(e[0]), e[1], e[2]))
    ports = ", ".join(f"{proto}/{name}" for proto, name in spec.ports)
    return AddrPortSet(
        spec.name,
        spec.family,
        tuple(AddrPortElement(a, proto, port) for a, proto, port in tuples),
        naming.note(f"named ports {ports} of {spec.peer.note}"),
    )


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


__all__ = ["LocalEntry", "NamedPortSetSpec", "NodeState", "PodSetSpec"]
