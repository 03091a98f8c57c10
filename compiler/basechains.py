"""The base chains: where packets enter table ``inet stockade``, and why there.

Hooks and priorities, relative to kube-proxy (iptables and nftables modes) and conntrack:

- ``prerouting``, priority ``raw`` (-300): anti-spoofing of packets from pod interfaces. It only
  reads the source address and the arrival device, so its place relative to DNAT does not matter;
  running before conntrack (-200) keeps spoofed packets from ever creating a conntrack entry.
- ``forward`` and ``input``, priority ``filter`` (0): policy. kube-proxy rewrites service
  addresses with DNAT in prerouting / output at priority ``dstnat`` (-100) in both modes (and its
  nftables mode filters service traffic at -110), so by priority 0 a packet to a ClusterIP or
  NodePort already carries the backend pod's address and is judged by the policies of the pod it
  will reach. SNAT (masquerade) happens later, in postrouting (``srcnat``, 100), so the source is
  still the pod's own address here. A packet must pass every base chain of every table on its
  hook: an ``accept`` in kube-proxy's or anyone else's table does not skip ours, and our ``drop``
  is final, so equal priorities in other tables cannot open a hole.
- No policy in ``output``: traffic the node itself originates (kubelet probes, host-network pods)
  is allowed, as the semantics says; replies to it are ``established``. The ``output`` chain,
  priority ``raw`` (-300), exists only to exempt the overlay's own VXLAN packets from conntrack
  (below), and only on a node with an InternalIP while the agent runs the overlay.

The overlay's VXLAN packets are untracked (``notrack``, before conntrack at -200): UDP to the
overlay's port (4789) and to one of the node's InternalIPs in ``prerouting``, from one of them in
``output``. Tracking them gives nobody any state: a tunnel packet's source port is a hash of the
inner flow and its destination port is always 4789, so the two directions of a pod flow are two
unrelated UDP tuples, each an entry that never sees a reply (``new`` for ever, never
``established``); each inner flow leaves such entries on both nodes, and every tunnel packet pays
a conntrack lookup at output on one node and prerouting on the other, on top of the inner packet's
own tracking in ``forward``. The inner pod packets are tracked exactly as before: the VXLAN driver
drops the outer packet's conntrack reference when it encapsulates and decapsulates
(``skb_scrub_packet``), and on the VXLAN device the pod flow gets its own entry, which policy needs.
Scope: the node's own tunnel endpoint and port only, so forwarded UDP and another plugin's tunnel
(the agent's ``--no-overlay``: :attr:`compiler.options.CompileOptions.overlay_port` ``None``) stay
tracked. What another ruleset sees: these packets are ``ct state untracked``, not ``new``; a host
firewall that accepts VXLAN by port is unaffected, one that accepts UDP 4789 only as ``ct state
new`` would have to accept ``untracked`` too (README, "The nftables layout").

Every base chain has policy ``accept``: the table polices pod traffic only, and anything that no
rule claims (the node's own traffic, routing between other interfaces) is not ours to judge.

The host-wide checks (anti-spoofing, ``ct state invalid drop``) are scoped by interface name to pod
interfaces (``iifname "stk*"``, ``oifname "stk*"``; the prefix is a compile option), never the node's
uplinks: a node with several NICs, ECMP or policy routing legitimately receives packets on a device
its route back does not use, and forwards flows whose other direction it never sees (conntrack
calls those invalid). Neither is pod traffic, so neither is ours to drop.

Anti-spoofing is the strict reverse-path check "the source routes back via the arrival device",
on every packet from a pod interface, in two steps:

1. ``iifname . ip saddr @pod-sources-v4 accept`` (and ``ip6`` with ``-v6``): one exact-match
   lookup of (arrival device's name . source address) among the pairs the node's routing table
   holds as the /32 and /128 routes stockade-cni installs to each pod's veth (the node agent
   reads them from the kernel: :mod:`compiler.podsources`). A hit is exactly a packet the route
   lookup would pass, for one hash lookup instead of a route lookup: every packet of a running
   pod from its own address takes this path, and it is the first rule of the chain. The sets
   only ever hold pod interfaces (:func:`compiler.podsources.usable_sources` leaves out any other
   name), so the lookup needs no name compare in front of it.
2. ``iifname "stk*" fib saddr . iif oif missing drop`` for everything that missed: a pod attached
   since the agent last read the routes, link-local sources (NDP), every spoofed packet, and
   every packet at all when the plan has no pairs (``stockade compile`` from manifests: the sets
   are empty and the route lookup does everything, as it did alone before).

Why this is never weaker than the route lookup alone, and why the lookup stays:

- Exact: the CNI routes each pod's /32 and /128 to that pod's own veth, so "routes back via the
  arrival device" holds exactly for the pod's own addresses. A pair is only ever such a route
  (the agent lists nothing else), so the set only skips lookups that would pass. A pair outlives
  its route only until the agent reads the routes again (when a pod is reported or forgotten,
  and in its periodic check), and stockade-cni removes a pod's routes only with its veth, before
  the address can go to another pod: such a pair names a device no packet can arrive on.
- The exact match alone is not enough: the veth names derive from the container id, which no
  API object carries, so a plan compiled from manifests cannot list them, and a pod is attached
  (veth and routes) before the agent hears of it. ``ip saddr @local-pods`` alone would let a pod
  borrow another local pod's address.
- Every packet, not only new connections: conntrack finds a packet's entry by addresses and ports,
  not by device, so a check skipped for ``established`` packets would let a pod inject packets
  into another pod's flows (a forged DNS answer is one ``established`` UDP packet).
- Cheap for pod packets: a pod's packet from its own address meets one rule (nfproto, the name,
  the address, one hash lookup, accept); the chain's description rides on that rule's comment
  rather than on a rule of its own (comments cost nothing per packet). Everything else (uplinks,
  VXLAN, the node's own traffic) pays one lookup miss per family and a name compare, and no
  route lookup. The other form, one rule per family ``iifname . ip saddr != @pod-sources-v4 fib
  ... drop``, would let an IPv4 hit fall through to the IPv6 rule, one more rule per packet for
  the same decision. ``accept`` ends only this chain, which does nothing else: the packet still
  meets conntrack and the policy chains.
"""

