"""Probing real pods: a client agent inside a pod's network namespace, entered through its sandbox.

A pod's network namespace file lives inside its node's private mount namespace, so it is
reached through one of the pod's processes instead: the node's containerd names the pod's sandbox
(the pause container, labels `io.kubernetes.pod.uid` and `io.cri-containerd.kind=sandbox`) and its
task's pid; `nsenter --net=/proc/<pid>/ns/net` starts a `tests.support.podagent` there with no
ports, which probes from the pod's own addresses. The pod's servers are its own containers (the
lab's test-pod image runs the same agent with the ports as args). Each client is recorded
(`nodes/<node>/pods/<uid>.json`), so `down` and a crashed lab's clean-up kill it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.support.agents import ping
from tests.support.probe import PodEndpoint

from .preflight import LabError
from .realnode import containerd_socket
from .state import Proc, proc_of, terminate, write_json

if TYPE_CHECKING:
    from .lab import Lab

REPO = Path(__file__).resolve().parents[3]
READY_TIMEOUT = 30.0
SANDBOX = 'labels."io.cri-containerd.kind"==sandbox'


def ctr(lab: Lab, node: str, *args: str) -> str:
    """`ctr` against the node's containerd, in the CRI's `k8s.io` namespace."""
    tool = Path(str(lab.rec.info.get("node_tools", ""))) / "ctr"
    sock = containerd_socket(lab.node_dir(node))
    argv = [str(tool), f"--address={sock}", "--namespace=k8s.io", *args]
    out = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=30)
    if out.returncode != 0:
        raise LabError(f"{' '.join(argv)} failed: {out.stderr.strip()[-400:]}")
    return out.stdout


def pod_containers(lab: Lab, node: str, uid: str, *, sandbox_only: bool = False) -> list[str]:
    """Ids of the containers containerd on `node` holds for pod `uid` (its sandbox and apps)."""
    selector = f'labels."io.kubernetes.pod.uid"=={uid}' + (f",{SANDBOX}" if sandbox_only else "")
    return ctr(lab, node, "containers", "ls", "-q", selector).split()


def running_tasks(lab: Lab, node: str) -> dict[str, int]:
    """container id -> pid of every RUNNING task on the node."""
    tasks = {}
    for line in ctr(lab, node, "tasks", "ls").splitlines()[1:]:
        words = line.split()
        if len(words) >= 3 and words[2] == "RUNNING":
            tasks[words[0]] = int(words[1])
    return tasks


def sandbox_pid(lab: Lab, pod: dict[str, Any]) -> int:
    """The pid of the pod's sandbox (pause) process, from its node's containerd."""
    node, uid = str(pod["spec"].get("nodeName", "")), str(pod["metadata"]["uid"])
    tasks = running_tasks(lab, node)
    running = [tasks[i] for i in pod_containers(lab, node, uid, sandbox_only=True) if i in tasks]
    if not running:
        meta = pod["metadata"]
        raise LabError(f"pod {meta['namespace']}/{meta['name']} has no running sandbox on {node}")
    return running[0]


def _start_client(lab: Lab, pod: dict[str, Any], sock: Path) -> subprocess.Popen[bytes]:
    meta, node = pod["metadata"], str(pod["spec"].get("nodeName", ""))
    pods_dir = sock.parent
    argv = ["nsenter", f"--net=/proc/{sandbox_pid(lab, pod)}/ns/net", "--"]
    argv += [sys.executable, "-m", "tests.support.podagent", "--control", str(sock)]
    # A client outlives a test only as long as the process that started it (PDEATHSIG).
    argv += ["--parent", str(os.getpid())]
    with (pods_dir / f"{meta['uid']}.log").open("ab") as log:
        proc = subprocess.Popen(
            argv,
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(os.environ, PYTHONPATH=str(REPO)),
        )
    record = {
        "uid": meta["uid"],
        "namespace": meta["namespace"],
        "name": meta["name"],
        "node": node,
        "socket": str(sock),
        "agent": proc_of(proc.pid, "client").__dict__,
    }
    write_json(pods_dir / f"{meta['uid']}.json", record)
    return proc


def client_endpoints(lab: Lab, pods: list[tuple[str, dict[str, Any]]]) -> list[PodEndpoint]:
    """Prober endpoints for real pods, given as (name, pod object): their client agents (started
    at once for every pod that has none yet, then awaited together) and their pod IPs."""
    out, starting = [], []
    for name, pod in pods:
        uid, node = str(pod["metadata"]["uid"]), str(pod["spec"].get("nodeName", ""))
        pods_dir = lab.node_dir(node) / "pods"
        pods_dir.mkdir(parents=True, exist_ok=True)
        sock = pods_dir / f"{uid}.sock"
        if not ping(str(sock)):
            starting.append((name, sock, _start_client(lab, pod, sock)))
        ips = [i["ip"] for i in pod["status"]["podIPs"]]
        out.append(
            PodEndpoint(
                name=name,
                netns="",  # inside the node's mount namespace only; reached through the sandbox's pid
                control=str(sock),
                ipv4=next((ip for ip in ips if ":" not in ip), None),
                ipv6=next((ip for ip in ips if ":" in ip), None),
            )
        )
    deadline = time.monotonic() + READY_TIMEOUT
    for name, sock, proc in starting:
        while not ping(str(sock)):
            if proc.poll() is not None or time.monotonic() > deadline:
                log = sock.with_suffix(".log").read_text(errors="replace")[-600:]
                raise LabError(f"client agent for {name} did not start: {log}")
            time.sleep(0.05)
    return out


def stop_clients(lab: Lab, pods: list[dict[str, Any]]) -> None:
    """Stop the client agents of these pods and drop their records: a client holds its pod's network
    namespace open, so a test that deletes its pods before the lab goes stops their clients too."""
    for pod in pods:
        uid, node = str(pod["metadata"]["uid"]), str(pod["spec"].get("nodeName", ""))
        base = lab.node_dir(node) / "pods" / uid
        record = base.with_suffix(".json")
        if record.exists():
            agent = json.loads(record.read_text()).get("agent")
            if agent:
                terminate([Proc(**agent)])
        for suffix in (".json", ".sock", ".log"):
            base.with_suffix(suffix).unlink(missing_ok=True)
