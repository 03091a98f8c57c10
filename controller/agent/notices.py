"""What a user must be told, as Kubernetes Events: found in the model, posted once each.

- ``PolicyDefect`` (Warning, on the NetworkPolicy): a problem of the policy as stored; the
  message says which field and what the agent did (its rule matches nothing, or it compiled as
  written). See :mod:`compiler.defects`.
- ``NamedPortUnresolved`` (Warning, on the NetworkPolicy): a rule names a port that no pod
  declares (ingress: among the pods the policy selects; egress: any pod of the cluster), so it
  allows nothing on that port yet.
- ``KubeProxyIPVS`` (Warning, on this Node): see :mod:`controller.agent.kube`.

:class:`Noticeboard` remembers what was posted, so a notice that stays true is posted once, not
on every compile; one that went away and comes back is posted again.
"""

from __future__ import annotations

from dataclasses import dataclass

from compiler.cluster import ClusterModel
from compiler.model import NetworkPolicy, NetworkPolicyPort, Pod
from compiler.selectors import matches


@dataclass(frozen=True)
class ObjectRef:
    kind: str
    api_version: str
    name: str
    namespace: str | None
    uid: str


@dataclass(frozen=True)
class Notice:
    ref: ObjectRef
    reason: str
    message: str
    type: str = "Warning"


def policy_ref(policy: NetworkPolicy) -> ObjectRef:
    return ObjectRef(
        "NetworkPolicy",
        "networking.k8s.io/v1",
        policy.metadata.name,
        policy.metadata.namespace or "default",
        policy.metadata.uid or "",
    )


def _declares(pod: Pod, port: NetworkPolicyPort) -> bool:
    return any(p.name == port.port and p.protocol == port.protocol for p in pod.container_ports())


def _named(ports: tuple[NetworkPolicyPort, ...]) -> list[NetworkPolicyPort]:
    return [p for p in ports if isinstance(p.port, str)]


def unresolved_named_ports(model: ClusterModel) -> list[Notice]:
    """Cost: one pass over the pods, then only the policies that name ports (most do not), each
    against its own namespace's pods: the agent runs this on every full compile."""
    live = [p for p in model.pods if not p.finished and not p.spec.host_network]
    declared = {(c.name, c.protocol) for p in live for c in p.container_ports() if c.name}
    by_namespace: dict[str, list[Pod]] = {}
    for pod in live:
        by_namespace.setdefault(pod.metadata.namespace or "default", []).append(pod)
    out: list[Notice] = []
    for policy in model.policies:
        ingress = [(i, _named(r.ports)) for i, r in enumerate(policy.spec.ingress)]
        egress = [(i, _named(r.ports)) for i, r in enumerate(policy.spec.egress)]
        if not any(ports for _, ports in (*ingress, *egress)):
            continue
        namespace = policy.metadata.namespace or "default"
        selected = [
            p for p in by_namespace.get(namespace, []) if matches(policy.spec.pod_selector, p.metadata.labels)
        ]
        for direction, rules in (("ingress", ingress), ("egress", egress)):
            for index, ports in rules:
                for port in ports:
                    if direction == "ingress" and any(_declares(p, port) for p in selected):
                        continue
                    if direction == "egress" and (port.port, port.protocol) in declared:
                        continue
                    whose = "pod the policy selects" if direction == "ingress" else "pod"
                    out.append(
                        Notice(
                            policy_ref(policy),
                            "NamedPortUnresolved",
                            f"spec.{direction}[{index}]: no {whose} declares a {port.protocol} container"
                            f" port named {port.port!r}, so this rule allows nothing on it yet",
                        )
                    )
    return out


def policy_defects(model: ClusterModel) -> list[Notice]:
    by_key = {p.key: p for p in model.policies}
    out: list[Notice] = []
    for defect in model.policy_defects:
        policy = by_key.get(defect.policy)
        if policy is not None:
            out.append(Notice(policy_ref(policy), "PolicyDefect", str(defect)))
    return out


def notices(model: ClusterModel) -> list[Notice]:
    return [*policy_defects(model), *unresolved_named_ports(model)]


class Noticeboard:
    """Which notices are standing; :meth:`update` returns those new since the last update."""

    def __init__(self) -> None:
        self._standing: set[Notice] = set()
        self._once: set[Notice] = set()

    def update(self, current: list[Notice]) -> list[Notice]:
        fresh = [n for n in dict.fromkeys(current) if n not in self._standing]
        self._standing = set(current)
        return fresh

    def once(self, notice: Notice) -> bool:
        """Whether a notice outside the model (kube-proxy mode) is new; it then stands for good."""
        if notice in self._once:
            return False
        self._once.add(notice)
        return True