from __future__ import annotations

from dataclasses import replace

from compiler import naming
from compiler.ir import (
    ACCEPT,
    DROP,
    FAMILIES,
    NOTRACK,
    AddrField,
    AddrInSet,
    AddrIs,
    BaseHook,
    Chain,
    CtStateIn,
    DportIn,
    FibSaddrIifMissing,
    Icmpv6TypeIn,
    IfnamePrefix,
    IifLoopback,
    IifnameSaddrInSet,
    PortRange,
    Rule,
    SaddrDaddrInSet,
    VmapLookup,
    description,
)
from compiler.model import Direction, Family
from compiler.naming import comment as sanitized_comment
from compiler.options import DEFAULT_OPTIONS, CompileOptions

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


# No counter: this rule sees nearly every packet the node forwards, and a count of them says
# nothing about any policy (conntrack -S counts flows); it would be the one per-packet cost of
# established traffic beyond conntrack itself.
_ESTABLISHED = Rule(
    (CtStateIn(("established", "related")),),
    ACCEPT,
    "replies and related traffic are never policy-checked",
    counter=False,
)


def _invalid_from_or_to_pods(prefix: str) -> list[Rule]:
    """``ct state invalid drop`` for packets from or to a pod interface: conntrack cannot place them,
    so they are never a new connection a policy could allow (out-of-window TCP, for one)."""
    invalid = CtStateIn(("invalid",))
    return [
        Rule((invalid, IfnamePrefix("iifname", prefix)), DROP, "from a pod, conntrack cannot place it"),
        Rule((invalid, IfnamePrefix("oifname", prefix)), DROP, "to a pod, conntrack cannot place it"),
    ]


def _untracked_overlay(underlay: tuple[str, ...], port: int | None) -> tuple[list[Rule], list[Rule]]:
    """``notrack`` for the overlay's VXLAN packets to (prerouting) and from (output) the node's
    own underlay addresses: (prerouting rules, output rules). See the module's docstring."""
    if port is None:
        return [], []
    udp = DportIn("UDP", (PortRange(port, port),))

    def untrack(field: AddrField, address: str, what: str) -> Rule:
        family: Family = 6 if ":" in address else 4
        return Rule(
            (AddrIs(family, field, address), udp), NOTRACK, f"overlay: VXLAN {what}, untracked", counter=False
        )

    to_node = [untrack("daddr", a, "to this node") for a in underlay]
    return to_node, [untrack("saddr", a, "from this node") for a in underlay]


def _no_tunnel_from_pods(prefix: str, port: int | None) -> list[Rule]:
    """Drop what a pod sends to the overlay's UDP port, to this node (``input``) or through it
    (``forward``). A VXLAN device decapsulates whatever reaches its port, so a pod could hand the
    overlay a frame holding any inner packet, with any source: a packet "from" a remote pod (the
    inner packet arrives on the VXLAN device, the route back to a remote pod's address, so the
    reverse-path check passes) that the destination's policies then allow. Calico drops VXLAN and
    IP-in-IP from workloads for the same reason. After ``established``: the first packet of such
    a flow is dropped, so none ever becomes established. A deliberate exception to the policy
    semantics (README, "Where the code knowingly differs from DESIGN.md"): no policy can allow a pod
    to reach the overlay's port."""
    if port is None:
        return []
    return [
        Rule(
            (IfnamePrefix("iifname", prefix), DportIn("UDP", (PortRange(port, port),))),
            DROP,
            "overlay: no VXLAN from pods (it would carry packets with any source)",
        )
    ]


