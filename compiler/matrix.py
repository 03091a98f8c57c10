"""The connectivity matrix: for every ordered pair of pods and every probed port, may they talk.

Rows are sources, columns destinations, both the model's pods sorted by ``namespace/name``. The
answers come from :func:`compiler.semantics.connectivity`, the reference semantics.

Workload template pods (Deployments and the like, loaded as one pod per workload) stand for every
replica, so the diagonal of a template means *one replica to another replica* and is evaluated
like any other pair; the diagonal of a plain pod is its traffic to itself, which never leaves the
pod and is not part of the matrix (``None``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from compiler.cluster import ClusterModel
from compiler.loader import WORKLOAD_ANNOTATION
from compiler.model import PROTOCOLS, ObjectMeta, Pod, Protocol
from compiler.semantics import Family, connectivity

# Suffix of the stand-in for "another replica" of a template pod; a space can never be part of a
# Kubernetes name, so it cannot collide with a real pod.
_REPLICA_SUFFIX = " (another replica)"
DEFAULT_PROBE: tuple[Protocol, int] = ("TCP", 80)


@dataclass(frozen=True, order=True)
class Probe:
    """One (protocol, port) the matrix asks about; prints as ``TCP/80``."""

    protocol: Protocol
    port: int

    def __str__(self) -> str:
        return f"{self.protocol}/{self.port}"


def parse_probe(text: str) -> Probe:
    """``80`` (TCP), ``tcp/443``, ``UDP/53`` or ``sctp/9000``; raises ValueError with a readable message."""
    spec = text.strip()
    protocol_text, _, port_text = spec.rpartition("/")
    protocol = protocol_text.upper() or "TCP"
    if protocol not in PROTOCOLS:
        raise ValueError(f"{text!r}: unknown protocol {protocol_text!r} (use tcp, udp or sctp)")
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"{text!r}: the port must be a number from 1 to 65535")
    return Probe(protocol, int(port_text))


def parse_probes(text: str) -> tuple[Probe, ...]:
    """A comma-separated list of :func:`parse_probe` specs, de-duplicated, in the order given."""
    items = [item for item in text.split(",") if item.strip()]
    if not items:
        raise ValueError("no ports given")
    return tuple(dict.fromkeys(parse_probe(item) for item in items))


def container_probes(models: Iterable[ClusterModel]) -> tuple[Probe, ...]:
    """Every numbered container port the pods declare, sorted by number."""
    found = {
        Probe(port.protocol, port.container_port)
        for model in models
        for pod in model.pods
        for port in pod.container_ports()
    }
    return sort_probes(found)


def default_probes(models: Iterable[ClusterModel]) -> tuple[Probe, ...]:
    """The matrix's default: :func:`container_probes`, else TCP/80."""
    return container_probes(models) or (Probe(*DEFAULT_PROBE),)


def sort_probes(probes: Iterable[Probe]) -> tuple[Probe, ...]:
    return tuple(sorted(set(probes), key=lambda p: (p.port, p.protocol)))


def policy_probes(models: Iterable[ClusterModel]) -> tuple[Probe, ...]:
    """The numbered ports policies name: each single port, and both ends of each port range.

    Two different ranges always differ at an end of one of them, so probing the ends finds every
    change of a range (what :func:`compiler.diff.connectivity_diff` needs by default).
    """
    found: set[Probe] = set()
    for policy in (p for model in models for p in model.policies):
        rules = [*(r.ports for r in policy.spec.ingress), *(r.ports for r in policy.spec.egress)]
        for port in (port for ports in rules for port in ports):
            if isinstance(port.port, int):
                found.add(Probe(port.protocol, port.port))
                if port.end_port is not None:
                    found.add(Probe(port.protocol, port.end_port))
    return sort_probes(found)


def unnamed_port_probes(models: Sequence[ClusterModel]) -> tuple[Probe, ...]:
    """One port standing for all the ports nothing names, per protocol a rule opens whole.

    A rule without ports (every protocol) or with a protocol but no port opens ports no policy and
    no container names; every such port is matched by exactly the same rules, so the lowest one
    answers for all. Without it, a change that drops a rule's port list (``[80]`` to every port)
    would widen access where no probed port sees it.
    """
    open_protocols: set[Protocol] = set()
    taken: list[tuple[Protocol, int, int]] = []  # (protocol, first, last): ports something names
    for policy in (p for model in models for p in model.policies):
        for ports in [*(r.ports for r in policy.spec.ingress), *(r.ports for r in policy.spec.egress)]:
            if not ports:
                open_protocols.update(PROTOCOLS)
            for port in ports:
                if port.port is None:
                    open_protocols.add(port.protocol)
                elif isinstance(port.port, int):
                    taken.append((port.protocol, port.port, port.end_port or port.port))
    for pod in (pod for model in models for pod in model.pods):
        taken.extend((p.protocol, p.container_port, p.container_port) for p in pod.container_ports())
    found: set[Probe] = set()
    for protocol in open_protocols:
        free = 1
        # Ranges in order of their first port: the lowest free port is below the next range or past it.
        for first, last in sorted((lo, hi) for proto, lo, hi in taken if proto == protocol):
            if first > free:
                break
            free = max(free, last + 1)
        if free <= 65535:
            found.add(Probe(protocol, free))
    return sort_probes(found)


