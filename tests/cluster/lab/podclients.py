"""Probing real pods: a client agent inside a pod's network namespace, entered through its sandbox.

A real pod's network namespace is a file inside its node's private mount namespace, so it is
reached through one of the pod's processes instead: the node's containerd names the pod's sandbox
(the pause container, labels `io.kubernetes.pod.uid` and `io.cri-containerd.kind=sandbox`) and its
task's pid; `nsenter --net=/proc/<pid>/ns/net` starts a `tests.support.podagent` there with no
ports, which probes from the pod's own addresses. The pod's servers are its own containers (the
lab's test-pod image runs the same agent). Each client is recorded like a stand-in sandbox
(`nodes/<node>/pods/<uid>.json`), so `down` and a crashed lab's clean-up kill it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.support.probe import PodEndpoint

from .preflight import LabError
from .realnode import containerd_socket
from .sandbox import _ping
from .state import proc_of, write_json

if TYPE_CHECKING:
    from .lab import Lab

REPO = Path(__file__).resolve().parents[3]
READY_TIMEOUT = 15.0


def _ctr(lab: Lab, node: str, *args: str) -> str:
    ctr = Path(str(lab.rec.info.get("node_tools", ""))) / "ctr"
    sock = containerd_socket(lab.node_dir(node))
    argv = [str(ctr), f"--address={sock}", "--namespace=k8s.io", *args]
    out = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=30)
    if out.returncode != 0:
        raise LabError(f"{' '.join(argv)} failed: {out.stderr.strip()[-400:]}")
    return out.stdout


def sandbox_pid(lab: Lab, pod: dict[str, Any]) -> int:
    """The pid of the pod's sandbox (pause) process, from its node's containerd."""
    node = str(pod["spec"].get("nodeName", ""))
    uid = str(pod["metadata"]["uid"])
    ids = _ctr(
        lab,
        node,
        "containers",
        "ls",
        "-q",
        f'labels."io.kubernetes.pod.uid"=={uid},labels."io.cri-containerd.kind"==sandbox',
    ).split()
    tasks = {}
    for line in _ctr(lab, node, "tasks", "ls").splitlines()[1:]:
        words = line.split()
        if len(words) >= 3 and words[2] == "RUNNING":
            tasks[words[0]] = int(words[1])
    running = [tasks[i] for i in ids if i in tasks]
    if not running:
        raise LabError(
            f"pod {pod['metadata']['namespace']}/{pod['metadata']['name']} has no running sandbox on {node}"
        )
    return running[0]


def client_endpoint(lab: Lab, pod: dict[str, Any], *, name: str) -> PodEndpoint:
    """A prober endpoint for a real pod: its client agent (started once) and its pod IPs."""
    meta, node = pod["metadata"], str(pod["spec"].get("nodeName", ""))
    uid = str(meta["uid"])
    pods_dir = lab.node_dir(node) / "pods"
    pods_dir.mkdir(parents=True, exist_ok=True)
    sock = pods_dir / f"{uid}.sock"
    if not _ping(str(sock)):
        pid = sandbox_pid(lab, pod)
        argv = ["nsenter", f"--net=/proc/{pid}/ns/net", "--"]
        argv += [
            sys.executable,
            "-m",
            "tests.support.podagent",
            "--control",
            str(sock),
            "--parent",
            str(os.getpid()),
        ]
        with (pods_dir / f"{uid}.log").open("ab") as log:
            proc = subprocess.Popen(
                argv,
                cwd=REPO,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(os.environ, PYTHONPATH=str(REPO)),
            )
        record = {
            "uid": uid,
            "namespace": meta["namespace"],
            "name": meta["name"],
            "netns": "",
            "socket": str(sock),
        }
        record["agent"] = proc_of(proc.pid, "client").__dict__
        write_json(pods_dir / f"{uid}.json", record)
        deadline = time.monotonic() + READY_TIMEOUT
        while not _ping(str(sock)):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise LabError(
                    f"client agent for {name} did not start: {(pods_dir / f'{uid}.log').read_text()[-600:]}"
                )
            time.sleep(0.05)
    ips = [i["ip"] for i in pod["status"]["podIPs"]]
    return PodEndpoint(
        name=name,
        netns="",  # inside the node's mount namespace only; reached through the sandbox's pid
        control=str(sock),
        ipv4=next((ip for ip in ips if ":" not in ip), None),
        ipv6=next((ip for ip in ips if ":" in ip), None),
    )
