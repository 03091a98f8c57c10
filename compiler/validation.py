"""Validation of the objects Stockade reads, equal to the API server's for NetworkPolicy.

Each ``parse_*`` function takes one object as decoded from YAML or JSON and returns a
:class:`Checked`: the model when nothing is wrong, every problem found otherwise, and notes
(things the API server would warn about, such as a CIDR with host bits set). Checks run on the
raw data as well as through pydantic, so a wrong type in one field does not hide a bad CIDR in
another: all problems of an object come out at once.

NetworkPolicy follows k8s.io/kubernetes ``pkg/apis/networking/validation`` (ValidateNetworkPolicy)
and apimachinery's ObjectMeta and label selector validation. Pods, Namespaces and Nodes are
checked only where Stockade uses them: names, labels, pod IPs, container ports, pod CIDRs.

Values are normalised where the API server reads them loosely: ipBlock CIDRs and node pod CIDRs
are stored in canonical network form (``10.0.0.1/8`` becomes ``10.0.0.0/8``, with a note), so
everything downstream can parse them strictly. A ``null`` field is the same as an absent one,
as in the API.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from compiler.errors import Problem
from compiler.fieldpath import Issue, child, describe, index, pydantic_issues, quote
from compiler.labels import meta_issues, selector_issues
from compiler.model import Namespace, NetworkPolicy, Node, Pod
from compiler.syntax import (
    IPAddress,
    IPNetwork,
    ip_errors,
    parse_cidr,
    parse_ip,
    port_name_errors,
    port_number_errors,
    strictly_within,
)

M = TypeVar("M", bound=BaseModel)

Rebase = Sequence[tuple[str, str]]
"""(old prefix, new prefix) pairs applied to field paths, for objects built from a template."""


@dataclass(frozen=True)
class Checked(Generic[M]):
    """The outcome of checking one object: ``value`` is set exactly when ``problems`` is empty."""

    value: M | None
    problems: tuple[Problem, ...] = ()
    notes: tuple[str, ...] = ()


@dataclass
class _Report:
    issues: list[Issue] = field(default_factory=list)
    notes: list[Issue] = field(default_factory=list)

    def add(self, path: str, message: str) -> None:
        self.issues.append((path, message))


def _items(value: object) -> list[tuple[int, Any]]:
    return list(enumerate(value)) if isinstance(value, list | tuple) else []


def _clean(value: Any) -> Any:
    """A copy without ``null`` map entries (the API treats null as absent), made of dicts and
    lists only, which is what the checks below expect."""
    kind = type(value)
    if kind is str or kind is int:
        return value
    if kind is dict or isinstance(value, Mapping):
        return {k: _clean(v) for k, v in value.items() if v is not None}
    if kind is list or kind is tuple:
        return [_clean(v) for v in value]
    return value


def _rebased(path: str, rebase: Rebase) -> str:
    for old, new in rebase:
        if path == old or path.startswith((old + ".", old + "[")):
            return new + path[len(old) :]
    return path


def _check(
    model: type[M],
    doc: dict[str, Any],
    *,
    checks: Callable[[dict[str, Any], _Report], None],
    file: str,
    obj: str,
    rebase: Rebase = (),
) -> Checked[M]:
    report = _Report()
    checks(doc, report)
    value: M | None = None
    issues = list(report.issues)
    try:
        value = model.model_validate(doc)
    except ValidationError as exc:
        # A raw check already explains these paths (e.g. `port: true`, which pydantic would take as 1).
        explained = {path for path, _ in report.issues}
        issues.extend(i for i in pydantic_issues(exc, model) if i[0] not in explained)
    problems = tuple(dict.fromkeys(Problem(file, obj, _rebased(p, rebase), m) for p, m in issues))
    notes = tuple(f"{file}: {obj}: {_rebased(p, rebase)}: {m}" for p, m in report.notes)
    return Checked(None if problems else value, problems, notes)


# --- NetworkPolicy --------------------------------------------------------------------------------


def _cidr(
    container: dict[str, Any], name: str, *, path: str, report: _Report, at: int | None = None
) -> IPNetwork | None:
    """Parse ``container[name]`` (or its item ``at``) as a CIDR, store it canonical; the network or None."""
    raw = container[name] if at is None else container[name][at]
    if not isinstance(raw, str):
        return None  # pydantic reports the type
    if not raw:
        report.add(path, "required value")
        return None
    try:
        net = parse_cidr(raw)
    except ValueError as exc:
        report.add(path, f"invalid value {quote(raw)}: {exc}")
        return None
    if parse_ip(raw.partition("/")[0]) != net.network_address:
        report.notes.append((path, f"{raw} has host bits set; read as {net}, as the API server does"))
    if at is None:
        container[name] = str(net)
    else:
        container[name][at] = str(net)
    return net


def _ip_block(block: object, path: str, *, report: _Report) -> None:
    if not isinstance(block, dict) or "cidr" not in block:
        return
    net = _cidr(block, "cidr", path=child(path, "cidr"), report=report)
    if net is None:
        return  # upstream checks except entries only against a valid cidr
    for i, _ in _items(block.get("except")):
        epath = index(child(path, "except"), i)
        original = block["except"][i]
        exc = _cidr(block, "except", path=epath, report=report, at=i)
        if exc is not None and not strictly_within(exc, net):
            report.add(epath, f"invalid value {quote(original)}: must be a strict subset of `cidr` ({net})")


def _peer(peer: object, path: str, *, report: _Report) -> None:
    if not isinstance(peer, dict):
        return
    present = [k for k in ("podSelector", "namespaceSelector", "ipBlock") if k in peer]
    if not present:
        report.add(path, "required value: must specify a peer (podSelector, namespaceSelector or ipBlock)")
    elif "ipBlock" in present and len(present) > 1:
        report.add(path, "forbidden: may not specify both ipBlock and another peer")
    for name in ("podSelector", "namespaceSelector"):
        report.issues.extend(selector_issues(peer.get(name), child(path, name)))
    _ip_block(peer.get("ipBlock"), child(path, "ipBlock"), report=report)


# What _typed_port returns for a value of the wrong type (already reported).
_BAD = object()


def _typed_port(value: object, path: str, *, report: _Report, allow_str: bool = False) -> object:
    """``value`` if it is absent, an int (or a str when ``allow_str``); otherwise report it and
    return ``_BAD``. pydantic alone would take ``true`` as 1 and ``80.0`` as 80."""
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    if allow_str and isinstance(value, str):
        return value
    wanted = "an integer port number or a port name" if allow_str else "an integer"
    report.add(path, f"must be {wanted}, got {describe(value)}")
    return _BAD


def _port(port: object, path: str, *, report: _Report) -> None:
    if not isinstance(port, dict):
        return
    number = _typed_port(port.get("port"), child(path, "port"), report=report, allow_str=True)
    end = _typed_port(port.get("endPort"), child(path, "endPort"), report=report)
    end_path = child(path, "endPort")
    if isinstance(number, int):
        report.issues.extend(
            (child(path, "port"), f"invalid value {number}: {m}") for m in port_number_errors(number)
        )
        if isinstance(end, int):
            if end < number:
                report.add(end_path, f"invalid value {end}: must be greater than or equal to `port`")
            report.issues.extend((end_path, f"invalid value {end}: {m}") for m in port_number_errors(end))
    elif isinstance(number, str):
        if isinstance(end, int):
            report.add(end_path, f"invalid value {end}: may not be specified when `port` is non-numeric")
        report.issues.extend(
            (child(path, "port"), f"invalid value {quote(number)}: {m}") for m in port_name_errors(number)
        )
    elif number is None and isinstance(end, int):
        report.add(end_path, f"invalid value {end}: may not be specified when `port` is not specified")


def _policy_checks(doc: dict[str, Any], report: _Report) -> None:
    report.issues.extend(meta_issues(doc.get("metadata"), namespaced=True, annotations=True))
    spec = doc.get("spec")
    if not isinstance(spec, dict):
        return
    report.issues.extend(selector_issues(spec.get("podSelector"), "spec.podSelector"))
    for direction, peers in (("ingress", "from"), ("egress", "to")):
        for i, rule in _items(spec.get(direction)):
            rpath = index(child("spec", direction), i)
            if not isinstance(rule, dict):
                continue
            for j, port in _items(rule.get("ports")):
                _port(port, index(child(rpath, "ports"), j), report=report)
            for j, peer in _items(rule.get(peers)):
                _peer(peer, index(child(rpath, peers), j), report=report)
    types = spec.get("policyTypes")
    if isinstance(types, list) and len(types) > 2:
        report.add(
            "spec.policyTypes", f"invalid value {quote(types)}: may not specify more than two policyTypes"
        )


def parse_policy(data: Mapping[str, Any], *, file: str, obj: str) -> Checked[NetworkPolicy]:
    """A NetworkPolicy from decoded YAML/JSON, checked as the API server checks it on create."""
    return _check(NetworkPolicy, _clean(data), checks=_policy_checks, file=file, obj=obj)


def validate_policy(policy: Mapping[str, Any] | NetworkPolicy, *, file: str, obj: str) -> list[Problem]:
    """Every problem of a NetworkPolicy (decoded data or an already built model); empty when valid."""
    if isinstance(policy, NetworkPolicy):
        policy = policy.model_dump(mode="json", by_alias=True, exclude_none=True)
    return list(parse_policy(policy, file=file, obj=obj).problems)


# --- Pod, Namespace, Node ---------------------------------------------------------------------------


def _container_ports(containers: object, path: str, *, report: _Report) -> None:
    for i, container in _items(containers):
        if not isinstance(container, dict):
            continue
        names: set[str] = set()
        for j, port in _items(container.get("ports")):
            ppath = index(child(index(path, i), "ports"), j)
            if not isinstance(port, dict):
                continue
            number = _typed_port(port.get("containerPort"), child(ppath, "containerPort"), report=report)
            if isinstance(number, int):
                report.issues.extend(
                    (child(ppath, "containerPort"), f"invalid value {number}: {m}")
                    for m in port_number_errors(number)
                )
            name = port.get("name")
            if isinstance(name, str) and name:
                report.issues.extend(
                    (child(ppath, "name"), f"invalid value {quote(name)}: {m}")
                    for m in port_name_errors(name)
                )
                if name in names:
                    report.add(child(ppath, "name"), f"duplicate value {quote(name)}")
                names.add(name)


def _one_per_family(values: list[tuple[str, str]], path: str, *, what: str, report: _Report) -> None:
    """Dual-stack lists (podIPs, podCIDRs) hold at most one entry per IP family."""
    families = [":" in v for _, v in values]
    if len(values) > 2 or len(set(families)) != len(families):
        report.add(path, f"may specify no more than one {what} for each IP family")


def _ip(value: object, path: str, *, report: _Report) -> IPAddress | None:
    if not isinstance(value, str):
        return None  # absent, or pydantic reports the type
    try:
        return parse_ip(value)
    except ValueError as exc:
        report.add(path, f"invalid value {quote(value)}: {exc}")
        return None


def _pod_checks(doc: dict[str, Any], report: _Report) -> None:
    report.issues.extend(meta_issues(doc.get("metadata"), namespaced=True))
    spec = doc.get("spec")
    if isinstance(spec, dict):
        for name in ("containers", "initContainers"):
            _container_ports(spec.get(name), child("spec", name), report=report)
    status = doc.get("status")
    if not isinstance(status, dict):
        return
    pod_ip = _ip(status.get("podIP"), "status.podIP", report=report)
    ips: list[tuple[str, str]] = []
    first: IPAddress | None = None
    for i, entry in _items(status.get("podIPs")):
        path = child(index("status.podIPs", i), "ip")
        ip = _ip(entry.get("ip") if isinstance(entry, dict) else None, path, report=report)
        if ip is not None:
            ips.append((path, str(ip)))
            first = first or ip
    _one_per_family(ips, "status.podIPs", what="IP", report=report)
    if pod_ip is not None and first is not None and ips[0][0] == "status.podIPs[0].ip" and pod_ip != first:
        report.add("status.podIPs[0].ip", f"must equal status.podIP ({pod_ip})")


def parse_pod(data: Mapping[str, Any], *, file: str, obj: str, rebase: Rebase = ()) -> Checked[Pod]:
    """A Pod, keeping only what Stockade uses (so 10,000 pods load fast); ``rebase`` maps field
    paths back to where a template pod's fields came from (``spec`` -> ``spec.template.spec``)."""
    return _check(Pod, _clean(_pod_view(data)), checks=_pod_checks, file=file, obj=obj, rebase=rebase)


