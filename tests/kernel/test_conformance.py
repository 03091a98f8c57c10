"""The upstream NetworkPolicy e2e cases, compiled and enforced by the kernel, probed with real packets.

For every (case, step, family) of tests/data/upstream-netpol.yaml: compile the step's model for
node-1, load the ruleset into the lab's node netns (replacing the previous one), forget every
flow (conntrack, neighbours), probe every ordered pair of the nine pods on each probed
(protocol, port), and require exactly the expected blocked set. One lab serves every case: the
pods' addresses never change, only the model's labels and policies do.
"""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from compiler.model import Protocol
from compiler.plan import build_plan
from compiler.render_nft import render_nft
from compiler.semantics import Peer, evaluate
from tests.kernel.conftest import KernelLab
from tests.support.conformance import NODE_NAME, Scenario, scenarios
from tests.support.conformance_report import render_suspicious, render_tables, suspicious, wrong
from tests.support.netlab import NftError
from tests.support.probe import ProbeResult, ReachKey

pytestmark = pytest.mark.kernel

SCENARIOS = scenarios()


def _numbered(text: str) -> str:
    return "\n".join(f"{i:4} {line}" for i, line in enumerate(text.splitlines(), start=1))


def _explain(scenario: Scenario, src: str, dst: str, protocol: Protocol, port: int) -> str:
    s_ns, s_pod = src.split("/")
    d_ns, d_pod = dst.split("/")
    verdict = evaluate(
        scenario.model,
        src=Peer(namespace=s_ns, pod=s_pod),
        dst=Peer(namespace=d_ns, pod=d_pod),
        protocol=protocol,
        port=port,
        family=scenario.family,
    )
    return verdict.explain()


def report(scenario: Scenario, results: Mapping[ReachKey, ProbeResult], ruleset: str) -> str:
    lines = [
        f"{scenario.id}: {scenario.case.name} (IPv{scenario.family})",
        render_tables(scenario.expected, results, probes=scenario.probes),
    ]
    for s, d, p, n in wrong(scenario.expected, results)[:4]:
        lines.append(f"reference semantics for {s} -> {d} {p}/{n}:\n{_explain(scenario, s, d, p, n)}")
    odd = suspicious(results.values())
    if odd:
        lines.append(render_suspicious(odd))
    lines.append(f"ruleset loaded:\n{_numbered(ruleset)}")
    return "\n\n".join(lines)


@pytest.mark.parametrize("scenario", [pytest.param(s, id=s.id) for s in SCENARIOS])
def test_conformance(scenario: Scenario, conformance_lab: KernelLab) -> None:
    lab, prober = conformance_lab.lab, conformance_lab.prober
    ruleset = render_nft(build_plan(scenario.model, node=NODE_NAME))
    try:
        lab.load_nft(ruleset)
    except NftError as exc:
        pytest.fail(f"{scenario.id}: the compiled ruleset does not load:\n{exc}\n\n{_numbered(ruleset)}")
    lab.reset_flows()
    results = prober.reachability(None, scenario.probes, scenario.family)
    measured = {k: r.reachable for k, r in results.items()}
    assert set(measured) == set(scenario.expected)
    if measured != scenario.expected or suspicious(results.values()):
        pytest.fail(report(scenario, results, ruleset))
