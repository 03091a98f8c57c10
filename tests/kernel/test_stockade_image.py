"""The Stockade image built without Docker (tests/images/build.py, recipe `stockade`): its name is
what the chart's default values pull, it has no build tools, and it runs under the pinned
containerd: `stockade --version`, `stockade compile` on an example, and Debian's libnftables
through Debian's python3-nftables. The containerd fixture is test_images.py's (a throwaway
network + mount namespace, everything removed afterwards)."""

from __future__ import annotations

import json
import subprocess
import tarfile
from pathlib import Path

import pytest
import yaml

from tests.kernel.test_images import _build, _ctr, _read, containerd, images_dir

__all__ = ["containerd", "images_dir"]  # fixtures used here, defined in test_images

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts/stockade"


def _chart_image() -> str:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    app_version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    return f"{values['image']['repository']}:{values['image']['tag'] or app_version}"


@pytest.fixture(scope="module")
def stockade_tar() -> Path:
    return _build("stockade") / "stockade.tar"


def _config_and_files(archive: Path) -> tuple[list[str], dict, set[str]]:  # type: ignore[type-arg]
    with tarfile.open(archive) as tar:
        index = _read(tar, "index.json")
        names = [m["annotations"]["io.containerd.image.name"] for m in index["manifests"]]
        manifest = _read(tar, f"blobs/sha256/{index['manifests'][0]['digest'].split(':')[1]}")
        config = _read(tar, f"blobs/sha256/{manifest['config']['digest'].split(':')[1]}")
        files: set[str] = set()
        for layer in manifest["layers"]:
            blob = tar.extractfile(f"blobs/sha256/{layer['digest'].split(':')[1]}")
            assert blob is not None
            with tarfile.open(fileobj=blob) as lt:
                files |= {m.name.lstrip("./") for m in lt.getmembers()}
    return names, config["config"], files


def test_image_is_what_the_chart_pulls_and_has_no_build_tools(stockade_tar: Path) -> None:
    names, config, files = _config_and_files(stockade_tar)
    assert names == [_chart_image()]
    assert config["Entrypoint"] == ["stockade"] and config["User"] == "65534:65534"
    assert {"opt/stockade/bin/stockade", "opt/stockade/controller/applier.py"} <= files
    assert {"usr/lib/python3/dist-packages/nftables/nftables.py", "usr/bin/python3"} <= files
    assert any(f.startswith("usr/lib/x86_64-linux-gnu/libnftables.so.1") for f in files)
    tools = {"usr/bin/gcc", "usr/bin/cc", "usr/bin/pip3", "usr/bin/make"}
    assert not (tools & files), tools & files
    assert not any(f.startswith("opt/stockade/pip_nftables") for f in files), "Debian's binding only"


def test_image_runs_the_cli_and_loads_libnftables(
    stockade_tar: Path, containerd: tuple[Path, Path, int]
) -> None:
    bin_dir, sock, cpid = containerd
    _ctr(bin_dir, sock, cpid, "images", "import", str(stockade_tar))
    image = _chart_image()

    def run(task: str, *argv: str, mount: str = "") -> str:
        extra = ["--mount", mount] if mount else []
        return _ctr(bin_dir, sock, cpid, "run", "--rm", *extra, image, task, *argv)

    assert run("version", "stockade", "--version").strip() == "stockade 0.1.0"
    examples = f"type=bind,src={REPO / 'examples/default-deny'},dst=/examples,options=rbind:ro"
    ruleset = run("compile", "stockade", "compile", "/examples", "-o", "json", mount=examples)
    # The compiler is deterministic: the image prints exactly what this checkout's CLI prints.
    here = subprocess.run(
        [str(REPO / ".venv/bin/stockade"), "compile", str(REPO / "examples/default-deny"), "-o", "json"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(ruleset) == json.loads(here.stdout)
    assert '"name": "stockade"' in ruleset or '"name":"stockade"' in ruleset
    probe = (
        "import nftables, controller.nft\n"
        "controller.nft.Nft()\n"  # dlopen()s libnftables.so.1
        "print(nftables.__file__)\n"
    )
    assert run("nft", "python3", "-c", probe).strip() == "/usr/lib/python3/dist-packages/nftables/__init__.py"
    assert "--keep-state" in run("help", "stockade", "uninstall-node", "--help")


def test_install_runtime_puts_a_python_on_the_host_that_runs_the_project(
    stockade_tar: Path, containerd: tuple[Path, Path, int], tmp_path: Path
) -> None:
    """What the chart's install-runtime init container does, then what the runtime does with the
    plugin's launcher: run it on the host (here: outside the container, from the host's paths)."""
    bin_dir, sock, cpid = containerd
    _ctr(bin_dir, sock, cpid, "images", "import", str(stockade_tar))
    host = tmp_path / "rt"
    host.mkdir()
    mount = f"type=bind,src={host},dst=/host/rt,options=rbind:rw"

    def install(task: str) -> str:
        argv = ["stockade", "install-runtime", "--dest=/host/rt", f"--host-dir={host}"]
        # uid 0, as the chart runs it (the image's default user is nobody).
        return _ctr(
            bin_dir, sock, cpid, "run", "--rm", "--user", "0:0", "--mount", mount, _chart_image(), task, *argv
        )

    assert install("rt1").strip() == str(host / "python")
    versions = sorted(p.name for p in host.iterdir())
    assert versions[0] == "python" and len(versions) == 2 and versions[1].startswith("rt-")
    # A launcher as `stockade-cni install --python` writes one: the wrapper as its #! interpreter.
    launcher = tmp_path / "launcher"
    launcher.write_text(
        f"#!{host / 'python'} -I\n"
        "import sys, controller.cli.main, pyroute2\n"
        "print(sys.version.split()[0], controller.cli.main.__file__)\n"
    )
    launcher.chmod(0o755)
    out = subprocess.run(
        [str(launcher)], capture_output=True, text=True, check=False, env={"PATH": "/nonexistent"}
    )
    assert out.returncode == 0, out.stderr
    version, module = out.stdout.split()
    assert module == f"{host}/{versions[1]}/opt/stockade/controller/cli/main.py"
    assert version.startswith("3.11.")
    # The same image again: the same version directory, the wrapper replaced, nothing else.
    install("rt2")
    assert sorted(p.name for p in host.iterdir()) == versions
