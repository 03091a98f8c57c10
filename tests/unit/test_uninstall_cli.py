"""`stockade uninstall-node` and `uninstall-cluster` refuse bad flags before touching anything: no
root, libnftables, netlink or API server is reached (the kernel and cluster tiers run them for real).
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from controller.cli.main import main


def _run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--state-dir=/var"], "--state-dir /var: refusing to empty a top-level directory"),
        (["--state-dir=/"], "--state-dir /: refusing to empty a top-level directory"),
        (["--run-dir=/run"], "--run-dir /run: refusing to empty a top-level directory"),
        (["--cni-bin-dir=opt/cni/bin"], "--cni-bin-dir opt/cni/bin: not an absolute path"),
        (["--cni-conf-name=../../etc/passwd"], "--cni-conf-name '../../etc/passwd': a file name, not a path"),
        (["--overlay-device=eth0/x"], "--overlay-device 'eth0/x': not an interface name"),
        (["--state-dir=/var", "--run-dir=/"], "--run-dir /: refusing"),  # every problem, one per line
    ],
    ids=["top-level-state", "root-state", "top-level-run", "relative-bin", "conf-path", "bad-device", "two"],
)
def test_uninstall_node_refuses(flags: list[str], message: str) -> None:
    code, out, err = _run("uninstall-node", *flags)
    assert code == 2 and out == ""
    assert message in err
    assert all(line.startswith("stockade uninstall-node: ") for line in err.splitlines())


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "No such file or directory"),
        ("kind: Job\n", "not a DaemonSet manifest"),
        ("a: [\n", "while parsing"),
    ],
    ids=["missing", "not-daemonset", "bad-yaml"],
)
def test_uninstall_cluster_refuses_a_bad_manifest(tmp_path: Path, content: str | None, message: str) -> None:
    manifest = tmp_path / "cleanup.yaml"
    if content is not None:
        manifest.write_text(content)
    code, out, err = _run(
        "uninstall-cluster", "--namespace=x", "--agent-daemonset=a", f"--cleanup-manifest={manifest}"
    )
    assert code == 2 and out == ""
    assert f"stockade uninstall-cluster: --cleanup-manifest {manifest}: " in err and message in err


def test_uninstall_cluster_needs_a_positive_timeout(tmp_path: Path) -> None:
    manifest = tmp_path / "cleanup.yaml"
    manifest.write_text("kind: DaemonSet\n")
    code, _, err = _run(
        "uninstall-cluster",
        "--namespace=x",
        "--agent-daemonset=a",
        f"--cleanup-manifest={manifest}",
        "--timeout=0",
    )
    assert code == 2 and "--timeout 0.0: must be positive" in err
