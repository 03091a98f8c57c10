"""``stockade``: one console script, with subcommands.

Exit codes: 0 success (``explain`` answers with 0 whether the connection is allowed or blocked);
1 ``diff --fail-on`` found what it was told to fail on; 2 bad input or usage (every problem on
stderr, one per line, nothing on stdout); 70 a bug in Stockade. User errors never print a traceback.

The offline commands import only :mod:`compiler`; node-side commands (added later) must import
their parts of :mod:`controller` inside their handlers, so the offline CLI runs without kopf,
pyroute2 or libnftables installed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import traceback
from collections.abc import Callable, Sequence
from importlib import metadata
from typing import TextIO

from compiler.model import PROTOCOLS
from controller.cli import files, offline
from controller.errors import InputError, InternalError, StockadeError, UsageError

EXIT_USAGE = 2
EXIT_INTERNAL = 70  # EX_SOFTWARE (sysexits.h)

EPILOG = """exit status:
  0   done (explain: whether the connection is allowed or blocked)
  1   diff --fail-on found what it was told to fail on
  2   bad input or usage: every problem on stderr, nothing on stdout
  70  a bug in Stockade"""
PATHS_HELP = "manifest files or directories (searched recursively for *.yaml, *.yml, *.json); - for stdin"


def _version() -> str:
    try:
        return metadata.version("stockade")
    except metadata.PackageNotFoundError:
        return "unknown"


def _protocol(text: str) -> str:
    value = text.upper()
    if value not in PROTOCOLS:
        raise argparse.ArgumentTypeError(f"{text!r} is not tcp, udp or sctp")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stockade",
        description="Kubernetes NetworkPolicy compiled to nftables. Offline commands read manifests.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"stockade {_version()}")
    parser.add_argument(
        "--output",
        dest="global_output",
        choices=("text", "json"),
        default=None,
        help="report format of explain, matrix, diff (default text); compile: json means --format json",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("compile", help="the nftables ruleset of one node")
    p.add_argument("paths", nargs="+", metavar="PATH", help=PATHS_HELP)
    p.add_argument("--node", help="the node to compile for (default: the only node in the manifests)")
    p.add_argument(
        "--format", choices=("nft", "json"), default=None, help="nft text (default) or libnftables JSON"
    )
    p.add_argument(
        "-o", "--output", dest="output_file", metavar="FILE", help="write here (atomically) instead of stdout"
    )

    p = sub.add_parser("explain", help="may one endpoint reach another, and which policies say so")
    p.add_argument("paths", nargs="+", metavar="PATH", help=PATHS_HELP)
    explain_options(p)

    p = sub.add_parser("matrix", help="who may reach whom: every pod (or workload) against every other")
    p.add_argument("paths", nargs="+", metavar="PATH", help=PATHS_HELP)
    matrix_options(p)

    p = sub.add_parser("diff", help="what changing OLD into NEW opens, closes, and does to a node's ruleset")
    p.add_argument("old", metavar="OLD", help="the manifests before: a file or directory")
    p.add_argument("new", metavar="NEW", help="the manifests after: a file or directory")
    diff_options(p)

    # Node-side: parsed here, run by controller.agent (imported only when asked for: kopf is slow
    # to import and absent where only the offline commands are installed).
    p = sub.add_parser("agent", help="run the node agent: watch the cluster, keep this node's nftables equal")
    p.add_argument("--node", required=True, help="this node's name (the DaemonSet passes spec.nodeName)")
    p.add_argument("--kubeconfig", help="a kubeconfig (default: in-cluster ServiceAccount, else $KUBECONFIG)")
    p.add_argument(
        "--listen",
        default="0.0.0.0:9542",
        help="ADDR:PORT of /healthz, /readyz and /metrics (default 0.0.0.0:9542)",
    )
    p.add_argument(
        "--debounce-ms",
        type=float,
        default=10.0,
        help="coalesce changes until none arrived for this long (default 10 ms)",
    )
    p.add_argument(
        "--check-interval",
        type=float,
        default=30.0,
        help="seconds between drift checks of the kernel (default 30)",
    )
    p.add_argument(
        "--cni-socket",
        default="/run/stockade/cni.sock",
        help="the Unix socket stockade-cni asks to program new pods through ('' for none)",
    )
    p.add_argument(
        "--cni-timeout",
        type=float,
        default=10.0,
        help="seconds a pod's programming may take before the CNI plugin is answered with an error",
    )
    p.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    return parser


def explain_options(p: argparse.ArgumentParser) -> None:
    """Options of ``explain`` (shared with ``kubectl stockade explain``)."""
    p.add_argument(
        "--from", dest="src", required=True, metavar="NS/POD|IP", help="source pod, workload or address"
    )
    p.add_argument(
        "--to", dest="dst", required=True, metavar="NS/POD|IP", help="destination pod, workload or address"
    )
    p.add_argument(
        "--port", required=True, help="destination port: a number, or a container port name of --to"
    )
    p.add_argument("--protocol", type=_protocol, default="TCP", help="tcp (default), udp or sctp")
    p.add_argument(
        "--family",
        type=int,
        choices=(4, 6),
        default=None,
        help="4 or 6 (default: of the addresses given, else 4 unless the pods have IPv6 only)",
    )
    p.add_argument(
        "--output", dest="sub_output", choices=("text", "json"), default=None, help="text (default) or json"
    )


def matrix_options(p: argparse.ArgumentParser) -> None:
    """Options of ``matrix`` (shared with ``kubectl stockade matrix``)."""
    p.add_argument(
        "--ports", help="e.g. 80,tcp/443,udp/53,sctp/9000 (default: the pods' container ports, else 80)"
    )
    p.add_argument(
        "--family",
        type=int,
        choices=(4, 6),
        default=None,
        help="4 or 6 (default: 4, or 6 when the pods have IPv6 addresses only)",
    )
    p.add_argument(
        "--output", dest="sub_output", choices=("text", "json"), default=None, help="text (default) or json"
    )


def diff_options(p: argparse.ArgumentParser) -> None:
    """Options of ``diff`` (shared with ``kubectl stockade diff``)."""
    p.add_argument("--node", help="compare this node's ruleset (default: the only node, if there is one)")
    p.add_argument(
        "--fail-on",
        choices=("widened", "any"),
        default=None,
        help="exit 1 if any pair gained access (widened), or on any change (any)",
    )
    p.add_argument(
        "--ports", help="as for matrix (default: container ports and the ports policies name, on both sides)"
    )
    p.add_argument(
        "--family",
        type=int,
        choices=(4, 6),
        default=None,
        help="4 or 6 (default: each that addresses and ipBlocks use)",
    )
    p.add_argument(
        "--output", dest="sub_output", choices=("text", "json"), default=None, help="text (default) or json"
    )


def terminal_width(stdout: TextIO) -> int:
    """The terminal's width, or 120 when stdout is not a terminal (so piped output is stable)."""
    if stdout.isatty():
        return shutil.get_terminal_size().columns
    return int(os.environ.get("COLUMNS", "120")) if os.environ.get("COLUMNS", "").isdigit() else 120


