"""An index of pods: labels per namespace, and the owner of every pod address.

Peer sets hold addresses, so what matters is which pod an address belongs to. Pods are keyed by
UID (a StatefulSet pod re-created under the same name is another pod). Only live pods own
addresses: a finished pod (Succeeded, Failed) owns none, since the IPAM may already have handed
its address to a new pod. Among live pods listing one address, the one not being deleted
(no ``deletionTimestamp``) wins, then the newest ``creationTimestamp`` (a pod without one ranks
below any that has one); when the best two still tie, *nobody* owns the address (fail closed:
it is in no peer set and dispatches nowhere), rather than an arbitrary order such as names
deciding whose identity the packets carry. The reference semantics (:mod:`compiler.semantics`)
states the same rule independently, and the plan is tested against it.

Selecting pods never scans every pod: each namespace keeps an inverted index from label
(key, value) and from key to pod names, and a selector is the intersection of its requirements'
candidate sets.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from datetime import datetime
from functools import lru_cache

from compiler.model import Family, LabelSelector, Pod
from compiler.selectors import requirements


def namespace_of(obj: Pod) -> str:
    return obj.metadata.namespace or "default"


def _ipv4_value(text: str) -> int | None:
    """Dotted-quad IPv4 as an integer, by the same rules as ``ipaddress`` (no leading zeros);
    a fast path, since every pod address of a large cluster is parsed on each full compile."""
    parts = text.split(".")
    if len(parts) != 4:
        return None
    value = 0
    for part in parts:
        if not (part.isascii() and part.isdigit()) or len(part) > 3 or (len(part) > 1 and part[0] == "0"):
            return None
        octet = int(part)
        if octet > 255:
            return None
        value = value << 8 | octet
    return value


@lru_cache(maxsize=65536)
def normalize(text: str) -> str | None:
    """The canonical text of an address (as nft prints it), or None if it is not one."""
    if _ipv4_value(text) is not None:
        return text  # a valid dotted quad is already canonical
    if ":" not in text:
        return None  # not IPv6 either (the fast path above follows ipaddress's IPv4 rules)
    try:
        return str(ipaddress.IPv6Address(text))
    except ValueError:
        return None


@lru_cache(maxsize=65536)
def addr_key(address: str) -> tuple[int, int]:
    """Sort key of a normalized address: family, then numeric value."""
    value = _ipv4_value(address)
    if value is not None:
        return 4, value
    return 6, int(ipaddress.IPv6Address(address))


def family_of(address: str) -> Family:
    return 6 if ":" in address else 4


def pod_addresses(pod: Pod) -> tuple[str, ...]:
    """Normalized addresses a pod may own: none for a host-network pod (it uses its node's) or a
    finished one (its address may already be another pod's)."""
    if pod.spec.host_network or pod.finished:
        return ()
    found = (normalize(ip) for ip in pod.ips())
    return tuple(dict.fromkeys(a for a in found if a is not None))


class _NsIndex:
    """One namespace's pods: all of them, and by label. Which values a key has stands in for an
    index by key (Exists / DoesNotExist take the union of the key's value sets): a second set per
    label would hold every labelled pod again (at 10,000 pods, ~4 MiB the node agent keeps)."""

    __slots__ = ("all", "by_label", "values")

    def __init__(self) -> None:
        self.all: set[str] = set()
        self.by_label: dict[tuple[str, str], set[str]] = {}
        self.values: dict[str, set[str]] = {}  # label key -> the values pods have for it

    def with_key(self, key: str) -> set[str]:
        return set().union(*(self.by_label[(key, v)] for v in self.values.get(key, ())))


_NEVER = datetime.min  # rank of a pod without creationTimestamp (offline manifests)


def claim_rank(pod: Pod) -> tuple[bool, datetime]:
    """How strongly a live pod claims its addresses: not being deleted, then newer, is stronger."""
    meta = pod.metadata
    created = meta.creation_timestamp.replace(tzinfo=None) if meta.creation_timestamp else _NEVER
    return meta.deletion_timestamp is None, created


class PodIndex:
    """Pods by UID, by namespace and label, and the owner (a UID) of every pod address."""

    def __init__(self, pods: Iterable[Pod] = ()) -> None:
        self.pods: dict[str, Pod] = {}
        self.owner: dict[str, str] = {}
        self._addrs: dict[str, tuple[str, ...]] = {}
        # The UIDs claiming each address: a tuple, nearly always of one (a set per address was
        # a quarter of the index's memory).
        self._holders: dict[str, tuple[str, ...]] = {}
        self._ns: dict[str, _NsIndex] = {}
        for pod in pods:
            self._insert(pod)
        for address in self._holders:
            self._elect(address)

    def namespaces(self) -> tuple[str, ...]:
        return tuple(self._ns)

    def addresses(self, key: str) -> tuple[str, ...]:
        """The addresses pod ``key`` (a UID) claims, owned or not."""
        return self._addrs.get(key, ())

    def owned(self, key: str) -> tuple[str, ...]:
        """The addresses ``key`` holds and owns, sorted."""
        return tuple(sorted((a for a in self.addresses(key) if self.owner.get(a) == key), key=addr_key))

    def add(self, pod: Pod) -> None:
        if pod.uid in self.pods:
            self.remove(pod.uid)
        self._insert(pod)
        for address in self.addresses(pod.uid):
            self._elect(address)

    def remove(self, key: str) -> None:
        pod = self.pods.pop(key, None)
        if pod is None:
            return
        addresses = self._addrs.pop(key, ())
        for address in addresses:
            holders = tuple(h for h in self._holders[address] if h != key)
            if holders:
                self._holders[address] = holders
            else:
                del self._holders[address]
        if not pod.spec.host_network:
            ns = self._ns[namespace_of(pod)]
            ns.all.discard(key)
            for k, v in pod.metadata.labels.items():
                members = ns.by_label[(k, v)]
                members.discard(key)
                if not members:  # the last pod with this label: forget the label
                    del ns.by_label[(k, v)]
                    ns.values[k].discard(v)
                    if not ns.values[k]:
                        del ns.values[k]
        for address in addresses:
            self._elect(address)

    def select(self, namespace: str, selector: LabelSelector) -> set[str]:
        """UIDs of the pod-network pods of ``namespace`` that ``selector`` selects."""
        ns = self._ns.get(namespace)
        if ns is None:
            return set()
        found: set[str] | None = None
        for key, op, values in sorted(requirements(selector), key=_cheapest_first):
            if op == "In":
                hits = set().union(*(ns.by_label.get((key, v), ()) for v in values))
            elif op == "NotIn":
                hits = ns.all - set().union(*(ns.by_label.get((key, v), ()) for v in values))
            elif op == "Exists":
                hits = ns.with_key(key)
            else:  # DoesNotExist
                hits = ns.all - ns.with_key(key)
            found = hits if found is None else found & hits
            if not found:
                return set()
        return set(ns.all) if found is None else found

    def _insert(self, pod: Pod) -> None:
        key = pod.uid
        self.pods[key] = pod
        if pod.spec.host_network:
            return  # not policed, selected by nothing, owns no address (it uses its node's)
        ns = self._ns.setdefault(namespace_of(pod), _NsIndex())
        ns.all.add(key)
        for k, v in pod.metadata.labels.items():
            ns.values.setdefault(k, set()).add(v)
            ns.by_label.setdefault((k, v), set()).add(key)
        addresses = pod_addresses(pod)
        if addresses:
            self._addrs[key] = addresses
        for address in addresses:
            held = self._holders.get(address, ())
            if key not in held:
                self._holders[address] = (*held, key)

    def _elect(self, address: str) -> None:
        holders = self._holders.get(address)
        if not holders:
            self.owner.pop(address, None)
            return
        if len(holders) == 1:
            (self.owner[address],) = holders
            return
        ranked = sorted(((claim_rank(self.pods[k]), k) for k in holders), reverse=True)
        if ranked[0][0] == ranked[1][0]:
            self.owner.pop(address, None)  # two equal claims: nobody's (fail closed)
        else:
            self.owner[address] = ranked[0][1]


def _cheapest_first(req: tuple[str, str, tuple[str, ...]]) -> int:
    # In and Exists narrow from small buckets; NotIn / DoesNotExist start from every pod.
    return {"In": 0, "Exists": 1}.get(req[1], 2)
