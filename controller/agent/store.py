"""The agent's picture of the cluster: every watched object by UID, and what each event changes.

An event is reduced to a :class:`Change` the compile understands: pod churn (the pod before and
after, for :meth:`compiler.incremental.NodeCompiler.update_pod`), a CNI report, the node's routed
pod sources (``update_sources``), a policy or a
namespace before and after (``update_policy``, ``update_namespace``), or a change of a node (the
plan is compiled again). An event that changes nothing the
compiler reads (a pod's conditions, a node's heartbeat, a re-listed object) is no change.

Objects are keyed by UID, so a late DELETE of an object's previous incarnation (a StatefulSet pod
re-created under the same name) removes that incarnation only.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from types import MappingProxyType

from compiler.cluster import ClusterModel, PodSource
from compiler.model import Namespace, NetworkPolicy, Node, Pod
from controller.agent.objects import Kind, Model


@dataclass(frozen=True)
class PodChange:
    uid: str
    old: Pod | None
    new: Pod | None


@dataclass(frozen=True)
class CniChange:
    uid: str
    addresses: tuple[str, ...]


@dataclass(frozen=True)
class SourcesChange:
    """The node's routed pod sources (all of them) are now ``sources``."""

    sources: frozenset[PodSource]


@dataclass(frozen=True)
class PolicyChange:
    uid: str
    old: NetworkPolicy | None
    new: NetworkPolicy | None


@dataclass(frozen=True)
class NamespaceChange:
    uid: str
    old: Namespace | None
    new: Namespace | None


@dataclass(frozen=True)
class ModelChange:
    """A node changed (its podCIDRs shape the base chains): only a full compile is right."""

    kind: Kind
    uid: str


Change = PodChange | CniChange | SourcesChange | PolicyChange | NamespaceChange | ModelChange


def _change(kind: Kind, uid: str, old: Model | None, new: Model | None) -> Change:
    if kind == "Pod":
        assert isinstance(old, Pod | None) and isinstance(new, Pod | None)
        return PodChange(uid, old, new)
    if kind == "NetworkPolicy":
        assert isinstance(old, NetworkPolicy | None) and isinstance(new, NetworkPolicy | None)
        return PolicyChange(uid, old, new)
    if kind == "Namespace":
        assert isinstance(old, Namespace | None) and isinstance(new, Namespace | None)
        return NamespaceChange(uid, old, new)
    return ModelChange(kind, uid)


def _by_name(obj: Namespace | Node) -> str:
    return obj.metadata.name


def _by_ref(obj: Pod | NetworkPolicy) -> tuple[str, str, str]:
    # The loader's order (namespace/name), then uid: two incarnations of one name both sort.
    return (obj.metadata.namespace or "", obj.metadata.name, obj.metadata.uid or "")


@dataclass
class Store:
    pods: dict[str, Pod] = field(default_factory=dict)
    policies: dict[str, NetworkPolicy] = field(default_factory=dict)
    namespaces: dict[str, Namespace] = field(default_factory=dict)
    nodes: dict[str, Node] = field(default_factory=dict)
    cni: dict[str, tuple[str, ...]] = field(default_factory=dict)
    sources: frozenset[PodSource] = frozenset()

    def _table(self, kind: Kind) -> dict[str, Model]:
        tables: dict[str, dict[str, Model]] = {
            "Pod": self.pods,  # type: ignore[dict-item]
            "NetworkPolicy": self.policies,  # type: ignore[dict-item]
            "Namespace": self.namespaces,  # type: ignore[dict-item]
            "Node": self.nodes,  # type: ignore[dict-item]
        }
        return tables[kind]

    def uids(self, kind: Kind) -> set[str]:
        return set(self._table(kind))

    def upsert(self, kind: Kind, obj: Model) -> Change | None:
        uid = obj.metadata.uid
        if not uid:
            raise ValueError(f"{kind} {obj.metadata.name}: an object from the API without metadata.uid")
        table = self._table(kind)
        old = table.get(uid)
        if old == obj:
            return None
        table[uid] = obj
        return _change(kind, uid, old, obj)

    def delete(self, kind: Kind, uid: str) -> Change | None:
        old = self._table(kind).pop(uid, None)
        if old is None:
            return None
        if kind == "Pod":
            # The sandbox is gone with the pod; a report for this UID no longer counts.
            self.cni.pop(uid, None)
        return _change(kind, uid, old, None)

    def report_cni(self, uid: str, addresses: tuple[str, ...]) -> Change | None:
        """The CNI plugin's addresses for pod ``uid`` (empty: its sandbox is gone)."""
        if self.cni.get(uid, ()) == addresses:
            return None
        if addresses:
            self.cni[uid] = addresses
        else:
            self.cni.pop(uid, None)
        return CniChange(uid, addresses)

    def set_sources(self, sources: frozenset[PodSource]) -> Change | None:
        """The node's routed pod sources as a full listing of the routing table shows them."""
        if sources == self.sources:
            return None
        self.sources = sources
        return SourcesChange(sources)

    def refresh_sources(self, addresses: Iterable[str], found: frozenset[PodSource]) -> Change | None:
        """The routing table was asked about ``addresses`` only, and ``found`` is its answer: their
        pairs, and any other pair of an interface in ``found``, are replaced by ``found`` (a pod's
        interface holds exactly the addresses the CNI plugin reports for it)."""
        asked = set(addresses)
        interfaces = {s.ifname for s in found}
        kept = {s for s in self.sources if s.address not in asked and s.ifname not in interfaces}
        return self.set_sources(frozenset(kept | found))

    def snapshot(self) -> Snapshot:
        """Everything held now; cheap (the models are immutable and shared)."""
        return Snapshot(
            namespaces=tuple(self.namespaces.values()),
            pods=tuple(self.pods.values()),
            policies=tuple(self.policies.values()),
            nodes=tuple(self.nodes.values()),
            cni=tuple(self.cni.items()),
            sources=self.sources,
        )


@dataclass(frozen=True)
class Snapshot:
    """The store at one moment; :meth:`model` (sorting, checking policies) runs off the event loop."""

    namespaces: tuple[Namespace, ...] = ()
    pods: tuple[Pod, ...] = ()
    policies: tuple[NetworkPolicy, ...] = ()
    nodes: tuple[Node, ...] = ()
    cni: tuple[tuple[str, tuple[str, ...]], ...] = ()
    sources: frozenset[PodSource] = frozenset()

    def model(self) -> ClusterModel:
        """The compiler's model, ordered as the loader orders manifests."""
        return ClusterModel(
            namespaces=tuple(sorted(self.namespaces, key=_by_name)),
            pods=tuple(sorted(self.pods, key=_by_ref)),
            policies=tuple(sorted(self.policies, key=_by_ref)),
            nodes=tuple(sorted(self.nodes, key=_by_name)),
            cni_addresses=MappingProxyType(dict(self.cni)),
            pod_sources=self.sources,
        )
