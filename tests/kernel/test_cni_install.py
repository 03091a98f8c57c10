"""What the installer writes is what libcni runs: cnitool reads the installed conflist (with its
``cniVersions`` list) and calls the installed launcher for ADD, CHECK and DEL."""

from __future__ import annotations

import json

from controller.cni import install
from tests.support.cnilab import CniLab


def test_cnitool_runs_the_installed_plugin() -> None:
    with CniLab() as lab:
        (lab.bin_dir / "stockade-cni").unlink()  # the lab's symlink: the installer writes its own
        code = install.main(
            [
                "--bin-dir",
                str(lab.bin_dir),
                "--conf-dir",
                str(lab.conf_dir),
                "--network-name",
                lab.network,
                "--ipam-dir",
                str(lab.ipam_dir),
                "--agent-socket",
                lab.agent_socket,
                *[arg for cidr in lab.pod_cidrs for arg in ("--pod-cidr", cidr)],
            ]
        )
        assert code == 0
        pod = lab.new_pod()
        before = lab.snapshot()
        add = lab.cnitool("add", pod)
        assert add.returncode == 0, add
        result = json.loads(add.stdout)
        assert result["cniVersion"] == "1.1.0" and len(result["ips"]) == 2
        assert lab.cnitool("check", pod).returncode == 0
        assert lab.cnitool("del", pod).returncode == 0
        after = lab.snapshot()
        assert after.links == before.links and after.routes == before.routes and not after.allocations