def _pod_view(data: Mapping[str, Any]) -> dict[str, Any]:
    view = {k: data[k] for k in ("apiVersion", "kind") if k in data}
    meta = data.get("metadata")
    view["metadata"] = (
        {k: v for k, v in meta.items() if k != "managedFields"} if isinstance(meta, Mapping) else meta
    )
    spec, status = data.get("spec"), data.get("status")
    if isinstance(spec, Mapping):
        view["spec"] = {k: _containers_view(spec[k]) for k in _POD_SPEC_USED if k in spec}
    elif spec is not None:
        view["spec"] = spec
    if isinstance(status, Mapping):
        view["status"] = {k: status[k] for k in ("phase", "podIP", "podIPs") if k in status}
    elif status is not None:
        view["status"] = status
    return view


_POD_SPEC_USED = ("nodeName", "hostNetwork", "containers", "initContainers")


def _containers_view(value: Any) -> Any:
    if not isinstance(value, list):
        return value
    return [{k: c[k] for k in ("name", "ports") if k in c} if isinstance(c, Mapping) else c for c in value]


def _namespace_checks(doc: dict[str, Any], report: _Report) -> None:
    report.issues.extend(meta_issues(doc.get("metadata"), namespaced=False, dns_label=True))


def parse_namespace(data: Mapping[str, Any], *, file: str, obj: str) -> Checked[Namespace]:
    return _check(Namespace, _clean(data), checks=_namespace_checks, file=file, obj=obj)


