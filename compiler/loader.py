"""Manifests (YAML or JSON text) to a :class:`ClusterModel`, with every problem of every file.

:func:`load_manifests` is pure: it takes (file name, text) pairs; the CLI reads files and
directories and passes them in sorted order. It reads NetworkPolicy, Pod, Namespace and Node,
and turns workloads (Deployment, StatefulSet, DaemonSet, ReplicaSet, ReplicationController, Job,
CronJob) into one *template pod* each: named after the workload, with the template's labels and
container ports, the annotation ``stockade.io/workload: "<Kind>/<name>"``, and no IP or node.
Other kinds are skipped with a note. ``List`` and ``<Kind>List`` documents are read item by item.

Objects without a namespace are in ``default``. The same object (kind, namespace, name) twice,
in one file or two, is a problem naming both places. The model is sorted (namespaces and nodes
by name, pods and policies by namespace/name), so the same input always gives the same model.
A pod without ``metadata.uid`` (manifests written by hand) gets a synthetic UID, a UUID derived
from its namespace and name, so its identity is stable from run to run.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from compiler.cluster import ClusterModel
from compiler.decode import decode
from compiler.errors import InputError, Problem
from compiler.fieldpath import describe, quote
from compiler.model import Namespace, NetworkPolicy, Node, Pod, synthetic_uid
from compiler.validation import Checked, parse_namespace, parse_node, parse_pod, parse_policy

WORKLOAD_ANNOTATION = "stockade.io/workload"

_API_VERSIONS: dict[str, str] = {
    "NetworkPolicy": "networking.k8s.io/v1",
    "Pod": "v1",
    "Namespace": "v1",
    "Node": "v1",
    "Deployment": "apps/v1",
    "StatefulSet": "apps/v1",
    "DaemonSet": "apps/v1",
    "ReplicaSet": "apps/v1",
    "ReplicationController": "v1",
    "Job": "batch/v1",
    "CronJob": "batch/v1",
}
_BY_LOWER_KIND = {k.lower(): k for k in _API_VERSIONS}
# Where each workload keeps its pod template.
_TEMPLATES: dict[str, tuple[str, ...]] = {
    "Deployment": ("spec", "template"),
    "StatefulSet": ("spec", "template"),
    "DaemonSet": ("spec", "template"),
    "ReplicaSet": ("spec", "template"),
    "ReplicationController": ("spec", "template"),
    "Job": ("spec", "template"),
    "CronJob": ("spec", "jobTemplate", "spec", "template"),
}
_CLUSTER_SCOPED = frozenset({"Namespace", "Node"})
_REMOVED = {
    "extensions/v1beta1": "removed in Kubernetes 1.16",
    "apps/v1beta1": "removed in Kubernetes 1.16",
    "apps/v1beta2": "removed in Kubernetes 1.16",
    "batch/v1beta1": "removed in Kubernetes 1.25",
}


@dataclass(frozen=True)
class LoadResult:
    model: ClusterModel
    notes: tuple[str, ...] = ()


@dataclass
class _Loaded:
    """What has been read so far, across all files."""

    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    skipped: dict[tuple[str, str], list[str]] = field(default_factory=lambda: defaultdict(list))
    seen: dict[tuple[str, str, str], tuple[str, str]] = field(default_factory=dict)
    policies: list[NetworkPolicy] = field(default_factory=list)
    pods: list[Pod] = field(default_factory=list)
    namespaces: list[Namespace] = field(default_factory=list)
    nodes: list[Node] = field(default_factory=list)


def load_manifests(sources: Sequence[tuple[str, str]]) -> LoadResult:
    """Read every (file name, text) source; raise :class:`InputError` with all problems if any."""
    loaded = _Loaded()
    for file, text in sources:
        documents, problems = decode(file, text)
        loaded.problems.extend(problems)
        for where, data in documents:
            if data is not None:  # an empty document
                _read(loaded, file, where=where, data=data)
    if loaded.problems:
        raise InputError(loaded.problems)
    for (file, kind), names in loaded.skipped.items():
        loaded.notes.append(
            f"{file}: skipped {len(names)} {kind} object{'s' if len(names) > 1 else ''} "
            f"(Stockade does not use this kind): {', '.join(names)}"
        )
    model = ClusterModel(
        namespaces=tuple(sorted(loaded.namespaces, key=lambda o: o.metadata.name)),
        pods=tuple(sorted(loaded.pods, key=lambda o: (o.metadata.namespace or "", o.metadata.name))),
        policies=tuple(sorted(loaded.policies, key=lambda o: (o.metadata.namespace or "", o.metadata.name))),
        nodes=tuple(sorted(loaded.nodes, key=lambda o: o.metadata.name)),
    )
    return LoadResult(model=model, notes=tuple(loaded.notes))


def _read(
    loaded: _Loaded, file: str, *, where: str, data: Any, kind: str | None = None, api: str | None = None
) -> None:
    """One decoded object; ``kind``/``api`` are inherited by the items of a ``<Kind>List``."""
    if not isinstance(data, Mapping):
        loaded.problems.append(
            Problem(file, where, "", f"must be an object with apiVersion and kind, got {describe(data)}")
        )
        return
    kind, api = data.get("kind", kind), data.get("apiVersion", api)
    bad = [(f, v) for f, v in (("apiVersion", api), ("kind", kind)) if not isinstance(v, str) or not v]
    for name, value in bad:
        message = "required value" if value is None else f"must be a non-empty string, got {describe(value)}"
        loaded.problems.append(Problem(file, where, name, message))
    if bad or not isinstance(kind, str) or not isinstance(api, str):
        return
    if kind == "List" or (kind.endswith("List") and kind[:-4] in _API_VERSIONS):
        _read_list(loaded, data, file=file, where=where, kind=kind, api=api)
        return
    namespaced = kind not in _CLUSTER_SCOPED
    data = _with_namespace(data) if namespaced else data
    label = _label(kind, data.get("metadata"), where=where, namespaced=namespaced)
    if kind not in _API_VERSIONS:
        if (known := _BY_LOWER_KIND.get(kind.lower())) is not None:
            # Skipping it would silently drop the object; the API server rejects it too.
            message = f'unsupported value {quote(kind)}: kinds are case-sensitive (did you mean "{known}"?)'
            loaded.problems.append(Problem(file, label, "kind", message))
        else:
            loaded.skipped[(file, kind)].append(label.removeprefix(f"{kind} "))
        return
    if api != _API_VERSIONS[kind]:
        why = f" ({api} was {_REMOVED[api]})" if api in _REMOVED else ""
        loaded.problems.append(
            Problem(
                file,
                label,
                "apiVersion",
                f"unsupported value {quote(api)}: {kind} is read as {_API_VERSIONS[kind]}{why}",
            )
        )
        return
    _register(loaded, data, file=file, where=where, label=label, kind=kind)
    checked: Checked[Any]
    if kind == "NetworkPolicy":
        checked = parse_policy(data, file=file, obj=label)
    elif kind == "Pod":
        checked = parse_pod(data, file=file, obj=label)
    elif kind == "Namespace":
        checked = parse_namespace(data, file=file, obj=label)
    elif kind == "Node":
        checked = parse_node(data, file=file, obj=label)
    else:
        checked = _template_pod(data, kind, file=file, obj=label)
    loaded.problems.extend(checked.problems)
    loaded.notes.extend(checked.notes)
    if checked.value is not None:
        value = checked.value
        if isinstance(value, Pod) and value.metadata.uid is None:
            value = _with_synthetic_uid(value)
        targets: dict[str, list[Any]] = {
            "NetworkPolicy": loaded.policies,
            "Namespace": loaded.namespaces,
            "Node": loaded.nodes,
        }
        targets.get(kind, loaded.pods).append(value)


def _with_synthetic_uid(pod: Pod) -> Pod:
    """A pod from a manifest without metadata.uid gets one derived from its namespace and name
    (:func:`compiler.model.synthetic_uid`), so the same files always give the same identities."""
    uid = synthetic_uid("Pod", pod.metadata.namespace, pod.metadata.name)
    return pod.model_copy(update={"metadata": pod.metadata.model_copy(update={"uid": uid})})


def _read_list(
    loaded: _Loaded, data: Mapping[str, Any], *, file: str, where: str, kind: str, api: str
) -> None:
    items = data.get("items")
    if items is None:
        return
    if not isinstance(items, list):
        loaded.problems.append(Problem(file, where, "items", f"must be a list, got {describe(items)}"))
        return
    # Items of `kind: List` carry their own kind; items of a typed list (as the API server returns
    # them) may not, and are of the list's kind and version.
    item_kind, item_api = (None, None) if kind == "List" else (kind[:-4], api)
    for i, item in enumerate(items):
        _read(loaded, file, where=f"{where}, items[{i}]", data=item, kind=item_kind, api=item_api)


def _with_namespace(data: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = data.get("metadata")
    if isinstance(meta, Mapping) and not meta.get("namespace"):
        return {**data, "metadata": {**meta, "namespace": "default"}}
    return data


def _label(kind: str, meta: object, *, where: str, namespaced: bool) -> str:
    """How problems name the object: ``NetworkPolicy x/deny-all``, ``Node n1``, or ``document 3``."""
    name = meta.get("name") if isinstance(meta, Mapping) else None
    if not isinstance(name, str) or not name:
        return where
    if not namespaced:
        return f"{kind} {name}"
    namespace = meta.get("namespace") if isinstance(meta, Mapping) else None
    return f"{kind} {namespace if isinstance(namespace, str) else '?'}/{name}"


def _register(
    loaded: _Loaded, data: Mapping[str, Any], *, file: str, where: str, label: str, kind: str
) -> None:
    """Remember where an object was defined; a second definition of the same key is a problem."""
    meta = data.get("metadata")
    name = meta.get("name") if isinstance(meta, Mapping) else None
    namespace = meta.get("namespace") if isinstance(meta, Mapping) else None
    if not isinstance(name, str) or not name:
        return
    # Template pods are pods: a Deployment and a Pod of one name would be one pod in the model.
    model_kind = kind if kind in ("NetworkPolicy", "Namespace", "Node", "Pod") else "Pod"
    scope = "" if kind in _CLUSTER_SCOPED else str(namespace)
    key = (model_kind, scope, name)
    place = f"{file}, {where}"
    if key in loaded.seen:
        first_place, first_label = loaded.seen[key]
        what = f"{model_kind} {scope}/{name}" if scope else f"{model_kind} {name}"
        also = first_place if first_label == label else f"{first_place} ({first_label})"
        if label != what:
            what += f" (from {label})"
        loaded.problems.append(Problem(file, label, "", f"duplicate {what}: also defined in {also}"))
    else:
        loaded.seen[key] = (place, label)


def _template_pod(data: Mapping[str, Any], kind: str, *, file: str, obj: str) -> Checked[Pod]:
    """The pod a workload's template describes, checked with field paths into the workload."""
    node: object = data
    path = ""
    for part in _TEMPLATES[kind]:
        path = f"{path}.{part}" if path else part
        node = node.get(part) if isinstance(node, Mapping) else None
        if not isinstance(node, Mapping):
            message = "required value" if node is None else f"must be an object, got {describe(node)}"
            return Checked(None, (Problem(file, obj, path, message),))
    assert isinstance(node, Mapping)
    meta = data.get("metadata")
    name = meta.get("name") if isinstance(meta, Mapping) else None
    namespace = meta.get("namespace") if isinstance(meta, Mapping) else None
    template_meta = node.get("metadata")
    labels = template_meta.get("labels") if isinstance(template_meta, Mapping) else None
    spec = node.get("spec")
    pod: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels,
            "annotations": {WORKLOAD_ANNOTATION: f"{kind}/{name}"},
        },
        # A template pod stands for every replica, on any node.
        "spec": {k: v for k, v in spec.items() if k != "nodeName"} if isinstance(spec, Mapping) else spec,
    }
    rebase = (("metadata.labels", f"{path}.metadata.labels"), ("spec", f"{path}.spec"))
    return parse_pod(pod, file=file, obj=obj, rebase=rebase)
