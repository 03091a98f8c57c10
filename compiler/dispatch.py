"""Dispatch of the node's local pods: which per-pod chain each local address jumps to.

For every address a local pod owns, the dispatch maps (one per direction and family) hold the
verdict the base chains look up: a jump to the pod's chain, or, for a pod no policy isolates in
that direction, ``accept`` (ingress) or ``continue`` (egress, so the ingress stage still runs).
The local-pods sets hold the same addresses; the fail-closed rules compare against them. The
hairpin sets hold each of them paired with itself, so that a pod's traffic to itself through a
Service is accepted before any per-pod chain (:mod:`compiler.basechains`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from compiler import naming
from compiler.ir import (
    ACCEPT,
    CONTINUE,
    DIRECTIONS,
    AddrSet,
    LocalPod,
    MapEntry,
    SelfPairSet,
    Verdict,
    VerdictMap,
    jump,
)
from compiler.model import Direction, Family
from compiler.podindex import addr_key, family_of


@dataclass(frozen=True)
class LocalEntry:
    """A local pod as dispatch sees it: its plan key, owned addresses and per-pod chains."""

    key: str  # namespace/name, as the plan names the pod
    addresses: tuple[str, ...]
    ingress: str | None
    egress: str | None

    def verdicts(self) -> tuple[Verdict, Verdict]:
        """(ingress, egress) verdicts of the pod's addresses in the dispatch maps."""
        return (
            jump(self.ingress) if self.ingress is not None else ACCEPT,
            jump(self.egress) if self.egress is not None else CONTINUE,
        )


# An address's (ingress, egress) dispatch verdicts; None: the address is not a local pod's.
Dispatched = tuple[Verdict, Verdict] | None


class Dispatch:
    """Local pods by UID, and the dispatch maps and local-pods sets derived from them."""

    def __init__(self) -> None:
        self._entries: dict[str, LocalEntry] = {}
        self._by_address: dict[str, tuple[Verdict, Verdict]] = {}
        # The whole maps, sets and local pods as the plan shows them, until the next change.
        self._cache: dict[tuple[str, Direction | None, Family | None], object] = {}

    @property
    def entries(self) -> Mapping[str, LocalEntry]:
        return self._entries

    def lookup(self, address: str) -> Dispatched:
        return self._by_address.get(address)

    def add(self, uid: str, entry: LocalEntry) -> None:
        self._cache.clear()
        self._entries[uid] = entry
        verdicts = entry.verdicts()
        for address in entry.addresses:
            self._by_address[address] = verdicts

    def remove(self, uid: str) -> LocalEntry | None:
        entry = self._entries.pop(uid, None)
        if entry is not None:
            self._cache.clear()
            for address in entry.addresses:
                self._by_address.pop(address, None)
        return entry

    # --- the plan's view -------------------------------------------------------------------------------

    def plan_map(
        self, direction: Direction, family: Family, addresses: Iterable[str] | None = None
    ) -> VerdictMap:
        """The dispatch map of ``direction`` and ``family``; with ``addresses``, only their entries."""
        if addresses is None:
            whole = self._cache.get(("map", direction, family))
            if not isinstance(whole, VerdictMap):
                whole = self._map(direction, family, (a for a in self._by_address if family_of(a) == family))
                self._cache[("map", direction, family)] = whole
            return whole
        return self._map(direction, family, addresses)

    def _map(self, direction: Direction, family: Family, addresses: Iterable[str]) -> VerdictMap:
        slot = DIRECTIONS.index(direction)
        ordered = sorted(addresses, key=addr_key)
        entries = tuple(MapEntry(a, self._by_address[a][slot]) for a in ordered)
        return VerdictMap(naming.dispatch_map(direction, family), family, direction, entries)

    def local_set(self, family: Family, addresses: Iterable[str] | None = None) -> AddrSet:
        """The local-pods set of ``family``; with ``addresses``, holding only those (for deltas)."""
        if addresses is None:
            whole = self._cache.get(("local", None, family))
            if not isinstance(whole, AddrSet):
                whole = self.local_set(family, (a for a in self._by_address if family_of(a) == family))
                self._cache[("local", None, family)] = whole
            return whole
        ordered = tuple(sorted(addresses, key=addr_key))
        return AddrSet(naming.local_set(family), family, ordered, "addresses of local pods")

    def hairpin_set(self, family: Family, addresses: Iterable[str] | None = None) -> SelfPairSet:
        """The hairpin set of ``family``: each local address paired with itself; with
        ``addresses``, holding only their pairs (for deltas)."""
        if addresses is None:
            whole = self._cache.get(("hairpin", None, family))
            if not isinstance(whole, SelfPairSet):
                local = self.local_set(family).elements
                whole = SelfPairSet(naming.hairpin_set(family), family, local, "local pods, each to itself")
                self._cache[("hairpin", None, family)] = whole
            return whole
        some = self.local_set(family, addresses)
        return SelfPairSet(naming.hairpin_set(family), family, some.elements, "local pods, each to itself")

    def local_pods(self) -> tuple[LocalPod, ...]:
        whole = self._cache.get(("pods", None, None))
        if not isinstance(whole, tuple):
            whole = tuple(
                LocalPod(entry.key, entry.addresses, entry.ingress, entry.egress)
                for _, entry in sorted(self._entries.items(), key=lambda item: (item[1].key, item[0]))
            )
            self._cache[("pods", None, None)] = whole
        return whole
