"""The offline commands: compile, explain, matrix, diff. They read manifests and need no cluster.

Only :mod:`compiler` is imported here (and this package's output formatting), never the node-side
parts of :mod:`controller`: the offline CLI must run where kopf, pyroute2 or libnftables are absent.

Each command returns a :class:`Result` whose ``stdout`` is complete; the caller prints it only
when the command succeeded, so bad input never produces a partial ruleset. Reading and writing
files is :mod:`controller.cli.files`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, TextIO

from compiler.cluster import ClusterModel
from compiler.diff import connectivity_diff, ruleset_diff
from compiler.loader import LoadResult
from compiler.matrix import (
    Probe,
    build_matrix,
    container_probes,
    default_probes,
    parse_probes,
    policy_probes,
    replica_name,
    sort_probes,
    unnamed_port_probes,
    with_replicas,
    workload_of,
)
from compiler.model import Pod, Protocol
from compiler.plan import build_plan
from compiler.render_json import render_json
from compiler.render_nft import render_nft
from compiler.semantics import Family, Peer, evaluate, parse_ip
from controller.cli import output
from controller.cli.files import load
from controller.errors import InputError, InternalError, PeerError, Problem, UsageError

OutputFormat = Literal["text", "json", "yaml"]


@dataclass(frozen=True)
class Result:
    stdout: str
    exit_code: int = 0
    notes: tuple[str, ...] = ()  # for stderr, printed whether or not the command succeeded


# --- nodes --------------------------------------------------------------------------------------------


def known_nodes(model: ClusterModel) -> tuple[str, ...]:
    """Node objects and the nodes pods are scheduled to, sorted."""
    names = {n.metadata.name for n in model.nodes}
    names |= {p.spec.node_name for p in model.pods if p.spec.node_name}
    return tuple(sorted(names))


def pick_node(model: ClusterModel, requested: str | None) -> str:
    nodes = known_nodes(model)
    listing = ", ".join(nodes) if nodes else "none (add a Node object, or pods with spec.nodeName)"
    if requested is not None:
        if requested not in nodes:
            raise UsageError(f"unknown node {requested!r}; known nodes: {listing}")
        return requested
    if len(nodes) == 1:
        return nodes[0]
    if not nodes:
        raise UsageError("the manifests name no node: add a Node object, or pods with spec.nodeName")
    raise UsageError(f"the manifests have {len(nodes)} nodes; pick one with --node ({listing})")


def ruleset(model: ClusterModel, node: str, *, fmt: OutputFormat = "text") -> tuple[str, tuple[str, ...]]:
    """The node's ruleset (nft text, or the libnftables JSON document as JSON or YAML), and the
    plan's notes (a node without podCIDRs is not failed closed)."""
    plan = build_plan(model, node=node)
    return (render_nft(plan) if fmt == "text" else output.dumps(render_json(plan), fmt)), plan.notes


# --- commands -----------------------------------------------------------------------------------------


def compile_command(paths: Sequence[str], *, node: str | None, fmt: OutputFormat, stdin: TextIO) -> Result:
    loaded = load(paths, stdin)
    # The plan's notes are in the nft text as comments too, but JSON and --output-file would hide them.
    text, plan_notes = ruleset(loaded.model, pick_node(loaded.model, node), fmt=fmt)
    return Result(text, notes=(*loaded.notes, *plan_notes, *_addressless(loaded.model)))


def _addressless(model: ClusterModel) -> list[str]:
    """Notes on pods the ruleset cannot name by address: workload templates, pods not yet running."""
    templates = [p.key for p in model.pods if not p.ips() and workload_of(p) is not None]
    pending = [p.key for p in model.pods if not p.ips() and workload_of(p) is None]
    notes: list[str] = []
    if templates:
        notes.append(
            f"{len(templates)} workload template pod(s) have no addresses, so no address set of this"
            f" ruleset holds them (the agent adds replicas as they start): {', '.join(templates)}"
        )
    if pending:
        notes.append(
            f"{len(pending)} pod(s) have no address yet (status.podIP), so no address set holds them:"
            f" {', '.join(pending)}"
        )
    return notes


def parse_peer(text: str, flag: str) -> Peer:
    """``NAMESPACE/NAME`` (a pod or a workload) or an IP address."""
    if parse_ip(text) is not None:
        return Peer(ip=text)
    namespace, slash, name = text.partition("/")
    if not slash or not namespace or not name or "/" in name:
        raise UsageError(f"{flag} {text!r}: expected NAMESPACE/POD (or NAMESPACE/WORKLOAD) or an IP address")
    return Peer(namespace=namespace, pod=name)


def _family_for(src: Peer, dst: Peer, *, requested: Family | None) -> Family | None:
    """``--family``, else that of the addresses given; None when both ends are pods."""
    versions = {ipaddress.ip_address(p.ip).version for p in (src, dst) if p.ip is not None}
    if requested is not None:
        return requested
    if len(versions) > 1:
        raise UsageError("--from and --to are addresses of different families")
    if not versions:
        return None
    return 6 if versions == {6} else 4


