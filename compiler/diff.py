"""What a change to the manifests does: which connections it opens or closes, and the ruleset change.

Connectivity is compared over

- every ordered pair of pods present on both sides (matched by ``namespace/name``), a template
  pod's pair with itself meaning replica-to-replica traffic (see :mod:`compiler.matrix`); and
- every pod against each *address region* the ipBlocks of either side carve out: each CIDR or
  ``except`` entry minus the blocks nested in it, plus "everything else". All addresses of a region
  are matched by the same ipBlocks, so one representative address answers for the whole region,
  and a policy that opens egress to the internet shows up as a gained pair.

Verdicts are compared per class of pods that the policies of either side cannot tell apart
(:func:`compiler.classes.changed_pairs`), address regions taking part as further ends; only pairs
whose verdict changed are expanded to pods and evaluated one by one, for the rules behind the
change. An unchanged cluster of thousands of pods costs its classes, not the square of its pods.

Pods present on one side only are listed as added or removed, not as gained or lost pairs: a new
Deployment is a change to the workload, not a widening of policy, and listing every pair of a new
pod would bury the policy changes a reviewer is looking for.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
from collections.abc import Iterable, Sequence, Set
from dataclasses import dataclass

from compiler.classes import changed_pairs
from compiler.cluster import ClusterModel
from compiler.errors import InternalError
from compiler.matrix import Probe, replica_name, with_replicas, workload_of
from compiler.model import Protocol
from compiler.semantics import Family, Peer, Side, Verdict, evaluate, parse_ip

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_UNIVERSE: dict[Family, Network] = {4: ipaddress.ip_network("0.0.0.0/0"), 6: ipaddress.ip_network("::/0")}


@dataclass(frozen=True, order=True)
class PairChange:
    """One (source, destination, probe) whose verdict changed; ``family`` None means every family asked."""

    src: str
    dst: str
    protocol: Protocol
    port: int
    family: Family | None
    reason: str
    # For an address region: the address that stood for it (the region's label shows its family).
    address: str = ""

    def describe(self, sign: str) -> str:
        fam = f" [IPv{self.family}]" if self.family is not None and not self.address else ""
        return f"{sign} {self.src} -> {self.dst} {self.protocol}/{self.port}{fam} ({self.reason})"


@dataclass(frozen=True)
class ConnectivityDiff:
    gained: tuple[PairChange, ...]
    lost: tuple[PairChange, ...]
    added_pods: tuple[str, ...]
    removed_pods: tuple[str, ...]

    @property
    def widened(self) -> bool:
        return bool(self.gained)

    @property
    def changed(self) -> bool:
        return bool(self.gained or self.lost or self.added_pods or self.removed_pods)


@dataclass(frozen=True)
class Region:
    """Addresses that every ipBlock of both sides treats alike; ``address`` stands for all of them."""

    label: str
    address: str


def connectivity_diff(
    old: ClusterModel,
    new: ClusterModel,
    *,
    ports: Sequence[Probe | tuple[Protocol, int]],
    family: Family | Sequence[Family] = 4,
) -> ConnectivityDiff:
    """Pairs that gained or lost access from ``old`` to ``new``, over ``ports`` and each family.

    A change found in every family asked is reported once (``family`` None); one that differs
    between families is reported per family.
    """
    families: tuple[Family, ...] = (family,) if isinstance(family, int) else tuple(dict.fromkeys(family))
    probes = [p if isinstance(p, Probe) else Probe(*p) for p in dict.fromkeys(ports)]
    old_keys = {p.key for p in old.pods}
    new_keys = {p.key for p in new.pods}
    common = old_keys & new_keys
    changes: dict[tuple[str, PairChange], set[Family]] = {}
    for fam in families:
        for sign, change in _changes(old, new, common=common, probes=probes, family=fam):
            changes.setdefault((sign, change), set()).add(fam)
    gained: list[PairChange] = []
    lost: list[PairChange] = []
    for (sign, change), found in changes.items():
        if len(found) == len(families):
            entries = [change]
        else:
            entries = [dataclasses.replace(change, family=fam) for fam in sorted(found)]
        (gained if sign == "+" else lost).extend(entries)
    return ConnectivityDiff(
        gained=tuple(sorted(gained, key=_order)),
        lost=tuple(sorted(lost, key=_order)),
        added_pods=tuple(sorted(new_keys - old_keys)),
        removed_pods=tuple(sorted(old_keys - new_keys)),
    )


def _order(change: PairChange) -> tuple[str, str, int, str, int, str]:
    return (change.src, change.dst, change.port, change.protocol, change.family or 0, change.reason)


def _changes(
    old: ClusterModel, new: ClusterModel, *, common: Set[str], probes: Sequence[Probe], family: Family
) -> list[tuple[str, PairChange]]:
    """Changes between pods and between pods and address regions, found per class (see above)."""
    sides = _Sides(with_replicas(old), with_replicas(new), family)
    keys = sorted(common)
    # A template pod on both sides is paired with itself: one replica to another.
    templates = [{p.key for p in m.pods if workload_of(p) is not None} for m in (old, new)]
    replicas = set(keys) & templates[0] & templates[1]
    carved = regions(old, new, family=family)
    addresses = [parse_ip(region.address) for region in carved]
    if any(a is None for a in addresses):
        raise InternalError(f"a region's address does not parse: {carved}")
    found: list[tuple[str, PairChange]] = []
    for pairs, (protocol, port) in changed_pairs(
        old,
        new,
        keys=keys,
        replicas=replicas,
        probes=[(p.protocol, p.port) for p in probes],
        family=family,
        addresses=[a for a in addresses if a is not None],
    ):
        probe = Probe(protocol, port)
        verdicts: tuple[Verdict, Verdict] | None = None
        for src, dst in pairs:
            if isinstance(src, int) or isinstance(dst, int):
                region = carved[src if isinstance(src, int) else int(dst)]
                ip_peer = Peer(ip=region.address)
                if isinstance(src, int):
                    source, target, names = ip_peer, _pod_peer(old, str(dst)), (region.label, str(dst))
                    subjects = (region.address, str(dst))
                else:
                    source, target, names = _pod_peer(old, src), ip_peer, (src, region.label)
                    subjects = (src, region.address)
            else:
                source, target = _pod_peer(old, src), _pod_peer(old, dst, replica=src == dst)
                # A template pod to itself is one replica to another: named as explain names it.
                names = (src, f"{target.namespace}/{target.pod}")
                subjects = names
            # The pairs of a pair of classes differ only in names: the first is evaluated (for
            # the rules behind the change), the others reuse its verdicts under their names.
            if verdicts is None:
                verdicts = sides.verdicts(source, target, probe=probe)
            address = region.address if isinstance(src, int) or isinstance(dst, int) else ""
            change = _change(*verdicts, probe=probe, names=names, subjects=subjects, address=address)
            if change is None:
                raise InternalError(f"{names[0]} -> {names[1]} {probe}: its class changed, the pair did not")
            found.append(change)
    return found


def _pod_peer(model: ClusterModel, key: str, *, replica: bool = False) -> Peer:
    namespace, _, name = key.partition("/")
    pod = model.pod(namespace, name)
    if replica and pod is not None:
        name = replica_name(pod)
    return Peer(namespace=namespace, pod=name)


@dataclass(frozen=True)
class _Sides:
    old: ClusterModel
    new: ClusterModel
    family: Family

    def verdicts(self, src: Peer, dst: Peer, *, probe: Probe) -> tuple[Verdict, Verdict]:
        """The verdicts of ``old`` and ``new``."""
        before, after = (
            evaluate(model, src=src, dst=dst, protocol=probe.protocol, port=probe.port, family=self.family)
            for model in (self.old, self.new)
        )
        return before, after


def _change(
    before: Verdict,
    after: Verdict,
    *,
    probe: Probe,
    names: tuple[str, str],
    subjects: tuple[str, str],
    address: str = "",
) -> tuple[str, PairChange] | None:
    """("+" or "-", the change) when the verdict differs between the sides, else None.

    ``subjects`` name the source and the destination in the reasons, as :func:`evaluate` names them.
    """
    if before.allowed == after.allowed:
        return None
    pairs = [
        (dataclasses.replace(b, subject=subject), dataclasses.replace(a, subject=subject))
        for b, a, subject in (
            (before.egress, after.egress, subjects[0]),
            (before.ingress, after.ingress, subjects[1]),
        )
    ]
    if after.allowed:
        # Gained: say what now allows each side that used to block.
        reason = "; ".join(_now_allows(a) for b, a in pairs if not b.allowed)
    else:
        reason = "; ".join(_now_blocks(b, a) for b, a in pairs if not a.allowed)
    sign = "+" if after.allowed else "-"
    return sign, PairChange(*names, probe.protocol, probe.port, None, reason, address)


def _refs(side: Side) -> str:
    return ", ".join(f"{ref.policy} {ref.direction}[{ref.index}]" for ref in side.allowed_by)


def _now_allows(side: Side) -> str:
    if side.exempt:
        return f"{side.direction} of {side.subject}: {side.exempt}"
    if not side.isolated:
        return f"{side.subject} no longer isolated for {side.direction}"
    return f"allowed by {_refs(side)}"


def _now_blocks(before: Side, after: Side) -> str:
    was = f"was allowed by {_refs(before)}" if before.allowed_by else "was not isolated"
    return f"{after.subject} {after.direction}: {was}, now isolated by {', '.join(after.isolating)}"


# --- address regions -----------------------------------------------------------------------------


def regions(old: ClusterModel, new: ClusterModel, *, family: Family) -> tuple[Region, ...]:
    """One representative address for each set of addresses the ipBlocks of both sides treat alike.

    Representatives avoid pod and node addresses (those are pods or nodes, not "addresses out
    there"); a region holding nothing else is left out.
    """
    blocks: set[Network] = set()
    for model in (old, new):
        for policy in model.policies:
            for rule_peers in [r.from_ for r in policy.spec.ingress] + [r.to for r in policy.spec.egress]:
                for peer in rule_peers:
                    if peer.ip_block is not None:
                        for cidr in (peer.ip_block.cidr, *peer.ip_block.except_):
                            net = ipaddress.ip_network(cidr, strict=False)
                            if net.version == family:
                                blocks.add(net)
    taken = _taken_addresses((old, new))
    universe = _UNIVERSE[family]
    found: list[Region] = []
    for block in sorted({universe, *blocks}):
        children = _maximal([b for b in blocks if b != block and b.subnet_of(block)])  # type: ignore[arg-type]
        address = _first_free(_exclude(block, children), taken)
        if address is None:
            continue
        if block == universe and block not in blocks:
            label = f"other IPv{family} addresses"  # outside every ipBlock either side names
        else:
            label = str(block) + (f" except {', '.join(map(str, children))}" if children else "")
        found.append(Region(label, str(address)))
    return tuple(found)


def _maximal(nets: Iterable[Network]) -> list[Network]:
    """Those of ``nets`` not inside another of them, sorted."""
    pool = sorted(set(nets))
    return [n for n in pool if not any(o != n and n.subnet_of(o) for o in pool)]  # type: ignore[arg-type]


def _exclude(block: Network, children: Sequence[Network]) -> list[Network]:
    """``block`` minus ``children`` (each inside it, none inside another), as sorted networks."""
    remaining = [block]
    for child in children:
        nxt: list[Network] = []
        for net in remaining:
            if child.subnet_of(net):  # type: ignore[arg-type]
                nxt.extend(net.address_exclude(child))  # type: ignore[arg-type]
            else:
                nxt.append(net)
        remaining = nxt
    return sorted(remaining)


def _first_free(
    nets: Sequence[Network], taken: set[ipaddress.IPv4Address | ipaddress.IPv6Address]
) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    for net in nets:
        # At most len(taken) addresses of a network can be taken, so one more try always suffices.
        for offset in range(min(net.num_addresses, len(taken) + 1)):
            address = net.network_address + offset
            if address not in taken:
                return address
    return None


def _taken_addresses(models: Iterable[ClusterModel]) -> set[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    taken: set[ipaddress.IPv4Address | ipaddress.IPv6Address] = set()
    for model in models:
        texts = [ip for pod in model.pods for ip in pod.ips()]
        texts += [ip for node in model.nodes for ip in node.internal_ips()]
        taken.update(a for a in map(parse_ip, texts) if a is not None)
    return taken


# --- ruleset --------------------------------------------------------------------------------------


def ruleset_diff(old_text: str, new_text: str, *, old_label: str = "old", new_label: str = "new") -> str:
    """A unified diff of two rulesets (nft text); empty when they are equal."""
    lines = difflib.unified_diff(
        old_text.splitlines(keepends=True),
        new_text.splitlines(keepends=True),
        fromfile=old_label,
        tofile=new_label,
    )
    return "".join(line if line.endswith("\n") else line + "\n" for line in lines)
