"""``stockade install-runtime``: put this image's Python runtime on the host, so that the CNI plugin,
which the container runtime starts on the host (outside any container), can run.

``stockade-cni install`` writes a launcher into the host's CNI bin dir whose ``#!`` line names an
interpreter (its ``--python``). From an init container, the image's own ``/usr/bin/python3`` and
``/opt/stockade`` do not exist on the host. This copies them there, relocatable:

- ``<dest>/rt-<key>/``: the interpreter, its standard library, Debian's dist-packages, the shared
  libraries of the image (glibc included) and its dynamic loader, and the project's site dir;
- ``<dest>/rt-<key>/usr/lib/python3/dist-packages/stockade.pth`` names the site dir's host path,
  so the plugin's ``python -I`` (isolated: no PYTHONPATH) still finds the ``controller`` package;
- ``<dest>/python``: a ``/bin/sh`` wrapper that runs the copied interpreter through the copied
  loader with the copied libraries, so the host's own libraries (or their absence) never matter.
  Linux runs a ``#!`` interpreter that is itself a script, so the launcher's ``#!<dest>/python -I``
  works.

Atomic and upgrade-safe: a version is copied under a temporary name, then renamed to
``rt-<key>`` (the key hashes what was copied), then the wrapper is replaced by rename. Plugin
processes started before keep the files they opened; the previous version is kept for those
still starting, older ones are removed. Stdlib only.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from controller.errors import UsageError

WRAPPER = "python"
_PREFIX = "rt-"
_LOADER = "lib64/ld-linux-x86-64.so.2"  # the x86-64 psABI's fixed loader path
_LIBDIRS = ("usr/lib/x86_64-linux-gnu",)  # merged /usr: /lib is a symlink to usr/lib


@dataclass(frozen=True)
class Source:
    """What is copied, as paths inside the image (``root`` is ``/`` except in tests)."""

    root: Path
    interpreter: Path  # e.g. usr/bin/python3.11, relative to root
    stdlib: Path  # usr/lib/python3.11
    dist_packages: Path  # usr/lib/python3/dist-packages (Debian's)
    site: Path  # the project's install dir (holds controller/), e.g. opt/stockade

    @classmethod
    def this_process(cls) -> Source:
        import controller  # noqa: PLC0415 - only to find where it is installed

        def rel(path: str | Path) -> Path:
            return Path(os.path.realpath(path)).relative_to("/")

        return cls(
            root=Path("/"),
            interpreter=rel(sys.executable),
            stdlib=rel(sysconfig.get_paths()["stdlib"]),
            dist_packages=Path("usr/lib/python3/dist-packages"),
            site=rel(Path(controller.__file__).parents[1]),
        )


def install_runtime(source: Source, *, dest: Path, host_dest: Path) -> Path:
    """Copy the runtime into ``dest`` (the host's ``host_dest``, mounted here); returns the
    wrapper's host path, what ``stockade-cni install --python`` takes."""
    if not host_dest.is_absolute() or len(host_dest.parts) < 3:
        raise UsageError(f"--host-dir {host_dest}: want an absolute path at least two levels deep")
    if not dest.is_dir():
        raise UsageError(f"--dest {dest}: not a directory (the hostPath mount)")
    parts = [source.interpreter, source.stdlib, source.dist_packages, source.site, Path(_LOADER)]
    parts += [Path(d) for d in _LIBDIRS]
    key = _key(source.root, parts)
    version = dest / f"{_PREFIX}{key}"
    if not version.is_dir():
        tmp = dest / f".{_PREFIX}{key}.tmp{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        for part in parts:
            _copy(source.root / part, tmp / part)
        pth = tmp / source.dist_packages / "stockade.pth"
        pth.write_text(f"{host_dest / version.name / source.site}\n")
        tmp.rename(version)
    host_version = host_dest / version.name
    libs = ":".join(str(host_version / d) for d in _LIBDIRS)
    loader, interpreter = host_version / _LOADER, host_version / source.interpreter
    wrapper = (
        "#!/bin/sh\n"
        "# Written by `stockade install-runtime`: the image's interpreter, loader and libraries.\n"
        f'exec "{loader}" --library-path "{libs}" "{interpreter}" "$@"\n'
    )
    tmp_wrapper = dest / f".{WRAPPER}.tmp{os.getpid()}"
    tmp_wrapper.write_text(wrapper)
    tmp_wrapper.chmod(0o755)
    tmp_wrapper.rename(dest / WRAPPER)
    _prune(dest, keep=version.name)
    return host_dest / WRAPPER


def _key(root: Path, parts: list[Path]) -> str:
    """Hash of every file's path and size and the interpreter's bytes: a new image, a new key."""
    h = hashlib.sha256()
    for part in parts:
        path = root / part
        files = [path] if not path.is_dir() else sorted(p for p in path.rglob("*") if not p.is_dir())
        for f in files:
            h.update(f"{f.relative_to(root)}\0{f.lstat().st_size}\0".encode())
    h.update((root / parts[0]).read_bytes())
    return h.hexdigest()[:12]


def _copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if src.is_dir() and not src.is_symlink():
        shutil.copytree(src, dst, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    else:
        shutil.copy2(src, dst, follow_symlinks=True)  # the loader path is a symlink into usr/lib


def _prune(dest: Path, *, keep: str) -> None:
    """Keep ``keep`` and the newest other version (a plugin started just before may use it)."""
    others = sorted(
        (p for p in dest.iterdir() if p.name.startswith(_PREFIX) and p.name != keep),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    for old in others[1:]:
        shutil.rmtree(old, ignore_errors=True)
    for tmp in dest.glob(f".{_PREFIX}*.tmp*"):
        shutil.rmtree(tmp, ignore_errors=True)