def workload_of(pod: Pod) -> str | None:
    """``Deployment/web`` for a workload template pod, None for a plain pod."""
    return pod.metadata.annotations.get(WORKLOAD_ANNOTATION)


PairKey = tuple[str, str, Protocol, int]


def pair_table(
    model: ClusterModel, *, probes: Sequence[Probe], family: Family, pods: Sequence[Pod] | None = None
) -> dict[PairKey, bool]:
    """The verdict of every ordered pair of ``pods`` (default: all) for every probe.

    Keys are (source key, destination key, protocol, port). Pairs of a plain pod with itself are
    absent; a template pod's pair with itself is replica-to-replica traffic.
    """
    chosen = list(model.pods if pods is None else pods)
    replicas = {pod.key: _replica(pod) for pod in chosen if workload_of(pod) is not None}
    verdicts = connectivity(
        augmented(model, replicas.values()),
        ports=[(p.protocol, p.port) for p in probes],
        family=family,
        pods=[*chosen, *replicas.values()],
    )
    replica_keys = {replica.key: key for key, replica in replicas.items()}
    table: dict[PairKey, bool] = {}
    for (src, dst, protocol, port), allowed in verdicts.items():
        if src in replica_keys:
            continue
        if dst not in replica_keys:
            table[(src, dst, protocol, port)] = allowed
        elif replica_keys[dst] == src:
            table[(src, src, protocol, port)] = allowed  # one replica to another
    return table


def replica_name(pod: Pod) -> str:
    """The name under which :func:`augmented` holds "another replica" of template pod ``pod``."""
    return pod.metadata.name + _REPLICA_SUFFIX


def augmented(model: ClusterModel, replicas: Iterable[Pod]) -> ClusterModel:
    """``model`` plus stand-ins for other replicas, so replica-to-replica traffic can be evaluated."""
    extra = tuple(replicas)
    if not extra:
        return model
    return ClusterModel(model.namespaces, (*model.pods, *extra), model.policies, model.nodes)


def with_replicas(model: ClusterModel) -> ClusterModel:
    """``model`` with a stand-in for another replica of every template pod (see :func:`replica_name`)."""
    return augmented(model, (_replica(pod) for pod in model.pods if workload_of(pod) is not None))


def _replica(pod: Pod) -> Pod:
    meta: ObjectMeta = pod.metadata.model_copy(update={"name": replica_name(pod)})
    return pod.model_copy(update={"metadata": meta})


@dataclass(frozen=True)
class MatrixPod:
    key: str
    workload: str | None  # "Deployment/web" for a template pod
    ips: tuple[str, ...]
    node: str | None


@dataclass(frozen=True)
class Matrix:
    """Verdicts of every pair: ``cell(src, dst)`` is one bool per probe, or None for a pod to itself."""

    pods: tuple[MatrixPod, ...]
    probes: tuple[Probe, ...]
    family: Family
    _cells: Mapping[tuple[str, str], tuple[bool, ...]] = field(repr=False)

    def cell(self, src: str, dst: str) -> tuple[bool, ...] | None:
        return self._cells.get((src, dst))

    def names(self) -> tuple[str, ...]:
        return tuple(pod.key for pod in self.pods)

    def counts(self) -> tuple[int, int]:
        """(allowed, total) over every evaluated (pair, probe)."""
        flat = [v for cell in self._cells.values() for v in cell]
        return sum(flat), len(flat)


def build_matrix(model: ClusterModel, *, probes: Sequence[Probe] | None = None, family: Family = 4) -> Matrix:
    """The matrix of every pod of ``model``; ``probes`` default to :func:`default_probes`."""
    chosen = tuple(dict.fromkeys(probes)) if probes else default_probes([model])
    pods = sorted(model.pods, key=lambda p: p.key)
    table = pair_table(model, probes=chosen, family=family, pods=pods)
    cells: dict[tuple[str, str], tuple[bool, ...]] = {}
    for src in pods:
        for dst in pods:
            if (src.key, dst.key, *_as_tuple(chosen[0])) not in table:
                continue
            cells[(src.key, dst.key)] = tuple(table[(src.key, dst.key, p.protocol, p.port)] for p in chosen)
    rows = tuple(MatrixPod(p.key, workload_of(p), p.ips(), p.spec.node_name) for p in pods)
    return Matrix(rows, chosen, family, cells)


def _as_tuple(probe: Probe) -> tuple[Protocol, int]:
    return probe.protocol, probe.port
