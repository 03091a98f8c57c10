"""Pydantic models of the Kubernetes objects Stockade reads.

Field names are snake_case in Python and camelCase (the API's spelling) on the wire; models
accept either. NetworkPolicy and ObjectMeta are strict (an unknown field is an error, since a
misspelt selector silently changes who may talk to whom); Pod, Node and Namespace specs and
statuses keep only what Stockade uses and ignore the rest (they carry hundreds of fields that
cannot affect policy).

Models are frozen. Their dict fields are never mutated after parsing.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

Protocol = Literal["TCP", "UDP", "SCTP"]
PROTOCOLS: tuple[Protocol, ...] = ("TCP", "UDP", "SCTP")
# The one definition of these two, shared by the semantics, the plan and the names of its objects.
Family = Literal[4, 6]  # IPv4 or IPv6
Direction = Literal["ingress", "egress"]  # a policyType, as the plan and the semantics spell it

# The API server sets this label on every namespace, equal to its name (immutable).
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"


class _Strict(BaseModel):
    model_config = ConfigDict(
        frozen=True, extra="forbid", populate_by_name=True, alias_generator=to_camel, strict=False
    )


class _Lenient(BaseModel):
    model_config = ConfigDict(
        frozen=True, extra="ignore", populate_by_name=True, alias_generator=to_camel, strict=False
    )


# RFC 3339 as the API server reads metav1.Time (Go's time.RFC3339 layout: a time zone is required,
# fractional seconds of any length are accepted).
_RFC3339 = re.compile(r"(\d{4}-\d{2}-\d{2})[Tt](\d{2}:\d{2}:\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")


def parse_time(value: object) -> datetime | None:
    """A metav1.Time field: an RFC 3339 string, or the timestamp YAML already decoded. Raises
    ValueError for anything the API server would refuse (no time zone, a number, a bare date)."""
    if value is None:
        return None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("must be an RFC 3339 time with a time zone, like 2024-05-01T12:00:00Z")
        return value.astimezone(UTC)
    if not isinstance(value, str):
        raise ValueError(f"must be an RFC 3339 time string, got {type(value).__name__}")
    found = _RFC3339.fullmatch(value)
    if found is None:
        raise ValueError(f"invalid value {value!r}: must be an RFC 3339 time, like 2024-05-01T12:00:00Z")
    day, clock, fraction, zone = found.groups()
    # Python keeps microseconds; finer digits cannot change which of two pods is newer in practice.
    micro = (fraction or "")[:7]
    zone = "+00:00" if zone in ("Z", "z") else zone
    try:
        return datetime.fromisoformat(f"{day}T{clock}{micro}{zone}").astimezone(UTC)
    except ValueError as exc:
        raise ValueError(f"invalid value {value!r}: {exc}") from exc


# Offline manifests may carry no metadata.uid. Such an object gets a UUID derived from its kind,
# namespace and name (uuid5 in this fixed namespace), so the same manifests always give the same
# identities and the same output.
SYNTHETIC_UID_NAMESPACE = uuid.UUID("6d1e3f0a-5b0c-4d8e-9a57-53746f636b61")


@lru_cache(maxsize=65536)  # asked for each pod of a large cluster on every compile
def synthetic_uid(kind: str, namespace: str | None, name: str) -> str:
    return str(uuid.uuid5(SYNTHETIC_UID_NAMESPACE, f"{kind}/{namespace or ''}/{name}"))


class ObjectMeta(_Strict):
    name: str = ""
    namespace: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    # The object's identity (pods are keyed by it: a pod re-created under the same name is
    # another pod); offline manifests may lack it (see synthetic_uid).
    uid: str | None = None
    # Which of two live pods claiming one address owns it: the one not being deleted, then the
    # newest (see compiler/podindex.py).
    creation_timestamp: datetime | None = None
    deletion_timestamp: datetime | None = None
    # Server-populated fields: accepted (objects copied from `kubectl get -o yaml` carry them)
    # and otherwise ignored.
    generate_name: str | None = None
    resource_version: str | None = None
    generation: int | None = None
    deletion_grace_period_seconds: int | None = None
    self_link: str | None = None
    owner_references: list[Any] | None = None
    finalizers: list[str] | None = None
    managed_fields: list[Any] | None = None

    @field_validator("creation_timestamp", "deletion_timestamp", mode="before")
    @classmethod
    def _time(cls, value: object) -> datetime | None:
        return parse_time(value)


# --- label selectors -------------------------------------------------------------------------

SelectorOperator = Literal["In", "NotIn", "Exists", "DoesNotExist"]


class LabelSelectorRequirement(_Strict):
    key: str
    operator: SelectorOperator
    values: tuple[str, ...] = ()


class LabelSelector(_Strict):
    """An empty selector (``{}``) selects everything; a *missing* selector is ``None`` upstream."""

    match_labels: dict[str, str] = Field(default_factory=dict)
    match_expressions: tuple[LabelSelectorRequirement, ...] = ()


# --- NetworkPolicy (networking.k8s.io/v1) ------------------------------------------------------


class IPBlock(_Strict):
    cidr: str
    except_: tuple[str, ...] = Field(default=(), alias="except")


class NetworkPolicyPeer(_Strict):
    pod_selector: LabelSelector | None = None
    namespace_selector: LabelSelector | None = None
    ip_block: IPBlock | None = None


class NetworkPolicyPort(_Strict):
    # The API server defaults a missing protocol to TCP.
    protocol: Protocol = "TCP"
    # int: a port number; str: a named container port (IANA_SVC_NAME); None: all ports.
    port: int | str | None = None
    end_port: int | None = None


class NetworkPolicyIngressRule(_Strict):
    ports: tuple[NetworkPolicyPort, ...] = ()
    from_: tuple[NetworkPolicyPeer, ...] = Field(default=(), alias="from")


class NetworkPolicyEgressRule(_Strict):
    ports: tuple[NetworkPolicyPort, ...] = ()
    to: tuple[NetworkPolicyPeer, ...] = ()


PolicyType = Literal["Ingress", "Egress"]


class NetworkPolicySpec(_Strict):
    pod_selector: LabelSelector
    policy_types: tuple[PolicyType, ...] | None = None
    ingress: tuple[NetworkPolicyIngressRule, ...] = ()
    egress: tuple[NetworkPolicyEgressRule, ...] = ()

    def effective_policy_types(self) -> tuple[PolicyType, ...]:
        """policyTypes as the API server defaults it: Ingress always, Egress if egress rules exist."""
        if self.policy_types:
            return self.policy_types
        return ("Ingress", "Egress") if self.egress else ("Ingress",)


class NetworkPolicy(_Strict):
    api_version: Literal["networking.k8s.io/v1"] = "networking.k8s.io/v1"
    kind: Literal["NetworkPolicy"] = "NetworkPolicy"
    metadata: ObjectMeta
    spec: NetworkPolicySpec
    status: Any = None

    @property
    def key(self) -> str:
        """``namespace/name``: how rules, comments and explanations name this policy."""
        return f"{self.metadata.namespace}/{self.metadata.name}"


# --- Pod ----------------------------------------------------------------------------------------


class ContainerPort(_Lenient):
    container_port: int
    name: str | None = None
    protocol: Protocol = "TCP"


class Container(_Lenient):
    name: str = ""
    ports: tuple[ContainerPort, ...] = ()


class PodSpec(_Lenient):
    node_name: str | None = None
    # Strict: a host-network pod is exempt from every policy, so `hostNetwork: "yes"` (or 1) must
    # be an error, as the API server makes it, not a pod quietly taken out of policy.
    host_network: bool = Field(default=False, strict=True)
    containers: tuple[Container, ...] = ()
    init_containers: tuple[Container, ...] = ()


class PodIP(_Lenient):
    ip: str


FINISHED_PHASES = ("Succeeded", "Failed")


class PodStatus(_Lenient):
    phase: str | None = None
    pod_ip: str | None = Field(default=None, alias="podIP")
    pod_ips: tuple[PodIP, ...] = Field(default=(), alias="podIPs")


class Pod(_Lenient):
    api_version: str = "v1"
    kind: Literal["Pod"] = "Pod"
    metadata: ObjectMeta
    spec: PodSpec = Field(default_factory=PodSpec)
    status: PodStatus = Field(default_factory=PodStatus)

    @property
    def key(self) -> str:
        """``namespace/name``: how people and output name the pod (not its identity: see uid)."""
        return f"{self.metadata.namespace}/{self.metadata.name}"

    @property
    def uid(self) -> str:
        """The pod's identity: metadata.uid, or for a manifest without one its synthetic UID."""
        return self.metadata.uid or synthetic_uid("Pod", self.metadata.namespace, self.metadata.name)

    @property
    def finished(self) -> bool:
        """Succeeded or Failed: its containers are gone and its address may be handed out again."""
        return self.status.phase in FINISHED_PHASES

    def ips(self) -> tuple[str, ...]:
        """Every address of the pod, podIPs first (the API keeps podIP == podIPs[0])."""
        seen: list[str] = [p.ip for p in self.status.pod_ips]
        if self.status.pod_ip and self.status.pod_ip not in seen:
            seen.insert(0, self.status.pod_ip)
        return tuple(seen)

    def container_ports(self) -> tuple[ContainerPort, ...]:
        """Ports of regular and init containers (restartable init containers serve too)."""
        return tuple(p for c in (*self.spec.containers, *self.spec.init_containers) for p in c.ports)


