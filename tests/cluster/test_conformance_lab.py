"""The upstream NetworkPolicy table end to end, as upstream runs it: real API objects through kubectl
on the real-node lab with Stockade installed by Helm (`release_lab`), probed with real packets.

For every (case, step) of tests/data/upstream-netpol.yaml, in file order, on one set of pods
(`tests.cluster.conformancelab`: nine pods over both nodes, a Service per pod): make the cluster hold
exactly the step's policies and labels (kubectl apply / delete / patch of what differs), wait until
every node's agent has programmed those changes, then probe every ordered pair on every probed
(protocol, port) to the pod's address and to its Service's ClusterIP, IPv4 and IPv6, until all
equal the table or `ENFORCE_WITHIN` passes. Symbolic ipBlock CIDRs are resolved from the pods' real
addresses; a step that has them is applied once per family (its IPv4 and its IPv6 policies), as
upstream runs the suite once per IP family.

SCTP: this host's kernel has no SCTP sockets; the pods' agents answer INIT with INIT-ACK over raw
sockets (`tests.support.sctp`), and nftables, conntrack and kube-proxy's DNAT handle SCTP packets,
so SCTP steps are probed with real packets like the others. The probe client in the destination
pod's namespace also sees each INIT and answers ABORT (it serves no port), so an SCTP probe may
come back ``refused``: either answer proves the INIT reached the pod, and for SCTP only it is not
counted as a harness fault.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from tests.cluster.conformancelab import (
    ENFORCE_WITHIN,
    TARGETS,
    ConformanceLab,
    Measured,
    node_of,
)
from tests.cluster.lab import Lab
from tests.support.addressing import FAMILIES, Family
from tests.support.conformance import (
    NAMESPACES,
    PODS,
    Case,
    Step,
    expected_reachability,
    has_symbolic_cidr,
    load_cases,
    namespace_labels,
    pod_labels,
    resolve_policy,
)
from tests.support.conformance_report import render_suspicious, render_tables, suspicious, wrong
from tests.support.probe import ProbeResult

pytestmark = pytest.mark.cluster

CASES = load_cases()
STEPS = [(case, step) for case in CASES for step in case.steps]


@dataclass
class Tally:
    steps: int = 0
    passed: int = 0
    rounds: int = 0
    probes: int = 0
    programmed: list[float] = field(default_factory=list)  # last kubectl call -> every node programmed
    converged: list[float] = field(default_factory=list)  # last kubectl call -> every probe as expected
    # Seconds per phase of a step: kubectl calls, the programming barrier, probe rounds.
    phases: dict[str, list[float]] = field(
        default_factory=lambda: {"kubectl": [], "barrier": [], "probing": []}
    )
    outcomes: Counter[str] = field(default_factory=Counter)  # "<protocol> <outcome>" of judging rounds


@pytest.fixture(scope="module")
def tally() -> Iterator[Tally]:
    started = time.monotonic()
    t = Tally()
    yield t
    total = time.monotonic() - started

    def p(values: list[float], q: float) -> str:
        s = sorted(values)
        return f"{s[min(len(s) - 1, int(q * len(s)))] * 1000:.0f}ms" if s else "-"

    print(
        f"\nconformance on the release lab: {t.passed}/{t.steps} steps equal the table "
        f"({len(CASES)} cases), {t.rounds} probe rounds, {t.probes} probes, {total:.0f}s for the steps; "
        f"programmed p50 {p(t.programmed, 0.5)} max {p(t.programmed, 1.0)}, "
        f"converged p50 {p(t.converged, 0.5)} max {p(t.converged, 1.0)}; seconds spent "
        + ", ".join(f"{k} {sum(v):.0f}" for k, v in t.phases.items())
        + "; outcomes "
        + ", ".join(f"{k}: {n}" for k, n in sorted(t.outcomes.items()))
    )


@pytest.fixture(scope="module")
def conformance(release_lab: Lab) -> Iterator[ConformanceLab]:
    for case, step in STEPS:
        for key in PODS:
            # Each pod's Service selects pod=<name>, as upstream's do: a step must keep that label.
            if pod_labels(step, key).get("pod") != key.split("/")[1]:
                pytest.fail(f"case {case.id} step {step.index}: {key} loses pod={key.split('/')[1]}")
    started = time.monotonic()
    clab = ConformanceLab(release_lab)
    try:
        clab.start()
        print(f"\nconformance workload ready in {time.monotonic() - started:.1f}s")
        yield clab
    finally:
        stopping = time.monotonic()
        clab.stop()
        print(f"conformance workload gone (clients, namespaces) in {time.monotonic() - stopping:.1f}s")


def _families(step: Step) -> list[tuple[Family, ...]]:
    """Both families at once, or one at a time when the step's policies name pod addresses."""
    if any(has_symbolic_cidr(p) for p in step.policies):
        return [(f,) for f in FAMILIES]
    return [tuple(FAMILIES)]


