"""Which policies isolate a pod, and the per-pod chain they give it.

Pods under the same policies (and, for ingress, with the same resolved named ports) share one
chain; the chain and the rule templates of each policy are built once and cached here, so a node
with hundreds of local pods builds only as many chains as there are distinct policy sets.

Policies are held by UID and may be replaced one at a time (:meth:`PodChains.replace`): the
caches that a policy's old content fed (its templates, the chains built with it) are dropped, and
the caller refreshes the pods of its namespace that its old or new pod selector matches.
"""

from __future__ import annotations

from collections.abc import Iterable

from compiler.chains import RuleTemplate, pod_chain, templates
from compiler.ir import Chain
from compiler.model import Direction, NetworkPolicy, Pod, Protocol, synthetic_uid
from compiler.peersets import SetSpec
from compiler.podindex import namespace_of
from compiler.selectors import matches

# A per-pod chain and the peer sets its rules use.
ChainBuild = tuple[Chain, tuple[SetSpec, ...]]
# (direction, keys of the isolating policies, resolved named ports): what a chain is built from.
_CacheKey = tuple[Direction, tuple[str, ...], tuple[tuple[tuple[Protocol, str], tuple[int, ...]], ...]]


class PodChains:
    """The policies of the model by namespace, and the chain each (pod, direction) gets."""

    def __init__(self, policies: Iterable[NetworkPolicy]) -> None:
        self._by_uid: dict[str, NetworkPolicy] = {}
        self._policies: dict[str, list[NetworkPolicy]] = {}
        for policy in sorted(policies, key=lambda p: p.key):
            self._by_uid[policy_uid(policy)] = policy
            self._policies.setdefault(policy_namespace(policy), []).append(policy)
        self._templates: dict[tuple[str, Direction], tuple[RuleTemplate, ...]] = {}
        self._chains: dict[_CacheKey, ChainBuild] = {}

    def get(self, uid: str) -> NetworkPolicy | None:
        return self._by_uid.get(uid)

    def replace(self, uid: str, policy: NetworkPolicy | None) -> NetworkPolicy | None:
        """Make ``policy`` the one held under ``uid`` (None removes it); return the one it replaced.

        The namespace's list stays in the order a full compile gives (by ``namespace/name``,
        stable), and every cached template and chain built from either version is dropped.
        """
        old = self._by_uid.pop(uid, None)
        if policy is not None:
            self._by_uid[uid] = policy
        for ns in {policy_namespace(p) for p in (old, policy) if p is not None}:
            members = sorted(
                (p for u, p in self._by_uid.items() if policy_namespace(p) == ns),
                key=lambda p: (p.key, policy_uid(p)),
            )
            if members:
                self._policies[ns] = members
            else:
                self._policies.pop(ns, None)
        stale = {p.key for p in (old, policy) if p is not None}
        self._templates = {k: v for k, v in self._templates.items() if k[0] not in stale}
        self._chains = {k: v for k, v in self._chains.items() if not stale.intersection(k[1])}
        return old

    def chain_for(self, pod: Pod, direction: Direction) -> ChainBuild | None:
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
        cache_key: _CacheKey = (direction, tuple(p.key for p in isolating), tuple(sorted(resolved.items())))
        build = self._chains.get(cache_key)
        if build is None:

            def resolve(proto: Protocol, name: str) -> tuple[int, ...]:
                return resolved.get((proto, name), ())

            build = pod_chain(direction, with_templates, resolve=resolve if direction == "ingress" else None)
            self._chains[cache_key] = build
        return build

    def _policy_templates(self, policy: NetworkPolicy, direction: Direction) -> tuple[RuleTemplate, ...]:
        key = (policy.key, direction)
        found = self._templates.get(key)
        if found is None:
            found = self._templates[key] = templates(policy, direction)
        return found


def policy_namespace(policy: NetworkPolicy) -> str:
    return policy.metadata.namespace or "default"


def policy_uid(policy: NetworkPolicy) -> str:
    """A policy's identity: metadata.uid, or for a manifest without one its synthetic UID."""
    meta = policy.metadata
    return meta.uid or synthetic_uid("NetworkPolicy", meta.namespace, meta.name)
