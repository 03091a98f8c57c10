"""An API outage in a running lab: its kube-apiserver killed, then started again with the same
command line (etcd keeps the cluster's state, so the cluster comes back as it was).

    with apiserver_stopped(lab):
        ...               # nothing answers on the API's addresses
    # the apiserver is back and ready here

SIGKILL, not SIGTERM: an outage is a crash or a partition, and a graceful shutdown would close
the watches politely (and take seconds). The new process is recorded like the first, so `down`
stops it, also when the test that stopped the first one failed half-way.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator

from . import controlplane
from .lab import Lab
from .preflight import LabError, wait_for
from .state import alive

ROLE = "kube-apiserver"


def stop_apiserver(lab: Lab, *, timeout: float = 30.0) -> None:
    """SIGKILL the lab's running kube-apiserver; return once it is gone and the API unreachable."""
    running = [p for p in lab.rec.processes if p.role == ROLE and alive(p)]
    if len(running) != 1:
        raise LabError(f"lab {lab.cfg.name}: want one running {ROLE}, found {len(running)}")
    with contextlib.suppress(ProcessLookupError):
        os.kill(running[0].pid, signal.SIGKILL)
    child = lab.popen.get(ROLE)
    if child is not None and child.pid == running[0].pid:
        child.wait(timeout=timeout)  # our own child: reap it
    wait_for(f"{ROLE} to exit", lambda: not alive(running[0]), timeout=timeout)
    wait_for("the API to stop answering", lambda: not lab.kube.healthy(), timeout=timeout)


def start_apiserver(lab: Lab, *, timeout: float = 120.0) -> None:
    """Start kube-apiserver again as `up` did; return once it is ready."""
    if lab.bin_dir is None:
        raise LabError(f"lab {lab.cfg.name} has no tools dir (not started?)")
    argv = controlplane.apiserver(lab.cfg, lab.bin_dir, lab.pki.dir)
    lab.spawn_role(ROLE, argv, lab.cfg.cp_netns)
    wait_for("the apiserver to be ready again", lab.kube.healthy, timeout=timeout, alive=lab.check_alive)


@contextlib.contextmanager
def apiserver_stopped(lab: Lab) -> Iterator[None]:
    stop_apiserver(lab)
    try:
        yield
    finally:
        start_apiserver(lab)
