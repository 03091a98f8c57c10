"""Starting and stopping pod agents (`tests.support.podagent`) in any network namespace.

The NetLab uses this for its pods; the cluster lab uses it for pods it created itself. An agent
is `python -m tests.support.podagent` exec'd by `nsenter --net=<netns>`, so it runs inside the
pod's network namespace while its control socket lives in the shared filesystem. It exits when
its stdin closes or this process dies, so agents never outlive the test run.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
NETNS_DIR = Path("/run/netns")


class AgentError(RuntimeError):
    """An agent did not start or did not become ready."""


@dataclass
class AgentProcess:
    name: str
    control: str
    log: Path
    proc: subprocess.Popen[bytes]

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self, timeout: float = 5.0) -> None:
        """Close stdin (the agent's cue to exit), then SIGTERM, then SIGKILL."""
        if self.proc.stdin:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=timeout)


def _netns_path(netns: str) -> str:
    return netns if netns.startswith("/") else str(NETNS_DIR / netns)


def spawn_agent(
    *,
    name: str,
    netns: str,
    control: str,
    log: Path,
    tcp: Sequence[int] = (),
    udp: Sequence[int] = (),
    sctp: Sequence[int] = (),
) -> AgentProcess:
    """Start an agent in `netns` (a name under /run/netns, or a path such as /proc/PID/ns/net).

    Returns at once; `wait_ready` waits until agents answer on their control sockets.
    """
    Path(control).parent.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
    }
    argv = [
        "nsenter",
        f"--net={_netns_path(netns)}",
        sys.executable,
        "-m",
        "tests.support.podagent",
        "--control",
        control,
        "--tcp",
        ",".join(map(str, tcp)),
        "--udp",
        ",".join(map(str, udp)),
        "--sctp",
        ",".join(map(str, sctp)),
        "--parent",
        str(os.getpid()),
        "--watch-stdin",
    ]
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=out, stderr=subprocess.STDOUT, cwd=REPO_ROOT, env=env
        )
    return AgentProcess(name=name, control=control, log=log, proc=proc)


def ping(control: str, timeout: float = 2.0) -> bool:
    """Whether an agent answers on `control`."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(control)
            sock.sendall(b"ping\n")
            return sock.recv(16).startswith(b"pong")
    except OSError:
        return False


def wait_ready(agents: Sequence[AgentProcess], *, timeout: float = 30.0) -> None:
    """Wait until every agent answers; raise AgentError (with its log) if one dies or stalls."""
    deadline = time.monotonic() + timeout
    pending = list(agents)
    while pending:
        for agent in list(pending):
            if not agent.alive():
                raise AgentError(
                    f"agent of {agent.name} exited with {agent.proc.returncode}:\n{agent.log_text()}"
                )
            if ping(agent.control):
                pending.remove(agent)
        if pending and time.monotonic() > deadline:
            raise AgentError(f"agents not ready after {timeout}s: {[a.name for a in pending]}")
        if pending:
            time.sleep(0.05)
