"""Before a lab starts: the tools it needs, and a slot whose addresses collide with nothing."""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from pyroute2 import IPRoute

from .config import LabConfig, collisions
from .state import Record

REPO = Path(__file__).resolve().parents[3]
BUILD_SH = REPO / "tests" / "tools" / "build.sh"
TOOLS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-proxy", "kubectl")


class LabError(RuntimeError):
    """The lab could not start, or is not in a state to do what was asked."""


def tools_bin() -> Path:
    """The pinned Kubernetes binaries (built and cached by tests/tools/build.sh)."""
    proc = subprocess.run(["bash", str(BUILD_SH), *TOOLS], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise LabError(f"{BUILD_SH} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return Path(proc.stdout.strip().splitlines()[-1])


def host_prefixes() -> list[str]:
    """Every prefix routed or assigned in the host namespace (to keep the lab's clear of them)."""
    out = []
    with IPRoute() as ipr:
        for r in ipr.route("dump"):  # every table: local, main and any policy-routing ones
            if (dst := r.get("dst")) is not None:
                out.append(f"{dst}/{r['dst_len']}")
        out += [f"{a.get('address')}/{a['prefixlen']}" for a in ipr.addr("dump")]
    return [p for p in out if not p.startswith(("127.", "::1/", "fe80:", "ff00:"))]


def choose_slot(root: Path, name: str, prefixes: list[str]) -> int:
    """The lowest slot no other recorded lab uses and whose ranges miss the host's prefixes."""
    taken = set()
    for state in root.glob("*/state.json"):
        if state.parent.name != name:
            with contextlib.suppress(ValueError, KeyError, OSError):
                taken.add(Record.load(state).slot)
    for slot in range(256):
        if slot not in taken and not collisions(LabConfig(name=name, slot=slot, root=root), prefixes):
            return slot
    raise LabError("no free lab slot: every 10.250.x/10.251.x subnet is in use or collides with the host")


def wait_for(
    what: str,
    check: Callable[[], bool],
    *,
    timeout: float,
    interval: float = 0.2,
    alive: Callable[[], None] = lambda: None,
) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        alive()
        if time.monotonic() > deadline:
            raise LabError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)
