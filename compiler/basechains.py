"""The base chains: where packets enter table ``inet stockade``, and why there.

Hooks and priorities, relative to kube-proxy (iptables and nftables modes) and conntrack:

- ``prerouting``, priority ``raw`` (-300): anti-spoofing. It only reads the source address and
  the arrival device, so its place relative to DNAT does not matter; running before conntrack
  (-200) keeps spoofed packets from ever creating a conntrack entry.
- ``forward`` and ``input``, priority ``filter`` (0): policy. kube-proxy rewrites service
  addresses with DNAT in prerouting / output at priority ``dstnat`` (-100) in both modes (and its
  nftables mode filters service traffic at -110), so by priority 0 a packet to a ClusterIP or
  NodePort already carries the backend pod's address and is judged by the policies of the pod it
  will reach. SNAT (masquerade) happens later, in postrouting (``srcnat``, 100), so the source is
  still the pod's own address here. A packet must pass every base chain of every table on its
  hook: an ``accept`` in kube-proxy's or anyone else's table does not skip ours, and our ``drop``
  is final, so equal priorities in other tables cannot open a hole.
- No ``output`` chain: traffic the node itself originates (kubelet probes, host-network pods) is
  allowed, as the semantics says; replies to it are ``established``.

Every base chain has policy ``accept``: the table polices pod traffic only, and anything that no
rule claims (the node's own traffic, routing between other interfaces) is not ours to judge.
"""

from __future__ import annotations

from compiler import naming
from compiler.ir import (
    ACCEPT,
    DROP,
    FAMILIES,
    AddrField,
    AddrInSet,
    BaseHook,
    Chain,
    CtStateIn,
    FibSaddrIifMissing,
    Icmpv6TypeIn,
    IifLoopback,
    Rule,
    SaddrDaddrInSet,
    VmapLookup,
)
from compiler.model import Direction, Family

PRIORITY_RAW = -300
PRIORITY_FILTER = 0

# Neighbour discovery between a pod and its node. A pod answers the node's neighbour
# solicitation from its own (global) address to the node's link-local one, which lands in
# `input` and would be judged as the pod's egress: an egress-isolated pod would then become
# unreachable. NetworkPolicy cannot express ICMPv6 anyway; these never leave the link.
ND_TYPES = ("nd-router-solicit", "nd-router-advert", "nd-neighbor-solicit", "nd-neighbor-advert")


def _fail_closed(chain: str, families: tuple[Family, ...]) -> list[Rule]:
    """Drop what comes from (and, when forwarding, goes to) an address in the node's podCIDRs that
    is not a listed local pod: a new pod is unreachable, and cannot send, until its policy and
    dispatch entries are in the kernel."""
    fields: tuple[AddrField, ...] = ("saddr", "daddr") if chain == naming.CHAIN_FORWARD else ("saddr",)
    rules: list[Rule] = []
    for field in fields:
        for family in families:
            rules.append(
                Rule(
                    (
                        AddrInSet(family, field, naming.podcidr_set(family)),
                        AddrInSet(family, field, naming.local_set(family), negate=True),
                    ),
                    DROP,
                    f"fail closed: {field} in podCIDR but not a known local pod",
                )
            )
    return rules


def _dispatch(field: AddrField) -> list[Rule]:
    """The source address picks the egress chain; the destination address the ingress chain."""
    direction: Direction = "egress" if field == "saddr" else "ingress"
    what = f"{direction} of local pods"
    return [
        Rule(
            (),
            VmapLookup(family, field, naming.dispatch_map(direction, family)),
            f"dispatch: {what}",
            counter=False,  # the per-pod chains count; a counter here would also count misses
        )
        for family in FAMILIES
    ]


def _hairpin() -> list[Rule]:
    """A pod may always reach itself (DESIGN.md), also through a Service: the packet leaves the
    pod for a virtual IP, kube-proxy's DNAT sends it back to the same pod, and here it carries
    source = destination = the pod's address. The pod's own ingress (and egress) chain must not
    judge it, so such pairs are accepted before dispatch. Only local pods' pairs are listed: a
    pod's hairpin traffic comes back through its own node. Not needed in ``input``: a packet to
    the node's own address never has a pod's address as destination."""
    return [
        Rule(
            (SaddrDaddrInSet(family, naming.hairpin_set(family)),),
            ACCEPT,
            "hairpin: a pod may always reach itself, also through a Service",
        )
        for family in FAMILIES
    ]


_ESTABLISHED = Rule(
    (CtStateIn(("established", "related")),), ACCEPT, "replies and related traffic are never policy-checked"
)


def base_chains(cidr_families: tuple[Family, ...]) -> tuple[Chain, ...]:
    """prerouting, input, forward; fail-closed rules only for families with known podCIDRs."""
    prerouting = Chain(
        naming.CHAIN_PREROUTING,
        (
            Rule((IifLoopback(),), ACCEPT, "loopback is exempt from the reverse-path check"),
            # Strict reverse path: the source must route back out of the device the packet came
            # in on. A pod's veth is the route to that pod's /32 and /128 only, so a pod cannot
            # borrow another pod's (local or remote) address, nor an external one an ipBlock
            # allows. Kernels skip the check for ICMPv6 DAD / MLD from the unspecified address.
            Rule((FibSaddrIifMissing(),), DROP, "anti-spoofing: source does not route back via iif"),
        ),
        BaseHook("prerouting", PRIORITY_RAW, "raw"),
        note="anti-spoofing (strict reverse path), before conntrack",
    )
    input_chain = Chain(
        naming.CHAIN_INPUT,
        (
            # The node talking to itself (also from an address it took from its podCIDR).
            Rule((IifLoopback(),), ACCEPT, "the node's own traffic to itself"),
            _ESTABLISHED,
            # No `ct state invalid drop` here: traffic to the node that no pod sent is not ours.
            Rule((Icmpv6TypeIn(ND_TYPES),), ACCEPT, "neighbour discovery with the node is link control"),
            *_fail_closed(naming.CHAIN_INPUT, cidr_families),
            *_dispatch("saddr"),
        ),
        BaseHook("input", PRIORITY_FILTER, "filter"),
        note="egress of local pods to the node's own addresses",
    )
    forward = Chain(
        naming.CHAIN_FORWARD,
        (
            _ESTABLISHED,
            Rule((CtStateIn(("invalid",)),), DROP, "conntrack cannot place it: never a new connection"),
            *_fail_closed(naming.CHAIN_FORWARD, cidr_families),
            *_hairpin(),
            *_dispatch("saddr"),
            *_dispatch("daddr"),
        ),
        BaseHook("forward", PRIORITY_FILTER, "filter"),
        note="all pod traffic: the source's egress stage, then the destination's ingress stage",
    )
    return prerouting, input_chain, forward


def tier_chains() -> tuple[Chain, ...]:
    """The shared, empty chains at the admin and baseline tier positions of every per-pod chain."""
    return tuple(
        Chain(
            naming.tier_chain(tier, direction),
            (),
            note=f"{tier} tier ({direction}): reserved for ClusterNetworkPolicy; empty",
        )
        for tier in ("admin", "baseline")
        for direction in ("ingress", "egress")
    )


__all__ = ["FAMILIES", "ND_TYPES", "base_chains", "tier_chains"]
