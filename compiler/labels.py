"""Checks of object metadata and label selectors on decoded (raw) data.

These mirror apimachinery's ValidateObjectMeta (name, namespace, labels, annotations) and
ValidateLabelSelector. They take decoded data (dicts and lists, as YAML and JSON give) and look
only at values of the right type: a wrong type is pydantic's to report, so each problem is said once.
"""

from __future__ import annotations

from compiler.fieldpath import Issue, child, index, key, quote
from compiler.syntax import (
    dns1123_label_errors,
    dns1123_subdomain_errors,
    label_key_errors,
    label_value_errors,
)

ANNOTATIONS_MAX_BYTES = 256 * 1024


def labels_issues(labels: object, path: str) -> list[Issue]:
    """Keys and values of a label map (``metadata.labels`` or a selector's ``matchLabels``)."""
    issues: list[Issue] = []
    if not isinstance(labels, dict):
        return issues
    for k, v in labels.items():
        if isinstance(k, str):
            issues.extend((key(path, k), f"invalid label key {quote(k)}: {m}") for m in label_key_errors(k))
        if isinstance(v, str):
            issues.extend(
                (key(path, k), f"invalid label value {quote(v)}: {m}") for m in label_value_errors(v)
            )
    return issues


def selector_issues(selector: object, path: str) -> list[Issue]:
    """A LabelSelector: matchLabels, and for each matchExpressions entry its key, operator and values."""
    if not isinstance(selector, dict):
        return []
    issues = labels_issues(selector.get("matchLabels"), child(path, "matchLabels"))
    expressions = selector.get("matchExpressions")
    if not isinstance(expressions, list):
        return issues
    for i, expr in enumerate(expressions):
        epath = index(child(path, "matchExpressions"), i)
        if not isinstance(expr, dict):
            continue
        values = expr.get("values")
        count = len(values) if isinstance(values, list) else 0
        operator = expr.get("operator")
        if operator in ("In", "NotIn") and count == 0:
            issues.append(
                (
                    child(epath, "values"),
                    "required value: must be specified when `operator` is 'In' or 'NotIn'",
                )
            )
        elif operator in ("Exists", "DoesNotExist") and count > 0:
            issues.append(
                (
                    child(epath, "values"),
                    "forbidden: may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                )
            )
        k = expr.get("key")
        if isinstance(k, str):
            issues.extend(
                (child(epath, "key"), f"invalid value {quote(k)}: {m}") for m in label_key_errors(k)
            )
        for j, value in enumerate(values if isinstance(values, list) else []):
            if isinstance(value, str):
                vpath = index(child(epath, "values"), j)
                issues.extend(
                    (vpath, f"invalid value {quote(value)}: {m}") for m in label_value_errors(value)
                )
    return issues


def meta_issues(
    meta: object, *, namespaced: bool, dns_label: bool = False, annotations: bool = False
) -> list[Issue]:
    """``metadata``: name (a DNS subdomain, or a DNS label when ``dns_label``), namespace (a DNS
    label) for namespaced kinds, labels, and annotation keys and size when ``annotations``."""
    issues: list[Issue] = []
    if not isinstance(meta, dict):
        return issues
    name = meta.get("name")
    if name is None or name == "":
        if meta.get("generateName"):
            issues.append(("metadata.name", "required value: generateName needs the API server; give a name"))
        else:
            issues.append(("metadata.name", "required value"))
    elif isinstance(name, str):
        rule = dns1123_label_errors if dns_label else dns1123_subdomain_errors
        issues.extend(("metadata.name", f"invalid value {quote(name)}: {m}") for m in rule(name))
    namespace = meta.get("namespace")
    if namespaced and isinstance(namespace, str) and namespace:
        issues.extend(
            ("metadata.namespace", f"invalid value {quote(namespace)}: {m}")
            for m in dns1123_label_errors(namespace)
        )
    issues.extend(labels_issues(meta.get("labels"), "metadata.labels"))
    notes = meta.get("annotations")
    if annotations and isinstance(notes, dict):
        size = 0
        for k, v in notes.items():
            if isinstance(k, str):
                # Annotation keys follow the label key rule, case-insensitively.
                issues.extend(
                    (key("metadata.annotations", k), f"invalid annotation key {quote(k)}: {m}")
                    for m in label_key_errors(k.lower())
                )
                size += len(k.encode())
            if isinstance(v, str):
                size += len(v.encode())
        if size > ANNOTATIONS_MAX_BYTES:
            issues.append(
                ("metadata.annotations", f"too long: may not be more than {ANNOTATIONS_MAX_BYTES} bytes")
            )
    return issues
