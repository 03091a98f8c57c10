"""``stockade``: one console script, with subcommands (the flags are :mod:`controller.cli.args`).

Exit codes: 0 success (``explain`` answers with 0 whether the connection is allowed or blocked,
unless ``--exit-code``); 1 ``diff --fail-on`` found what it was told to fail on, or ``explain
--exit-code`` found the connection blocked; 2 bad input or usage (every problem on stderr, once,
one per line, nothing on stdout and no file written); 70 a bug in Stockade. User errors never print
a traceback.

The offline commands import only :mod:`compiler`; node-side commands (``agent``) import their
parts of :mod:`controller` inside their handlers, so the offline CLI runs without kopf, pyroute2
or libnftables installed. :func:`finish` (errors and exit codes) is shared with ``kubectl
stockade`` (:mod:`controller.cli.kubectl`).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from typing import TextIO, cast

from controller.cli import files, hostargs, offline
from controller.cli.args import parse
from controller.errors import InputError, InternalError, StockadeError, UsageError

EXIT_USAGE = 2
EXIT_INTERNAL = 70  # EX_SOFTWARE (sysexits.h)


def terminal_width(stdout: TextIO) -> int:
    """The terminal's width, or 120 when stdout is not a terminal (so piped output is stable)."""
    if stdout.isatty():
        return shutil.get_terminal_size().columns
    return int(os.environ.get("COLUMNS", "120")) if os.environ.get("COLUMNS", "").isdigit() else 120


def _format(args: argparse.Namespace) -> offline.OutputFormat:
    """-o/--output after the command, or --output before it; both given must agree."""
    after, before = args.sub_output, args.global_output
    if after is not None and before is not None and after != before:
        raise UsageError(f"--output {before} (before the command) and -o/--output {after} disagree")
    # argparse's type check restricted the value to OUTPUT_FORMATS.
    return cast(offline.OutputFormat, after or before or "text")


def _paths(args: argparse.Namespace) -> list[str]:
    paths: list[str] = [*args.paths, *args.filenames]
    if not paths:
        raise UsageError("no manifests given: name files or directories as PATH or -f FILE (- for stdin)")
    return paths


def _run(args: argparse.Namespace, stdin: TextIO, *, stdout: TextIO) -> offline.Result:
    fmt = _format(args)
    if args.command == "compile":
        return offline.compile_command(_paths(args), node=args.node, fmt=fmt, stdin=stdin)
    if args.command == "explain":
        return offline.explain_command(
            _paths(args),
            src=args.src,
            dst=args.dst,
            port=args.port,
            protocol=args.protocol,
            family=args.family,
            fmt=fmt,
            exit_code=args.exit_code,
            stdin=stdin,
        )
    if args.command == "matrix":
        return offline.matrix_command(
            _paths(args),
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


def deliver(result: offline.Result, output_file: str | None) -> offline.Result:
    """With --output-file, the output goes to the file (only now: the command succeeded)."""
    if not output_file:
        return result
    files.write_atomically(output_file, result.stdout)
    return offline.Result("", exit_code=result.exit_code, notes=(*result.notes, f"wrote {output_file}"))


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
        args = parse(argv)
    except SystemExit as e:  # --help, --version, or a usage error argparse already printed
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    if args.command == "agent":
        return finish(lambda: _agent(args), command=args.command, stdout=stdout, stderr=stderr)
    if args.command in hostargs.COMMANDS:
        return finish(
            lambda: hostargs.run(args, stdout=stdout), command=args.command, stdout=stdout, stderr=stderr
        )
    return finish(
        lambda: deliver(_run(args, stdin, stdout=stdout), args.output_file),
        command=args.command,
        stdout=stdout,
        stderr=stderr,
    )


def _agent(args: argparse.Namespace) -> int:
    try:
        with kubernetes_client_hidden():
            from controller.agent.main import main as agent_main  # noqa: PLC0415 - node-side, lazily
    except ModuleNotFoundError as exc:  # an offline-only install
        raise UsageError(f"needs the node-side packages ({exc}): pip install 'stockade[node]'") from exc
    return agent_main(args)


@contextlib.contextmanager
def kubernetes_client_hidden() -> Iterator[None]:
    """Within the block, ``import kubernetes`` fails (unless something imported it before).

    kopf imports the kubernetes client's models when that package is installed (it is: the CNI
    installer and the kubectl plugin use it), only to recognise them in ``isinstance`` checks
    (kopf/_cogs/helpers/thirdparty.py) that the agent never needs, and the import costs ~8 MiB
    resident. The agent talks to the API without it (controller/agent/apiclient.py). A ``None``
    in ``sys.modules`` makes an import raise ImportError, which kopf takes as "not installed";
    the block is where the agent's modules (and so kopf) are first imported. Afterwards the
    entry goes again, so the process (a test, say) can still import the package on purpose."""
    hidden = "kubernetes" not in sys.modules
    if hidden:
        sys.modules["kubernetes"] = None  # type: ignore[assignment]
    try:
        yield
    finally:
        if hidden and sys.modules.get("kubernetes") is None:
            del sys.modules["kubernetes"]


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
