"""Running CNI plugins the way a container runtime does (CNI spec 1.0, network configuration lists).

The node's CNI configuration directory decides which plugins run: like containerd, the first
`*.conflist` / `*.conf` / `*.json` file in lexical order is the network. ADD runs the list in
order, each plugin getting the previous one's result as `prevResult`; DEL runs it in reverse
with the cached ADD result. Plugins are found by `type` in CNI_PATH and talk over env + stdin.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CNI_TIMEOUT = 60.0


class CNIError(RuntimeError):
    """A plugin failed; the message carries the plugin's own error (code, msg, details)."""


@dataclass(frozen=True)
class Network:
    """A parsed network configuration list and the file it came from."""

    file: Path
    conf: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.conf["name"])

    @property
    def version(self) -> str:
        return str(self.conf.get("cniVersion", "1.0.0"))

    @property
    def plugins(self) -> list[dict[str, Any]]:
        return list(self.conf["plugins"])


def load_network(conf_dir: Path) -> Network | None:
    """The network the node's CNI config dir names, or None when there is none yet."""
    if not conf_dir.is_dir():
        return None
    for f in sorted(conf_dir.iterdir()):
        if f.suffix not in (".conflist", ".conf", ".json") or not f.is_file():
            continue
        conf = json.loads(f.read_text())
        if "plugins" not in conf:  # a single-plugin .conf is a list of one
            plugin = {k: v for k, v in conf.items() if k not in ("cniVersion", "name")}
            conf = {"cniVersion": conf.get("cniVersion", "1.0.0"), "name": conf["name"], "plugins": [plugin]}
        return Network(file=f, conf=conf)
    return None


def lab_conflist(*, pod_cidrs: list[str], ipam_dir: Path) -> dict[str, Any]:
    """The lab's network until stockade-cni exists: Debian's ptp + host-local, dual-stack.

    host-local keeps its allocations under the lab's own state dir, so a lab never touches
    /var/lib/cni and its clean-up removes them with everything else.
    """
    return {
        "cniVersion": "1.0.0",
        "name": "stockade-lab",
        "plugins": [
            {
                "type": "ptp",
                "mtu": 1500,
                "ipam": {
                    "type": "host-local",
                    "dataDir": str(ipam_dir),
                    "ranges": [[{"subnet": cidr}] for cidr in pod_cidrs],
                    "routes": [{"dst": "0.0.0.0/0" if ":" not in c else "::/0"} for c in pod_cidrs],
                },
            }
        ],
    }


@dataclass(frozen=True)
class Invocation:
    """What identifies one attachment: the same values must be given to ADD and DEL."""

    container_id: str
    netns_path: str
    ifname: str
    args: dict[str, str]  # CNI_ARGS, e.g. K8S_POD_NAMESPACE


def _exec(
    plugin: dict[str, Any], *, net: Network, command: str, inv: Invocation, cni_path: str, prev: Any
) -> dict[str, Any]:
    kind = str(plugin["type"])
    binary = next((Path(d) / kind for d in cni_path.split(":") if (Path(d) / kind).is_file()), None)
    if binary is None:
        raise CNIError(f"CNI plugin {kind!r} not found in CNI_PATH {cni_path}")
    conf = dict(plugin, cniVersion=net.version, name=net.name)
    if prev is not None:
        conf["prevResult"] = prev
    env = dict(
        os.environ,
        CNI_COMMAND=command,
        CNI_CONTAINERID=inv.container_id,
        CNI_NETNS=inv.netns_path,
        CNI_IFNAME=inv.ifname,
        CNI_PATH=cni_path,
        CNI_ARGS=";".join(f"{k}={v}" for k, v in sorted({"IgnoreUnknown": "1", **inv.args}.items())),
    )
    proc = subprocess.run(
        [str(binary)],
        input=json.dumps(conf).encode(),
        env=env,
        capture_output=True,
        timeout=CNI_TIMEOUT,
        check=False,
    )
    out = proc.stdout.decode(errors="replace").strip()
    if proc.returncode != 0:
        try:
            err = json.loads(out)
            detail = f"code {err.get('code')}: {err.get('msg')} {err.get('details', '')}".strip()
        except (json.JSONDecodeError, AttributeError):
            detail = out or proc.stderr.decode(errors="replace").strip()
        raise CNIError(f"CNI {command} {kind} ({net.file.name}) failed: {detail}")
    if command != "ADD":
        return {}
    result: dict[str, Any] = json.loads(out)
    return result


def add(net: Network, inv: Invocation, *, cni_path: str) -> dict[str, Any]:
    """CNI ADD of the whole list; returns the final result (with `ips`)."""
    result: dict[str, Any] | None = None
    for plugin in net.plugins:
        result = _exec(plugin, net=net, command="ADD", inv=inv, cni_path=cni_path, prev=result)
    return result or {}


def delete(net: Network, inv: Invocation, *, cni_path: str, prev: dict[str, Any] | None) -> None:
    """CNI DEL of the whole list in reverse; every plugin is called even if one fails."""
    errors = []
    for plugin in reversed(net.plugins):
        try:
            _exec(plugin, net=net, command="DEL", inv=inv, cni_path=cni_path, prev=prev)
        except (CNIError, subprocess.TimeoutExpired) as exc:
            errors.append(str(exc))
    if errors:
        raise CNIError("; ".join(errors))


def result_ips(result: dict[str, Any]) -> list[str]:
    """Pod addresses from a CNI result, IPv4 first (the order kubelet reports podIPs in)."""
    ips = [str(ip["address"]).split("/")[0] for ip in result.get("ips", [])]
    return sorted(ips, key=lambda a: ":" in a)
