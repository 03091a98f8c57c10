"""The lab's lifecycle from the command line: a crashed lab (its `up` killed with SIGKILL while a
pod runs) is cleaned up by the next `up`, a running one is not started over, `down` leaves
nothing, and the lab never touches what it did not make. Uses its own one-node lab (not the
session's)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pyroute2 import netns

from tests.cluster.lab import Lab, LabError
from tests.cluster.lab.config import DEFAULT_ROOT, LabConfig
from tests.cluster.lab.nodes import TEST_POD_IMAGE
from tests.cluster.lab.podclients import sandbox_pid
from tests.cluster.lab.report import leftovers
from tests.cluster.lab.state import Record, alive, proc_of
from tests.cluster.lab.workloads import apply, wait_pods

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
NAME = "pytlc" + os.environ.get("PYTEST_XDIST_WORKER", "").removeprefix("gw")
POD = f"""
apiVersion: v1
kind: Pod
metadata: {{name: victim, namespace: default, labels: {{app: victim}}}}
spec:
  containers:
  - name: agent
    image: {TEST_POD_IMAGE}
    imagePullPolicy: Never
    args: [--control, /tmp/agent.sock, --tcp, "8080"]
"""


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tests.cluster.lab", *args, "--name", NAME],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture
def clean() -> object:
    yield None
    cli("down")
    for name in netns.listnetns():
        if name.startswith(LabConfig(name=NAME).prefix):
            netns.remove(name)


def test_refuses_to_touch_a_namespace_it_did_not_make(clean: object) -> None:
    foreign = f"{LabConfig(name=NAME).prefix}cp"
    netns.create(foreign)
    with pytest.raises(LabError, match="did not record it"):
        Lab.create(name=NAME, nodes=1).up()
    assert foreign in netns.listnetns(), "the lab removed a namespace it did not create"
    netns.remove(foreign)
    # Which slot the failed start picked is not recorded any more: check names and processes.
    assert not [x for x in leftovers(LabConfig(name=NAME)) if not x.startswith("route")]


def test_crash_then_up_detached_status_refuse_and_down(clean: object) -> None:
    # A foreground `up` (the default: stockade-cni, the release installed) killed with SIGKILL:
    # no chance to clean up after itself.
    fg = subprocess.Popen(
        [sys.executable, "-m", "tests.cluster.lab", "up", "--name", NAME, "--nodes", "1"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert fg.stdout is not None
    deadline = time.monotonic() + 300
    output = []
    while time.monotonic() < deadline:
        line = fg.stdout.readline()
        output.append(line)
        if f"lab {NAME} up in" in line or not line:
            break
    assert any(f"lab {NAME} up in" in line for line in output), "".join(output)
    # A pod runs when `up` dies: its container, in the node's cgroup and its own namespaces,
    # must go with the crashed lab too.
    crashed_lab = Lab.load(NAME)
    apply(crashed_lab, POD)
    (pod,) = wait_pods(crashed_lab, "default", "app=victim", count=1)
    sandbox = proc_of(sandbox_pid(crashed_lab, pod), "sandbox")
    fg.send_signal(signal.SIGKILL)
    fg.wait()
    crashed = Record.load(DEFAULT_ROOT / NAME / "state.json")
    assert any(alive(p) for p in crashed.processes), "the control plane should outlive a killed `up`"
    assert alive(sandbox), "the pod should outlive a killed `up`"

    # The next `up` removes the crashed lab's leftovers (Stockade's too: the agent, its VXLAN
    # device, the node's bound state) and starts afresh, detached this time and with the lab's
    # own CNI, which needs no release (a second Helm install would only cost time here).
    up = cli("up", "--nodes", "1", "--detach", "--cni", "lab")
    assert up.returncode == 0, up.stdout + up.stderr
    assert "cleaned up a crashed lab" in up.stderr
    assert not any(alive(p) for p in crashed.processes), "a process of the crashed lab survived"
    assert not alive(sandbox), "the crashed lab's pod survived"

    status = cli("status")
    assert status.returncode == 0, status.stderr
    assert f"lab {NAME}: up, detached" in status.stdout
    assert "node node-1: Ready=True" in status.stdout

    again = cli("up", "--nodes", "1", "--cni", "lab")
    assert again.returncode == 1 and "is up (detached)" in again.stderr, again.stdout + again.stderr

    slot = Record.load(DEFAULT_ROOT / NAME / "state.json").slot
    down = cli("down")
    assert down.returncode == 0, down.stderr
    assert not leftovers(LabConfig(name=NAME, slot=slot)), "down left things behind"
    assert not (DEFAULT_ROOT / NAME).exists()
