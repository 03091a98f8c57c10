"""A bare control plane (etcd + kube-apiserver, the lab's pinned binaries) on loopback, for tests
of what only talks to the API (the agent, the kubectl plugin): no nodes, no controllers.

Ports are picked free on 127.0.0.1; the PKI is the lab's (:mod:`tests.cluster.lab.pki`). Without
kube-controller-manager no ServiceAccount exists, so the ServiceAccount admission plugin is off;
without kubelets no pod gets an address, so tests write ``status.podIPs`` themselves through the
status subresource, as a kubelet would. The apiserver can be stopped and started again on the
same port and etcd (an outage). It can also run inside a network namespace (for an agent process
that must share the namespace of the nftables it programs).
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.cluster.lab.kube import Credentials, Kube
from tests.cluster.lab.pki import PKI, Identity
from tests.cluster.lab.preflight import tools_bin
from tests.support.nodelab import entered


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _tail(path: Path) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-25:]) if path.exists() else ""


@dataclass
class ControlPlane:
    url: str
    kubeconfig: Path
    kube: Kube
    dir: Path
    commands: dict[str, list[str]]
    pki: PKI
    netns: str | None = None
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def here(self) -> contextlib.AbstractContextManager[None]:
        """Where the API server is reachable: this thread in its network namespace, if it has one."""
        return entered(self.netns) if self.netns is not None else contextlib.nullcontext()

    def kubeconfig_for(self, identity: Identity) -> Path:
        """A kubeconfig for a client identity given to :func:`control_plane`."""
        dest = self.dir / f"{identity.stem}.kubeconfig"
        return self.pki.kubeconfig(dest, stem=identity.stem, user=identity.user, server=self.url)

    def start(self, name: str) -> None:
        prefix = ["nsenter", f"--net=/run/netns/{self.netns}"] if self.netns is not None else []
        with (self.dir / f"{name}.log").open("ab") as log:
            self.procs[name] = subprocess.Popen(
                [*prefix, *self.commands[name]], stdout=log, stderr=subprocess.STDOUT, cwd=self.dir
            )

    def stop(self, name: str) -> None:
        proc = self.procs.pop(name, None)
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def wait_ready(self, *, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            with self.here():
                if self.kube.healthy():
                    return
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(
                        f"{name} exited with {proc.returncode}:\n{_tail(self.dir / f'{name}.log')}"
                    )
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"kube-apiserver not ready in {timeout:.0f}s:\n{_tail(self.dir / 'kube-apiserver.log')}"
                )
            time.sleep(0.2)


@contextmanager
def control_plane(
    *,
    clients: tuple[Identity, ...] = (),
    netns: str | None = None,
    address: str = "127.0.0.1",
    timeout: float = 120.0,
) -> Iterator[ControlPlane]:
    """Up for the ``with`` block; ``clients`` get certificates (the admin always has one). With
    ``netns`` (its loopback up) etcd and the apiserver run on that namespace's loopback, and API
    calls must be made from there (:meth:`ControlPlane.here`). ``address`` is where the apiserver
    listens (an address of ``netns`` that other namespaces reach, for agents on several nodes);
    etcd stays on loopback."""
    bin_dir = tools_bin()
    root = Path(tempfile.mkdtemp(prefix="stockade-apiserver-"))
    plane: ControlPlane | None = None
    try:
        pki = PKI(root / "pki")
        admin = Identity("admin", "kubernetes-admin", ("system:masters",))
        pki.create(
            server_ips=sorted({"127.0.0.1", address}), server_dns=["localhost"], clients=[admin, *clients]
        )
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
            f"--bind-address={address}",
            f"--secure-port={api_port}",
            f"--advertise-address={address}",
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
        url = f"https://{address}:{api_port}"
        creds = Credentials(
            server=url, ca=pki.path("ca.crt"), cert=pki.path("admin.crt"), key=pki.path("admin.key")
        )
        plane = ControlPlane(
            url=url,
            kubeconfig=pki.kubeconfig(
                root / "admin.kubeconfig", stem="admin", user="kubernetes-admin", server=url
            ),
            kube=Kube(creds),
            dir=root,
            commands={"etcd": etcd, "kube-apiserver": apiserver},
            pki=pki,
            netns=netns,
        )
        plane.start("etcd")
        plane.start("kube-apiserver")
        plane.wait_ready(timeout=timeout)
        yield plane
    finally:
        if plane is not None:
            plane.stop("kube-apiserver")
            plane.stop("etcd")
        shutil.rmtree(root, ignore_errors=True)