def _address_families(pods: Sequence[Pod]) -> set[Family]:
    return {6 if ":" in ip else 4 for pod in pods for ip in pod.ips()}


def _pods_family(model: ClusterModel, src: Peer, *, dst: Peer) -> Family:
    """IPv4, unless the only family the pods have addresses in is IPv6 (an IPv6-only pod has no
    IPv4 answer); pods without addresses (workload templates) count for either."""
    pods = [model.pod(p.namespace or "default", p.pod) for p in (src, dst) if p.pod is not None]
    held = [_address_families([p]) for p in pods if p is not None and p.ips()]
    common = set.intersection(*held) if held else {4}
    return 6 if common == {6} else 4


def _port_number(
    model: ClusterModel, src: Peer, *, dst: Peer, port: str, protocol: Protocol, family: Family
) -> int:
    """A number, or a container port name resolved on the destination pod."""
    if port.isdigit():
        number = int(port)
        if not 1 <= number <= 65535:
            raise UsageError(f"--port {port}: must be from 1 to 65535")
        return number
    if dst.pod is None:
        raise UsageError(f"--port {port!r}: a named port needs a pod as --to")
    pod = model.pod(dst.namespace or "default", dst.pod)
    if pod is None:
        # Let the semantics report the unknown pod, with its near matches.
        evaluate(model, src=src, dst=dst, protocol=protocol, port=1, family=family)
        raise InternalError(f"evaluate accepted a destination that is not in the model: {dst}")
    numbers = sorted(
        {p.container_port for p in pod.container_ports() if p.name == port and p.protocol == protocol}
    )
    if len(numbers) != 1:
        have = ", ".join(f"{p.name}={p.protocol}/{p.container_port}" for p in pod.container_ports() if p.name)
        raise UsageError(
            f"--port {port!r}: {pod.key} has no single {protocol} port of that name ({have or 'none'})"
        )
    return numbers[0]


def _replica_target(model: ClusterModel, src: Peer, *, dst: Peer) -> tuple[ClusterModel, Peer]:
    """A workload to itself is one replica to another (as in ``matrix``), not a pod to itself."""
    if src.pod is None or src != dst:
        return model, dst
    pod = model.pod(src.namespace or "default", src.pod)
    if pod is None or workload_of(pod) is None:
        return model, dst
    return with_replicas(model), Peer(namespace=dst.namespace, pod=replica_name(pod))


def explain_command(
    paths: Sequence[str],
    *,
    src: str,
    dst: str,
    port: str,
    protocol: Protocol,
    family: Family | None,
    fmt: OutputFormat,
    exit_code: bool = False,
    stdin: TextIO,
) -> Result:
    """The verdict and why; with ``exit_code``, exit status 1 when the connection is blocked."""
    source, target = parse_peer(src, "--from"), parse_peer(dst, "--to")
    _family_for(source, target, requested=family)  # a usage error before reading anything
    return explain_loaded(
        load(paths, stdin),
        src=src,
        dst=dst,
        port=port,
        protocol=protocol,
        family=family,
        fmt=fmt,
        exit_code=exit_code,
    )


def explain_loaded(
    loaded: LoadResult,
    *,
    src: str,
    dst: str,
    port: str,
    protocol: Protocol,
    family: Family | None,
    fmt: OutputFormat,
    exit_code: bool = False,
) -> Result:
    """``explain`` of objects already read (from files, or from a live cluster)."""
    source, target = parse_peer(src, "--from"), parse_peer(dst, "--to")
    given = _family_for(source, target, requested=family)
    model, target = _replica_target(loaded.model, source, dst=target)
    fam = given if given is not None else _pods_family(model, source, dst=target)
    try:
        number = _port_number(model, source, dst=target, port=port, protocol=protocol, family=fam)
        verdict = evaluate(model, src=source, dst=target, protocol=protocol, port=number, family=fam)
    except PeerError as e:
        raise UsageError(str(e)) from e
    text = verdict.explain() + "\n" if fmt == "text" else output.dumps(output.verdict_json(verdict), fmt)
    return Result(text, exit_code=1 if exit_code and not verdict.allowed else 0, notes=loaded.notes)


def _probes(
    text: str | None, models: Sequence[ClusterModel], *, extra: Sequence[Probe] = ()
) -> tuple[Probe, ...]:
    """``--ports``, else the pods' container ports plus ``extra`` (diff adds the ports policies
    name and the stand-ins for ports nothing names), else 80."""
    if text is None:
        found = (*container_probes(models), *extra)
        return sort_probes(found) or default_probes(models)
    try:
        return parse_probes(text)
    except ValueError as e:
        raise UsageError(f"--ports: {e}") from e


def matrix_command(
    paths: Sequence[str],
    *,
    ports: str | None,
    family: Family | None,
    fmt: OutputFormat,
    width: int,
    stdin: TextIO,
) -> Result:
    return matrix_loaded(load(paths, stdin), ports=ports, family=family, fmt=fmt, width=width)


