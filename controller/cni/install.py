"""``stockade-cni install``: what the DaemonSet's init container runs on each node.

It puts a launcher for the plugin into the host's CNI binary directory and a conflist with the
node's podCIDRs into the host's CNI configuration directory. Both are written atomically: a
temporary file in the same directory (named so libcni ignores it: it reads only ``.conf``,
``.conflist`` and ``.json``), fsynced, then renamed over the old one, and the directory
fsynced, so containerd reads either the old file or the new one, never half of one.

The podCIDRs come from ``--pod-cidr`` (repeatable) or from the Node object (``--node-name``,
in-cluster credentials or KUBECONFIG), waiting up to ``--wait`` seconds for the controller
manager to assign them.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from controller import cniproto
from controller.cni.config import DEFAULT_IPAM_DIR, SUPPORTED_VERSIONS

PLUGIN_NAME = "stockade-cni"
DEFAULT_CONF_NAME = "10-stockade.conflist"
DEFAULT_NETWORK = "stockade"
_TMP_SUFFIX = ".tmp"


class InstallError(Exception):
    """The installer cannot do what it was asked (bad flag value, no podCIDRs, unwritable dir)."""


def launcher(python: str) -> str:
    """The executable the runtime calls: this installation's interpreter running the plugin's
    entry (isolated mode: the runtime's environment cannot redirect imports)."""
    return f"#!{python} -I\nimport sys\n\nfrom controller.cni.entry import main\n\nsys.exit(main())\n"


def conflist(
    *,
    network: str,
    pod_cidrs: list[str],
    mtu: int | None = None,
    ipam_dir: str = DEFAULT_IPAM_DIR,
    agent_socket: str = cniproto.DEFAULT_SOCKET,
    wait_for_agent: bool = True,
    agent_timeout: float = 5.0,
) -> dict[str, Any]:
    plugin: dict[str, Any] = {
        "type": PLUGIN_NAME,
        "podCIDRs": pod_cidrs,
        "ipamDir": ipam_dir,
        "agentSocket": agent_socket,
        "waitForAgent": wait_for_agent,
        "agentTimeoutSeconds": agent_timeout,
    }
    if mtu is not None:
        plugin["mtu"] = mtu
    return {
        "cniVersion": SUPPORTED_VERSIONS[-1],
        "cniVersions": list(SUPPORTED_VERSIONS),
        "name": network,
        "plugins": [plugin],
    }


def write_atomically(path: Path, content: str, *, mode: int) -> None:
    """``path`` holds ``content`` afterwards, and at no moment anything but the old or new file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}{_TMP_SUFFIX}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(content)
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.rename(tmp, path)
        dirfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dirfd)
        finally:
            os.close(dirfd)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise InstallError(f"cannot write {path}: {exc}") from exc


def remove_stale_temporaries(directory: Path, name: str) -> None:
    """Temporary files an interrupted installer left (never read by libcni, but clutter)."""
    for path in directory.glob(f".{name}.*{_TMP_SUFFIX}"):
        with contextlib.suppress(OSError):
            path.unlink()


def install(
    *, bin_dir: Path, conf_dir: Path, conf_name: str, python: str, conf: dict[str, Any]
) -> tuple[Path, Path]:
    for directory in (bin_dir, conf_dir):
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InstallError(f"cannot create {directory}: {exc}") from exc
    binary, conf_path = bin_dir / PLUGIN_NAME, conf_dir / conf_name
    remove_stale_temporaries(bin_dir, PLUGIN_NAME)
    remove_stale_temporaries(conf_dir, conf_name)
    # The binary first: a conflist naming a plugin that is not there yet would fail pods.
    write_atomically(binary, launcher(python), mode=0o755)
    write_atomically(conf_path, json.dumps(conf, indent=2) + "\n", mode=0o644)
    return binary, conf_path


def pod_cidrs_from_node(name: str, *, wait: float) -> list[str]:
    from kubernetes import client  # noqa: PLC0415 - only the installer talks to the API
    from kubernetes import config as kube_config  # noqa: PLC0415

    try:
        kube_config.load_incluster_config()  # type: ignore[no-untyped-call]
    except kube_config.ConfigException:
        kube_config.load_kube_config()  # type: ignore[no-untyped-call]
    api = client.CoreV1Api()
    deadline = time.monotonic() + wait
    while True:
        spec = api.read_node(name).spec
        cidrs: list[str] = []
        if spec is not None:
            cidrs = list(spec.pod_cidrs or ([spec.pod_cidr] if spec.pod_cidr else []))
        if cidrs:
            return cidrs
        if time.monotonic() >= deadline:
            raise InstallError(
                f"Node {name} has no spec.podCIDRs after {wait:g}s (is the controller manager "
                "running with --allocate-node-cidrs?); pass --pod-cidr to install anyway"
            )
        time.sleep(1.0)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="stockade-cni install", description=__doc__.split("\n\n")[0])
    p.add_argument("--pod-cidr", action="append", default=[], help="a podCIDR of this node (repeat for IPv6)")
    p.add_argument("--node-name", help="read the podCIDRs from this Node object")
    p.add_argument("--wait", type=float, default=60.0, help="seconds to wait for the Node's podCIDRs")
    p.add_argument("--bin-dir", type=Path, default=Path("/opt/cni/bin"))
    p.add_argument("--conf-dir", type=Path, default=Path("/etc/cni/net.d"))
    p.add_argument("--conf-name", default=DEFAULT_CONF_NAME)
    p.add_argument("--network-name", default=DEFAULT_NETWORK)
    p.add_argument("--mtu", type=int)
    p.add_argument("--ipam-dir", default=DEFAULT_IPAM_DIR)
    p.add_argument("--agent-socket", default=cniproto.DEFAULT_SOCKET)
    p.add_argument("--agent-timeout", type=float, default=5.0)
    p.add_argument("--no-wait-for-agent", action="store_true", help="ADD does not wait for the agent")
    p.add_argument("--python", default=sys.executable, help="interpreter the launcher runs")
    return p


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    try:
        cidrs = args.pod_cidr or (
            pod_cidrs_from_node(args.node_name, wait=args.wait) if args.node_name else []
        )
        if not cidrs:
            raise InstallError("give --pod-cidr (repeatable) or --node-name")
        for cidr in cidrs:
            try:
                ipaddress.ip_network(cidr, strict=True)
            except ValueError as exc:
                raise InstallError(f"--pod-cidr {cidr!r}: {exc}") from exc
        conf = conflist(
            network=args.network_name,
            pod_cidrs=cidrs,
            mtu=args.mtu,
            ipam_dir=args.ipam_dir,
            agent_socket=args.agent_socket,
            wait_for_agent=not args.no_wait_for_agent,
            agent_timeout=args.agent_timeout,
        )
        binary, conf_path = install(
            bin_dir=args.bin_dir,
            conf_dir=args.conf_dir,
            conf_name=args.conf_name,
            python=args.python,
            conf=conf,
        )
    except InstallError as exc:
        print(f"stockade-cni install: {exc}", file=sys.stderr)
        return 2
    print(f"stockade-cni install: wrote {binary} and {conf_path} (podCIDRs {', '.join(cidrs)})")
    return 0
