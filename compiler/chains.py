"""Per-pod chains: a pod's isolating policies turned into ordered nft rules.

Layout of every per-pod chain (one per direction in which the pod is isolated)::

    continue comment "..."       what the chain is for, then what each set it uses holds
    jump admin-<direction>       admin tier: reserved for ClusterNetworkPolicy (empty for now)
    <policy rules>               one rule per (policy rule x peer x port group x family)
    jump baseline-<direction>    baseline tier: reserved for ClusterNetworkPolicy (empty for now)
    drop                         isolation: what no rule allowed

The tiers are real jump points to shared chains that exist and are empty today, so adding
cluster-scoped policy later fills those chains and changes nothing else. Ingress rules ``accept``
(the ingress stage is the last one); egress rules ``return``, so a packet between two local pods
goes on to the destination's ingress stage.

A chain is named by a hash of its content, so pods with the same isolating policies (and, for
ingress, the same resolution of named ports) share one chain, and a pod whose labels change just
points its map entries at another chain.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from compiler import naming
from compiler.ir import (
    ACCEPT,
    DROP,
    FAMILIES,
    RETURN,
    AddrField,
    AddrInSet,
    Chain,
    DaddrProtoPortInSet,
    DportIn,
    L4protoIn,
    Match,
    PortRange,
    Rule,
    description,
    jump,
)
from compiler.model import PROTOCOLS, Direction, IPBlock, NetworkPolicy, NetworkPolicyPort, Protocol
from compiler.peersets import (
    AnyPeer,
    BlockPeer,
    CidrSetSpec,
    NamedPortSetSpec,
    Peer,
    PodSetSpec,
    SelectorPeer,
    SetSpec,
    block_peer,
    merge_spans,
    named_port_key,
    selector_peer,
)
from compiler.render_json import rule_json

PORT_MAX = 65535
Resolver = Callable[[Protocol, str], tuple[int, ...]]


@dataclass(frozen=True, eq=False)
class RuleTemplate:
    """One rule of a policy, with peers and ports normalized; named ports are still names."""

    policy: str
    direction: Direction
    index: int
    # (AnyPeer(),) for a rule without peers; () when its peers can match nothing.
    peers: tuple[Peer, ...]
    any_port: bool
    protocols: tuple[Protocol, ...]
    numeric: tuple[tuple[Protocol, tuple[PortRange, ...]], ...]
    named: tuple[tuple[Protocol, str], ...]

    @property
    def comment(self) -> str:
        return naming.rule_comment(self.policy, self.direction, index=self.index)


def templates(policy: NetworkPolicy, direction: Direction) -> tuple[RuleTemplate, ...]:
    """The policy's rules of ``direction`` as templates (only meaningful if the policy isolates it)."""
    namespace = policy.metadata.namespace or "default"
    rules = (
        [(r.from_, r.ports) for r in policy.spec.ingress]
        if direction == "ingress"
        else [(r.to, r.ports) for r in policy.spec.egress]
    )
    out: list[RuleTemplate] = []
    for index, (api_peers, api_ports) in enumerate(rules):
        peers: list[Peer] = []
        blocks: list[IPBlock] = []
        for api_peer in api_peers:
            if api_peer.ip_block is not None:
                if not blocks:
                    peers.append(AnyPeer())  # placeholder: the block peer goes where the first block was
                blocks.append(api_peer.ip_block)
                continue
            sel = selector_peer(namespace, api_peer)
            if sel is not None and all(p.key != sel.key for p in peers):
                peers.append(sel)
        if blocks:
            at = next(i for i, p in enumerate(peers) if isinstance(p, AnyPeer))
            peers[at] = block_peer(blocks)
        if not api_peers:
            peers = [AnyPeer()]
        protocols, numeric, named = _ports(api_ports)
        out.append(
            RuleTemplate(
                policy=policy.key,
                direction=direction,
                index=index,
                peers=tuple(peers),
                any_port=not api_ports,
                protocols=protocols,
                numeric=numeric,
                named=named,
            )
        )
    return tuple(out)


def _ports(
    ports: Sequence[NetworkPolicyPort],
) -> tuple[
    tuple[Protocol, ...], tuple[tuple[Protocol, tuple[PortRange, ...]], ...], tuple[tuple[Protocol, str], ...]
]:
    """Port entries split into protocol-only, numeric ranges (merged) and named; a protocol-only
    entry covers every port of its protocol, so numeric and named entries of it are dropped."""
    protocols = {p.protocol for p in ports if p.port is None}
    ranges: dict[Protocol, list[tuple[int, int]]] = {}
    named: set[tuple[Protocol, str]] = set()
    for p in ports:
        if p.port is None or p.protocol in protocols:
            continue
        if isinstance(p.port, str):
            named.add((p.protocol, p.port))
            continue
        first = max(p.port, 0)
        last = min(p.end_port if p.end_port is not None else p.port, PORT_MAX)
        if first <= last:  # endPort below port allows nothing (as in the semantics)
            ranges.setdefault(p.protocol, []).append((first, last))
    numeric = tuple((proto, _port_ranges(ranges[proto])) for proto in PROTOCOLS if proto in ranges)
    return (
        tuple(proto for proto in PROTOCOLS if proto in protocols),
        numeric,
        tuple(sorted(named)),
    )