def _run(args: argparse.Namespace, stdin: TextIO, *, stdout: TextIO) -> offline.Result:
    # argparse's `choices` already restricted these; the comparisons give mypy the literal types.
    fmt: offline.OutputFormat = (
        "json" if (getattr(args, "sub_output", None) or args.global_output) == "json" else "text"
    )
    if args.command == "compile":
        if args.output_file in ("text", "json", "nft"):
            raise UsageError(
                f"compile: -o/--output takes a file name, not {args.output_file!r};"
                " use --format json (or --output json before the command)"
            )
        form: offline.RulesetFormat = "json" if (args.format or args.global_output) == "json" else "nft"
        result = offline.compile_command(args.paths, node=args.node, fmt=form, stdin=stdin)
        if args.output_file:
            files.write_atomically(args.output_file, result.stdout)
            return offline.Result("", notes=(*result.notes, f"wrote {args.output_file}"))
        return result
    if args.command == "explain":
        return offline.explain_command(
            args.paths,
            src=args.src,
            dst=args.dst,
            port=args.port,
            protocol=args.protocol,
            family=args.family,
            fmt=fmt,
            stdin=stdin,
        )
    if args.command == "matrix":
        return offline.matrix_command(
            args.paths,
            ports=args.ports,
            family=args.family,
            fmt=fmt,
            width=terminal_width(stdout),
            stdin=stdin,
        )
    if args.command == "diff":
        return offline.diff_command(
            args.old,
            args.new,
            node=args.node,
            fail_on=args.fail_on,
            ports=args.ports,
            family=args.family,
            fmt=fmt,
            stdin=stdin,
        )
    raise InternalError(f"no handler for command {args.command!r}")


def main(
    argv: Sequence[str] | None = None,
    *,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Run one command; returns the exit code (the console script passes it to ``sys.exit``)."""
    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help, --version, or a usage error argparse already printed
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    if args.command == "agent":
        return finish(lambda: _agent(args), command=args.command, stdout=stdout, stderr=stderr)
    return finish(
        lambda: _run(args, stdin, stdout=stdout), command=args.command, stdout=stdout, stderr=stderr
    )


def _agent(args: argparse.Namespace) -> int:
    from controller.agent.main import main as agent_main  # noqa: PLC0415 - node-side, lazily

    return agent_main(args)


def finish(
    run: Callable[[], offline.Result | int],
    *,
    command: str,
    stdout: TextIO,
    stderr: TextIO,
    prog: str = "stockade",
) -> int:
    """Run a command and print its result, or its errors as the exit codes above say."""
    try:
        result = run()
        if isinstance(result, int):
            return result
    except InputError as e:
        for problem in e.problems:
            print(problem, file=stderr)
        print(f"{prog}: {len(e.problems)} problem(s) in the input; nothing was written", file=stderr)
        return EXIT_USAGE
    except UsageError as e:
        for line in str(e).splitlines():
            print(f"{prog} {command}: {line}", file=stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except Exception as e:
        if isinstance(e, StockadeError) and not isinstance(e, InternalError):
            # A deliberate error the commands do not translate yet: the user's, not ours.
            print(f"{prog} {command}: {e}", file=stderr)
            return EXIT_USAGE
        print(
            f"{prog}: internal error: {type(e).__name__}: {e}\n"
            "This is a bug in Stockade, not a problem with your input; please report it"
            " (set STOCKADE_DEBUG=1 for a traceback).",
            file=stderr,
        )
        if os.environ.get("STOCKADE_DEBUG"):
            traceback.print_exc(file=stderr)
        return EXIT_INTERNAL
    for note in result.notes:
        print(f"{prog}: {note}", file=stderr)
    try:
        stdout.write(result.stdout)
        stdout.flush()
    except BrokenPipeError:
        # `stockade matrix ... | head`: the reader left; that is not an error.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    return result.exit_code


if __name__ == "__main__":
    sys.exit(main())
