"""`stockade uninstall-node` on a real network stack: the command as the chart's cleanup runs it,
inside a throwaway network namespace holding table inet stockade and a VXLAN device, with the CNI
and state directories in a temp dir. The oracle is the kernel (nft, netlink) and the file system."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyroute2 import IPRoute, netns

REPO = Path(__file__).resolve().parents[2]
STOCKADE = REPO / ".venv/bin/stockade"
TABLE = "table inet stockade { chain forward { type filter hook forward priority 0; policy accept; }; }"


@pytest.fixture
def ns() -> Iterator[str]:
    name = f"stk-uninst-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    netns.create(name)
    try:
        yield name
    finally:
        netns.remove(name)


def _in_ns(name: str, *argv: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["nsenter", f"--net=/run/netns/{name}", *argv],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def _links(name: str) -> dict[str, str]:
    with IPRoute(netns=name) as ipr:
        out = {}
        for link in ipr.get_links():
            info = link.get_attr("IFLA_LINKINFO")
            out[link.get_attr("IFLA_IFNAME")] = info.get_attr("IFLA_INFO_KIND") if info else ""
        return out


def _node(tmp: Path) -> dict[str, Path]:
    dirs = {k: tmp / k for k in ("bin", "netd", "state", "run", "runtime")}
    for d in dirs.values():
        d.mkdir()
    (dirs["bin"] / "stockade-cni").write_text("#!/bin/sh\n")
    (dirs["bin"] / "ptp").write_text("someone else's plugin")
    (dirs["netd"] / "10-stockade.conflist").write_text("{}")
    (dirs["netd"] / "20-other.conflist").write_text("{}")
    (dirs["state"] / "ipam").mkdir()
    (dirs["state"] / "ipam" / "10.244.1.5").write_text("c1 eth0")
    (dirs["run"] / "cni.sock").write_text("")
    (dirs["runtime"] / "rt-0123456789ab" / "usr/bin").mkdir(parents=True)
    (dirs["runtime"] / "python").write_text("#!/bin/sh\n")
    return dirs


def _uninstall(name: str, dirs: dict[str, Path], *extra: str) -> subprocess.CompletedProcess[str]:
    return _in_ns(
        name,
        str(STOCKADE),
        "uninstall-node",
        f"--cni-bin-dir={dirs['bin']}",
        f"--cni-conf-dir={dirs['netd']}",
        f"--state-dir={dirs['state']}",
        f"--run-dir={dirs['run']}",
        "--overlay-device=stockade.vx",
        f"--runtime-dir={dirs['runtime']}",
        *extra,
    )


def test_removes_table_device_cni_files_and_state_then_finds_nothing(ns: str, tmp_path: Path) -> None:
    dirs = _node(tmp_path)
    assert _in_ns(ns, "nft", "-f", "-", stdin=TABLE).returncode == 0
    with IPRoute(netns=ns) as ipr:
        ipr.link("add", ifname="stockade.vx", kind="vxlan", vxlan_id=4242, vxlan_port=4789)

    first = _uninstall(ns, dirs)
    assert first.returncode == 0, first.stderr
    assert _in_ns(ns, "nft", "list", "tables").stdout.strip() == ""
    assert "stockade.vx" not in _links(ns)
    assert sorted(p.name for p in dirs["bin"].iterdir()) == ["ptp"]
    assert sorted(p.name for p in dirs["netd"].iterdir()) == ["20-other.conflist"]
    assert list(dirs["state"].iterdir()) == [] and list(dirs["run"].iterdir()) == []
    assert list(dirs["runtime"].iterdir()) == []
    assert [line.split(":")[0] for line in first.stdout.splitlines()] == ["removed"] * 7, first.stdout

    again = _uninstall(ns, dirs)
    assert again.returncode == 0, again.stderr
    assert [line.split(":")[0] for line in again.stdout.splitlines()] == ["absent"] * 7, again.stdout


def test_keeps_state_when_asked_and_a_foreign_device_of_that_name(ns: str, tmp_path: Path) -> None:
    dirs = _node(tmp_path)
    with IPRoute(netns=ns) as ipr:
        ipr.link("add", ifname="stockade.vx", kind="bridge")
    out = _uninstall(ns, dirs, "--keep-state")
    assert out.returncode == 0, out.stderr
    assert _links(ns).get("stockade.vx") == "bridge"
    assert "kept: a bridge device, not VXLAN" in out.stdout
    assert (dirs["state"] / "ipam" / "10.244.1.5").read_text() == "c1 eth0"
    assert list(dirs["run"].iterdir()) == []  # the socket is not state


@pytest.mark.parametrize(
    ("flag", "named"),
    [
        ("--state-dir=/var", "--state-dir /var"),
        ("--run-dir=run/stockade", "--run-dir run/stockade"),
        ("--cni-conf-name=../x.conflist", "--cni-conf-name"),
        ("--overlay-device=a-very-long-device-name", "--overlay-device"),
        ("--runtime-dir=/opt", "--runtime-dir /opt"),
    ],
    ids=["top-level-state-dir", "relative-run-dir", "conf-name-path", "long-device", "top-level-runtime"],
)
def test_refuses_dangerous_targets_before_touching_anything(
    ns: str, tmp_path: Path, flag: str, named: str
) -> None:
    dirs = _node(tmp_path)
    assert _in_ns(ns, "nft", "-f", "-", stdin=TABLE).returncode == 0
    out = _uninstall(ns, dirs, flag)
    assert out.returncode == 2 and named in out.stderr, out.stderr
    assert "stockade" in _in_ns(ns, "nft", "list", "tables").stdout
    assert (dirs["netd"] / "10-stockade.conflist").exists()
