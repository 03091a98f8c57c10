"""``kubectl stockade`` (the executable ``kubectl-stockade`` on PATH): ``explain``, ``matrix`` and
``diff`` on the live cluster, through a kubeconfig, with the offline commands' output.

    kubectl stockade explain --from NS/POD --to NS/POD --port 80 [--exit-code]
    kubectl stockade matrix [--ports 80,udp/53] [-o json|yaml]
    kubectl stockade diff PATH... | -f FILE   # the cluster now versus after `kubectl apply -f`

kubectl passes a plugin only its own arguments, so the kubeconfig is ``--kubeconfig`` or
``$KUBECONFIG`` (then ``~/.kube/config``), and ``--context`` picks a context. Exit codes are the
offline CLI's (see :mod:`controller.cli.main`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TextIO, cast

from controller.cli import live, offline
from controller.cli.args import common_options, diff_options, explain_options, matrix_options
from controller.cli.main import EXIT_USAGE, deliver, finish, terminal_width
from controller.errors import InternalError, UsageError

PROG = "kubectl stockade"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Stockade's explain, matrix and diff on the live cluster (read through a kubeconfig).",
    )
    parser.add_argument("--kubeconfig", help="the kubeconfig (default: $KUBECONFIG, else ~/.kube/config)")
    parser.add_argument("--context", help="the kubeconfig context (default: its current context)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    p = sub.add_parser("explain", help="may one endpoint reach another, and which policies say so")
    common_options(p, paths=False)
    explain_options(p)
    p = sub.add_parser("matrix", help="who may reach whom: every pod against every other")
    common_options(p, paths=False)
    matrix_options(p)
    p = sub.add_parser(
        "diff", help="what `kubectl apply -f PATH...` would open, close, and do to a node's ruleset"
    )
    common_options(p, paths=True)
    diff_options(p)
    return parser


def run(args: argparse.Namespace, stdin: TextIO, *, width: int) -> offline.Result:
    # argparse's type check restricted -o to the output formats.
    fmt = cast(offline.OutputFormat, args.sub_output or "text")
    paths: list[str] = [*getattr(args, "paths", []), *getattr(args, "filenames", [])]
    if args.command == "diff" and not paths:
        raise UsageError("no manifests given: name the files to compare the cluster with, as PATH or -f FILE")
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
            exit_code=args.exit_code,
        )
    if args.command == "matrix":
        return offline.matrix_loaded(cluster, ports=args.ports, family=args.family, fmt=fmt, width=width)
    if args.command == "diff":
        return offline.diff_loaded(
            cluster,
            live.with_manifests(cluster, paths, stdin),
            labels=("cluster", f"cluster + {' '.join(paths)}"),
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
        lambda: deliver(run(args, stdin, width=terminal_width(stdout)), args.output_file),
        command=args.command,
        stdout=stdout,
        stderr=stderr,
        prog=PROG,
    )
