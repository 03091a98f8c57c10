"""The node's per-pod chains and the peer sets they use, each alive while something refers to it.

A per-pod chain lives while a local pod dispatches to it; a peer set lives while a chain uses it.
Both are counted with :class:`compiler.refcount.RefCount`. A peer set's elements are the owned
addresses (or address . protocol . port tuples) of the pods it selects, filled from
:class:`compiler.peersets.Selection` when the set is created and kept current on pod churn by
:meth:`ChainStore.update_elements`; ipBlock sets have no elements here (their intervals are
fixed by the policy).
"""

from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from compiler import naming
from compiler.errors import InternalError
from compiler.ir import AddrPortElement, AddrPortSet, AddrSet, Chain, IntervalSet, PlanSet
from compiler.peersets import CidrSetSpec, Element, PodSetSpec, Selection, SetSpec, intervals, spec_key
from compiler.podchains import ChainBuild
from compiler.podindex import addr_key, family_of
from compiler.refcount import RefCount


class ChainStore:
    """Per-pod chains and peer sets by name, created on first reference and dropped on the last."""

    def __init__(self, selection: Selection) -> None:
        self._selection = selection
        self._chains: dict[str, Chain] = {}
        self._chain_sets: dict[str, tuple[SetSpec, ...]] = {}
        self._chain_refs: RefCount[str] = RefCount()
        self._specs: dict[str, SetSpec] = {}
        self._elements: dict[str, set[Element]] = {}
        self._set_refs: RefCount[str] = RefCount()
        # Each set as the plan shows it, built once per change of its elements: a snapshot of a
        # 10,000-pod plan after one change re-sorts only the sets that change touched, and the
        # applier recognises the others as the very objects it already wrote.
        self._plan_sets: dict[str, PlanSet] = {}

    @property
    def chains(self) -> Mapping[str, Chain]:
        return self._chains

    @property
    def specs(self) -> Mapping[str, SetSpec]:
        return self._specs

    def elements(self, name: str) -> set[Element]:
        """The elements of peer set ``name`` (empty for an ipBlock set). Read only."""
        return self._elements.get(name, set())

    # --- references ----------------------------------------------------------------------------------

    def acquire(self, build: ChainBuild) -> None:
        """One more pod dispatches to this chain; the first creates it and refers to its sets."""
        chain, specs = build
        existing = self._chains.get(chain.name)
        if existing is not None and existing is not chain and existing != chain:
            raise InternalError(f"chain name collision: {chain.name}")
        if self._chain_refs.acquire(chain.name):
            self._chains[chain.name] = chain
            self._chain_sets[chain.name] = specs
            for spec in specs:
                self._acquire_set(spec)

    def release(self, name: str) -> None:
        """One pod fewer dispatches to chain ``name``; the last drops it and its unused sets."""
        if self._chain_refs.release(name):
            del self._chains[name]
            for spec in self._chain_sets.pop(name):
                if self._set_refs.release(spec.name):
                    del self._specs[spec.name]
                    self._elements.pop(spec.name, None)
                    self._plan_sets.pop(spec.name, None)

    def _acquire_set(self, spec: SetSpec) -> None:
        existing = self._specs.get(spec.name)
        if existing is not None and spec_key(existing) != spec_key(spec):
            raise InternalError(f"set name collision: {spec.name}")
        if self._set_refs.acquire(spec.name):
            self._specs[spec.name] = spec
            self._plan_sets.pop(spec.name, None)
            if not isinstance(spec, CidrSetSpec):
                self._elements[spec.name] = self._selection.elements(spec)

    # --- pod churn ---------------------------------------------------------------------------------------

    def contributions(self, addresses: Iterable[str]) -> dict[str, set[Element]]:
        """Per pod-dependent set, the elements these addresses put in it as the index stands now."""
        addresses = set(addresses)
        families = {family_of(a) for a in addresses}
        out: dict[str, set[Element]] = {}
        for name, spec in self._specs.items():
            if isinstance(spec, CidrSetSpec) or spec.family not in families:
                continue
            found: set[Element] = set()
            for address in addresses:
                found |= self._selection.contribution(spec, address)
            if found:
                out[name] = found
        return out

    def update_elements(
        self, name: str, *, gone: set[Element], came: set[Element]
    ) -> tuple[set[Element], set[Element]]:
        """Remove ``gone`` from set ``name`` and add ``came``; return what actually left and came."""
        elements = self._elements[name]
        left, added = gone & elements, came - elements
        elements -= left
        elements |= added
        if left or added:
            cached = self._plan_sets.pop(name, None)
            if cached is not None:
                # A pod's address joining or leaving a peer set of thousands: edited into the
                # sorted view in place of re-sorting all of it (most of a new pod's snapshot).
                edited = _edited(cached, left=left, added=added)
                if edited is not None:
                    self._plan_sets[name] = edited
        return left, added

    # --- the plan's view -------------------------------------------------------------------------------

    def plan_set(self, name: str, elements: Iterable[Element] | None = None) -> PlanSet:
        """Set ``name`` as the plan shows it; with ``elements``, holding only those (for deltas)."""
        spec = self._specs[name]
        if elements is not None:
            return _plan_set(spec, set(elements))
        cached = self._plan_sets.get(name)
        if cached is None:
            cached = self._plan_sets[name] = _plan_set(spec, self._elements.get(name, set()))
        return cached


