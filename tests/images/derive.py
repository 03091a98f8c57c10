"""A new image from a built one: the same layers plus one more, under a new name.

What a user's upgrade brings is a different image: other content, another digest, another tag.
Rebuilding Stockade's image with changed sources takes minutes (pip, Debian rootfs); the chart's
upgrade test needs an image that differs in content and identity, not in Python code, so it adds
a layer to the built archive (a file the test can look for in the running container) and writes a
new config, manifest and index. The result imports with ``ctr images import`` like any archive of
build.py.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

from tests.images.build import EPOCH, File, files_layer


def _read_json(tar: tarfile.TarFile, name: str) -> dict[str, object]:
    member = tar.extractfile(name)
    if member is None:
        raise ValueError(f"{name} is not a file in the archive")
    loaded = json.load(member)
    if not isinstance(loaded, dict):
        raise ValueError(f"{name} in the archive is not a JSON object")
    return loaded


def _blob_name(descriptor: object) -> str:
    assert isinstance(descriptor, dict)
    return "blobs/sha256/" + str(descriptor["digest"]).removeprefix("sha256:")


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), EPOCH, 0o644
    tar.addfile(info, io.BytesIO(data))


def _blob(tar: tarfile.TarFile, data: bytes) -> dict[str, object]:
    digest = hashlib.sha256(data).hexdigest()
    _add(tar, f"blobs/sha256/{digest}", data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def _dumps(obj: object) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def derive(src: Path, out: Path, *, name: str, files: list[File]) -> None:
    """Write ``out``: ``src``'s single image with ``files`` as one more layer, named ``name``."""
    with tarfile.open(src) as old:
        index = _read_json(old, "index.json")
        manifests = index["manifests"]
        assert isinstance(manifests, list) and manifests, f"{src}: index.json lists no manifest"
        manifest = _read_json(old, _blob_name(manifests[0]))
        config = _read_json(old, _blob_name(manifest["config"]))
        with tarfile.open(out, mode="w", format=tarfile.PAX_FORMAT) as new:
            layers = manifest["layers"]
            assert isinstance(layers, list)
            for layer in layers:  # the old layers, byte for byte
                member = old.getmember(_blob_name(layer))
                new.addfile(member, old.extractfile(member))
            extra = _blob(new, files_layer(files))
            rootfs = config["rootfs"]
            assert isinstance(rootfs, dict)
            config["rootfs"] = {**rootfs, "diff_ids": [*rootfs["diff_ids"], extra["digest"]]}
            config_desc = _blob(new, _dumps(config))
            layer_desc = {"mediaType": "application/vnd.oci.image.layer.v1.tar", **extra}
            new_manifest = {**manifest, "config": {**manifest["config"], **config_desc}}  # type: ignore[dict-item]
            new_manifest["layers"] = [*layers, layer_desc]
            manifest_desc = _blob(new, _dumps(new_manifest))
            entry = {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                **manifest_desc,
                "platform": {"architecture": "amd64", "os": "linux"},
                "annotations": {
                    "io.containerd.image.name": name,
                    "org.opencontainers.image.ref.name": name.rsplit(":", 1)[1],
                },
            }
            _add(new, "oci-layout", _dumps({"imageLayoutVersion": "1.0.0"}))
            _add(new, "index.json", _dumps({**index, "manifests": [entry]}))
