"""The Dockerfile and the lab's image recipe (tests/images/build.py, `stockade`) build the same image:
the same Debian packages in the final stage, the project's own wheel, exactly the wheels of
image/requirements.txt fetched with the same pip flags, the same install layout, entrypoint, user
and environment. The Dockerfile is parsed here on its own, so a change to either side that the
other does not follow fails."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from tests.images import build

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = (REPO / "Dockerfile").read_text()


def _instructions() -> list[tuple[int, str, str]]:
    """(stage index, instruction, arguments), continuation lines joined, comments dropped."""
    text = re.sub(
        r"\\\n", " ", "\n".join(line for line in DOCKERFILE.splitlines() if not line.startswith("#"))
    )
    out, stage = [], -1
    for line in text.splitlines():
        if not line.strip():
            continue
        word, _, rest = line.strip().partition(" ")
        if word == "FROM":
            stage += 1
        out.append((stage, word, rest.strip()))
    return out


def _runs(stage: int) -> list[list[str]]:
    """Each RUN's commands (split on &&) as argv lists."""
    commands = []
    for s, word, rest in _instructions():
        if s == stage and word == "RUN":
            commands += [shlex.split(c) for c in rest.split("&&")]
    return commands


def _apt_packages(stage: int) -> list[str]:
    for argv in _runs(stage):
        if "apt-get" in argv and "install" in argv:
            return [a for a in argv[argv.index("install") + 1 :] if not a.startswith("-")]
    raise AssertionError(f"stage {stage} installs no Debian package")


def _pip(stage: int, command: str) -> list[str]:
    for argv in _runs(stage):
        if argv[:4] == ["python3", "-m", "pip", command]:
            return argv[4:]
    raise AssertionError(f"stage {stage} has no pip {command}")


def test_two_stages_from_one_pinned_debian() -> None:
    froms = [rest for _, word, rest in _instructions() if word == "FROM"]
    assert froms == ["${DEBIAN} AS build", "${DEBIAN}"]
    arg = next(rest for _, word, rest in _instructions() if word == "ARG" and rest.startswith("DEBIAN="))
    assert re.fullmatch(r"DEBIAN=debian:12\.\d+-slim", arg), f"not an exact point-release tag: {arg}"


def test_final_stage_debian_packages_are_the_recipes() -> None:
    assert sorted(_apt_packages(1)) == sorted(build.STOCKADE_PACKAGES)
    assert not {"python3-pip", "python3-venv", "gcc", "build-essential"} & set(_apt_packages(1))


def test_same_wheel_and_same_pinned_dependencies() -> None:
    wheel = _pip(0, "wheel")
    assert wheel[:2] == ["--no-deps", "--wheel-dir"] and wheel[-1] == "."
    download = _pip(0, "download")
    requirements = download[download.index("-r") + 1]
    assert requirements == build.STOCKADE_REQUIREMENTS
    flags = [a for a in download if a not in ("-r", requirements, "-d", "/wheels")]
    assert flags == list(build.STOCKADE_PIP_DOWNLOAD)
    install = _pip(0, "install")
    assert install[: len(build.STOCKADE_PIP_INSTALL)] == list(build.STOCKADE_PIP_INSTALL)
    assert install[len(build.STOCKADE_PIP_INSTALL)] == f"/{build.STOCKADE_PREFIX}"
    copies = {rest.split()[0] for s, word, rest in _instructions() if s == 0 and word == "COPY"}
    assert copies == {"pyproject.toml", "compiler", "controller", "image/requirements.txt"}
    assert set(build.STOCKADE_SOURCES) == {"pyproject.toml", "README.md", "compiler", "controller"}


def test_requirements_are_pinned_with_hashes_and_leave_out_pip_nftables() -> None:
    lines = [
        line
        for line in (REPO / build.STOCKADE_REQUIREMENTS).read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert lines
    for line in lines:
        assert re.fullmatch(r"[A-Za-z0-9_.\-]+==\S+ --hash=sha256:[0-9a-f]{64}", line), line
    names = {line.split("==")[0].lower() for line in lines}
    assert {"kopf", "kubernetes", "pyroute2", "prometheus-client", "pydantic", "pyyaml"} <= {
        n.replace("_", "-") for n in names
    }
    assert "pip-nftables" not in names  # Debian's python3-nftables provides `nftables`


@pytest.mark.parametrize("what", ["ENTRYPOINT", "USER", "ENV"])
def test_runtime_config_matches(what: str) -> None:
    final = {word: rest for s, word, rest in _instructions() if s == 1}
    if what == "ENTRYPOINT":
        assert final["ENTRYPOINT"] == '["stockade"]'
    elif what == "USER":
        assert final["USER"] == "65534:65534"
    else:
        env = dict(pair.split("=", 1) for pair in shlex.split(final["ENV"]))
        assert [f"{k}={v}" for k, v in env.items()] == build.STOCKADE_ENV
