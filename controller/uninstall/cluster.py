"""``stockade uninstall-cluster``: the chart's pre-delete hook (``templates/uninstall.yaml`` says why
it is a Job driving a DaemonSet, and not the agent's shutdown).

1. delete the agent DaemonSet and wait until none of its pods is left (an agent still running
   would put the table back after the cleanup removed it);
2. create the cleanup DaemonSet (rendered by the chart: an init container runs ``stockade
   uninstall-node`` on the node, then the pod idles, so Ready means done);
3. wait until it is Ready on every node it is scheduled to;
4. delete it and wait until its pods are gone, so the release leaves nothing behind.

Deletions are in the background (the garbage collector removes the pods) and the waits list pods
by the DaemonSet's selector: a foreground deletion would hang where no garbage collector runs.
One deadline covers all four steps; running out names the nodes whose cleanup did not finish.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from controller.errors import UninstallIncomplete

Obj = dict[str, Any]


class ClusterApi(Protocol):
    """The few API calls uninstall-cluster makes (:class:`KubeApi` is the real one)."""

    def get_daemonset(self, namespace: str, name: str) -> Obj | None: ...

    def create_daemonset(self, namespace: str, body: Obj) -> None: ...

    def delete_daemonset(self, namespace: str, name: str) -> bool: ...

    def list_pods(self, namespace: str, selector: dict[str, str]) -> list[Obj]: ...


@dataclass(frozen=True)
class Plan:
    namespace: str
    agent_daemonset: str
    cleanup: Obj  # the cleanup DaemonSet manifest
    timeout: float
    poll: float = 1.0


def uninstall_cluster(
    api: ClusterApi,
    plan: Plan,
    *,
    log: Callable[[str], None],
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    deadline = clock() + plan.timeout
    ns, cleanup_name = plan.namespace, str(plan.cleanup["metadata"]["name"])

    def wait(what: str, done: Callable[[], tuple[bool, str]]) -> None:
        while True:
            ok, pending = done()
            if ok:
                return
            if clock() >= deadline:
                raise UninstallIncomplete(f"{what} not done after {plan.timeout:.0f} s: {pending}")
            sleep(plan.poll)

    agent = api.get_daemonset(ns, plan.agent_daemonset)
    if agent is not None:
        selector = agent["spec"]["selector"]["matchLabels"]
        api.delete_daemonset(ns, plan.agent_daemonset)
        log(f"deleted daemonset {ns}/{plan.agent_daemonset}; waiting for its pods to stop")
        wait("stopping the agents", lambda: _gone(api.list_pods(ns, selector)))
    else:
        log(f"daemonset {ns}/{plan.agent_daemonset} is already gone")

    if api.get_daemonset(ns, cleanup_name) is not None:  # a failed earlier run left it: start afresh
        old = api.get_daemonset(ns, cleanup_name) or {}
        api.delete_daemonset(ns, cleanup_name)
        old_selector = old.get("spec", {}).get("selector", {}).get("matchLabels", {})
        wait("removing an earlier cleanup", lambda: _gone(api.list_pods(ns, old_selector)))
    api.create_daemonset(ns, plan.cleanup)
    log(f"created daemonset {ns}/{cleanup_name}; waiting until every node is cleaned")
    wait("the cleanup", lambda: _cleaned(api, plan))

    selector = plan.cleanup["spec"]["selector"]["matchLabels"]
    api.delete_daemonset(ns, cleanup_name)
    wait("removing the cleanup", lambda: _gone(api.list_pods(ns, selector)))
    log(f"deleted daemonset {ns}/{cleanup_name}: every node is clean")


def _gone(pods: list[Obj]) -> tuple[bool, str]:
    names = sorted(_pod_where(p) for p in pods)
    return not names, f"pods still there: {', '.join(names)}"


def _cleaned(api: ClusterApi, plan: Plan) -> tuple[bool, str]:
    """Ready on every node the DaemonSet controller scheduled it to (its status says how many)."""
    name = str(plan.cleanup["metadata"]["name"])
    ds = api.get_daemonset(plan.namespace, name)
    if ds is None:
        return False, f"daemonset {plan.namespace}/{name} disappeared"
    status = ds.get("status") or {}
    generation = ds.get("metadata", {}).get("generation", 0)
    if status.get("observedGeneration", 0) < generation:
        return False, "the DaemonSet controller has not seen the cleanup DaemonSet yet"
    desired, ready = status.get("desiredNumberScheduled", 0), status.get("numberReady", 0)
    if ready >= desired:
        return True, ""
    pods = api.list_pods(plan.namespace, plan.cleanup["spec"]["selector"]["matchLabels"])
    unready = sorted(_pod_where(p) for p in pods if not _ready(p))
    return False, f"cleaned {ready} of {desired} nodes; not yet: {', '.join(unready) or 'pods not created'}"


def _ready(pod: Obj) -> bool:
    conditions = pod.get("status", {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _pod_where(pod: Obj) -> str:
    node = pod.get("spec", {}).get("nodeName") or "unscheduled"
    return f"{pod['metadata']['name']} on {node}"


class KubeApi:
    """:class:`ClusterApi` over the official client (in-cluster ServiceAccount, or a kubeconfig)."""

    def __init__(self, *, kubeconfig: str | None = None) -> None:
        from kubernetes import client, config  # noqa: PLC0415 - node-side, lazily

        if kubeconfig:
            api_client = config.new_client_from_config(config_file=kubeconfig)  # type: ignore[no-untyped-call]
        else:
            config.load_incluster_config()  # type: ignore[no-untyped-call]
            api_client = client.ApiClient()
        self._client = api_client
        self._apps = client.AppsV1Api(api_client)
        self._core = client.CoreV1Api(api_client)
        self._not_found = client.exceptions.ApiException

    def _missing(self, e: Exception) -> bool:
        return isinstance(e, self._not_found) and getattr(e, "status", None) == 404

    def get_daemonset(self, namespace: str, name: str) -> Obj | None:
        try:
            ds = self._apps.read_namespaced_daemon_set(name, namespace)
        except Exception as e:
            if self._missing(e):
                return None
            raise
        return dict(self._client.sanitize_for_serialization(ds))

    def create_daemonset(self, namespace: str, body: Obj) -> None:
        self._apps.create_namespaced_daemon_set(namespace, body)  # type: ignore[arg-type]  # a dict is sent as is

    def delete_daemonset(self, namespace: str, name: str) -> bool:
        try:
            self._apps.delete_namespaced_daemon_set(name, namespace, propagation_policy="Background")
        except Exception as e:
            if self._missing(e):
                return False
            raise
        return True

    def list_pods(self, namespace: str, selector: dict[str, str]) -> list[Obj]:
        label_selector = ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
        pods = self._core.list_namespaced_pod(namespace, label_selector=label_selector)
        return [dict(self._client.sanitize_for_serialization(p)) for p in pods.items]
