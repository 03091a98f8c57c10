"""What real nodes need from outside the lab: the node binaries and the locally built images.

The binaries (kubelet, containerd, containerd-shim-runc-v2, ctr) come from `tests/tools/build.sh`
like the control plane's; runc is Debian's. Images cannot be pulled here: they are OCI archives
built by `tests/images/` and imported into each node's containerd (`ctr images import`), and pods
use them with `imagePullPolicy: Never`/`IfNotPresent`.

    STOCKADE_NODE_BIN    directory with the node binaries (default: the tools bin dir)
    STOCKADE_IMAGES_DIR  directory of the OCI archives (<name>.tar) to import into every node
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .config import LAB_IMAGES
from .preflight import LabError

MANIFESTS = Path(__file__).resolve().parent / "manifests"
DEFAULT_IMAGES_DIR = Path("/var/cache/stockade/images")
NODE_BINARIES = ("kubelet", "containerd", "containerd-shim-runc-v2", "ctr")

# Names the images are imported under (tests/images builds them with these names).
PAUSE_IMAGE = "registry.k8s.io/pause:3.10.2"  # containerd 2.4.2 default, the e2e suite's pause
CNI_INSTALLER_IMAGE = "lab.stockade.io/cni-installer:v1"
TEST_POD_IMAGE = "lab.stockade.io/testpod:v1"


@dataclass(frozen=True)
class NodeTools:
    bin_dir: Path
    runc: str
    images: tuple[Path, ...]
    pause_image: str = PAUSE_IMAGE

    @classmethod
    def find(cls, tools_bin: Path, images: Sequence[str] = LAB_IMAGES) -> NodeTools:
        bin_dir = Path(os.environ.get("STOCKADE_NODE_BIN") or tools_bin)
        missing = [b for b in NODE_BINARIES if not (bin_dir / b).is_file()]
        if missing:
            raise LabError(
                f"real nodes need {', '.join(missing)} in {bin_dir} "
                "(tests/tools/build.sh builds them; STOCKADE_NODE_BIN points elsewhere)"
            )
        runc = shutil.which("runc") or ""
        if not runc:
            raise LabError("real nodes need runc (apt-get install runc)")
        images_dir = Path(os.environ.get("STOCKADE_IMAGES_DIR") or DEFAULT_IMAGES_DIR)
        missing = [name for name in images if not (images_dir / f"{name}.tar").is_file()]
        if missing:
            raise LabError(
                f"the lab needs the images {', '.join(missing)} in {images_dir} "
                f"(tests/images/build.sh {' '.join(missing)} builds them)"
            )
        return cls(bin_dir=bin_dir, runc=runc, images=tuple(images_dir / f"{name}.tar" for name in images))

    def ctr(self, sock: Path, *args: str) -> subprocess.CompletedProcess[str]:
        argv = [str(self.bin_dir / "ctr"), f"--address={sock}", "--namespace=k8s.io", *args]
        proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120)
        if proc.returncode != 0:
            raise LabError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()[-600:]}")
        return proc

    def import_images(self, sock: Path) -> None:
        """Every image archive into this node's containerd (k8s.io namespace, where the CRI looks)."""
        for image in self.images:
            self.ctr(sock, "images", "import", "--no-unpack=false", str(image))


def cni_installer_manifest(image: str = CNI_INSTALLER_IMAGE) -> str:
    text = (MANIFESTS / "cni-installer.yaml").read_text()
    return text.replace("image: IMAGE", f"image: {image}")
