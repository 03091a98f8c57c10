"""The record of everything a lab made, and the clean-up that removes exactly that.

The record is written *before* each thing is made (a name) or right after (a pid), so a lab
that crashes at any point leaves a record that covers all it left behind. Clean-up trusts the
record only: it removes the network namespaces and host links named there, kills the recorded
processes whose start time still matches (a reused pid is left alone), and then any process
still running inside one of the lab's own namespaces. Nothing else on the host is touched.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute, netns

from .realnode import remove_cgroup

NETNS_DIR = Path("/run/netns")


@dataclass(frozen=True)
class Proc:
    """A process the lab started. `start` is /proc/<pid>/stat's starttime, to tell pid reuse."""

    role: str
    pid: int
    start: int
    netns: str = ""


@dataclass
class Record:
    """state.json: one per lab, written only by the process that runs `up`."""

    name: str
    slot: int
    nodes: int
    proxy_mode: str
    phase: str = "starting"  # starting | up | failed
    owner_pid: int = 0
    detached: bool = False
    netns: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)  # in the host namespace
    routes: list[dict[str, str]] = field(default_factory=list)  # {"netns", "dst", "via"}
    processes: list[Proc] = field(default_factory=list)
    cgroups: list[str] = field(default_factory=list)  # node cgroup roots, in every v1 hierarchy
    info: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> Record:
        raw = json.loads(path.read_text())
        raw["processes"] = [Proc(**p) for p in raw.get("processes", [])]
        return cls(**raw)

    def save(self, path: Path) -> None:
        write_json(path, asdict(self))


def write_json(path: Path, data: object) -> None:
    """Atomic replace, so a reader never sees half a record."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def proc_start(pid: int) -> int | None:
    """starttime of pid (clock ticks since boot), or None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # comm may contain spaces and parentheses; the fields after the last ')' are fixed.
    return int(stat.rsplit(")", 1)[1].split()[19])


def proc_of(pid: int, role: str, netns_name: str = "") -> Proc:
    return Proc(role=role, pid=pid, start=proc_start(pid) or 0, netns=netns_name)


def alive(p: Proc) -> bool:
    start = proc_start(p.pid)
    if start is None or start != p.start:
        return False
    with contextlib.suppress(FileNotFoundError):
        # A zombie is dead for our purposes; its parent reaps it.
        return Path(f"/proc/{p.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return False


def netns_exists(name: str) -> bool:
    return (NETNS_DIR / name).exists()


def pids_in_netns(names: list[str]) -> list[int]:
    """Processes whose network namespace is one of `names` (compared by nsfs inode)."""
    inodes = set()
    for name in names:
        with contextlib.suppress(FileNotFoundError):
            inodes.add(os.stat(NETNS_DIR / name).st_ino)
    if not inodes:
        return []
    found = []
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        with contextlib.suppress(FileNotFoundError, ProcessLookupError, PermissionError):
            if os.stat(f"/proc/{entry}/ns/net").st_ino in inodes:
                found.append(int(entry))
    return found


def terminate(procs: list[Proc], *, timeout: float = 5.0) -> None:
    """SIGTERM the live ones, wait, then SIGKILL whatever is left."""
    live = [p for p in procs if alive(p)]
    for p in live:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(alive(p) for p in live):
        _reap()
        time.sleep(0.05)
    for p in live:
        if alive(p):
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, signal.SIGKILL)
    _reap()


def _reap() -> None:
    """Collect our own exited children so they stop showing as zombies."""
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass


def pod_records(lab_dir: Path) -> list[dict[str, Any]]:
    """The probe clients' records (nodes/<node>/pods/<uid>.json, written by `podclients`)."""
    out = []
    for f in sorted(lab_dir.glob("nodes/*/pods/*.json")):
        with contextlib.suppress(FileNotFoundError, json.JSONDecodeError):
            out.append(json.loads(f.read_text()))
    return out


def cleanup(lab_dir: Path, *, keep_logs_to: Path | None = None) -> list[str]:
    """Remove everything recorded under lab_dir; return what was removed, for the log."""
    done: list[str] = []
    state = lab_dir / "state.json"
    if not state.exists():
        if lab_dir.exists():
            shutil.rmtree(lab_dir)
        return done
    rec = Record.load(state)
    pods = pod_records(lab_dir)
    pod_procs = [Proc(**p["agent"]) for p in pods if p.get("agent")]
    all_netns = list(rec.netns)

    # The probe clients, then the lab's processes in reverse order of start. A lab's data is
    # thrown away: no component needs a graceful shutdown (the apiserver's takes seconds), so
    # SIGKILL follows SIGTERM quickly.
    terminate(pod_procs + list(reversed(rec.processes)), timeout=1.0)
    done += [f"process {p.role} {p.pid}" for p in rec.processes + pod_procs]
    # Anything else still running inside our namespaces (containerd's shims, hostNetwork pods'
    # containers, CNI plugins caught mid-call, probe clients not recorded yet) is ours too.
    strays = pids_in_netns([n for n in all_netns if netns_exists(n)])
    terminate([proc_of(pid, "stray") for pid in strays], timeout=2.0)
    done += [f"stray process {pid}" for pid in strays]

    # Whatever still runs in a node's cgroups (pod containers in their own namespaces) goes too.
    for cg in rec.cgroups:
        done += remove_cgroup(cg)

    with IPRoute() as ipr:
        for link in rec.links:
            for idx in ipr.link_lookup(ifname=link):
                ipr.link("del", index=idx)
                done.append(f"link {link}")
    for name in all_netns:
        if netns_exists(name):
            netns.remove(name)
            done.append(f"netns {name}")

    if keep_logs_to is not None and (lab_dir / "logs").is_dir():
        shutil.rmtree(keep_logs_to, ignore_errors=True)
        shutil.move(str(lab_dir / "logs"), keep_logs_to)
    shutil.rmtree(lab_dir)
    return done


class OwnerLock:
    """An flock held by the foreground `up` for the lab's lifetime: a second `up` sees it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = -1

    def try_acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self.fd = fd
        return True

    def acquire(self) -> None:
        """Block until held (for short critical sections)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
        self.fd = fd

    def held_elsewhere(self) -> bool:
        if not self.path.exists():
            return False
        fd = os.open(self.path, os.O_RDWR | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
