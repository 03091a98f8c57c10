"""The cluster tier's lab: one per test session, two nodes, started from the pinned binaries.

The lab is not optional here: when it cannot start, every test of the tier fails with the
reason (and the tail of the failing component's log), it is never skipped.

    STOCKADE_LAB_ATTACH=NAME        use a lab already up (`python -m tests.cluster.lab up --name NAME`)
                                    instead of starting one; it is left running afterwards.
    STOCKADE_LAB_PROXY_MODE=iptables  kube-proxy mode (default nftables).
    STOCKADE_RELEASE_LAB_ATTACH=NAME  the same for `release_lab`: a lab up with `--cni stockade`
                                    and the chart installed (`tests.cluster.release.install`).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import pytest

from tests.cluster.chart import REPO
from tests.cluster.lab import Lab, LabError
from tests.cluster.lab.config import STOCKADE_CNI_IMAGES
from tests.cluster.lab.report import leftovers
from tests.cluster.release import install, write_values


def lab_name() -> str:
    # One lab per pytest-xdist worker: names (and so namespaces, links, subnets) never clash.
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    return "pytest" + worker.removeprefix("gw")


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    attach = os.environ.get("STOCKADE_LAB_ATTACH")
    if attach:
        try:
            yield Lab.load(attach)
        except LabError as exc:
            pytest.fail(f"STOCKADE_LAB_ATTACH={attach}: {exc}", pytrace=False)
        return
    mode = os.environ.get("STOCKADE_LAB_PROXY_MODE", "nftables")
    if mode not in ("nftables", "iptables"):
        pytest.fail(f"STOCKADE_LAB_PROXY_MODE={mode!r}: want nftables or iptables", pytrace=False)
    yield from running_lab(
        Lab.create(name=lab_name(), nodes=2, proxy_mode="iptables" if mode == "iptables" else "nftables")
    )


def running_lab(the_lab: Lab) -> Iterator[Lab]:
    """Start the lab (a failure fails the test with the reason), yield it, check `down` left nothing."""
    try:
        the_lab.up()
    except LabError as exc:
        pytest.fail(f"the lab {the_lab.cfg.name} could not start: {exc}", pytrace=False)
    yield the_lab
    the_lab.down()
    left = leftovers(the_lab.cfg)
    assert not left, f"lab {the_lab.cfg.name} left things behind after down: {left}"


@pytest.fixture(scope="session")
def release_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """A second session lab with Stockade as users run it: nodes Ready through stockade-cni, the
    Helm release installed (agents, CNI, overlay). Tests that need enforcement in a running
    cluster share it; tests that install, upgrade or uninstall the chart make their own."""
    attach = os.environ.get("STOCKADE_RELEASE_LAB_ATTACH")
    if attach:
        try:
            yield Lab.load(attach)
        except LabError as exc:
            pytest.fail(f"STOCKADE_RELEASE_LAB_ATTACH={attach}: {exc}", pytrace=False)
        return
    built = subprocess.run(
        ["bash", str(REPO / "tests/images/build.sh"), "stockade"], capture_output=True, text=True, check=False
    )
    if built.returncode != 0:
        pytest.fail(f"tests/images/build.sh stockade: {built.stderr[-2000:]}", pytrace=False)
    name = "rel" + os.environ.get("PYTEST_XDIST_WORKER", "").removeprefix("gw")
    the_lab = Lab.create(name=name, nodes=2, images=STOCKADE_CNI_IMAGES, cni="stockade")
    for running in running_lab(the_lab):
        # A drift check every 10 s instead of the chart's default 30 s: the drift tests wait for one.
        extra = {"agent": {"checkIntervalSeconds": 10}}
        values = write_values(running, str(tmp_path_factory.mktemp("release") / "values.yaml"), extra)
        try:
            install(running, values)
        except LabError as exc:
            pytest.fail(f"helm install into {name}: {exc}", pytrace=False)
        yield running