def _noted(note: str, *rules: Rule) -> tuple[Rule, ...]:
    """A base chain's rules, its description carried by the first rule's comment: base chains see
    every packet on their hook, and a comment costs nothing per packet where a description rule
    (see :func:`compiler.ir.description`) would be one more rule for each of them. Per-pod and
    tier chains, which see a new connection's first packet only, keep the description rule."""
    first = rules[0]
    return (replace(first, comment=sanitized_comment(f"{note}: {first.comment}")), *rules[1:])


def base_chains(
    cidr_families: tuple[Family, ...],
    *,
    options: CompileOptions = DEFAULT_OPTIONS,
    underlay: tuple[str, ...] = (),
) -> tuple[Chain, ...]:
    """prerouting, input, forward, and output when the node has underlay addresses (its
    InternalIPs, canonical) and the overlay is on; fail-closed rules only for families with known
    podCIDRs."""
    prefix = options.pod_interface_prefix
    untrack_in, untrack_out = _untracked_overlay(underlay, options.overlay_port)
    prerouting_note = (
        f"anti-spoofing of pod interfaces ({naming.interface_wildcard(prefix)}), before conntrack"
    )
    prerouting = Chain(
        naming.CHAIN_PREROUTING,
        _noted(
            prerouting_note,
            # Known pod sources first (see the module's docstring): one lookup and done for every
            # packet a running pod sends from its own address. No counter: the rule sees nearly
            # every packet from pods and a count of them says nothing. No interface-name compare in
            # front: the sets hold pod interfaces only, so the lookup is the scope.
            *(
                Rule(
                    (IifnameSaddrInSet(family, naming.pod_source_set(family)),),
                    ACCEPT,
                    "a pod's own address on its own veth: no route lookup",
                    counter=False,
                )
                for family in FAMILIES
            ),
            # Strict reverse path for pod interfaces: the source must route back out of the device
            # the packet came in on. A pod's veth is the route to that pod's /32 and /128 only, so
            # a pod cannot borrow another pod's (local or remote) address, nor an external one an
            # ipBlock allows. Kernels skip the check for ICMPv6 DAD / MLD from the unspecified
            # address, and link-local sources route back via every link.
            Rule(
                (IfnamePrefix("iifname", prefix), FibSaddrIifMissing()),
                DROP,
                "anti-spoofing: a pod's source does not route back via its interface",
            ),
            # After the pod rules: a pod's packet is done with this chain before it gets here.
            *untrack_in,
        ),
        BaseHook("prerouting", PRIORITY_RAW, "raw"),
        note=prerouting_note,
    )
    input_note = "egress of local pods to the node's own addresses"
    input_chain = Chain(
        naming.CHAIN_INPUT,
        _noted(
            input_note,
            # The node talking to itself (also from an address it took from its podCIDR).
            Rule((IifLoopback(),), ACCEPT, "the node's own traffic to itself"),
            _ESTABLISHED,
            *_no_tunnel_from_pods(prefix, options.overlay_port),
            # No `ct state invalid drop` here: traffic to the node that no pod sent is not ours.
            Rule((Icmpv6TypeIn(ND_TYPES),), ACCEPT, "neighbour discovery with the node is link control"),
            *_fail_closed(naming.CHAIN_INPUT, cidr_families),
            *_dispatch("saddr"),
        ),
        BaseHook("input", PRIORITY_FILTER, "filter"),
        note=input_note,
    )
    forward_note = "pod traffic: the source's egress, then the destination's ingress"
    forward = Chain(
        naming.CHAIN_FORWARD,
        _noted(
            forward_note,
            _ESTABLISHED,
            *_invalid_from_or_to_pods(prefix),
            *_no_tunnel_from_pods(prefix, options.overlay_port),
            *_fail_closed(naming.CHAIN_FORWARD, cidr_families),
            *_hairpin(),
            *_dispatch("saddr"),
            *_dispatch("daddr"),
        ),
        BaseHook("forward", PRIORITY_FILTER, "filter"),
        note=forward_note,
    )
    if not untrack_out:
        return prerouting, input_chain, forward
    output_note = "the overlay's VXLAN packets from this node, before conntrack"
    output = Chain(
        naming.CHAIN_OUTPUT,
        _noted(output_note, *untrack_out),
        BaseHook("output", PRIORITY_RAW, "raw"),
        note=output_note,
    )
    return prerouting, input_chain, forward, output


def tier_chains() -> tuple[Chain, ...]:
    """The shared, empty chains at the admin and baseline tier positions of every per-pod chain."""
    chains = []
    for tier in ("admin", "baseline"):
        for direction in ("ingress", "egress"):
            note = f"{tier} tier ({direction}): reserved for ClusterNetworkPolicy; empty"
            chains.append(Chain(naming.tier_chain(tier, direction), (description(note),), note=note))
    return tuple(chains)


__all__ = ["FAMILIES", "ND_TYPES", "base_chains", "tier_chains"]
