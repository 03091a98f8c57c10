"""The reference semantics against the upstream NetworkPolicy e2e truth tables, both IP families.

Every (case, step, family) of tests/data/upstream-netpol.yaml: `compiler.semantics.connectivity`
must block exactly the pairs the case expects blocked on every probed (protocol, port).
"""

from __future__ import annotations

import pytest

from compiler.semantics import connectivity
from tests.support.conformance import PODS, Scenario, load_cases, scenarios
from tests.support.probe import render_comparison

SCENARIOS = scenarios()


def test_the_data_covers_every_case() -> None:
    cases = load_cases()
    assert [c.id for c in cases] == list(range(1, 49))
    assert len(SCENARIOS) == 2 * sum(len(c.steps) for c in cases)


@pytest.mark.parametrize("scenario", [pytest.param(s, id=s.id) for s in SCENARIOS])
def test_semantics_match_upstream(scenario: Scenario) -> None:
    verdicts = connectivity(scenario.model, ports=scenario.probes, family=scenario.family)
    assert set(verdicts) == set(scenario.expected)
    if verdicts != scenario.expected:
        report = [scenario.id, scenario.case.name]
        for probe in scenario.probes:
            measured = {(s, d): ok for (s, d, p, n), ok in verdicts.items() if (p, n) == probe}
            report.append(
                render_comparison(
                    scenario.expected_matrix(probe), measured, names=PODS, title=f"{probe[0]}/{probe[1]}"
                )
            )
        pytest.fail("\n\n".join(report))