def _port_ranges(spans: Sequence[tuple[int, int]]) -> tuple[PortRange, ...]:
    return tuple(PortRange(lo, hi) for lo, hi in merge_spans(spans))


def _port_groups(template: RuleTemplate, resolve: Resolver | None) -> list[tuple[Match, ...]]:
    """The rule's port matches, one group per nft rule; [()] when any port is allowed."""
    if template.any_port:
        return [()]
    groups: list[tuple[Match, ...]] = []
    if template.protocols:
        groups.append((L4protoIn(template.protocols),))
    ranges: dict[Protocol, list[tuple[int, int]]] = {
        proto: [(r.first, r.last) for r in rs] for proto, rs in template.numeric
    }
    if resolve is not None:  # ingress: named ports resolve against the destination, this pod
        for proto, name in template.named:
            ranges.setdefault(proto, []).extend((n, n) for n in resolve(proto, name) if 0 <= n <= PORT_MAX)
    for proto in PROTOCOLS:
        if ranges.get(proto):
            groups.append((DportIn(proto, _port_ranges(ranges[proto])),))
    return groups


def _peer_rules(
    template: RuleTemplate, peer: Peer, *, groups: list[tuple[Match, ...]], specs: dict[str, SetSpec]
) -> list[Rule]:
    verdict = ACCEPT if template.direction == "ingress" else RETURN
    field: AddrField = "saddr" if template.direction == "ingress" else "daddr"
    comment = template.comment
    rules: list[Rule] = []
    for group in groups:
        if isinstance(peer, AnyPeer):
            rules.append(Rule(group, verdict, comment))
            continue
        for family in FAMILIES:
            spec: SetSpec
            if isinstance(peer, SelectorPeer):
                spec = PodSetSpec(naming.pod_set(peer.key, family), family, peer)
            elif peer.spans(family):
                spec = CidrSetSpec(naming.cidr_set(peer.key, family), family, peer)
            else:
                continue  # no block of this family: nothing to match
            specs.setdefault(spec.name, spec)
            rules.append(Rule((AddrInSet(family, field, spec.name), *group), verdict, comment))
    if template.direction == "egress" and template.named:
        # Named ports resolve against each destination pod, so peer and port are one lookup.
        for family in FAMILIES:
            if isinstance(peer, BlockPeer) and not peer.spans(family):
                continue
            name = naming.named_port_set(named_port_key(peer, template.named), family)
            named = NamedPortSetSpec(name, family, peer, template.named)
            specs.setdefault(named.name, named)
            rules.append(Rule((DaddrProtoPortInSet(family, named.name),), verdict, comment))
    return rules


def tier_rule(tier: naming.Tier, direction: Direction) -> Rule:
    return Rule(
        (),
        jump(naming.tier_chain(tier, direction)),
        f"{tier} tier: reserved for ClusterNetworkPolicy",
    )


def pod_chain(
    direction: Direction,
    policy_templates: Sequence[tuple[str, tuple[RuleTemplate, ...]]],
    *,
    resolve: Resolver | None,
) -> tuple[Chain, tuple[SetSpec, ...]]:
    """The chain for a pod isolated in ``direction`` by the given (policy key, templates), sorted
    by key, and the sets its rules use. ``resolve`` maps an ingress named port to this pod's
    numbers (None for egress)."""
    specs: dict[str, SetSpec] = {}
    rules: list[Rule] = [tier_rule("admin", direction)]
    for _, policy_rules in policy_templates:
        for template in policy_rules:
            groups = _port_groups(template, resolve)
            if not groups and not (direction == "egress" and template.named):
                continue  # ports given but none can match (e.g. unresolved named ports)
            for peer in template.peers:
                rules.extend(_peer_rules(template, peer, groups=groups, specs=specs))
    rules.append(tier_rule("baseline", direction))
    isolating = ", ".join(key for key, _ in policy_templates)
    rules.append(Rule((), DROP, naming.comment(f"{direction} isolation: {isolating}")))
    note = naming.note(f"{direction} of pods isolated by {isolating}")
    # What the chain and each set it uses are for, at its top: the kernel keeps no comment on a
    # chain or set loaded through libnftables JSON (nftables 1.0.6), only on rules. Only a new
    # connection's first packet walks a per-pod chain, so these cost nothing to established traffic.
    about = [description(note)]
    about += [description(f"set {name}: {specs[name].note}") for name in sorted(specs)]
    content = (*about, *rules)
    # Hash the rules' libnftables JSON (sorted keys): a canonical text of what the kernel runs,
    # stable across Python versions and dataclass field changes, unlike repr().
    canonical = json.dumps([rule_json("", r) for r in content], sort_keys=True, separators=(",", ":"))
    name = naming.pod_chain(direction, canonical)
    keys = tuple(key for key, _ in policy_templates)
    return Chain(name, content, note=note, isolating=keys), tuple(specs[n] for n in sorted(specs))
