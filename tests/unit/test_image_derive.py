"""tests/images/derive.py: the upgrade test's "changed image" is the built image plus one layer, and
it must be a valid OCI archive of its own (what `ctr images import` checks: every digest names
its blob, the config lists one diff_id per layer, the index names the image) whose old layers
are untouched and whose new layer holds the given file. Checked here by reading the archives
with tarfile and hashlib alone."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path
from typing import Any

from tests.images.build import File, Image, files_layer, write_archive
from tests.images.derive import derive


def _blob(tar: tarfile.TarFile, digest: str) -> bytes:
    member = tar.extractfile("blobs/sha256/" + digest.removeprefix("sha256:"))
    assert member is not None
    data = member.read()
    assert "sha256:" + hashlib.sha256(data).hexdigest() == digest, f"blob {digest} has other content"
    return data


def _image(path: Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], list[bytes]]:
    with tarfile.open(path) as tar:
        index_file = tar.extractfile("index.json")
        assert index_file is not None
        index = json.load(index_file)
        (entry,) = index["manifests"]
        manifest = json.loads(_blob(tar, entry["digest"]))
        config = json.loads(_blob(tar, manifest["config"]["digest"]))
        layers = [_blob(tar, layer["digest"]) for layer in manifest["layers"]]
    return entry, manifest, config, layers


def test_the_derived_image_is_the_old_one_plus_a_layer_under_its_new_name(tmp_path: Path) -> None:
    old_layer = files_layer([File("bin/agent", b"#!/bin/sh\n", 0o755)])
    write_archive(
        Image("x", ("lab.example/x:1.0",), ["/bin/agent"], user="65534:65534", layers=[old_layer]),
        tmp_path / "old.tar",
    )
    derive(tmp_path / "old.tar", tmp_path / "new.tar", name="lab.example/x:1.0-next",
           files=[File("opt/MARKER", b"next\n")])  # fmt: skip

    old_entry, _, old_config, _ = _image(tmp_path / "old.tar")
    entry, manifest, config, layers = _image(tmp_path / "new.tar")
    assert entry["annotations"]["io.containerd.image.name"] == "lab.example/x:1.0-next"
    assert entry["annotations"]["org.opencontainers.image.ref.name"] == "1.0-next"
    assert entry["digest"] != old_entry["digest"]
    assert layers[0] == old_layer
    assert config["rootfs"]["diff_ids"] == ["sha256:" + hashlib.sha256(x).hexdigest() for x in layers]
    assert config["config"] == old_config["config"]  # entrypoint, user, env: the same program
    assert len(manifest["layers"]) == 2
    with tarfile.open(fileobj=io.BytesIO(layers[1])) as layer:
        marker = layer.extractfile("opt/MARKER")
        assert marker is not None and marker.read() == b"next\n"
