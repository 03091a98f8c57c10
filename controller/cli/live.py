"""The live cluster as the offline commands' input: listed through a kubeconfig, read by the same
loader as manifests, so ``kubectl stockade`` answers exactly as ``stockade`` would on the same
objects written to files.

Each kind is one ``List`` source named ``cluster:<plural>`` (how problems name where an object
came from). ``with_manifests`` is what ``kubectl stockade diff`` compares the cluster with: the
cluster as it would be after ``kubectl apply`` of the files (objects of the same kind, namespace
and name replaced; a replaced pod keeps its live identity, node and status, which ``apply`` does
not change).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TextIO

from compiler.cluster import ClusterModel
from compiler.loader import LoadResult, load_manifests
from compiler.model import Namespace, NetworkPolicy, Node, Pod
from controller.cli.files import load
from controller.errors import UsageError

# plural -> (API path, what the loader reads it as)
LISTS: dict[str, str] = {
    "networkpolicies": "/apis/networking.k8s.io/v1/networkpolicies",
    "pods": "/api/v1/pods",
    "namespaces": "/api/v1/namespaces",
    "nodes": "/api/v1/nodes",
}


def api_client(kubeconfig: str | None, context: str | None) -> Any:
    try:
        import kubernetes  # noqa: PLC0415 - only the kubectl plugin needs it (the node extra)
    except ModuleNotFoundError as exc:
        raise UsageError(f"needs the kubernetes client ({exc}): pip install 'stockade[node]'") from exc

    cfg = kubernetes.client.Configuration()
    try:
        kubernetes.config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=kubeconfig, context=context, client_configuration=cfg
        )
    except (kubernetes.config.ConfigException, OSError) as exc:
        raise UsageError(f"cannot use the kubeconfig: {exc}") from exc
    return kubernetes.client.ApiClient(cfg)


def list_sources(api: Any) -> list[tuple[str, str]]:
    """(source name, the API's JSON list) per kind."""
    import kubernetes  # noqa: PLC0415

    sources: list[tuple[str, str]] = []
    for plural, path in LISTS.items():
        method, url, headers, _, _ = api.param_serialize(
            "GET", path, header_params={"Accept": "application/json"}, auth_settings=["BearerToken"]
        )
        try:
            response = api.call_api(method, url, header_params=headers)
            response.read()
        except (kubernetes.client.ApiException, OSError) as exc:  # urllib3's errors are OSErrors
            raise UsageError(f"listing {plural}: the API server is not reachable: {exc}") from exc
        if not 200 <= response.status < 300:
            raise UsageError(
                f"listing {plural}: {response.status} {response.reason}: {response.data[:200]!r}"
            )
        sources.append((f"cluster:{plural}", response.data.decode()))
    return sources


def read_cluster(api: Any) -> LoadResult:
    return load_manifests(list_sources(api))


def _ref(obj: Pod | NetworkPolicy | Namespace | Node) -> tuple[str, str]:
    return (obj.metadata.namespace or "", obj.metadata.name)


def _applied_pod(file_pod: Pod, live: Pod | None) -> Pod:
    if live is None:
        return file_pod
    spec = file_pod.spec.model_copy(update={"node_name": file_pod.spec.node_name or live.spec.node_name})
    meta = file_pod.metadata.model_copy(update={"uid": live.metadata.uid})
    return file_pod.model_copy(update={"metadata": meta, "spec": spec, "status": live.status})


def with_manifests(live: LoadResult, paths: Sequence[str], stdin: TextIO) -> LoadResult:
    """The cluster after ``kubectl apply`` of ``paths``."""
    files = load(paths, stdin)
    old, new = live.model, files.model
    live_pods = {_ref(p): p for p in old.pods}
    pods = {_ref(p): p for p in old.pods} | {
        _ref(p): _applied_pod(p, live_pods.get(_ref(p))) for p in new.pods
    }
    policies = {_ref(p): p for p in old.policies} | {_ref(p): p for p in new.policies}
    namespaces = {_ref(n): n for n in old.namespaces} | {_ref(n): n for n in new.namespaces}
    nodes = {_ref(n): n for n in old.nodes} | {_ref(n): n for n in new.nodes}
    model = ClusterModel(
        namespaces=tuple(namespaces[k] for k in sorted(namespaces)),
        pods=tuple(pods[k] for k in sorted(pods)),
        policies=tuple(policies[k] for k in sorted(policies)),
        nodes=tuple(nodes[k] for k in sorted(nodes)),
    )
    return LoadResult(model=model, notes=files.notes)
