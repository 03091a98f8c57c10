"""The lab's locally built images (tests/images): archive contents, and a containerd smoke run.

The expected names are literal here, taken from their consumers (containerd 2.4.2's default
sandbox image, the e2e suite's manifest, the lab's nodes.py), never from the builder. The smoke
run starts the pinned containerd in a throwaway network + mount namespace, imports the archives,
runs the pause and the test-pod image with `ctr run`, probes the pod agent's TCP port from inside
the container's network namespace, then removes everything.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
EXPECTED = {
    "pause": (["registry.k8s.io/pause:3.10.2", "registry.k8s.io/pause:3.10.1"], ["/pause"], "65535:65535"),
    "agnhost": (["registry.k8s.io/e2e-test-images/agnhost:2.66.1"], ["/agnhost"], ""),
    "testpod": (["lab.stockade.io/testpod:v1"], ["python3", "-m", "tests.support.podagent"], ""),
    "cni-installer": (["lab.stockade.io/cni-installer:v1"], ["python3", "/install-cni.py"], ""),
}
NAMESPACE = f"stk-img-smoke-{os.getpid()}"  # ctr namespace, also the tasks' cgroup parent
BUILT_HERE = ("pause", "testpod", "cni-installer")  # agnhost needs the e2e module's build


def _build(*names: str) -> Path:
    out = subprocess.run(
        ["bash", str(REPO / "tests/images/build.sh"), *names], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, f"tests/images/build.sh failed: {out.stderr[-2000:]}"
    return Path(out.stdout.strip().splitlines()[-1])


def _read(tar: tarfile.TarFile, name: str) -> dict:  # type: ignore[type-arg]
    f = tar.extractfile(name)
    assert f is not None, name
    return json.loads(f.read())  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def images_dir() -> Path:
    return _build(*BUILT_HERE)


@pytest.mark.parametrize("name", BUILT_HERE)
def test_archive_names_and_entrypoint(images_dir: Path, name: str) -> None:
    names, entrypoint, user = EXPECTED[name]
    with tarfile.open(images_dir / f"{name}.tar") as tar:
        index = _read(tar, "index.json")
        assert [m["annotations"]["io.containerd.image.name"] for m in index["manifests"]] == names
        manifest = _read(tar, f"blobs/sha256/{index['manifests'][0]['digest'].split(':')[1]}")
        config = _read(tar, f"blobs/sha256/{manifest['config']['digest'].split(':')[1]}")
        assert config["config"]["Entrypoint"] == entrypoint
        assert config["config"].get("User", "") == user
        files = set()
        for layer in manifest["layers"]:
            blob = tar.extractfile(f"blobs/sha256/{layer['digest'].split(':')[1]}")
            assert blob is not None
            with tarfile.open(fileobj=blob) as lt:
                files |= {m.name.lstrip("./") for m in lt.getmembers()}
    if name == "pause":
        assert files == {"pause"}
    elif name == "testpod":
        assert {"app/tests/support/podagent.py", "app/tests/support/sctp.py", "usr/bin/python3.11"} <= files
    else:
        assert {"install-cni.py", "usr/lib/cni/ptp", "usr/lib/cni/host-local", "usr/bin/python3.11"} <= files


def test_build_is_cached_and_reproducible(images_dir: Path) -> None:
    before = (images_dir / "pause.tar").resolve()
    t0 = time.monotonic()
    _build("pause")
    assert time.monotonic() - t0 < 10
    assert (images_dir / "pause.tar").resolve() == before


# ---- containerd smoke --------------------------------------------------------------------------


def _tools_bin() -> Path:
    out = subprocess.run(
        ["bash", str(REPO / "tests/tools/build.sh"), "containerd", "containerd-shim-runc-v2", "ctr"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return Path(out.stdout.strip().splitlines()[-1])


@pytest.fixture
def containerd(images_dir: Path) -> Iterator[tuple[Path, Path, int]]:
    assert shutil.which("runc"), "runc missing (apt-get install runc)"
    bin_dir = _tools_bin()
    work = Path(tempfile.mkdtemp(prefix="stk-img-", dir="/run"))  # short: shim socket paths
    sock = work / "c.sock"
    (work / "config.toml").write_text(
        f'version = 3\nroot = "{work}/root"\nstate = "{work}/state"\n'
        f'[grpc]\n  address = "{sock}"\n[ttrpc]\n  address = "{work}/t.sock"\n'
        '[debug]\n  address = ""\n'
        'disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.cri.v1.runtime", '
        '"io.containerd.cri.v1.images", "io.containerd.podsandbox.controller.v1.podsandbox"]\n'
    )
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}")
    # Own network and mount namespace; tmpfs over the host paths containerd hard-codes.
    script = (
        "mount --make-rprivate / && for d in /run/containerd /opt/containerd; do "
        'mkdir -p "$d" && mount -t tmpfs tmpfs "$d"; done && '
        f"exec containerd --config {work}/config.toml >{work}/log 2>&1"
    )
    proc = subprocess.Popen(["unshare", "--net", "--mount", "sh", "-c", script], env=env)
    try:
        for _ in range(100):
            if sock.exists():
                break
            assert proc.poll() is None, (work / "log").read_text()[-2000:]
            time.sleep(0.1)
        assert sock.exists(), "containerd did not start"
        yield bin_dir, sock, proc.pid
    finally:
        # ctr makes the task's fifos under /run/containerd: run it in containerd's mount namespace.
        ctr = [
            "nsenter",
            f"--mount=/proc/{proc.pid}/ns/mnt",
            str(bin_dir / "ctr"),
            f"--address={sock}",
            "-n",
            NAMESPACE,
        ]
        for task in ("pause", "agent"):
            subprocess.run([*ctr, "task", "kill", "-s", "KILL", task], capture_output=True, check=False)
            subprocess.run([*ctr, "task", "rm", "-f", task], capture_output=True, check=False, timeout=30)
            subprocess.run([*ctr, "containers", "rm", task], capture_output=True, check=False)
        proc.terminate()
        proc.wait(timeout=30)
        _remove_cgroups(NAMESPACE)
        subprocess.run(["umount", "-R", str(work / "root")], capture_output=True, check=False)
        shutil.rmtree(work, ignore_errors=True)


def _remove_cgroups(name: str) -> None:
    """runc puts ctr's tasks under /<ctr namespace>/<id> in every cgroup hierarchy (v1 and v2)."""
    for top in Path("/sys/fs/cgroup").glob(f"*/{name}"):
        for d in [*sorted(top.rglob("*"), key=lambda p: -len(p.parts)), top]:
            if d.is_dir():
                d.rmdir()


