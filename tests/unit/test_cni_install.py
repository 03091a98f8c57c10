"""The installer: content of the conflist and launcher, atomic replacement (a reader never sees
a partial file), stale temporaries, and bad flags writing nothing."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

from controller.cni import install


def _run(tmp_path: Path, *args: str) -> int:
    return install.main(["--bin-dir", str(tmp_path / "bin"), "--conf-dir", str(tmp_path / "net.d"), *args])


def test_writes_launcher_and_conflist(tmp_path: Path) -> None:
    assert (
        _run(tmp_path, "--pod-cidr", "10.244.1.0/24", "--pod-cidr", "fd00:10:244:1::/64", "--mtu", "1450")
        == 0
    )
    conf = json.loads((tmp_path / "net.d" / "10-stockade.conflist").read_text())
    assert conf["cniVersion"] == "1.1.0" and conf["cniVersions"] == ["0.4.0", "1.0.0", "1.1.0"]
    assert conf["name"] == "stockade"
    (plugin,) = conf["plugins"]
    assert plugin["type"] == "stockade-cni"
    assert plugin["podCIDRs"] == ["10.244.1.0/24", "fd00:10:244:1::/64"]
    assert plugin["mtu"] == 1450 and plugin["waitForAgent"] is True
    binary = tmp_path / "bin" / "stockade-cni"
    assert stat.S_IMODE(binary.stat().st_mode) == 0o755
    assert binary.read_text().startswith(f"#!{sys.executable} -I\n")
    # The launcher is a working plugin.
    out = subprocess.run(
        [str(binary)],
        input=b'{"cniVersion":"1.0.0"}',
        env={"CNI_COMMAND": "VERSION"},
        capture_output=True,
        check=True,
    )
    assert json.loads(out.stdout)["supportedVersions"] == ["0.4.0", "1.0.0", "1.1.0"]
    assert sorted(p.name for p in (tmp_path / "net.d").iterdir()) == ["10-stockade.conflist"]


def test_bad_pod_cidr_writes_nothing(tmp_path: Path) -> None:
    assert _run(tmp_path, "--pod-cidr", "10.244.1.7/24") == 2
    assert _run(tmp_path) == 2
    assert not (tmp_path / "net.d").exists() and not (tmp_path / "bin").exists()


def test_stale_temporaries_are_removed(tmp_path: Path) -> None:
    conf_dir = tmp_path / "net.d"
    conf_dir.mkdir()
    stale = conf_dir / ".10-stockade.conflist.4242.tmp"
    stale.write_text('{"cniVersion": "1.1')
    assert _run(tmp_path, "--pod-cidr", "10.244.1.0/24") == 0
    assert not stale.exists()


def test_readers_never_see_a_partial_conflist(tmp_path: Path) -> None:
    path = tmp_path / "10-stockade.conflist"
    contents = [
        json.dumps(install.conflist(network="stockade", pod_cidrs=[f"10.{i}.0.0/16"] * 1), indent=2)
        + "x" * 50000
        for i in range(2)
    ]
    install.write_atomically(path, contents[0], mode=0o644)
    stop = threading.Event()
    seen: list[str] = []
    bad: list[int] = []

    def read() -> None:
        while not stop.is_set():
            text = path.read_text()
            seen.append(text[:20])
            if text not in contents:
                bad.append(len(text))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for i in range(200):
            install.write_atomically(path, contents[i % 2], mode=0o644)
    finally:
        stop.set()
        reader.join()
    assert not bad and len(seen) > 10
    assert [p.name for p in tmp_path.iterdir()] == [path.name]
    assert os.stat(path).st_mode & 0o777 == 0o644
