"""The cluster tier's lab: one per test session, two nodes, started from the pinned binaries.

The lab is not optional here: when it cannot start, every test of the tier fails with the
reason (and the tail of the failing component's log), it is never skipped.

    STOCKADE_LAB_ATTACH=NAME        use a lab already up (`python -m tests.cluster.lab up --name NAME`)
                                    instead of starting one; it is left running afterwards.
    STOCKADE_LAB_PROXY_MODE=iptables  kube-proxy mode (default nftables).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.cluster.lab import Lab, LabError
from tests.cluster.lab.report import leftovers


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
