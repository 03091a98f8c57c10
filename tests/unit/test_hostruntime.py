"""`stockade install-runtime` on a fake image root (files in a temp dir): what lands in the host dir,
the wrapper's exact text, the .pth, versions keyed by content (same image: nothing copied again; a
new image: a new version, the previous kept, older ones and stale temporaries removed). Running the
copied interpreter for real is the kernel tier's (tests/kernel/test_stockade_image.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from controller.errors import UsageError
from controller.hostruntime import Source, install_runtime


def _image(root: Path, *, interpreter: bytes = b"\x7fELF python") -> Source:
    files = {
        "usr/bin/python3.11": interpreter,
        "usr/lib/python3.11/os.py": b"# os",
        "usr/lib/python3.11/__pycache__/os.cpython-311.pyc": b"pyc",
        "usr/lib/python3/dist-packages/nftables/__init__.py": b"",
        "usr/lib/x86_64-linux-gnu/libc.so.6": b"libc",
        "usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2": b"ld.so",
        "opt/stockade/controller/__init__.py": b"",
    }
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    (root / "lib64").mkdir(exist_ok=True)
    loader = root / "lib64/ld-linux-x86-64.so.2"
    if not loader.is_symlink():
        loader.symlink_to("../usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")  # merged /usr, as Debian
    return Source(
        root=root,
        interpreter=Path("usr/bin/python3.11"),
        stdlib=Path("usr/lib/python3.11"),
        dist_packages=Path("usr/lib/python3/dist-packages"),
        site=Path("opt/stockade"),
    )


def _versions(dest: Path) -> list[str]:
    return sorted(p.name for p in dest.iterdir() if p.name.startswith("rt-"))


def test_copies_the_runtime_and_writes_the_wrapper_and_pth(tmp_path: Path) -> None:
    source = _image(tmp_path / "image")
    dest = tmp_path / "mnt"
    dest.mkdir()
    wrapper = install_runtime(source, dest=dest, host_dest=Path("/opt/stockade"))
    assert wrapper == Path("/opt/stockade/python")
    [version] = _versions(dest)
    assert sorted(p.name for p in dest.iterdir()) == ["python", version]
    host = f"/opt/stockade/{version}"
    assert (dest / "python").read_text() == (
        "#!/bin/sh\n"
        "# Written by `stockade install-runtime`: the image's interpreter, loader and libraries.\n"
        f'exec "{host}/lib64/ld-linux-x86-64.so.2" --library-path "{host}/usr/lib/x86_64-linux-gnu"'
        f' "{host}/usr/bin/python3.11" "$@"\n'
    )
    assert os.access(dest / "python", os.X_OK)
    copy = dest / version
    assert (copy / "usr/lib/python3/dist-packages/stockade.pth").read_text() == f"{host}/opt/stockade\n"
    assert (copy / "lib64/ld-linux-x86-64.so.2").read_bytes() == b"ld.so"  # a file, not the symlink
    assert not (copy / "lib64/ld-linux-x86-64.so.2").is_symlink()
    assert (copy / "usr/bin/python3.11").read_bytes() == b"\x7fELF python"
    assert (copy / "opt/stockade/controller/__init__.py").exists()
    assert not (copy / "usr/lib/python3.11/__pycache__").exists()


def test_versions_follow_the_image(tmp_path: Path) -> None:
    dest = tmp_path / "mnt"
    dest.mkdir()
    install_runtime(_image(tmp_path / "a"), dest=dest, host_dest=Path("/opt/stockade"))
    first = _versions(dest)
    (dest / ".rt-deadbeef0000.tmp99").mkdir()  # a crashed earlier copy
    install_runtime(_image(tmp_path / "a"), dest=dest, host_dest=Path("/opt/stockade"))
    assert _versions(dest) == first, "the same image is not copied again"
    assert not (dest / ".rt-deadbeef0000.tmp99").exists()
    install_runtime(
        _image(tmp_path / "b", interpreter=b"python 2"), dest=dest, host_dest=Path("/opt/stockade")
    )
    second = _versions(dest)
    assert len(second) == 2 and set(first) < set(second), "the previous version stays for running plugins"
    install_runtime(
        _image(tmp_path / "c", interpreter=b"python 3"), dest=dest, host_dest=Path("/opt/stockade")
    )
    third = _versions(dest)
    assert len(third) == 2 and first[0] not in third, "older versions go"
    current = (dest / "python").read_text()
    assert sum(v in current for v in third) == 1


@pytest.mark.parametrize(
    ("host_dest", "message"),
    [("opt/stockade", "--host-dir opt/stockade"), ("/opt", "--host-dir /opt")],
    ids=["relative", "top-level"],
)
def test_refuses_a_host_dir_it_could_not_own(tmp_path: Path, host_dest: str, message: str) -> None:
    dest = tmp_path / "mnt"
    dest.mkdir()
    with pytest.raises(UsageError, match=message):
        install_runtime(_image(tmp_path / "image"), dest=dest, host_dest=Path(host_dest))
    assert list(dest.iterdir()) == []


def test_refuses_a_missing_mount(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="not a directory"):
        install_runtime(_image(tmp_path / "image"), dest=tmp_path / "nope", host_dest=Path("/opt/stockade"))