def matrix_loaded(
    loaded: LoadResult, *, ports: str | None, family: Family | None, fmt: OutputFormat, width: int
) -> Result:
    """``matrix`` of objects already read (from files, or from a live cluster)."""
    if family is None:
        family = 6 if _address_families(loaded.model.pods) == {6} else 4
    matrix = build_matrix(loaded.model, probes=_probes(ports, [loaded.model]), family=family)
    if fmt != "text":
        return Result(output.dumps(output.matrix_json(matrix), fmt), notes=loaded.notes)
    return Result(output.matrix_text(matrix, width=width), notes=loaded.notes)


def _families(models: Sequence[ClusterModel]) -> tuple[Family, ...]:
    """Each family a pod address or an ipBlock of either side uses; IPv4 when none does.

    An IPv6-only cluster is not compared in IPv4: its pods have no IPv4 addresses, and IPv4
    verdicts (ipBlocks of the other family never match) would report changes no packet sees.
    """
    texts = [ip for m in models for p in m.pods for ip in p.ips()]
    for policy in (pol for m in models for pol in m.policies):
        rules = [*(r.from_ for r in policy.spec.ingress), *(r.to for r in policy.spec.egress)]
        texts += [peer.ip_block.cidr for peers in rules for peer in peers if peer.ip_block is not None]
    found: set[Family] = {6 if ":" in t else 4 for t in texts}
    return tuple(sorted(found)) or (4,)


def diff_command(
    old_path: str,
    new_path: str,
    *,
    node: str | None,
    fail_on: Literal["widened", "any"] | None,
    ports: str | None,
    family: Family | None,
    fmt: OutputFormat,
    stdin: TextIO,
) -> Result:
    if old_path == new_path == "-":
        raise UsageError("only one of OLD and NEW can be - (stdin)")
    problems: list[Problem] = []
    loaded: list[LoadResult] = []
    for path in (old_path, new_path):
        try:
            loaded.append(load([path], stdin))
        except InputError as e:
            problems.extend(e.problems)
    if problems:
        raise InputError(problems)
    return diff_loaded(
        loaded[0],
        loaded[1],
        labels=(old_path, new_path),
        node=node,
        fail_on=fail_on,
        ports=ports,
        family=family,
        fmt=fmt,
    )


def diff_loaded(
    before: LoadResult,
    after: LoadResult,
    *,
    labels: tuple[str, str],
    node: str | None,
    fail_on: Literal["widened", "any"] | None,
    ports: str | None,
    family: Family | None,
    fmt: OutputFormat,
) -> Result:
    """``diff`` of two sets of objects already read; ``labels`` name them in the ruleset diff."""
    loaded = [before, after]
    old, new = before.model, after.model
    # Stand-ins for "every port" of a protocol: probed, and said on stderr, only without --ports.
    stand_ins = unnamed_port_probes([old, new]) if ports is None else ()
    probes = _probes(ports, [old, new], extra=[*policy_probes([old, new]), *stand_ins])
    families: tuple[Family, ...] = (family,) if family is not None else _families([old, new])
    conn = connectivity_diff(old, new, ports=probes, family=families)
    chosen, text, note = _ruleset_change(old, new, requested=node, labels=labels)
    changed = conn.changed or bool(text)
    failed = (fail_on == "widened" and conn.widened) or (fail_on == "any" and changed)
    if fmt != "text":
        body = output.dumps(
            output.diff_json(conn, probes=probes, families=families, node=chosen, ruleset=text), fmt
        )
    else:
        body = output.diff_text(
            conn, probes=probes, families=families, node=chosen, ruleset=text, ruleset_note=note
        )
    notes = [*loaded[0].notes, *loaded[1].notes]
    if stand_ins:
        notes.append(
            f"probed {' '.join(map(str, stand_ins))} for every port of its protocol"
            " that a rule opens but no policy or container names"
        )
    if failed:
        what = (
            f"{len(conn.gained)} pair(s) gained access" if fail_on == "widened" else "the manifests changed"
        )
        notes.append(f"failing as asked by --fail-on {fail_on}: {what}")
    return Result(body, exit_code=1 if failed else 0, notes=tuple(notes))


def _ruleset_change(
    old: ClusterModel, new: ClusterModel, *, requested: str | None, labels: tuple[str, str]
) -> tuple[str | None, str, str]:
    """(node, unified diff, why not compared): the node's rulesets on both sides, compared."""
    nodes = sorted({*known_nodes(old), *known_nodes(new)})
    if requested is None:
        if len(nodes) != 1:
            why = "no node in the manifests" if not nodes else f"{len(nodes)} nodes; pick one with --node"
            return None, "", why
        requested = nodes[0]
    elif requested not in nodes:
        raise UsageError(f"unknown node {requested!r}; known nodes: {', '.join(nodes) or 'none'}")
    # A side that does not know the node has no ruleset for it (the node is new, or gone).
    texts = [ruleset(m, requested)[0] if requested in known_nodes(m) else "" for m in (old, new)]
    return (
        requested,
        ruleset_diff(*texts, old_label=f"{labels[0]} ({requested})", new_label=f"{labels[1]} ({requested})"),
        "",
    )
