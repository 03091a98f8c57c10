"""The ``stockade`` command line: subcommands and flags, following kubectl's conventions.

- ``-o/--output text|json|yaml`` is the output format on every command (``compile``: text is the
  nft ruleset, json and yaml the libnftables JSON document);
- ``--output-file PATH`` writes the output to a file, atomically, and only when the command succeeded;
- ``-f/--filename FILE`` (repeatable, ``-`` for stdin) names manifests, next to positional paths;
- ``explain --exit-code`` exits 1 when the connection is blocked, like ``kubectl auth can-i``.

Flags that once meant something else (``compile -o FILE``, ``compile --format``) fail with a message
saying what replaced them, rather than being read with their new meaning.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from importlib import metadata
from typing import Any, get_args

from compiler.model import PROTOCOLS
from controller.cli import hostargs
from controller.cli.offline import OutputFormat

OUTPUT_FORMATS: tuple[str, ...] = get_args(OutputFormat)

EPILOG = """exit status:
  0   done (explain: whether the connection is allowed or blocked, unless --exit-code)
  1   diff --fail-on found what it was told to fail on; explain --exit-code: the connection is blocked
  2   bad input or usage: every problem on stderr, nothing on stdout, no file written
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


def _output_format(text: str) -> str:
    if text in OUTPUT_FORMATS:
        return text
    # `compile -o FILE` wrote a file before -o became the format: say so instead of "invalid choice".
    raise argparse.ArgumentTypeError(
        f"{text!r} is not an output format ({', '.join(OUTPUT_FORMATS)});"
        f" to write to a file, use --output-file {text}"
    )


class _Refused(argparse.Action):
    """A flag this command does not take (any more): using it is a usage error saying what to do."""

    def __init__(self, option_strings: Sequence[str], dest: str, *, message: str, **kwargs: Any) -> None:
        self.message = message
        super().__init__(option_strings, dest, help=argparse.SUPPRESS, **kwargs)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        parser.error(f"{option_string}: {self.message}")


def common_options(p: argparse.ArgumentParser, *, paths: bool) -> None:
    """Flags every command has: the output format and file, and (where manifests are a list) -f."""
    if paths:
        p.add_argument("paths", nargs="*", metavar="PATH", help=PATHS_HELP)
        p.add_argument(
            "-f",
            "--filename",
            dest="filenames",
            action="append",
            default=[],
            metavar="FILE",
            help="a manifest file or directory, as PATH; repeatable; - for stdin",
        )
    p.add_argument(
        "-o",
        "--output",
        dest="sub_output",
        type=_output_format,
        default=None,
        metavar="FORMAT",
        help="output format: text (default), json or yaml",
    )
    p.add_argument(
        "--output-file",
        metavar="PATH",
        help="write the output to PATH (atomically; nothing is written when the command fails)",
    )


def _family(p: argparse.ArgumentParser, help_text: str) -> None:
    p.add_argument("--family", type=int, choices=(4, 6), default=None, help=help_text)


def explain_options(p: argparse.ArgumentParser) -> None:
    """``explain``'s own flags (shared with ``kubectl stockade explain``)."""
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
    _family(p, "4 or 6 (default: of the addresses given, else 4 unless the pods have IPv6 only)")
    p.add_argument(
        "--exit-code",
        action="store_true",
        help="exit 1 when the connection is blocked (0 when allowed), like `kubectl auth can-i`",
    )


def matrix_options(p: argparse.ArgumentParser) -> None:
    """``matrix``'s own flags (shared with ``kubectl stockade matrix``)."""
    p.add_argument(
        "--ports", help="e.g. 80,tcp/443,udp/53,sctp/9000 (default: the pods' container ports, else 80)"
    )
    _family(p, "4 or 6 (default: 4, or 6 when the pods have IPv6 addresses only)")


def diff_options(p: argparse.ArgumentParser) -> None:
    """``diff``'s own flags (shared with ``kubectl stockade diff``)."""
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
    _family(p, "4 or 6 (default: each that addresses and ipBlocks use)")


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
        type=_output_format,
        default=None,
        metavar="FORMAT",
        help="as -o/--output after the command",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "compile",
        help="the nftables ruleset of one node",
        description="The nftables ruleset of one node: -o text (default) is nft text that loads with"
        " `nft -f`; -o json and -o yaml are the libnftables JSON document.",
    )
    common_options(p, paths=True)
    p.add_argument("--node", help="the node to compile for (default: the only node in the manifests)")
    p.add_argument("--format", action=_Refused, message="replaced by -o/--output text|json|yaml")

    p = sub.add_parser("explain", help="may one endpoint reach another, and which policies say so")
    common_options(p, paths=True)
    explain_options(p)

    p = sub.add_parser("matrix", help="who may reach whom: every pod (or workload) against every other")
    common_options(p, paths=True)
    matrix_options(p)

    p = sub.add_parser("diff", help="what changing OLD into NEW opens, closes, and does to a node's ruleset")
    p.add_argument("old", metavar="OLD", help="the manifests before: a file or directory; - for stdin")
    p.add_argument("new", metavar="NEW", help="the manifests after: a file or directory; - for stdin")
    common_options(p, paths=False)
    # diff has two sides, so a list of -f files would not say which side a file belongs to.
    p.add_argument(
        "-f", "--filename", action=_Refused, message="diff takes its two sides as positional paths: OLD NEW"
    )
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
    p.add_argument(
        "--overlay",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="keep this node's VXLAN overlay (device, routes, neighbour and FDB entries to the other"
        " nodes) in sync with the Node objects (default on; --no-overlay when another CNI routes pods)",
    )
    p.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))

    hostargs.add_parsers(sub)  # node-side: their code is imported only when they run
    return parser


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse a command line; exits (``SystemExit``) on a usage error, as argparse does.

    argparse fills a ``nargs="*"`` positional from the first run of plain words only, so in
    ``compile a -f b c`` the ``c`` would be refused; paths are gathered from every run instead, as
    kubectl takes its arguments wherever they stand.
    """
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if hasattr(args, "paths"):
        words = [e for e in extra if e == "-" or not e.startswith("-")]
        args.paths = [*args.paths, *words]
        extra = [e for e in extra if e not in words]
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args
