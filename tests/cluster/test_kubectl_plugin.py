"""``kubectl stockade`` against a live control plane answers exactly as the offline CLI does on
the manifests the cluster was made from (examples/three-tier, created object by object through
the API, pod addresses written through the status subresource as a kubelet would)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from controller.cli import kubectl
from controller.cli import main as offline_main
from tests.cluster.apiserver import ControlPlane, control_plane
from tests.cluster.lab.kube import MERGE, ApiError, Kube
from tests.cluster.lab.preflight import tools_bin

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "three-tier"
CHANGE = REPO / "examples" / "three-tier-change" / "policies.yaml"


def objects(directory: Path) -> Iterator[dict[str, Any]]:
    for path in sorted(directory.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is None:
                continue
            yield from doc["items"] if doc["kind"] == "List" else [doc]


def create(kube: Kube, obj: dict[str, Any]) -> None:
    kind, meta = obj["kind"], obj["metadata"]
    ns = meta.get("namespace", "default")
    path = {
        "Node": "/api/v1/nodes",
        "Namespace": "/api/v1/namespaces",
        "Pod": f"/api/v1/namespaces/{ns}/pods",
        "NetworkPolicy": f"/apis/networking.k8s.io/v1/namespaces/{ns}/networkpolicies",
    }[kind]
    body = {k: v for k, v in obj.items() if k != "status"}
    try:
        kube.create(path, body)
    except ApiError as exc:
        if not (exc.status == 409 and kind == "Namespace"):  # kube-system exists already
            raise
        kube.patch(f"{path}/{meta['name']}", {"metadata": {"labels": meta.get("labels", {})}}, kind=MERGE)
    if "status" in obj and kind in ("Pod", "Node"):
        kube.patch(f"{path}/{meta['name']}/status", {"status": obj["status"]}, kind=MERGE)


@pytest.fixture(scope="module")
def cp() -> Iterator[ControlPlane]:
    with control_plane() as plane:
        for obj in objects(EXAMPLE):
            create(plane.kube, obj)
        yield plane


def offline(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = offline_main.main(list(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def plugin(cp: ControlPlane, *argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = kubectl.main(["--kubeconfig", str(cp.kubeconfig), *argv], stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


CASES = {
    "matrix": ["matrix"],
    "matrix-ipv6-json": ["matrix", "--family", "6", "-o", "json"],
    "matrix-yaml": ["matrix", "-o", "yaml"],
    "explain-allowed": ["explain", "--from", "web/web-1", "--to", "api/api-1", "--port", "api-http"],
    "explain-blocked": ["explain", "--from", "web/web-1", "--to", "db/postgres-0", "--port", "5432"],
    "explain-json": ["explain", "--from", "api/api-1", "--to", "1.1.1.1", "--port", "443", "-o", "json"],
    "explain-exit-code": [
        "explain",
        "--from",
        "web/web-1",
        "--to",
        "db/postgres-0",
        "--port",
        "5432",
        "--exit-code",
    ],
}


@pytest.mark.parametrize("argv", CASES.values(), ids=CASES.keys())
def test_live_equals_offline(cp: ControlPlane, argv: list[str]) -> None:
    command, *rest = argv
    expected = offline(command, str(EXAMPLE), *rest)
    assert expected[0] in (0, 1), expected[2]
    got = plugin(cp, *argv)
    assert got[0] == expected[0], got[2]
    assert got[1] == expected[1]


@pytest.mark.parametrize("fmt", ["text", "json", "yaml"])
def test_diff_is_the_offline_diff_of_the_cluster_and_the_cluster_after_apply(
    cp: ControlPlane, fmt: str
) -> None:
    expected = offline("diff", str(EXAMPLE), str(CHANGE.parent), "-o", fmt)
    got = plugin(cp, "diff", "-f", str(CHANGE), "-o", fmt)
    assert (got[0], got[1]) == (expected[0], expected[1]), got[2]
    assert "169.254.169.254" in got[1]  # the change widens access to the metadata endpoint


def test_an_unknown_pod_is_a_usage_error(cp: ControlPlane) -> None:
    code, out, err = plugin(cp, "explain", "--from", "web/nope", "--to", "api/api-1", "--port", "80")
    assert (code, out) == (2, "")
    assert err.startswith("kubectl stockade explain: ")


def test_kubectl_runs_the_plugin_from_path(cp: ControlPlane) -> None:
    scripts = Path(sys.executable).parent
    assert (scripts / "kubectl-stockade").exists(), (
        "the console script is not installed (pip install -e '.[node]')"
    )
    env = {
        **os.environ,
        "PATH": f"{scripts}:{tools_bin()}:{os.environ['PATH']}",
        "KUBECONFIG": str(cp.kubeconfig),
    }
    proc = subprocess.run(
        [str(tools_bin() / "kubectl"), "stockade", "matrix"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == offline("matrix", str(EXAMPLE))[1]
