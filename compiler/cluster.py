"""The cluster model: every object the compiler reasons about, as one frozen value.

The operator builds it from its watches, the CLI from manifests; the compiler never asks
where it came from. So a policy with a problem the loader would refuse is made harmless here, for
every consumer at once: its bad rules match nothing (see :mod:`compiler.defects`), and
``policy_defects`` says which and why. Namespaces that pods or policies mention but that were never declared
are implied (with only their name label), as they would exist in any cluster that holds them.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from compiler.defects import PolicyDefect, usable_policy
from compiler.model import NAMESPACE_NAME_LABEL, Namespace, NetworkPolicy, Node, Pod


@dataclass(frozen=True)
class ClusterModel:
    namespaces: tuple[Namespace, ...] = ()
    pods: tuple[Pod, ...] = ()
    policies: tuple[NetworkPolicy, ...] = ()
    nodes: tuple[Node, ...] = ()
    _ns_labels: dict[str, dict[str, str]] = field(default_factory=dict, init=False, repr=False, compare=False)
    _by_address: dict[ipaddress.IPv4Address | ipaddress.IPv6Address | None, tuple[Pod, ...]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    _defects: list[PolicyDefect] = field(default_factory=list, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
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
        """Pods that list ``address`` among their IPs (an index built once: explain and diff ask
        this for every bare-IP peer, and a scan per question made a 300-pod diff take seconds)."""
        if not self._by_address:
            index: dict[ipaddress.IPv4Address | ipaddress.IPv6Address, list[Pod]] = {}
            for pod in self.pods:
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