def _ctr(bin_dir: Path, sock: Path, pid: int, *args: str) -> str:
    out = subprocess.run(
        [
            "nsenter",
            f"--mount=/proc/{pid}/ns/mnt",
            str(bin_dir / "ctr"),
            f"--address={sock}",
            "-n",
            NAMESPACE,
            *args,
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        env=dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}"),
    )
    assert out.returncode == 0, f"ctr {' '.join(args)}: {out.stderr[-2000:]}"
    return out.stdout


def test_containerd_runs_pause_and_testpod(images_dir: Path, containerd: tuple[Path, Path, int]) -> None:
    bin_dir, sock, cpid = containerd
    for name in ("pause", "testpod"):
        _ctr(bin_dir, sock, cpid, "images", "import", str(images_dir / f"{name}.tar"))
    listed = _ctr(bin_dir, sock, cpid, "images", "ls", "-q").split()
    assert {"registry.k8s.io/pause:3.10.2", "lab.stockade.io/testpod:v1"} <= set(listed)
    _ctr(bin_dir, sock, cpid, "run", "-d", "registry.k8s.io/pause:3.10.2", "pause")
    _ctr(
        bin_dir,
        sock,
        cpid,
        "run",
        "-d",
        "lab.stockade.io/testpod:v1",
        "agent",
        # ctr replaces the whole argv (kubelet keeps the entrypoint and passes only args).
        "python3",
        "-m",
        "tests.support.podagent",
        "--control",
        "/tmp/a.sock",
        "--tcp",
        "8080",
    )
    tasks = _ctr(bin_dir, sock, cpid, "task", "ls")
    assert "pause" in tasks and "agent" in tasks and "STOPPED" not in tasks, tasks
    pid = next(line.split()[1] for line in tasks.splitlines() if line.startswith("agent "))
    # Probe the agent's port from inside the container's own network namespace.
    probe = (
        "import socket, time\n"
        "for _ in range(100):\n"
        "    try:\n"
        "        socket.create_connection(('127.0.0.1', 8080), 1).close()\n"
        "        break\n"
        "    except OSError:\n"
        "        time.sleep(0.1)\n"
        "else:\n"
        "    raise SystemExit(1)\n"
    )
    out = subprocess.run(
        ["nsenter", f"--net=/proc/{pid}/ns/net", "python3", "-c", probe],
        capture_output=True,
        check=False,
        timeout=30,
    )
    assert out.returncode == 0, "the test pod's agent does not accept TCP on 8080"


def test_cni_installer_writes_plugins_and_dual_stack_conflist(tmp_path: Path) -> None:
    env = dict(
        os.environ,
        CNI_BIN_DIR=str(tmp_path / "bin"),
        CNI_NET_DIR=str(tmp_path / "net.d"),
        POD_CIDRS="10.244.1.0/24,fd00:10:244:1::/64",
    )
    proc = subprocess.Popen(["python3", str(REPO / "tests/images/install-cni.py")], env=env)
    try:
        conf = tmp_path / "net.d/10-stockade-lab.conflist"
        for _ in range(100):
            if conf.exists():
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the installer must keep running (DaemonSet pod)"
        assert sorted(p.name for p in (tmp_path / "net.d").iterdir()) == ["10-stockade-lab.conflist"]
        assert json.loads(conf.read_text()) == {
            "cniVersion": "1.0.0",
            "name": "stockade-lab",
            "plugins": [
                {
                    "type": "ptp",
                    "mtu": 1500,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": "10.244.1.0/24"}], [{"subnet": "fd00:10:244:1::/64"}]],
                        "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}],
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ],
        }
        for plugin in ("ptp", "host-local", "loopback", "portmap"):
            installed = tmp_path / "bin" / plugin
            assert os.access(installed, os.X_OK)
            assert installed.read_bytes() == (Path("/usr/lib/cni") / plugin).read_bytes()
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0, "SIGTERM must end the installer cleanly"
