"""A bare control plane (etcd + kube-apiserver, the lab's pinned binaries) on loopback, for tests
of what only talks to the API (the agent, the kubectl plugin): no nodes, no controllers.

Ports are picked free on 127.0.0.1; the PKI is the lab's (:mod:`tests.cluster.lab.pki`). Without
kube-controller-manager no ServiceAccount exists, so the ServiceAccount admission plugin is off;
without kubelets no pod gets an address, so tests write ``status.podIPs`` themselves through the
status subresource, as a kubelet would.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.cluster.lab.kube import Credentials, Kube
from tests.cluster.lab.pki import PKI, Identity
from tests.cluster.lab.preflight import tools_bin


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass(frozen=True)
class ControlPlane:
    url: str
    kubeconfig: Path
    kube: Kube
    dir: Path


def _tail(path: Path) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-25:]) if path.exists() else ""


@contextmanager
def control_plane(*, timeout: float = 120.0) -> Iterator[ControlPlane]:
    bin_dir = tools_bin()
    root = Path(tempfile.mkdtemp(prefix="stockade-apiserver-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        pki = PKI(root / "pki")
        admin = Identity("admin", "kubernetes-admin", ("system:masters",))
        pki.create(server_ips=["127.0.0.1"], server_dns=["localhost"], clients=[admin])
        etcd_port, peer_port, api_port = free_port(), free_port(), free_port()
        etcd_url = f"http://127.0.0.1:{etcd_port}"
        peer_url = f"http://127.0.0.1:{peer_port}"
        etcd = [
            str(bin_dir / "etcd"),
            f"--data-dir={root / 'etcd'}",
            f"--listen-client-urls={etcd_url}",
            f"--advertise-client-urls={etcd_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=default={peer_url}",
            "--unsafe-no-fsync",  # thrown away with the test: durability buys nothing
            "--log-level=warn",
        ]
        apiserver = [
            str(bin_dir / "kube-apiserver"),
            f"--etcd-servers={etcd_url}",
            "--bind-address=127.0.0.1",
            f"--secure-port={api_port}",
            "--advertise-address=127.0.0.1",
            # No kubernetes Service endpoints to reconcile for a loopback-only server.
            "--endpoint-reconciler-type=none",
            f"--tls-cert-file={pki.path('apiserver.crt')}",
            f"--tls-private-key-file={pki.path('apiserver.key')}",
            f"--client-ca-file={pki.path('ca.crt')}",
            "--authorization-mode=RBAC",
            "--disable-admission-plugins=ServiceAccount",
            "--service-cluster-ip-range=10.96.0.0/16",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki.path('sa.pub')}",
            f"--service-account-signing-key-file={pki.path('sa.key')}",
            "--profiling=false",
        ]
        for name, cmd in (("etcd", etcd), ("kube-apiserver", apiserver)):
            with (root / f"{name}.log").open("wb") as log:
                procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=root))
        url = f"https://127.0.0.1:{api_port}"
        kube = Kube(
            Credentials(
                server=url, ca=pki.path("ca.crt"), cert=pki.path("admin.crt"), key=pki.path("admin.key")
            )
        )
        deadline = time.monotonic() + timeout
        while not kube.healthy():
            for proc, name in zip(procs, ("etcd", "kube-apiserver"), strict=True):
                if proc.poll() is not None:
                    raise RuntimeError(
                        f"{name} exited with {proc.returncode}:\n{_tail(root / f'{name}.log')}"
                    )
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"kube-apiserver not ready in {timeout:.0f}s:\n{_tail(root / 'kube-apiserver.log')}"
                )
            time.sleep(0.2)
        kubeconfig = pki.kubeconfig(
            root / "admin.kubeconfig", stem="admin", user="kubernetes-admin", server=url
        )
        yield ControlPlane(url=url, kubeconfig=kubeconfig, kube=kube, dir=root)
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in reversed(procs):
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(root, ignore_errors=True)