def _faults(measured: Measured) -> list[ProbeResult]:
    """Outcomes that say the harness is off; SCTP's ABORT from the probe client is not one."""
    results = [r for by_key in measured.values() for r in by_key.values()]
    return [r for r in suspicious(results) if not (r.outcome == "refused" and r.request.protocol == "SCTP")]


def _report(case: Case, step: Step, clab: ConformanceLab, measured: Measured, waited: float) -> str:
    expected = expected_reachability(step)
    lines = [
        f"case {case.id} step {step.index}: {case.name}: not equal to the table after {waited:.1f}s",
        "placement: " + ", ".join(f"{k}@{node_of(k)}" for k in PODS),
    ]
    for (target, family), results in sorted(measured.items()):
        if wrong(expected, results):
            title = f"IPv{family} to {'pod IPs' if target == 'pod' else 'Service ClusterIPs'}"
            lines.append(render_tables(expected, results, probes=sorted(step.blocked), title=title))
        else:
            lines.append(f"IPv{family} to {target}: equal")
    faults = _faults(measured)
    if faults:
        lines.append(render_suspicious(faults))
    lines.append("policies in force: " + ", ".join(f"{ns}/{name}" for ns, name in sorted(clab.policies)))
    return "\n\n".join(lines)


@pytest.mark.parametrize(
    ("case", "step"), [pytest.param(c, s, id=f"case{c.id}-{c.slug}-step{s.index}") for c, s in STEPS]
)
def test_step_equals_the_table(conformance: ConformanceLab, tally: Tally, case: Case, step: Step) -> None:
    tally.steps += 1
    expected = expected_reachability(step)
    for families in _families(step):
        before = conformance.programmed()
        started = time.monotonic()
        changes = conformance.converge(
            policies=[resolve_policy(p, families[0], conformance.addresses) for p in step.policies],
            pod_labels={key: pod_labels(step, key) for key in PODS},
            namespace_labels={ns: namespace_labels(step, ns) for ns in NAMESPACES},
        )
        changed_at = time.monotonic()
        tally.phases["kubectl"].append(changed_at - started)
        if changes.total:
            tally.programmed.append(
                conformance.wait_programmed(before, changes.total, timeout=ENFORCE_WITHIN)
            )
        probing = time.monotonic()
        tally.phases["barrier"].append(probing - changed_at)
        while True:
            measured = conformance.measure(expected, families)
            tally.rounds += 1
            tally.probes += sum(len(r) for r in measured.values())
            waited = time.monotonic() - changed_at
            equal = all(not wrong(expected, r) for r in measured.values())
            if equal and not _faults(measured):
                break
            if waited > ENFORCE_WITHIN:
                pytest.fail(_report(case, step, conformance, measured, waited), pytrace=False)
        tally.converged.append(waited)
        tally.phases["probing"].append(time.monotonic() - probing)
        tally.outcomes.update(
            f"{r.request.protocol} {r.outcome}" for results in measured.values() for r in results.values()
        )
        assert len(measured) == len(TARGETS) * len(families)
    tally.passed += 1
