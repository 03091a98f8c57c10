"""Files in and out of the offline commands: manifests read from paths and stdin, results written
atomically. The only part of the offline CLI that touches the file system.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from compiler.loader import LoadResult, load_manifests
from controller.errors import UsageError

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
STDIN_NAME = "<stdin>"


# --- reading manifests -----------------------------------------------------------------------------


def read_sources(paths: Sequence[str], stdin: TextIO) -> tuple[list[tuple[str, str]], list[str]]:
    """(file name, text) of every manifest under ``paths``, and notes; all unreadable paths at once.

    Directories are searched recursively for *.yaml, *.yml and *.json in sorted order, skipping
    hidden entries (``.git`` and the like); a file named explicitly is read whatever its name.
    A file reached twice (``dir dir/a.yaml``) is read once: its objects are not duplicates.
    """
    sources: list[tuple[str, str]] = []
    problems: list[str] = []
    notes: list[str] = []
    seen: dict[Path, str] = {}

    def read(f: Path, name: str) -> None:
        key = f.resolve()
        if key in seen:
            notes.append(f"{name}: already read as {seen[key]}; read once")
            return
        seen[key] = name
        _read(f, name, sources=sources, problems=problems)

    stdin_read = False
    for path in paths:
        if path == "-":
            if stdin_read:
                problems.append("-: stdin is given more than once; it can be read only once")
                continue
            stdin_read = True
            sources.append((STDIN_NAME, stdin.read()))
            continue
        p = Path(path)
        if p.is_dir():
            files = sorted(
                f
                for f in p.rglob("*")
                if f.is_file()
                and f.suffix.lower() in MANIFEST_SUFFIXES
                and not any(part.startswith(".") for part in f.relative_to(p).parts)
            )
            for f in files:
                read(f, str(f))
            if not files:
                notes.append(f"{path}: no manifests (*.yaml, *.yml, *.json) in this directory")
        elif p.exists():
            read(p, path)
        else:
            problems.append(f"{path}: no such file or directory")
    if problems:
        raise UsageError("\n".join(problems))
    return sources, notes


def _read(path: Path, name: str, *, sources: list[tuple[str, str]], problems: list[str]) -> None:
    try:
        sources.append((name, path.read_text(encoding="utf-8")))
    except UnicodeDecodeError:
        problems.append(f"{name}: not UTF-8 text")
    except OSError as e:
        problems.append(f"{name}: cannot read: {e.strerror or e}")


def load(paths: Sequence[str], stdin: TextIO) -> LoadResult:
    sources, notes = read_sources(paths, stdin)
    result = load_manifests(sources)
    return LoadResult(result.model, (*notes, *result.notes))


# --- writing ------------------------------------------------------------------------------------------


def write_atomically(path: str, text: str) -> None:
    """Replace ``path`` with ``text`` in one rename, so readers never see half a ruleset."""
    target = Path(path)
    try:
        mode = target.stat().st_mode & 0o777 if target.exists() else _default_mode()
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    except OSError as e:
        raise UsageError(f"{path}: cannot write: {e.strerror or e}") from e
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise UsageError(f"{path}: cannot write: {e.strerror or e}") from e


def _default_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask
