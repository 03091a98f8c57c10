"""Which policies isolate a pod, and the per-pod chain they give it.

Pods under the same policies (and, for ingress, with the same resolved named ports) share one
chain; the chain and the rule templates of each policy are built once and cached here, so a node
with hundreds of local pods builds only as many chains as there are distinct policy sets.
"""

from __future__ import annotations

from collections.abc import Iterable

from compiler.chains import RuleTemplate, pod_chain, templates
from compiler.ir import Chain
from compiler.model import Direction, NetworkPolicy, Pod, Protocol
from compiler.peersets import SetSpec
from compiler.podindex import namespace_of
from compiler.selectors import matches

# A per-pod chain and the peer sets its rules use.
ChainBuild = tuple[Chain, tuple[SetSpec, ...]]


class PodChains:
    """The policies of the model by namespace, and the chain each (pod, direction) gets."""

    def __init__(self, policies: Iterable[NetworkPolicy]) -> None:
        self._policies: dict[str, list[NetworkPolicy]] = {}
        for policy in sorted(policies, key=lambda p: p.key):
            self._policies.setdefault(policy.metadata.namespace or "default", []).append(policy)
        self._templates: dict[tuple[str, Direction], tuple[RuleTemplate, ...]] = {}
        self._chains: dict[tuple[object, ...], ChainBuild] = {}

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
        cache_key = (direction, tuple(p.key for p in isolating), tuple(sorted(resolved.items())))
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