def sorted_addrs(elements: Iterable[Element]) -> tuple[str, ...]:
    return tuple(sorted((e for e in elements if isinstance(e, str)), key=addr_key))


def _port_key(e: AddrPortElement) -> tuple[tuple[int, int], str, int]:
    return addr_key(e.address), e.protocol, e.port


def _spliced(
    items: tuple[Any, ...], *, gone: list[Any], came: list[Any], key: Callable[[Any], Any]
) -> tuple[Any, ...]:
    """Sorted ``items`` (by ``key``) without ``gone`` and with ``came``, each at its place."""
    out = list(items)
    for e in gone:
        i = bisect.bisect_left(out, key(e), key=key)
        if i < len(out) and out[i] == e:
            del out[i]
    for e in came:
        bisect.insort(out, e, key=key)
    return tuple(out)


def _edited(cached: PlanSet, *, left: set[Element], added: set[Element]) -> PlanSet | None:
    """``cached`` with ``left`` taken out and ``added`` put in at their sorted places (the order
    :func:`_plan_set` gives); None for a kind of set that is rebuilt instead, and for a change
    of more than an eighth of the set (a namespace relabel moving thousands of pods), where each
    edit moving the tail costs more than one sort."""
    if len(left) + len(added) > max(16, len(cached.elements) // 8):
        return None
    if isinstance(cached, AddrSet):
        addrs = _spliced(
            cached.elements,
            gone=[e for e in left if isinstance(e, str)],
            came=[e for e in added if isinstance(e, str)],
            key=addr_key,
        )
        return dataclasses.replace(cached, elements=addrs)
    if isinstance(cached, AddrPortSet):
        tuples = _spliced(
            cached.elements,
            gone=[AddrPortElement(*e) for e in left if isinstance(e, tuple)],
            came=[AddrPortElement(*e) for e in added if isinstance(e, tuple)],
            key=_port_key,
        )
        return dataclasses.replace(cached, elements=tuples)
    return None


def _plan_set(spec: SetSpec, elements: set[Element]) -> PlanSet:
    if isinstance(spec, CidrSetSpec):
        return IntervalSet(
            spec.name, spec.family, intervals(spec.peer.spans(spec.family), spec.family), spec.peer.note
        )
    if isinstance(spec, PodSetSpec):
        return AddrSet(spec.name, spec.family, sorted_addrs(elements), spec.peer.note)
    tuples = sorted((e for e in elements if isinstance(e, tuple)), key=lambda e: (addr_key(e[0]), e[1], e[2]))
    ports = ", ".join(f"{proto}/{name}" for proto, name in spec.ports)
    return AddrPortSet(
        spec.name,
        spec.family,
        tuple(AddrPortElement(a, proto, port) for a, proto, port in tuples),
        naming.note(f"named ports {ports} of {spec.peer.note}"),
    )
