"""The anti-spoofing fast path's pairs: which (pod interface, address) sources the node routes.

The node agent reads them from the routing table (the /32 and /128 routes stockade-cni installs
to each pod's host-side veth) and hands them to the compiler as ``ClusterModel.pod_sources``; the
plan holds them in the sets ``pod-sources-v4`` / ``pod-sources-v6`` (type ``ifname . ipv4_addr``,
``ifname . ipv6_addr``), which ``prerouting`` looks up before it falls back to the ``fib`` route
lookup (:mod:`compiler.basechains` says why that is never weaker than the lookup alone).

A pair is used only if it can be written safely and can ever match:

- the interface name starts with the pod interface prefix (the fast path sits behind
  ``iifname "stk*"``; any other pair could never match) and holds only letters, digits, ``-``,
  ``_`` and ``.`` within the kernel's 15 bytes (Linux allows ``"`` in a name; the text rendering
  could not carry it);
- the address is one IPv4 or IPv6 address, written as Python's :mod:`ipaddress` writes it.

Any other pair is left out with a note: its pod is then checked by the ``fib`` lookup, as every
pod was before the fast path. Leaving a pair out never lets a packet through.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping

from compiler import naming
from compiler.cluster import PodSource
from compiler.ir import FAMILIES, IfnameAddr, IfnameAddrSet
from compiler.model import Family

_NAME_CHARS = re.compile(r"[A-Za-z0-9_.-]+")
NOTE = "(pod interface . address) the node routes, filled by the agent (empty offline): no route lookup"

Sources = dict[Family, frozenset[IfnameAddr]]
Changes = dict[Family, tuple[frozenset[IfnameAddr], frozenset[IfnameAddr]]]


def usable_sources(sources: Iterable[PodSource], *, prefix: str) -> tuple[Sources, tuple[str, ...]]:
    """The pairs that can be used, per family, and a note for every one that cannot (sorted)."""
    usable: dict[Family, set[IfnameAddr]] = {f: set() for f in FAMILIES}
    notes: list[str] = []
    for source in sorted(sources):
        name, text = source.ifname, source.address
        what = f"pod source {naming.sanitize(name)!r} . {naming.sanitize(text)!r}"
        fits = len(name.encode()) <= naming.IFNAME_MAX and _NAME_CHARS.fullmatch(name)
        if not (name.startswith(prefix) and fits):
            notes.append(
                f"{what}: not a pod interface name ({prefix!r} then letters, digits, '-', '_', '.';"
                f" at most {naming.IFNAME_MAX}); left to the route lookup"
            )
            continue
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            notes.append(f"{what}: not an IP address; left to the route lookup")
            continue
        if "%" in str(address):
            notes.append(f"{what}: a scoped address; left to the route lookup")
            continue
        family: Family = 4 if address.version == 4 else 6
        usable[family].add(IfnameAddr(name, str(address)))
    return {f: frozenset(pairs) for f, pairs in usable.items()}, tuple(notes)


def source_set(family: Family, pairs: Iterable[IfnameAddr]) -> IfnameAddrSet:
    """The set of ``family`` holding ``pairs`` (all of them, or those a delta adds or deletes)."""
    ordered = sorted(pairs, key=lambda p: (p.ifname, int(ipaddress.ip_address(p.address))))
    return IfnameAddrSet(naming.pod_source_set(family), family, tuple(ordered), NOTE)


def changes(before: Mapping[Family, frozenset[IfnameAddr]], after: Sources) -> Changes:
    """Per family, the pairs that left and the pairs that came."""
    return {f: (before[f] - after[f], after[f] - before[f]) for f in FAMILIES}
