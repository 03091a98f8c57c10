"""controller.agent.seams: the applier's answers read as "in the kernel" or "retry in N s", and the
Applier offers the readings the metrics take."""

from __future__ import annotations

from typing import Any

import pytest

from controller.agent.seams import ApplierReadings, retry_delay
from controller.applier import Applier, ApplyResult
from controller.errors import KernelRejected


@pytest.mark.parametrize(
    ("outcome", "expected"),
    [
        (ApplyResult("diff", 3, 0.01), None),
        (ApplyResult("unchanged", 0, 0.0), None),
        (ApplyResult("adopted", 9, 0.02), None),
        (ApplyResult("full", 9, 0.02, fell_back=True), None),
        (ApplyResult("deferred", 0, 0.0, retry_in=2.5), 2.5),
        (KernelRejected("diff", "Error: No such file or directory", retry_in=4.0), 4.0),
        (KernelRejected("diff", "Error: ..."), 1.0),
        (RuntimeError("a bug"), 1.0),
        (None, None),
    ],
    ids=[
        "diff",
        "unchanged",
        "adopted",
        "full-after-fallback",
        "deferred",
        "rejected-with-retry",
        "rejected-without-retry",
        "other-error",
        "a-double-returning-none",
    ],
)
def test_retry_delay(outcome: object, expected: float | None) -> None:
    assert retry_delay(outcome) == expected


class _NoTable:
    """A kernel without table inet stockade."""

    def run(self, doc: dict[str, Any], *, what: str) -> None:
        raise AssertionError("not called")

    def list_table(self) -> dict[str, Any] | None:
        return None


def test_the_applier_offers_the_readings() -> None:
    applier = Applier(nft=_NoTable())
    assert isinstance(applier, ApplierReadings)
    assert applier.drift_repairs_total == 0
    assert applier.rule_counters() == {}
