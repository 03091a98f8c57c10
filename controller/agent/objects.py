"""API objects (watch event bodies) to the compiler's models, keeping only what the compiler reads.

The agent holds every pod of the cluster, so a pod is trimmed before it is parsed: metadata
without annotations or managed fields, a spec with only the node, host network and container
ports, a status with only phase and addresses. Two bodies that differ elsewhere (conditions,
images, resourceVersion) parse to equal models, which :mod:`.store` uses to drop events that
change nothing the plan depends on.

The agent holds every pod for its life, so a parsed pod is also made compact
(:func:`compact`): pods of one workload share one ``spec`` object (equal specs, frozen models),
and models share the record pydantic keeps of which fields were given (a set per model object:
about 2 KiB of a 5 KiB pod). Neither changes a value the compiler reads.

NetworkPolicies are parsed as the API shows them (the model is strict: a field it does not
know is an :class:`UnreadableObject`, never silently ignored); a malformed rule is the
cluster model's business (:mod:`compiler.defects`).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from compiler.model import Namespace, NetworkPolicy, Node, Pod, PodSpec
from controller.errors import StockadeError

Kind = Literal["NetworkPolicy", "Pod", "Namespace", "Node"]
KINDS: tuple[Kind, ...] = ("NetworkPolicy", "Pod", "Namespace", "Node")
Model = NetworkPolicy | Pod | Namespace | Node

# The metadata the compiler reads (pods are keyed by uid; the timestamps pick an address owner).
_META_KEYS = ("name", "namespace", "uid", "labels", "creationTimestamp", "deletionTimestamp")
_POD_SPEC_KEYS = ("nodeName", "hostNetwork")
_CONTAINER_KEYS = ("name", "ports")
_POD_STATUS_KEYS = ("phase", "podIP", "podIPs")


_MODELS: dict[Kind, type[Model]] = {
    "NetworkPolicy": NetworkPolicy,
    "Pod": Pod,
    "Namespace": Namespace,
    "Node": Node,
}


class UnreadableObject(StockadeError):
    """An object from the API that the compiler's model cannot hold; names the object."""

    def __init__(self, kind: str, ref: str, cause: ValidationError) -> None:
        fields = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in cause.errors(include_url=False)
        )
        super().__init__(f"{kind} {ref}: {fields}")
        self.kind = kind
        self.ref = ref


def _pick(data: object, keys: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(data, Mapping):
        return {}
    return {k: data[k] for k in keys if data.get(k) is not None}


def _containers(value: object) -> list[dict[str, Any]]:
    return [_pick(c, _CONTAINER_KEYS) for c in value] if isinstance(value, list) else []


def _interned(meta: dict[str, Any]) -> dict[str, Any]:
    """``meta`` with its namespace and labels as interned strings: every parsed body brings its own
    copy of each (the JSON decoder shares nothing between responses), and pydantic keeps the
    strings it is given, so 10,000 pods held 10,000 copies of a few namespace names and label
    values (~3 MiB). Anything not a string is left for the model to refuse."""
    if isinstance(meta.get("namespace"), str):
        meta["namespace"] = sys.intern(meta["namespace"])
    labels = meta.get("labels")
    if isinstance(labels, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items()):
        meta["labels"] = {sys.intern(k): sys.intern(v) for k, v in labels.items()}
    return meta


def trimmed(kind: Kind, body: Mapping[str, Any]) -> dict[str, Any]:
    """The part of ``body`` the compiler reads."""
    meta = _interned(_pick(body.get("metadata"), _META_KEYS))
    if kind == "NetworkPolicy":
        return {"metadata": meta, "spec": body.get("spec") or {}}
    if kind == "Pod":
        raw_spec = body.get("spec") if isinstance(body.get("spec"), Mapping) else {}
        assert isinstance(raw_spec, Mapping)
        spec = _pick(raw_spec, _POD_SPEC_KEYS)
        spec["containers"] = _containers(raw_spec.get("containers"))
        spec["initContainers"] = _containers(raw_spec.get("initContainers"))
        status = _pick(body.get("status"), _POD_STATUS_KEYS)
        if isinstance(status.get("phase"), str):
            status["phase"] = sys.intern(status["phase"])
        ips = status.get("podIPs")
        if (
            isinstance(ips, list)
            and ips
            and isinstance(ips[0], Mapping)
            and ips[0].get("ip") == status.get("podIP")
        ):
            status["podIP"] = ips[0]["ip"]  # the API repeats it: one string for both
        return {"metadata": meta, "spec": spec, "status": status}
    if kind == "Node":
        return {
            "metadata": meta,
            "spec": _pick(body.get("spec"), ("podCIDR", "podCIDRs")),
            "status": _pick(body.get("status"), ("addresses",)),
        }
    return {"metadata": meta}


def ref_of(body: Mapping[str, Any]) -> str:
    meta = body.get("metadata") if isinstance(body.get("metadata"), Mapping) else {}
    assert isinstance(meta, Mapping)
    name = meta.get("name", "?")
    return f"{meta['namespace']}/{name}" if meta.get("namespace") else str(name)


def parse(kind: Kind, body: Mapping[str, Any]) -> Model:
    """The compiler's model of ``body``; raises :class:`UnreadableObject`."""
    data = trimmed(kind, body)
    model = _MODELS[kind]
    try:
        parsed = model.model_validate(data)
    except ValidationError as exc:
        raise UnreadableObject(kind, ref_of(body), exc) from exc
    if isinstance(parsed, Pod):
        return compact(parsed, spec_key=json.dumps(data["spec"], sort_keys=True))
    return parsed


# Bounds of the two tables below: a cluster has far fewer distinct pod specs (one per workload
# version) and field combinations; a table that fills up is started again (sharing is only a saving).
_SPECS_MAX = 8192
_FIELD_SETS_MAX = 1024
_specs: dict[str, PodSpec] = {}
_field_sets: dict[tuple[type, frozenset[str]], set[str]] = {}


def compact(pod: Pod, *, spec_key: str) -> Pod:
    """``pod``, equal, sharing its spec with earlier pods of the same ``spec_key`` (the spec as
    the API showed it) and its models' field records with every model of the same fields."""
    spec = _specs.get(spec_key)
    if spec is None or spec != pod.spec:
        if len(_specs) >= _SPECS_MAX:
            _specs.clear()
        spec = _specs[spec_key] = pod.spec
        _shared_fields(spec)
    # Frozen to the compiler; here, just parsed and not yet seen by anyone, its spec is swapped
    # for an equal one (model_copy would copy every field for that).
    pod.__dict__["spec"] = spec
    _shared_fields(pod)
    return pod


def _shared_fields(model: object) -> None:
    """``model`` and the models in it with one shared field record per (class, fields given).
    pydantic only reads that record (and copies it before a ``model_copy`` changes it); the
    models are frozen, so nothing adds to it."""
    if isinstance(model, BaseModel):
        given = model.__pydantic_fields_set__
        key = (type(model), frozenset(given))
        shared = _field_sets.get(key)
        if shared is None:
            if len(_field_sets) >= _FIELD_SETS_MAX:
                _field_sets.clear()
            shared = _field_sets[key] = given
        object.__setattr__(model, "__pydantic_fields_set__", shared)
        for value in model.__dict__.values():
            _shared_fields(value)
    elif isinstance(model, tuple):
        for item in model:
            _shared_fields(item)
