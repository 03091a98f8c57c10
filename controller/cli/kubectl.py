"""``kubectl stockade`` (the executable ``kubectl-stockade`` on PATH): ``explain``, ``matrix`` and
``diff`` on the live cluster, through a kubeconfig, with the offline commands' output.

    kubectl stockade explain --from NS/POD --to NS/POD --port 80
    kubectl stockade matrix [--ports 80,udp/53]
    kubectl stockade diff PATH...      # the cluster now versus after `kubectl apply -f PATH...`

kubectl passes a plugin only its own arguments, so the kubeconfig is ``--kubeconfig`` or
``$KUBECONFIG`` (then ``~/.kube/config``), and ``--context`` picks a context. Exit codes are the
offline CLI's (see :mod:`controller.cli.main`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TextIO

from controller.cli import live, offline
from controller.cli.main import (
    EXIT_USAGE,
    PATHS_HELP,
    diff_options,
    explain_options,
    finish,
    matrix_options,
    terminal_width,
)
from controller.errors import InternalError

PROG = "kubectl stockade"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Stockade's explain, matrix and diff on the live cluster (read through a kubeconfig).",
    )
    parser.add_argument("--kubeconfig", help="the kubeconfig (default: $KUBECONFIG, else ~/.kube/config)")
    parser.add_argument("--context", help="the kubeconfig context (default: its current context)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    explain_options(
        sub.add_parser("explain", help="may one endpoint reach another, and which policies say so")
    )
    matrix_options(sub.add_parser("matrix", help="who may reach whom: every pod against every other"))
    p = sub.add_parser(
        "diff", help="what `kubectl apply -f PATH...` would open, close, and do to a node's ruleset"
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help=PATHS_HELP)
    diff_options(p)
    return parser


def run(args: argparse.Namespace, stdin: TextIO, *, width: int) -> offline.Result:
    fmt: offline.OutputFormat = "json" if args.sub_output == "json" else "text"
    api = live.api_client(args.kubeconfig, args.context)
    try:
        cluster = live.read_cluster(api)
    finally:
        api.close()
    if args.command == "explain":
        return offline.explain_loaded(
            cluster,
            src=args.src,
            dst=args.dst,
            port=args.port,
            protocol=args.protocol,
            family=args.family,
            fmt=fmt,
        )
    if args.command == "matrix":
        return offline.matrix_loaded(cluster, ports=args.ports, family=args.family, fmt=fmt, width=width)
    if args.command == "diff":
        return offline.diff_loaded(
            cluster,
            live.with_manifests(cluster, args.paths, stdin),
            labels=("cluster", f"cluster + {' '.join(args.paths)}"),
            node=args.node,
            fail_on=args.fail_on,
            ports=args.ports,
            family=args.family,
            fmt=fmt,
        )
    raise InternalError(f"no handler for command {args.command!r}")


def main(
    argv: Sequence[str] | None = None,
    *,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    return finish(
        lambda: run(args, stdin, width=terminal_width(stdout)),
        command=args.command,
        stdout=stdout,
        stderr=stderr,
        prog=PROG,
    )
