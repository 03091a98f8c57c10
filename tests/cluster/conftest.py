"""The cluster tier's lab: one per test session, two nodes, started from the pinned binaries, with
stockade-cni and the Stockade release installed (`lab`, also known as `release_lab`).

The lab is not optional here: when it cannot start, every test of the tier fails with the
reason (and the tail of the failing component's log), it is never skipped.

    STOCKADE_LAB_ATTACH=NAME        use a lab already up (`python -m tests.cluster.lab up --name NAME`)
                                    instead of starting one; it is left running afterwards.
    STOCKADE_LAB_PROXY_MODE=iptables  kube-proxy mode (default nftables).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import pytest

from tests.cluster.chart import REPO
from tests.cluster.lab import Lab, LabError
from tests.cluster.lab.config import ProxyMode
from tests.cluster.lab.report import leftovers
from tests.cluster.release import install_default


def lab_name() -> str:
    # One lab per pytest-xdist worker: names (and so namespaces, links, subnets) never clash.
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    return "pytest" + worker.removeprefix("gw")


def stockade_image() -> None:
    """The chart's image from this checkout (cached: relinked in a second when built before)."""
    built = subprocess.run(
        ["bash", str(REPO / "tests/images/build.sh"), "stockade"], capture_output=True, text=True, check=False
    )
    if built.returncode != 0:
        pytest.fail(f"tests/images/build.sh stockade: {built.stderr[-2000:]}", pytrace=False)


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    """The session's lab, as `python -m tests.cluster.lab up` makes it by default: two nodes whose
    CNI is stockade-cni, the Stockade release installed (agents, CNI, VXLAN overlay: the only path
    between the nodes' pods)."""
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
    stockade_image()
    proxy_mode: ProxyMode = "iptables" if mode == "iptables" else "nftables"
    the_lab = Lab.create(name=lab_name(), nodes=2, proxy_mode=proxy_mode)
    for running in running_lab(the_lab):
        try:
            install_default(running)
        except LabError as exc:
            pytest.fail(f"helm install into {running.cfg.name}: {exc}", pytrace=False)
        yield running


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
def release_lab(lab: Lab) -> Lab:
    """Stockade as users run it: nodes Ready through stockade-cni, the Helm release installed
    (agents, CNI, overlay). The session's lab is that lab; tests that need enforcement in a
    running cluster share it, tests that install, upgrade or uninstall the chart make their own."""
    return lab
