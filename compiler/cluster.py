"""The cluster model: every object the compiler reasons about, as one frozen value.

The operator builds it from its watches, the CLI from manifests; the compiler never asks
where it came from. So a policy with a problem the loader would refuse is made harmless here, for
every consumer at once: its bad rules match nothing (see :mod:`compiler.defects`), and
``policy_defects`` says which and why. Namespaces that pods or policies mention but that were never declared
are implied (with only their name label), as they would exist in any cluster that holds them.

Pod addresses have two sources. The API's ``status.podIPs`` is one; the other is the CNI plugin
on this node, which knows a sandbox's addresses before the kubelet reports them. It reaches the
model as ``cni_addresses``, a mapping from pod UID to the addresses the plugin assigned, and
:func:`with_cni_addresses` applies it by two rules:

- the API status wins once present: a pod whose status lists any address keeps exactly those;
- a report owns nothing by itself: one for a UID the model does not hold, for a finished pod
  (Succeeded, Failed) or for a host-network pod is ignored.

``ClusterModel.pods`` are the pods with the reports applied, so every consumer (the plan, the
semantics, explain) sees one set of addresses; ``api_pods`` keeps them as the API gave them.

``pod_sources`` is another fact of this node that no API object carries: the (host-side pod
interface, address) pairs its routing table holds, one per /32 or /128 route stockade-cni
installs to a pod's veth. Only the data plane reads them (the anti-spoofing fast path of
:mod:`compiler.basechains`); the semantics does not depend on them. A plan compiled offline from
manifests has none, and loses nothing but speed.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from compiler.defects import PolicyDefect, usable_policy
from compiler.model import NAMESPACE_NAME_LABEL, Namespace, NetworkPolicy, Node, Pod, PodIP

CniAddresses = Mapping[str, tuple[str, ...]]
"""Pod UID -> the addresses the CNI plugin on this node assigned to that pod's sandbox."""


@dataclass(frozen=True, order=True)
class PodSource:
    """The node routes ``address`` (a /32 or /128 route) to the pod interface ``ifname``: a packet
    arriving on ``ifname`` from ``address`` passes the strict reverse-path check."""

    ifname: str
    address: str


def with_cni_addresses(pod: Pod, reported: tuple[str, ...] | None) -> Pod:
    """``pod`` with the CNI's addresses where the API shows none yet (see the module's rules)."""
    if not reported or pod.ips() or pod.spec.host_network or pod.finished:
        return pod
    status = pod.status.model_copy(
        update={"pod_ip": reported[0], "pod_ips": tuple(PodIP(ip=a) for a in reported)}
    )
    return pod.model_copy(update={"status": status})


@dataclass(frozen=True)
class ClusterModel:
    namespaces: tuple[Namespace, ...] = ()
    pods: tuple[Pod, ...] = ()
    policies: tuple[NetworkPolicy, ...] = ()
    nodes: tuple[Node, ...] = ()
    cni_addresses: CniAddresses = field(default_factory=lambda: MappingProxyType({}))
    pod_sources: frozenset[PodSource] = frozenset()
    api_pods: tuple[Pod, ...] = field(default=(), init=False, repr=False, compare=False)
    _ns_labels: dict[str, dict[str, str]] = field(default_factory=dict, init=False, repr=False, compare=False)
    _by_address: dict[ipaddress.IPv4Address | ipaddress.IPv6Address | None, tuple[Pod, ...]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    _defects: list[PolicyDefect] = field(default_factory=list, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Frozen: the reports are copied, and pods replaced once by their effective selves.
        reports = MappingProxyType({uid: tuple(a) for uid, a in sorted(self.cni_addresses.items())})
        object.__setattr__(self, "cni_addresses", reports)
        object.__setattr__(self, "pod_sources", frozenset(self.pod_sources))
        object.__setattr__(self, "api_pods", self.pods)
        if reports:
            effective = tuple(with_cni_addresses(p, reports.get(p.uid)) for p in self.pods)
            object.__setattr__(self, "pods", effective)
        usable: list[NetworkPolicy] = []
        for policy in self.policies:
            checked, defects = usable_policy(policy)
            usable.append(checked)
            self._defects.extend(defects)
        object.__setattr__(self, "policies", tuple(usable))
        labels = {ns.metadata.name: ns.effective_labels() for ns in self.namespaces}
        objects: tuple[Pod | NetworkPolicy, ...] = (*self.pods, *self.policies)
        for obj in objects:
            name = obj.metadata.namespace or "default"
            labels.setdefault(name, {NAMESPACE_NAME_LABEL: name})
        self._ns_labels.update(labels)

    def pods_with_address(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> tuple[Pod, ...]:
        """Live pods that list ``address`` among their IPs: a finished pod holds no address (an
        index built once: explain and diff ask this for every bare-IP peer, and a scan per
        question made a 300-pod diff take seconds)."""
        if not self._by_address:
            index: dict[ipaddress.IPv4Address | ipaddress.IPv6Address, list[Pod]] = {}
            for pod in self.pods:
                if pod.status.phase in ("Succeeded", "Failed"):
                    continue
                for ip in pod.ips():
                    try:
                        index.setdefault(ipaddress.ip_address(ip), []).append(pod)
                    except ValueError:
                        continue  # the loader rejects bad IPs; a model built by hand may not
            self._by_address.update({a: tuple(ps) for a, ps in index.items()})
            self._by_address.setdefault(None, ())  # marks the index as built, even when empty
        return self._by_address.get(address, ())

    @property
    def policy_defects(self) -> tuple[PolicyDefect, ...]:
        """Problems of the policies as given, and what was done about each (in policy order)."""
        return tuple(self._defects)

    def rule_defects(self, policy: str, direction: str, index: int) -> tuple[PolicyDefect, ...]:
        """Why rule ``index`` of ``direction`` of ``policy`` (namespace/name) matches nothing, if it does."""
        return tuple(d for d in self._defects if d.policy == policy and d.rule == (direction, index))

    def namespace_labels(self, name: str) -> dict[str, str]:
        """Effective labels of a namespace (implied ones carry only kubernetes.io/metadata.name)."""
        return self._ns_labels.get(name, {NAMESPACE_NAME_LABEL: name})

    def node(self, name: str) -> Node | None:
        return next((n for n in self.nodes if n.metadata.name == name), None)

    def pod(self, namespace: str, name: str) -> Pod | None:
        return next(
            (p for p in self.pods if p.metadata.namespace == namespace and p.metadata.name == name), None
        )
