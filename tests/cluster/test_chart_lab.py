"""`helm install` and `helm uninstall` of the chart on the lab's real nodes (kubelet + containerd,
the image built by tests/images and imported into every node): the uninstall hook really runs, in
the cluster, on every node, and leaves each node clean.

Until the agent and stockade-cni are in the image, the agent containers exit at once (crash loop)
and the CNI config stays the lab's (`cni.install=false`); what is proven here is the uninstall
path: each node is given what Stockade leaves on a node (table inet stockade, the VXLAN device,
the conflist and plugin in the node's own CNI dirs, state), then `helm uninstall` must remove all
of it from every node, touch nothing else (the lab's own conflist), and leave no object behind.
State and run dirs are per-test host paths: the lab's nodes share the host's /var/lib and /run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from pyroute2 import IPRoute

from tests.cluster.chart import CHART, REPO, tool
from tests.cluster.conftest import running_lab
from tests.cluster.lab import Lab
from tests.cluster.lab.config import LAB_IMAGES

RELEASE = "stk"
TABLE = "table inet stockade { chain forward { type filter hook forward priority 0; policy accept; }; }"


@pytest.fixture(scope="module")
def rlab() -> Iterator[Lab]:
    # The chart's image (cached: relinked in a second when built before), imported into every node
    # next to the lab's own images.
    built = subprocess.run(
        ["bash", str(REPO / "tests/images/build.sh"), "stockade"], capture_output=True, text=True, check=False
    )
    assert built.returncode == 0, f"tests/images/build.sh stockade: {built.stderr[-2000:]}"
    name = "chart" + os.environ.get("PYTEST_XDIST_WORKER", "").removeprefix("gw")
    yield from running_lab(Lab.create(name=name, nodes=2, images=(*LAB_IMAGES, "stockade")))


def _helm(lab: Lab, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(tool("helm")), *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=400,
        env=dict(os.environ, KUBECONFIG=str(lab.cfg.kubeconfig)),
    )


def _nft(netns: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["nsenter", f"--net=/run/netns/{netns}", "nft", *args],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )


def _links(netns: str) -> set[str]:
    with IPRoute(netns=netns) as ipr:
        return {str(link.get_attr("IFLA_IFNAME")) for link in ipr.get_links()}


def test_helm_uninstall_cleans_every_real_node(rlab: Lab, tmp_path: Path) -> None:
    state, run = (
        Path(f"/var/lib/stockade-charttest-{os.getpid()}"),
        Path(f"/run/stockade-charttest-{os.getpid()}"),
    )
    runtime = Path(f"/opt/stockade-charttest-{os.getpid()}")
    values = {
        "image": {"pullPolicy": "Never"},
        "cni": {"install": False, "runtimeDir": str(runtime)},
        "hostPaths": {"state": str(state), "run": str(run)},
        "uninstall": {"timeoutSeconds": 180},
    }
    (tmp_path / "values.yaml").write_text(yaml.safe_dump(values))
    nodes = rlab.cfg.all_nodes
    try:
        for node in nodes:
            assert _nft(node.netns, "-f", "-", stdin=TABLE).returncode == 0
            with IPRoute(netns=node.netns) as ipr:
                ipr.link("add", ifname="stockade.vx", kind="vxlan", vxlan_id=4242, vxlan_port=4789)
            node_dir = rlab.node_dir(node.name)
            (node_dir / "cni-bin" / "stockade-cni").write_text("#!/bin/sh\nexit 1\n")
            (node_dir / "cni-net.d" / "10-stockade.conflist").write_text("{}")
        (state / "ipam").mkdir(parents=True)
        (state / "ipam" / "10.244.1.9").write_text("c eth0")
        (run).mkdir(parents=True, exist_ok=True)
        (run / "cni.sock").write_text("")
        (runtime / "rt-0123456789ab").mkdir(parents=True)
        (runtime / "python").write_text("#!/bin/sh\n")

        out = _helm(
            rlab, "install", RELEASE, str(CHART), "-n", "kube-system", "-f", str(tmp_path / "values.yaml")
        )
        assert out.returncode == 0, out.stderr
        out = _helm(rlab, "uninstall", RELEASE, "-n", "kube-system", "--wait", "--timeout", "5m")
        assert out.returncode == 0, f"{out.stdout}\n{out.stderr}"

        for node in nodes:
            assert "inet stockade" not in _nft(node.netns, "list", "tables").stdout, node.name
            assert "stockade.vx" not in _links(node.netns), node.name
            node_dir = rlab.node_dir(node.name)
            assert not (node_dir / "cni-bin" / "stockade-cni").exists(), node.name
            assert not (node_dir / "cni-net.d" / "10-stockade.conflist").exists(), node.name
            assert (node_dir / "cni-net.d" / "10-stockade-lab.conflist").exists(), (
                "the lab's CNI config is not Stockade's"
            )
        assert list(state.iterdir()) == [] and list(run.iterdir()) == [] and list(runtime.iterdir()) == []
        left = rlab.kubectl(
            "get", "daemonsets,jobs,serviceaccounts,roles,rolebindings,configmaps,pods", "-A",
            "-l", f"app.kubernetes.io/instance={RELEASE}", "-o", "name",
        ).stdout  # fmt: skip
        assert left == ""
        assert "stk-stockade" not in rlab.kubectl("get", "clusterroles", "-o", "name").stdout
    finally:
        _helm(rlab, "uninstall", RELEASE, "-n", "kube-system", "--no-hooks")
        for node in nodes:
            _nft(node.netns, "delete", "table", "inet", "stockade")
            with IPRoute(netns=node.netns) as ipr:
                for index in ipr.link_lookup(ifname="stockade.vx"):
                    ipr.link("del", index=index)
        shutil.rmtree(state, ignore_errors=True)
        shutil.rmtree(run, ignore_errors=True)
        shutil.rmtree(runtime, ignore_errors=True)