# --- Namespace and Node ----------------------------------------------------------------------------


class Namespace(_Lenient):
    api_version: str = "v1"
    kind: Literal["Namespace"] = "Namespace"
    metadata: ObjectMeta

    def effective_labels(self) -> dict[str, str]:
        """Labels as the API server stores them: kubernetes.io/metadata.name is always its name."""
        return {**self.metadata.labels, NAMESPACE_NAME_LABEL: self.metadata.name}


class NodeSpec(_Lenient):
    pod_cidr: str | None = Field(default=None, alias="podCIDR")
    pod_cidrs: tuple[str, ...] = Field(default=(), alias="podCIDRs")


class NodeAddress(_Lenient):
    type: str
    address: str


class NodeStatus(_Lenient):
    addresses: tuple[NodeAddress, ...] = ()


class Node(_Lenient):
    api_version: str = "v1"
    kind: Literal["Node"] = "Node"
    metadata: ObjectMeta
    spec: NodeSpec = Field(default_factory=NodeSpec)
    status: NodeStatus = Field(default_factory=NodeStatus)

    def pod_cidrs(self) -> tuple[str, ...]:
        cidrs = list(self.spec.pod_cidrs)
        if self.spec.pod_cidr and self.spec.pod_cidr not in cidrs:
            cidrs.insert(0, self.spec.pod_cidr)
        return tuple(cidrs)

    def internal_ips(self) -> tuple[str, ...]:
        return tuple(a.address for a in self.status.addresses if a.type == "InternalIP")
