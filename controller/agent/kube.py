"""The agent's own API access (besides kopf's watches): credentials, Events, kube-proxy's mode, health.

Credentials and requests: :mod:`controller.agent.apiclient` (no ``kubernetes`` client package).
kopf is logged in with the same credentials (:func:`login`).

Events are core/v1 Events (what ``kubectl describe`` and ``kubectl get events`` show), posted by
component ``stockade-agent`` with this node as the source host. They are the only thing the agent
writes to the API.

kube-proxy in IPVS mode sends Service traffic through the ``input`` and ``output`` hooks, not
``forward``, so NetworkPolicy would not see Service traffic as the plan expects. The agent does
not refuse to run (refusing would leave the node with no policy at all): it warns loudly, in its
log at ERROR and with a Warning Event on its Node, and says what it found: the ``kube-ipvs0``
device on this node (kube-proxy creates it in IPVS mode), or ``mode: ipvs`` in the ``kube-proxy``
ConfigMap of ``kube-system`` (as kubeadm installs it).
"""

from __future__ import annotations

import asyncio
import ctypes
import datetime as dt
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kopf
import yaml

from controller.agent.apiclient import ApiClient, Credentials
from controller.agent.notices import Notice, ObjectRef
from controller.errors import ApiError

log = logging.getLogger(__name__)

COMPONENT = "stockade-agent"
IPVS_DEVICE = Path("/sys/class/net/kube-ipvs0")


def login(credentials: Credentials) -> kopf.ConnectionInfo:
    """kopf's watches log in with the agent's credentials (kopf calls this again after a 401: a
    rotated ServiceAccount token is read anew)."""
    return credentials.current()


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class KubeEvents:
    """Posts notices as core/v1 Events (blocking: the agent calls it in a thread)."""

    def __init__(self, api: ApiClient, *, node: str) -> None:
        self._api = api
        self._node = node

    def post(self, notice: Notice) -> None:
        ref = notice.ref
        namespace = ref.namespace or "default"  # Events of cluster-scoped objects live in default
        now = _now()
        involved = {"kind": ref.kind, "apiVersion": ref.api_version, "name": ref.name, "uid": ref.uid}
        if ref.namespace:
            involved["namespace"] = ref.namespace
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{ref.name}.stockade-", "namespace": namespace},
            "involvedObject": involved,
            "reason": notice.reason,
            "message": notice.message,
            "type": notice.type,
            "source": {"component": COMPONENT, "host": self._node},
            "reportingComponent": f"stockade.io/{COMPONENT}",
            "reportingInstance": self._node,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            self._api.request("POST", f"/api/v1/namespaces/{namespace}/events", body=body)
        except ApiError as exc:
            if not _namespace_going(exc):
                raise
            # The object the Event is about goes with its namespace: nobody could read the Event.
            log.info(
                "no Event %s for %s %s: namespace %s is being deleted",
                notice.reason,
                ref.kind,
                ref.name,
                namespace,
            )


def _namespace_going(exc: ApiError) -> bool:
    """The API server refuses new objects in a namespace being deleted (403, cause
    NamespaceTerminating) or already gone (404)."""
    if exc.status == 404:
        return True
    return exc.status == 403 and "NamespaceTerminating" in exc.body


def ipvs_evidence(api: ApiClient, *, device: Path = IPVS_DEVICE) -> str | None:
    """What shows kube-proxy in IPVS mode, or None."""
    if device.exists():
        return f"the {device.name} device exists on this node (kube-proxy creates it in IPVS mode)"
    try:
        cm = api.request("GET", "/api/v1/namespaces/kube-system/configmaps/kube-proxy")
    except ApiError as exc:
        if exc.status in (403, 404):
            return None  # no such ConfigMap (not kubeadm), or not ours to read
        raise
    for text in (cm.get("data") or {}).values():
        try:
            conf = yaml.safe_load(text)
        except yaml.YAMLError:
            continue
        if isinstance(conf, dict) and str(conf.get("mode", "")).lower() == "ipvs":
            return "ConfigMap kube-system/kube-proxy sets mode: ipvs"
    return None


def ipvs_notice(node: str, node_uid: str, evidence: str) -> Notice:
    return Notice(
        ObjectRef("Node", "v1", node, None, node_uid),
        "KubeProxyIPVS",
        f"kube-proxy runs in IPVS mode ({evidence}): Service traffic bypasses the forward hook, so"
        " NetworkPolicy is NOT enforced on traffic to Service addresses on this node."
        " Use kube-proxy in nftables or iptables mode.",
    )


class ApiHealth:
    """Whether the API server answers: the watches' health as far as the agent can see it (kopf
    re-lists after an outage on its own; the agent must not claim readiness meanwhile)."""

    def __init__(self, api: ApiClient, *, interval: float = 5.0) -> None:
        self._api = api
        self.interval = interval
        self._last_ok: float | None = None

    def healthy(self) -> bool:
        return self._last_ok is not None and time.monotonic() - self._last_ok < 3 * self.interval

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                await loop.run_in_executor(
                    None, lambda: self._api.request("GET", "/version", timeout=self.interval)
                )
                self._last_ok = time.monotonic()
            except Exception as exc:
                log.warning("the API server did not answer: %s", exc)
            await asyncio.sleep(self.interval)


# Metadata only: a resync needs the UIDs, not 10,000 pod specs.
_METADATA_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"


def list_uids(api: ApiClient, path: str, *, page: int = 500) -> set[str]:
    """UIDs of every object at the collection ``path`` (blocking; paged)."""
    return {
        item["metadata"]["uid"]
        for items in _pages(api, path, accept=_METADATA_LIST, page=page)
        for item in items
    }


def list_pages(api: ApiClient, path: str, *, page: int = 500) -> Iterator[list[dict[str, Any]]]:
    """Every object at the collection ``path``, as the API's JSON, a page at a time (blocking)."""
    return _pages(api, path, accept="application/json", page=page)


def _pages(api: ApiClient, path: str, *, accept: str, page: int) -> Iterator[list[dict[str, Any]]]:
    conn = api.connect()  # one connection for the listing's pages
    try:
        token = ""
        while True:
            query = [("limit", str(page))] + ([("continue", token)] if token else [])
            body = api.request("GET", path, query=query, accept=accept, conn=conn)
            yield body.get("items") or []
            token = body.get("metadata", {}).get("continue", "")
            if not token:
                return
    finally:
        conn.close()


_M_ARENA_MAX = -8  # glibc's mallopt parameter number (malloc.h)


def limit_heap_arenas(arenas: int = 2) -> None:
    """Let glibc keep at most ``arenas`` heaps. By default every thread that allocates may get its
    own (up to 8 per core); the agent's worker, executor and HTTP threads each left a partly used
    heap behind after the start. Call before threads start; a no-op where there is no glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    libc.mallopt(_M_ARENA_MAX, arenas)


def release_memory() -> None:
    """Return freed heap to the system (glibc's malloc_trim); a no-op where there is none."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    libc.malloc_trim(0)
