#!/usr/bin/env python3
"""The lab's CNI installer (runs in the cni-installer image as a hostNetwork DaemonSet pod).

Copies Debian's ptp, host-local, loopback and portmap into the node's /opt/cni/bin and writes a
dual-stack ptp + host-local conflist with the node's podCIDRs into /etc/cni/net.d, both through a
temp file and a rename, so containerd never reads a half-written plugin or config. Then sleeps
until SIGTERM: a DaemonSet pod must keep running. Env and defaults: tests/images/README.md.
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import ssl
import sys
import urllib.request
from pathlib import Path

PLUGINS = ("ptp", "host-local", "loopback", "portmap")
SRC = Path("/usr/lib/cni")
SA = Path("/var/run/secrets/kubernetes.io/serviceaccount")


def node_pod_cidrs(node: str) -> list[str]:
    """spec.podCIDRs of the node, through the in-cluster service account."""
    host = os.environ["KUBERNETES_SERVICE_HOST"]
    port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    if ":" in host:
        host = f"[{host}]"
    ctx = ssl.create_default_context(cafile=str(SA / "ca.crt"))
    req = urllib.request.Request(
        f"https://{host}:{port}/api/v1/nodes/{node}",
        headers={"Authorization": f"Bearer {(SA / 'token').read_text().strip()}"},
    )
    with urllib.request.urlopen(req, context=ctx, timeout=30) as resp:
        obj = json.load(resp)
    cidrs = obj.get("spec", {}).get("podCIDRs") or [obj.get("spec", {}).get("podCIDR")]
    return [c for c in cidrs if c]


def conflist(*, name: str, cidrs: list[str], mtu: int) -> dict[str, object]:
    nets = [ipaddress.ip_network(c, strict=False) for c in cidrs]
    return {
        "cniVersion": "1.0.0",
        "name": name,
        "plugins": [
            {
                "type": "ptp",
                "mtu": mtu,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": str(n)}] for n in nets],
                    "routes": [{"dst": "0.0.0.0/0" if n.version == 4 else "::/0"} for n in nets],
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def install_atomically(dest: Path, data: bytes, mode: int) -> None:
    tmp = dest.with_name(f".{dest.name}.tmp{os.getpid()}")
    tmp.write_bytes(data)
    tmp.chmod(mode)
    tmp.replace(dest)


def main() -> int:
    bin_dir = Path(os.environ.get("CNI_BIN_DIR", "/host/opt/cni/bin"))
    net_dir = Path(os.environ.get("CNI_NET_DIR", "/host/etc/cni/net.d"))
    conf_name = os.environ.get("CNI_CONF_NAME", "10-stockade-lab.conflist")
    net_name = os.environ.get("CNI_NETWORK_NAME", "stockade-lab")
    mtu = int(os.environ.get("CNI_MTU", "1500"))
    if os.environ.get("POD_CIDRS"):
        cidrs = [c.strip() for c in os.environ["POD_CIDRS"].split(",") if c.strip()]
    elif os.environ.get("NODE_NAME"):
        cidrs = node_pod_cidrs(os.environ["NODE_NAME"])
    else:
        print("install-cni: set NODE_NAME (read podCIDRs from the API) or POD_CIDRS", file=sys.stderr)
        return 2
    if not cidrs:
        print(f"install-cni: node {os.environ.get('NODE_NAME')} has no podCIDRs yet", file=sys.stderr)
        return 1
    bin_dir.mkdir(parents=True, exist_ok=True)
    net_dir.mkdir(parents=True, exist_ok=True)
    for plugin in PLUGINS:
        install_atomically(bin_dir / plugin, (SRC / plugin).read_bytes(), 0o755)
    text = json.dumps(conflist(name=net_name, cidrs=cidrs, mtu=mtu), indent=2) + "\n"
    install_atomically(net_dir / conf_name, text.encode(), 0o644)
    print(f"install-cni: {', '.join(PLUGINS)} -> {bin_dir}; {net_dir / conf_name}:\n{text}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while True:
        signal.pause()


if __name__ == "__main__":
    sys.exit(main())
