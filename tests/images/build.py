"""Build the lab's container images as OCI archives, without a registry (see README.md).

Stdlib only (runs with the system python3 before any venv exists). Layers are uncompressed tars
written with sorted entries and fixed mtimes, so the same inputs give byte-identical archives;
each archive is cached under a key hashing all of its inputs.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import tomllib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

# Bump when the way images are assembled changes (the cache key includes it).
IMAGES_BUILD_VERSION = "1"
REPO = Path(__file__).resolve().parents[2]
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
EPOCH = 1767225600  # 2026-01-01T00:00:00Z, as the tools' BUILD_DATE
CREATED = "2026-01-01T00:00:00Z"
KUBE_MODULE = "k8s.io/kubernetes@v1.37.2"

# Exactly the names the consumers expect: containerd 2.4.2's default sandbox image and the e2e
# suite's pause (3.10.2), the lab's older pin (3.10.1); agnhost as test/utils/image/manifest.go.
PAUSE_NAMES = ("registry.k8s.io/pause:3.10.2", "registry.k8s.io/pause:3.10.1")
AGNHOST_NAMES = ("registry.k8s.io/e2e-test-images/agnhost:2.66.1",)
TESTPOD_NAMES = ("lab.stockade.io/testpod:v1",)
CNI_INSTALLER_NAMES = ("lab.stockade.io/cni-installer:v1",)
# python3-minimal lacks asyncio, ctypes, dataclasses, json, http.client: podagent and the
# installer need libpython3.11-stdlib too.
PYTHON_PACKAGES = ("python3-minimal", "libpython3.11-stdlib")
CNI_PLUGINS = ("ptp", "host-local", "loopback", "portmap")
# The Stockade image mirrors the repo's Dockerfile: its final stage's Debian packages, the project's
# wheel, and exactly the wheels image/requirements.txt pins, fetched with the same pip flags.
STOCKADE_PACKAGES = ("python3", "libnftables1", "python3-nftables")
STOCKADE_REQUIREMENTS = "image/requirements.txt"
STOCKADE_SOURCES = ("pyproject.toml", "README.md", "compiler", "controller")  # the Dockerfile's COPYs
STOCKADE_PIP_DOWNLOAD = (
    "--only-binary=:all:", "--python-version", "3.11", "--implementation", "cp", "--abi", "cp311",
    "--platform", "manylinux2014_x86_64", "--require-hashes", "--no-deps",
)  # fmt: skip
# --break-system-packages: Debian's pip refuses any install, even --target (not the system's site),
# under its PEP 668 marker; harmless elsewhere.
STOCKADE_PIP_INSTALL = ("--no-index", "--no-deps", "--no-compile", "--break-system-packages", "--target")
STOCKADE_PREFIX = "opt/stockade"
STOCKADE_ENV = [
    f"PATH=/{STOCKADE_PREFIX}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    f"PYTHONPATH=/{STOCKADE_PREFIX}",
    "PYTHONDONTWRITEBYTECODE=1",
]


class BuildError(Exception):
    pass


def log(msg: str) -> None:
    print(f"images: {msg}", file=sys.stderr, flush=True)


def run(argv: Sequence[str], **kw: object) -> str:
    proc = subprocess.run(list(argv), capture_output=True, text=True, check=False, **kw)  # type: ignore[call-overload]
    if proc.returncode != 0:
        raise BuildError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()[-800:]}")
    return str(proc.stdout)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---- layers ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class File:
    path: str  # inside the image, no leading slash
    data: bytes = b""
    mode: int = 0o644
    symlink: str = ""  # target, when a symlink


def files_layer(files: Iterable[File]) -> bytes:
    """A deterministic layer tar: parent dirs, sorted entries, root-owned, fixed mtimes."""
    entries = sorted(files, key=lambda f: f.path)
    dirs = sorted(
        {str(Path(f.path).parents[i]) for f in entries for i in range(len(Path(f.path).parents) - 1)}
    )
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for d in dirs:
            info = tarfile.TarInfo(d)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, EPOCH
            tar.addfile(info)
        for f in entries:
            info = tarfile.TarInfo(f.path)
            info.mtime, info.mode = EPOCH, f.mode
            if f.symlink:
                info.type, info.linkname = tarfile.SYMTYPE, f.symlink
                tar.addfile(info)
            else:
                info.size = len(f.data)
                tar.addfile(info, io.BytesIO(f.data))
    return buf.getvalue()


def host_file(src: Path, dest: str, mode: int = 0o755) -> File:
    return File(dest, src.read_bytes(), mode)


def debian_rootfs(cache: Path, packages: Sequence[str]) -> Path:
    """An mmdebstrap 'essential' rootfs as a tar, cached by suite and package list."""
    key = hashlib.sha256(f"{SUITE} {MIRROR} {' '.join(sorted(packages))} {EPOCH}".encode()).hexdigest()[:12]
    out = cache / "rootfs" / f"{key}.tar"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{key}.tmp{os.getpid()}.tar")  # mmdebstrap picks the format by suffix
    log(f"mmdebstrap {SUITE} +{','.join(packages)} (cold: ~1 min)")
    env = dict(os.environ, SOURCE_DATE_EPOCH=str(EPOCH))
    run(
        [
            "mmdebstrap",
            "--variant=essential",
            "--mode=root",
            f"--include={','.join(packages)}",
            "--dpkgopt=path-exclude=/usr/share/{doc,man,locale,info}/*",
            SUITE,
            str(tmp),
            MIRROR,
        ],
        env=env,
    )
    tmp.rename(out)
    return out


# ---- OCI archive ---------------------------------------------------------------------------------


@dataclass
class Image:
    archive: str  # archive name, without .tar
    names: tuple[str, ...]
    entrypoint: list[str]
    user: str = ""
    env: list[str] = field(
        default_factory=lambda: ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
    )
    workdir: str = ""
    cmd: list[str] = field(default_factory=list)
    layers: list[Path | bytes] = field(default_factory=list)  # tar file on disk, or tar bytes


def _blob(tar: tarfile.TarFile, data: bytes) -> dict[str, object]:
    digest = hashlib.sha256(data).hexdigest()
    info = tarfile.TarInfo(f"blobs/sha256/{digest}")
    info.size, info.mtime, info.mode = len(data), EPOCH, 0o644
    tar.addfile(info, io.BytesIO(data))
    return {"digest": f"sha256:{digest}", "size": len(data)}


def write_archive(image: Image, out: Path) -> None:
    with tarfile.open(out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        diff_ids, layer_descs = [], []
        for layer in image.layers:
            if isinstance(layer, bytes):
                desc = _blob(tar, layer)
            else:
                digest = sha256_file(layer)
                info = tarfile.TarInfo(f"blobs/sha256/{digest}")
                info.size, info.mtime, info.mode = layer.stat().st_size, EPOCH, 0o644
                with layer.open("rb") as f:
                    tar.addfile(info, f)
                desc = {"digest": f"sha256:{digest}", "size": info.size}
            diff_ids.append(desc["digest"])  # uncompressed layers: diff_id == digest
            layer_descs.append({"mediaType": "application/vnd.oci.image.layer.v1.tar", **desc})
        cfg: dict[str, object] = {"Entrypoint": image.entrypoint, "Env": image.env}
        if image.user:
            cfg["User"] = image.user
        if image.workdir:
            cfg["WorkingDir"] = image.workdir
        if image.cmd:
            cfg["Cmd"] = image.cmd
        config = {
            "created": CREATED,
            "architecture": "amd64",
            "os": "linux",
            "config": cfg,
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": [{"created": CREATED, "created_by": "tests/images/build.py"}],
        }
        config_desc = _blob(tar, _json(config))
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config_desc},
            "layers": layer_descs,
        }
        manifest_desc = _blob(tar, _json(manifest))
        index = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    **manifest_desc,
                    "platform": {"architecture": "amd64", "os": "linux"},
                    "annotations": {
                        "io.containerd.image.name": name,
                        "org.opencontainers.image.ref.name": name.rsplit(":", 1)[1],
                    },
                }
                for name in image.names
            ],
        }
        for name, data in (
            ("oci-layout", _json({"imageLayoutVersion": "1.0.0"})),
            ("index.json", _json(index)),
        ):
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), EPOCH, 0o644
            tar.addfile(info, io.BytesIO(data))


def _json(obj: object) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


# ---- the images ----------------------------------------------------------------------------------


def tools_bin(*tools: str) -> Path:
    out = run(["bash", str(REPO / "tests/tools/build.sh"), *tools])
    return Path(out.strip().splitlines()[-1])


def gomodcache() -> Path:
    return Path(run(["go", "env", "GOMODCACHE"]).strip())


def pause(cache: Path) -> tuple[Callable[[], Image], list[str]]:
    src = gomodcache() / KUBE_MODULE / "build/pause/linux/pause.c"
    if not src.exists():  # the kube tools module pulls it into the module cache
        tools_bin("kubectl")
    gcc = run(["gcc", "-dumpfullversion"]).strip()
    libc = run(["dpkg-query", "-W", "-f=${Version}", "libc6-dev"]).strip()
    key_inputs = [src.read_text(), f"gcc {gcc} libc6-dev {libc}"]

    def make() -> Image:
        with tempfile.TemporaryDirectory() as tmp:
            binary = Path(tmp) / "pause"
            run(
                [
                    "gcc",
                    "-Os",
                    "-Wall",
                    "-Werror",
                    "-static",
                    '-DVERSION="v3.10.2"',
                    "-o",
                    str(binary),
                    str(src),
                ]
            )
            run(["strip", str(binary)])
            layer = files_layer([host_file(binary, "pause")])
        return Image("pause", PAUSE_NAMES, ["/pause"], user="65535:65535", env=[], layers=[layer])

    return make, key_inputs


def agnhost(cache: Path) -> tuple[Callable[[], Image], list[str]]:
    binary = tools_bin("agnhost") / "agnhost"
    busybox_ver = run(["apt-cache", "policy", "busybox-static"]).split("Candidate:")[1].split()[0]
    key_inputs = [sha256_file(binary), f"busybox-static {busybox_ver}"]

    def make() -> Image:
        with tempfile.TemporaryDirectory() as tmp:
            run(["apt-get", "download", f"busybox-static={busybox_ver}"], cwd=tmp)
            deb = next(Path(tmp).glob("busybox-static_*.deb"))
            run(["dpkg-deb", "-x", str(deb), f"{tmp}/x"])
            bb = Path(tmp) / "x/bin/busybox"
            applets = [a for a in run([str(bb), "--list"]).split() if a != "busybox"]
            files = [host_file(binary, "agnhost"), host_file(bb, "bin/busybox")]
            files += [File(f"bin/{a}", symlink="busybox") for a in applets]
            layer = files_layer(files)
        return Image("agnhost", AGNHOST_NAMES, ["/agnhost"], layers=[layer])

    return make, key_inputs


def _python_files() -> list[File]:
    return [
        File("app/tests/__init__.py"),
        File("app/tests/support/__init__.py"),
        host_file(REPO / "tests/support/podagent.py", "app/tests/support/podagent.py", 0o644),
        host_file(REPO / "tests/support/sctp.py", "app/tests/support/sctp.py", 0o644),
    ]


def testpod(cache: Path) -> tuple[Callable[[], Image], list[str]]:
    key_inputs = [f.data.decode() for f in _python_files()] + list(PYTHON_PACKAGES)

    def make() -> Image:
        rootfs = debian_rootfs(cache, PYTHON_PACKAGES)
        env = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "PYTHONPATH=/app"]
        return Image(
            "testpod", TESTPOD_NAMES, ["python3", "-m", "tests.support.podagent"],
            env=env, workdir="/app", layers=[rootfs, files_layer(_python_files())],
        )  # fmt: skip

    return make, key_inputs


def cni_installer(cache: Path) -> tuple[Callable[[], Image], list[str]]:
    script = (Path(__file__).parent / "install-cni.py").read_bytes()
    plugins_ver = run(["dpkg-query", "-W", "-f=${Version}", "containernetworking-plugins"]).strip()
    plugins = [Path("/usr/lib/cni") / p for p in CNI_PLUGINS]
    key_inputs = [script.decode(), f"containernetworking-plugins {plugins_ver}", *PYTHON_PACKAGES]
    key_inputs += [sha256_file(p) for p in plugins]

    def make() -> Image:
        rootfs = debian_rootfs(cache, PYTHON_PACKAGES)
        files = [File("install-cni.py", script, 0o755)]
        files += [host_file(p, f"usr/lib/cni/{p.name}") for p in plugins]
        return Image("cni-installer", CNI_INSTALLER_NAMES, ["python3", "/install-cni.py"],
                     layers=[rootfs, files_layer(files)])  # fmt: skip

    return make, key_inputs


def stockade_version() -> str:
    return str(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"])


def _source_files() -> list[Path]:
    files: list[Path] = []
    for src in STOCKADE_SOURCES:
        path = REPO / src
        files += sorted(p for p in path.rglob("*.py")) if path.is_dir() else [path]
    return files


def dir_files(root: Path, dest: str) -> list[File]:
    """Every file under ``root`` as image files under ``dest`` (executables 0755, others 0644)."""
    out = []
    for path in sorted(root.rglob("*")):
        rel = f"{dest}/{path.relative_to(root)}"
        if path.is_symlink():
            out.append(File(rel, symlink=os.readlink(path)))
        elif path.is_file():
            out.append(File(rel, path.read_bytes(), 0o755 if os.access(path, os.X_OK) else 0o644))
    return out


def stockade(cache: Path) -> tuple[Callable[[], Image], list[str]]:
    """The Dockerfile's two stages without Docker: the builder stage's pip commands run here."""
    requirements = (REPO / STOCKADE_REQUIREMENTS).read_text()
    sources = hashlib.sha256()
    for path in _source_files():
        sources.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes())
    key_inputs = [sources.hexdigest(), requirements, *STOCKADE_PACKAGES]
    key_inputs += [*STOCKADE_PIP_DOWNLOAD, *STOCKADE_PIP_INSTALL]

    def make() -> Image:
        rootfs = debian_rootfs(cache, STOCKADE_PACKAGES)
        pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
        with tempfile.TemporaryDirectory() as tmp:
            src, wheels, prefix = Path(tmp, "src"), Path(tmp, "wheels"), Path(tmp, "prefix")
            for name in STOCKADE_SOURCES:  # a clean copy, as the Dockerfile's build context
                if (REPO / name).is_dir():
                    shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
                else:
                    src.mkdir(exist_ok=True)
                    shutil.copy2(REPO / name, src / name)
            log("stockade: pip wheel (the project) and pip download (image/requirements.txt)")
            run([*pip, "wheel", "--no-deps", "--wheel-dir", str(wheels), str(src)])
            run([*pip, "download", *STOCKADE_PIP_DOWNLOAD, "-r", str(REPO / STOCKADE_REQUIREMENTS),
                 "-d", str(wheels)])  # fmt: skip
            whls = [str(w) for w in sorted(wheels.glob("*.whl"))]
            run([*pip, "install", *STOCKADE_PIP_INSTALL, str(prefix), *whls])
            # pip writes its own interpreter into the scripts; the image's is Debian's, as in the
            # Dockerfile's builder stage. direct_url.json records this build's temp paths only.
            for script in (prefix / "bin").iterdir():
                data = script.read_bytes()
                if data.startswith(b"#!"):
                    script.write_bytes(b"#!/usr/bin/python3" + data[data.index(b"\n") :])
            for direct_url in prefix.glob("*.dist-info/direct_url.json"):
                direct_url.unlink()
            layer = files_layer(dir_files(prefix, STOCKADE_PREFIX))
        names = (f"lab.stockade.io/stockade:{stockade_version()}",)
        return Image("stockade", names, ["stockade"], cmd=["--help"], user="65534:65534",
                     env=STOCKADE_ENV, layers=[rootfs, layer])  # fmt: skip

    return make, key_inputs


RECIPES = {
    "pause": pause,
    "agnhost": agnhost,
    "testpod": testpod,
    "cni-installer": cni_installer,
    "stockade": stockade,
}


def build(name: str, cache: Path) -> Path:
    make, key_inputs = RECIPES[name](cache)
    key = hashlib.sha256(json.dumps([IMAGES_BUILD_VERSION, name, key_inputs]).encode()).hexdigest()[:12]
    out = cache / "store" / f"{name}-{key}.tar"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(f".tmp{os.getpid()}")
        log(f"building {name} ({key})")
        try:
            write_archive(make(), tmp)
            tmp.rename(out)
        finally:
            tmp.unlink(missing_ok=True)
    link = cache / f"{name}.tar"
    tmp_link = cache / f".{name}.tar.{os.getpid()}"
    tmp_link.symlink_to(out.relative_to(cache))
    tmp_link.replace(link)
    return link


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("names", nargs="*", help=f"images (default: all of {', '.join(RECIPES)})")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in RECIPES]
    if unknown:
        parser.error(f"unknown image(s) {', '.join(unknown)} (known: {', '.join(RECIPES)})")
    cache = Path(os.environ.get("STOCKADE_IMAGES_DIR") or "/var/cache/stockade/images")
    cache.mkdir(parents=True, exist_ok=True)
    lock = (cache / ".lock").open("w")
    fcntl.flock(lock, fcntl.LOCK_EX)  # one build per cache dir; a second caller then finds it done
    try:
        for name in args.names or list(RECIPES):
            link = build(name, cache)
            log(f"{name}: {link} -> {link.resolve().name}")
    except BuildError as e:
        log(f"ERROR: {e}")
        return 1
    print(cache)
    return 0


if __name__ == "__main__":
    sys.exit(main())
