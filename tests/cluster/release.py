"""Stockade installed into a lab the way users install it: `helm install` of charts/stockade with the
image built by tests/images (`imagePullPolicy: Never`: nothing is pulled), then waiting until the
DaemonSet is Ready on every node and every node is Ready. Used by the lab's `up`, the test session,
the chart's lab test, the demo and `make e2e`.

In a lab started with `cni="stockade"` (the default) the chart's init containers write the nodes'
only CNI config, so the nodes turn Ready through it, and the agents' VXLAN overlay is the only
path between the nodes' pods. In a lab with its own CNI (`cni="lab"`, Debian ptp)
the chart is installed with `cni.install=false`: pods keep the lab's CNI and Stockade enforces
policy on them (without stockade-cni's pod-interface names and startup wait).
"""

from __future__ import annotations

import os
import subprocess
import time
from typing import Any

import yaml

from tests.cluster.chart import CHART, tool
from tests.cluster.lab import Lab, LabError

RELEASE = "stk"
NAMESPACE = "kube-system"
DAEMONSET = f"{RELEASE}-stockade"
IMAGE = "stockade"  # the tests/images archive holding the chart's image


def helm(lab: Lab, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(tool("helm")), *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=400,
        env=dict(os.environ, KUBECONFIG=str(lab.cfg.kubeconfig)),
    )


def values_for(lab: Lab, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    values: dict[str, Any] = {"image": {"pullPolicy": "Never"}, "uninstall": {"timeoutSeconds": 180}}
    if lab.cfg.cni != "stockade":
        values["cni"] = {"install": False}
        # The lab's own CNI routes pods between nodes over the underlay: the overlay's VXLAN routes
        # would replace those routes and go with the device at uninstall.
        values["agent"] = {"overlay": False}
    return values | (extra or {})


def daemonset_ready(lab: Lab) -> bool:
    ds = lab.kube.get(f"/apis/apps/v1/namespaces/{NAMESPACE}/daemonsets/{DAEMONSET}")
    status = ds.get("status", {})
    return bool(status.get("desiredNumberScheduled") == lab.cfg.nodes == status.get("numberReady"))


def agent_logs(lab: Lab) -> str:
    out = lab.kubectl(
        "logs", "-n", NAMESPACE, "-l", "app.kubernetes.io/component=agent", "--tail=30", "--prefix",
        check=False,
    )  # fmt: skip
    return out.stdout + out.stderr


def install(lab: Lab, values_file: str, *, timeout: float = 240.0) -> float:
    """`helm install`, then seconds until the DaemonSet and every node are Ready."""
    if IMAGE not in lab.cfg.images:
        lab.import_images((IMAGE,))
    started = time.monotonic()
    out = helm(lab, "install", RELEASE, str(CHART), "-n", NAMESPACE, "-f", values_file)
    if out.returncode != 0:
        raise LabError(f"helm install failed: {out.stderr.strip()}")
    deadline = started + timeout
    while not (daemonset_ready(lab) and lab.nodes_ready()):
        if time.monotonic() > deadline:
            raise LabError(
                f"Stockade's DaemonSet or the nodes not Ready after {timeout:.0f}s:\n{agent_logs(lab)}"
            )
        time.sleep(0.5)
    return time.monotonic() - started


def install_default(lab: Lab, *, timeout: float = 240.0) -> float:
    """The release with the default values (written next to the lab's record): what makes a lab
    started with stockade-cni usable. Seconds until the DaemonSet and every node are Ready."""
    return install(lab, write_values(lab, str(lab.cfg.dir / "stockade-values.yaml")), timeout=timeout)


def write_values(lab: Lab, path: str, extra: dict[str, Any] | None = None) -> str:
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(values_for(lab, extra), f)
    return path


def installed(lab: Lab) -> bool:
    return helm(lab, "status", RELEASE, "-n", NAMESPACE).returncode == 0


def uninstall(lab: Lab, *, hooks: bool = True) -> None:
    """`helm uninstall`; with hooks, its pre-delete hook cleans every node (table, CNI files, state)."""
    args = ["--wait", "--timeout", "5m"] if hooks else ["--no-hooks"]
    out = helm(lab, "uninstall", RELEASE, "-n", NAMESPACE, *args)
    if out.returncode != 0:
        raise LabError(f"helm uninstall failed: {out.stdout.strip()} {out.stderr.strip()}")
