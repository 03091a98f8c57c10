"""The commands that change a host outside the agent: ``stockade install-runtime`` (the chart's init
container: the image's Python on the host for the CNI plugin, :mod:`controller.hostruntime`),
``stockade uninstall-node`` and ``stockade uninstall-cluster`` (:mod:`controller.uninstall`).
Their flags, and handlers that import the node-side code only when run (the offline commands
never load libnftables, pyroute2 or the Kubernetes client)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, TextIO

import yaml

from controller.errors import UsageError

COMMANDS = ("install-runtime", "uninstall-node", "uninstall-cluster")


def add_parsers(sub: Any) -> None:
    """Add the commands to the ``stockade`` subparsers (``sub``: argparse's subparsers action)."""
    p = sub.add_parser(
        "install-runtime",
        help="copy this image's Python runtime to a host directory, for the CNI plugin's launcher",
        description="Copy the interpreter, its libraries and the project into DEST (a hostPath"
        " mount of HOST_DIR) and write HOST_DIR/python, the interpreter `stockade-cni install"
        " --python` names. Prints the wrapper's host path.",
    )
    p.add_argument("--dest", type=Path, required=True, help="where HOST_DIR is mounted in this container")
    p.add_argument(
        "--host-dir", type=Path, required=True, help="the host's path of --dest, e.g. /opt/stockade"
    )

    p = sub.add_parser(
        "uninstall-node",
        help="remove Stockade from this node: nftables table, CNI config and plugin, VXLAN device, state",
        description="Remove what Stockade put on this node (run it after the agent stopped): the CNI"
        " conflist and plugin, the VXLAN device, table inet stockade, and the state. Idempotent.",
    )
    p.add_argument("--cni-bin-dir", type=Path, default=Path("/opt/cni/bin"), help="default /opt/cni/bin")
    p.add_argument("--cni-conf-dir", type=Path, default=Path("/etc/cni/net.d"), help="default /etc/cni/net.d")
    p.add_argument("--cni-conf-name", default="10-stockade.conflist", help="default 10-stockade.conflist")
    p.add_argument(
        "--state-dir", type=Path, default=Path("/var/lib/stockade"), help="default /var/lib/stockade"
    )
    p.add_argument("--run-dir", type=Path, default=Path("/run/stockade"), help="default /run/stockade")
    p.add_argument("--overlay-device", default="stockade.vx", help="the VXLAN device (default stockade.vx)")
    p.add_argument("--keep-state", action="store_true", help="keep the state directory's contents")
    p.add_argument(
        "--runtime-dir",
        type=Path,
        default=None,
        help="the host runtime dir install-runtime wrote (its contents are removed; default: none)",
    )

    p = sub.add_parser(
        "uninstall-cluster",
        help="the Helm chart's pre-delete hook: stop the agents, clean every node, remove the cleanup",
    )
    p.add_argument("--namespace", required=True, help="the release's namespace")
    p.add_argument("--agent-daemonset", required=True, help="the agent DaemonSet's name")
    p.add_argument(
        "--cleanup-manifest", type=Path, required=True, help="the cleanup DaemonSet (YAML), from the chart"
    )
    p.add_argument("--timeout", type=float, default=300.0, help="seconds for all of it (default 300)")
    p.add_argument("--kubeconfig", help="a kubeconfig (default: the in-cluster ServiceAccount)")


def run(args: argparse.Namespace, *, stdout: TextIO | None = None) -> int:
    out = stdout or sys.stdout
    if args.command == "install-runtime":
        return _runtime(args, out)
    if args.command == "uninstall-node":
        return _node(args, out)
    return _cluster(args, out)


def _runtime(args: argparse.Namespace, out: TextIO) -> int:
    from controller import hostruntime  # noqa: PLC0415 - node-side, lazily

    try:
        wrapper = hostruntime.install_runtime(
            hostruntime.Source.this_process(), dest=args.dest, host_dest=args.host_dir
        )
    except OSError as e:  # the host dir is not writable here (not root, read-only mount, full)
        raise UsageError(f"--dest {args.dest}: cannot write the runtime: {e}") from e
    print(wrapper, file=out, flush=True)
    return 0


def _node(args: argparse.Namespace, out: TextIO) -> int:
    from controller.uninstall import node  # noqa: PLC0415 - node-side, lazily

    targets = node.NodeTargets(
        cni_bin_dir=args.cni_bin_dir,
        cni_conf_dir=args.cni_conf_dir,
        cni_conf_name=args.cni_conf_name,
        state_dir=args.state_dir,
        run_dir=args.run_dir,
        overlay_device=args.overlay_device,
        runtime_dir=args.runtime_dir,
    )
    targets.check()  # before libnftables or netlink is touched
    steps = node.uninstall_node(
        targets,
        keep_state=args.keep_state,
        remove_table=node.kernel_table_remover(),
        remove_link=node.vxlan_remover,
    )
    for step in steps:
        print(step.line(), file=out, flush=True)
    return 0


def _cluster(args: argparse.Namespace, out: TextIO) -> int:
    from controller.uninstall import cluster  # noqa: PLC0415 - node-side, lazily

    try:
        manifest = yaml.safe_load(args.cleanup_manifest.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise UsageError(f"--cleanup-manifest {args.cleanup_manifest}: {e}") from e
    if not isinstance(manifest, dict) or manifest.get("kind") != "DaemonSet":
        raise UsageError(f"--cleanup-manifest {args.cleanup_manifest}: not a DaemonSet manifest")
    if args.timeout <= 0:
        raise UsageError(f"--timeout {args.timeout}: must be positive")
    plan = cluster.Plan(
        namespace=args.namespace,
        agent_daemonset=args.agent_daemonset,
        cleanup=manifest,
        timeout=args.timeout,
    )
    cluster.uninstall_cluster(
        cluster.KubeApi(kubeconfig=args.kubeconfig),
        plan,
        log=lambda line: print(line, file=out, flush=True),
    )
    return 0