def _node_checks(doc: dict[str, Any], report: _Report) -> None:
    report.issues.extend(meta_issues(doc.get("metadata"), namespaced=False))
    spec = doc.get("spec")
    if isinstance(spec, dict):
        single = _cidr(spec, "podCIDR", path="spec.podCIDR", report=report) if "podCIDR" in spec else None
        cidrs: list[tuple[str, str]] = []
        for i, _ in _items(spec.get("podCIDRs")):
            path = index("spec.podCIDRs", i)
            if (net := _cidr(spec, "podCIDRs", path=path, report=report, at=i)) is not None:
                cidrs.append((path, str(net)))
        _one_per_family(cidrs, "spec.podCIDRs", what="CIDR", report=report)
        if single is not None and cidrs and str(single) != cidrs[0][1]:
            report.add("spec.podCIDRs[0]", f"must equal spec.podCIDR ({single})")
    status = doc.get("status")
    for i, address in _items(status.get("addresses") if isinstance(status, dict) else None):
        if isinstance(address, dict) and address.get("type") == "InternalIP":
            value = address.get("address")
            if isinstance(value, str):
                path = child(index("status.addresses", i), "address")
                report.issues.extend((path, f"invalid value {quote(value)}: {m}") for m in ip_errors(value))


def parse_node(data: Mapping[str, Any], *, file: str, obj: str) -> Checked[Node]:
    return _check(Node, _clean(data), checks=_node_checks, file=file, obj=obj)
