"""The chart's objects against a real kube-apiserver (etcd + apiserver on loopback, no nodes, no
controllers: tests/cluster/apiserver.py).

- everything the chart renders (defaults, and every option on) passes `kubectl apply
  --dry-run=server`, the cleanup DaemonSet the hook creates too (the ServiceMonitor only with its
  CRD, which this server does not have, so it is left out);
- RBAC: the rendered ServiceAccount, ClusterRole and binding, applied for real, allow exactly what
  the agent needs (`kubectl auth can-i --as system:serviceaccount:...`): list/watch pods,
  namespaces, networkpolicies, nodes, create/patch events; no secrets, no writes to pods;
- the uninstall hook: `stockade uninstall-cluster` with a token of the hook's own ServiceAccount
  (its Role applied as rendered) deletes the agent DaemonSet, creates the cleanup DaemonSet, waits
  for it, deletes it. No DaemonSet controller runs here, so the test writes the cleanup
  DaemonSet's status as that controller would; running out of time names the node not cleaned.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.cluster.apiserver import ControlPlane, control_plane
from tests.cluster.chart import REPO, Obj, cleanup_daemonset, find, render, tool

RELEASE = "stk"
SA = "stk-stockade"
HOOK_SA = "stk-stockade-uninstall"


@pytest.fixture(scope="module")
def plane() -> Iterator[ControlPlane]:
    with control_plane() as p:
        yield p


def kubectl(plane: ControlPlane, *args: str, stdin: str | None = None, check: bool = True) -> str:
    out = subprocess.run(
        [str(tool("kubectl")), f"--kubeconfig={plane.kubeconfig}", *args],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    if check:
        assert out.returncode == 0, f"kubectl {' '.join(args)}: {out.stderr}"
    return out.stdout


@pytest.fixture
def namespace(plane: ControlPlane) -> str:
    # No namespace controller runs here: a deleted namespace would stay Terminating. Each test gets
    # a fresh one; they go with the control plane.
    name = f"stk-{uuid.uuid4().hex[:8]}"
    kubectl(plane, "create", "namespace", name)
    return name


def _docs(objs: list[Obj]) -> str:
    return "".join(f"---\n{yaml.safe_dump(o)}" for o in objs)


ALL_ON: Obj = {
    "image": {"digest": "sha256:" + "ab" * 32, "pullPolicy": "Always"},
    "imagePullSecrets": [{"name": "reg"}],
    "agent": {"extraArgs": ["--x=1"], "port": 9999},
    "cni": {"mtu": 1400, "binDir": "/usr/libexec/cni"},
    "hostPaths": {"state": "/data/stk"},
    "serviceAccount": {"annotations": {"a": "b"}},
    "nodeSelector": {"role": "net"},
    "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [{"key": "x", "operator": "Exists"}]}]}}},
    "podAnnotations": {"a": "1"},
    "podLabels": {"team": "net"},
    "uninstall": {"keepState": True},
}  # fmt: skip


@pytest.mark.parametrize("values", [{}, ALL_ON], ids=["defaults", "options-on"])
def test_rendered_objects_pass_server_dry_run(
    plane: ControlPlane, namespace: str, tmp_path: Path, values: Obj
) -> None:
    objs = render(tmp_path, values, release=RELEASE, namespace=namespace)
    sent = [o for o in objs if o["kind"] != "ServiceMonitor"] + [cleanup_daemonset(objs)]
    out = kubectl(plane, "apply", "--dry-run=server", "-o", "name", "-f", "-", stdin=_docs(sent))
    assert len(out.split()) == len(sent), out


CAN = [
    ("get", "pods"), ("list", "pods"), ("watch", "pods"),
    ("list", "namespaces"), ("watch", "namespaces"),
    ("list", "nodes"), ("watch", "nodes"), ("get", "nodes"),
    ("list", "networkpolicies.networking.k8s.io"), ("watch", "networkpolicies.networking.k8s.io"),
    ("create", "events"), ("patch", "events"), ("create", "events.events.k8s.io"),
]  # fmt: skip
CANNOT = [
    ("get", "secrets"), ("list", "secrets"), ("watch", "secrets"),
    ("create", "pods"), ("patch", "pods"), ("update", "pods"), ("delete", "pods"), ("create", "pods/exec"),
    ("patch", "nodes"), ("update", "nodes/status"), ("delete", "namespaces"),
    ("create", "networkpolicies.networking.k8s.io"), ("patch", "networkpolicies.networking.k8s.io"),
    ("get", "configmaps"), ("list", "services"), ("delete", "events"),
    ("create", "daemonsets.apps"), ("impersonate", "serviceaccounts"),
]  # fmt: skip


@pytest.fixture(scope="module")
def agent_rbac(plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> str:
    ns = "stockade-system"
    kubectl(plane, "create", "namespace", ns)
    objs = render(tmp_path_factory.mktemp("rbac"), {}, release=RELEASE, namespace=ns)
    rbac = [o for o in objs if o["kind"] in ("ServiceAccount", "ClusterRole", "ClusterRoleBinding")]
    rbac = [o for o in rbac if o["metadata"]["name"] == SA]
    assert len(rbac) == 3
    kubectl(plane, "apply", "-f", "-", stdin=_docs(rbac))
    return f"system:serviceaccount:{ns}:{SA}"


def _can_i(plane: ControlPlane, user: str, verb: str, resource: str) -> bool:
    answer = kubectl(plane, "auth", "can-i", verb, resource, "--all-namespaces", "--as", user, check=False)
    return answer.strip() == "yes"


@pytest.mark.parametrize(("verb", "resource"), CAN, ids=[f"{v}-{r}" for v, r in CAN])
def test_agent_can(plane: ControlPlane, agent_rbac: str, verb: str, resource: str) -> None:
    assert _can_i(plane, agent_rbac, verb, resource)


@pytest.mark.parametrize(("verb", "resource"), CANNOT, ids=[f"{v}-{r}" for v, r in CANNOT])
def test_agent_cannot(plane: ControlPlane, agent_rbac: str, verb: str, resource: str) -> None:
    assert not _can_i(plane, agent_rbac, verb, resource)


# ---- the uninstall hook --------------------------------------------------------------------------


def _hook_setup(plane: ControlPlane, namespace: str, tmp_path: Path) -> tuple[Path, Path, Obj]:
    """Apply the agent DaemonSet and the hook's RBAC as rendered; a kubeconfig with the hook
    ServiceAccount's token; the cleanup manifest as the hook's ConfigMap holds it."""
    objs = render(tmp_path, {}, release=RELEASE, namespace=namespace)
    hook_rbac = [
        o
        for o in objs
        if o["kind"] in ("ServiceAccount", "Role", "RoleBinding") and o["metadata"]["name"] == HOOK_SA
    ]
    assert len(hook_rbac) == 3
    kubectl(plane, "apply", "-f", "-", stdin=_docs([*hook_rbac, find(objs, "DaemonSet")]))
    token = kubectl(plane, "-n", namespace, "create", "token", HOOK_SA).strip()
    ca = next(Path(plane.kubeconfig).parent.glob("pki/ca.crt"))
    kubeconfig = tmp_path / "hook.kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {"name": "c", "cluster": {"server": plane.url, "certificate-authority": str(ca)}}
                ],
                "users": [{"name": "hook", "user": {"token": token}}],
                "contexts": [
                    {"name": "c", "context": {"cluster": "c", "user": "hook", "namespace": namespace}}
                ],
                "current-context": "c",
            }
        )
    )
    manifest = tmp_path / "cleanup-daemonset.yaml"
    manifest.write_text(find(objs, "ConfigMap")["data"]["cleanup-daemonset.yaml"])
    return kubeconfig, manifest, find(objs, "Job")


def _start_hook(kubeconfig: Path, manifest: Path, job: Obj, *, timeout: int) -> subprocess.Popen[str]:
    args = [
        a for a in job["spec"]["template"]["spec"]["containers"][0]["args"] if not a.startswith("--timeout")
    ]
    assert args[0] == "uninstall-cluster"
    args = [a.replace("/etc/stockade-uninstall/cleanup-daemonset.yaml", str(manifest)) for a in args]
    return subprocess.Popen(
        [str(REPO / ".venv/bin/stockade"), *args, f"--timeout={timeout}", f"--kubeconfig={kubeconfig}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for_daemonset(plane: ControlPlane, namespace: str, name: str) -> None:
    for _ in range(200):
        if kubectl(plane, "-n", namespace, "get", "daemonset", name, "--ignore-not-found", "-o", "name"):
            return
        time.sleep(0.1)
    pytest.fail(f"daemonset {name} never appeared")


def _write_status(plane: ControlPlane, namespace: str, name: str, *, desired: int, ready: int) -> None:
    status = {
        "observedGeneration": 1,
        "desiredNumberScheduled": desired,
        "currentNumberScheduled": desired,
        "numberMisscheduled": 0,
        "numberReady": ready,
        "updatedNumberScheduled": desired,
        "numberAvailable": ready,
    }
    kubectl(
        plane, "-n", namespace, "patch", "daemonset", name, "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": status}),
    )  # fmt: skip


def test_uninstall_hook_stops_agents_runs_cleanup_everywhere_and_removes_it(
    plane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    kubeconfig, manifest, job = _hook_setup(plane, namespace, tmp_path)
    proc = _start_hook(kubeconfig, manifest, job, timeout=60)
    try:
        _wait_for_daemonset(plane, namespace, HOOK_SA)
        assert not kubectl(plane, "-n", namespace, "get", "daemonset", SA, "--ignore-not-found", "-o", "name")
        _write_status(plane, namespace, HOOK_SA, desired=2, ready=2)  # as the DaemonSet controller would
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr
    assert kubectl(plane, "-n", namespace, "get", "daemonsets", "-o", "name") == ""
    assert stdout.splitlines() == [
        f"deleted daemonset {namespace}/{SA}; waiting for its pods to stop",
        f"created daemonset {namespace}/{HOOK_SA}; waiting until every node is cleaned",
        f"deleted daemonset {namespace}/{HOOK_SA}: every node is clean",
    ]


def test_uninstall_hook_out_of_time_names_the_node_not_cleaned(
    plane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    kubeconfig, manifest, job = _hook_setup(plane, namespace, tmp_path)
    cleanup = yaml.safe_load(manifest.read_text())
    labels = cleanup["spec"]["template"]["metadata"]["labels"]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "cleanup-a", "namespace": namespace, "labels": labels},
        "spec": {"nodeName": "node-a", "containers": [{"name": "c", "image": "x"}]},
    }
    kubectl(plane, "apply", "-f", "-", stdin=json.dumps(pod))
    proc = _start_hook(kubeconfig, manifest, job, timeout=4)
    try:
        _wait_for_daemonset(plane, namespace, HOOK_SA)
        _write_status(plane, namespace, HOOK_SA, desired=2, ready=1)
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
        kubectl(
            plane, "-n", namespace, "delete", "pod", "cleanup-a", "--grace-period=0", "--force", check=False
        )
    assert proc.returncode == 2, stderr
    assert "the cleanup not done after 4 s: cleaned 1 of 2 nodes; not yet: cleanup-a on node-a" in stderr
