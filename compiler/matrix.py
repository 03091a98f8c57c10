"""The connectivity matrix: for every ordered pair of pods and every probed port, may they talk.

Rows are sources, columns destinations, both the model's pods sorted by ``namespace/name``. The
answers are the reference semantics' (:func:`compiler.semantics.connectivity`), computed once per
class of pods no policy tells apart (:mod:`compiler.classes`): pairs grow with the square of the
pods, classes with the variety of what policies look at.

Workload template pods (Deployments and the like, loaded as one pod per workload) stand for every
replica, so the diagonal of a template means *one replica to another replica* and is evaluated
like any other pair (another replica is another member of the template's class); the diagonal of
a plain pod is its traffic to itself, which never leaves the pod and is not part of the matrix
(``None``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from compiler.classes import ClassConnectivity, class_connectivity
from compiler.cluster import ClusterModel
from compiler.loader import WORKLOAD_ANNOTATION
from compiler.model import PROTOCOLS, ObjectMeta, Pod, Protocol
from compiler.semantics import Family

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
    """Verdicts of every pair: ``cell(src, dst)`` is one bool per probe, or None for a pod to itself.

    Cells are looked up in the per-class verdicts, not stored per pair: a 5,000-pod matrix would
    otherwise hold 25 million tuples before a line of it is printed.
    """

    pods: tuple[MatrixPod, ...]
    probes: tuple[Probe, ...]
    family: Family
    _table: ClassConnectivity = field(repr=False)
    _templates: frozenset[str] = field(repr=False)

    def cell(self, src: str, dst: str) -> tuple[bool, ...] | None:
        if src == dst and self._plain(src):
            return None
        if src not in self._table.class_of or dst not in self._table.class_of:
            return None
        return tuple(self._table.allowed(src, dst, _as_tuple(p)) for p in self.probes)

    def names(self) -> tuple[str, ...]:
        return tuple(pod.key for pod in self.pods)

    def counts(self) -> tuple[int, int]:
        """(allowed, total) over every evaluated (pair, probe)."""
        table = self._table
        sizes = [len(members) for members in table.members]
        # Classes by size, as bitmasks: a class's allowed pairs are then a few popcounts.
        by_size: dict[int, int] = {}
        for c, n in enumerate(sizes):
            by_size[n] = by_size.get(n, 0) | 1 << c
        # A plain pod with itself is not a pair, though its class's own bit may be set.
        selfless = [sum(map(self._plain, members)) for members in table.members]
        allowed = 0
        for probe in self.probes:
            for c, mask in enumerate(table.masks[_as_tuple(probe)]):
                allowed += sizes[c] * sum(n * (mask & m).bit_count() for n, m in by_size.items())
                allowed -= selfless[c] * (mask >> c & 1)
        pods = len(self.pods)
        return allowed, (pods * pods - sum(selfless)) * len(self.probes)

    def _plain(self, key: str) -> bool:
        return key not in self._templates


def build_matrix(model: ClusterModel, *, probes: Sequence[Probe] | None = None, family: Family = 4) -> Matrix:
    """The matrix of every pod of ``model``; ``probes`` default to :func:`default_probes`."""
    chosen = tuple(dict.fromkeys(probes)) if probes else default_probes([model])
    pods = sorted(model.pods, key=lambda p: p.key)
    table = class_connectivity(model, ports=[_as_tuple(p) for p in chosen], family=family, pods=pods)
    rows = tuple(MatrixPod(p.key, workload_of(p), p.ips(), p.spec.node_name) for p in pods)
    templates = frozenset(p.key for p in pods if workload_of(p) is not None)
    return Matrix(rows, chosen, family, table, templates)


def _as_tuple(probe: Probe) -> tuple[Protocol, int]:
    return probe.protocol, probe.port
