"""Import the lab's image archives into a node's containerd, where the CRI looks (namespace k8s.io).

Usage: `importer.import_all(ctr=bin_dir / "ctr", address=sock)`.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

DEFAULT_DIR = Path("/var/cache/stockade/images")


class ImportError_(Exception):
    """`ctr images import` failed; the message carries ctr's stderr."""


def archives(images_dir: Path | None = None) -> list[Path]:
    """The current archive of every image (`<name>.tar` links into the keyed store)."""
    d = images_dir or Path(os.environ.get("STOCKADE_IMAGES_DIR") or DEFAULT_DIR)
    return sorted(d.glob("*.tar"))


def import_all(*, ctr: Path | str, address: Path | str, images_dir: Path | None = None) -> list[Path]:
    found = archives(images_dir)
    if not found:
        raise ImportError_(f"no image archives in {images_dir or DEFAULT_DIR} (run tests/images/build.sh)")
    for archive in found:
        argv = [str(ctr), f"--address={address}", "--namespace=k8s.io", "images", "import", str(archive)]
        proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=300)
        if proc.returncode != 0:
            raise ImportError_(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()[-600:]}")
    return found
