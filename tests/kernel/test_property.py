"""Random policies over the lab's nine pods: what the kernel enforces equals the reference semantics.

Each example compiles a random model (`tests.support.policies`), loads it into the node, and
probes all 72 ordered pairs on TCP, UDP and SCTP ports 80 and 81 in IPv4 and IPv6 at once.
Examples are few (each costs a ruleset load and 864 probes); CI (``CI`` set) runs a fixed,
derandomized sequence so a red run reproduces. ``STOCKADE_PROPERTY_EXAMPLES`` changes the
count; shrinking is off unless ``STOCKADE_PROPERTY_SHRINK=1`` (each shrink step costs seconds).
"""

from __future__ import annotations

import asyncio
import os

import pytest
import yaml
from hypothesis import HealthCheck, Phase, given, settings

from compiler.cluster import ClusterModel
from compiler.plan import build_plan
from compiler.render_nft import render_nft
from compiler.semantics import connectivity
from tests.kernel.conftest import KernelLab
from tests.support.addressing import FAMILIES, Family
from tests.support.conformance import NODE_NAME, PODS
from tests.support.netlab import NftError
from tests.support.policies import PROBES, models
from tests.support.probe import Prober, ProbeResult, ReachKey, render_comparison

pytestmark = pytest.mark.kernel

_PHASES = [Phase.explicit, Phase.reuse, Phase.generate]
if os.environ.get("STOCKADE_PROPERTY_SHRINK") == "1":
    _PHASES.append(Phase.shrink)


def describe(model: ClusterModel) -> str:
    """The model as YAML a person can paste into `stockade explain` to reproduce."""
    docs = [
        {
            "pod": p.key,
            "labels": p.metadata.labels,
            "ports": [cp.model_dump(by_alias=True) for cp in p.container_ports()],
        }
        for p in model.pods
    ]
    docs += [{"namespace": ns.metadata.name, "labels": ns.metadata.labels} for ns in model.namespaces]
    docs += [p.model_dump(by_alias=True, exclude_defaults=True) for p in model.policies]
    return yaml.safe_dump_all(docs, sort_keys=False)


async def _probe_both(prober: Prober) -> dict[Family, dict[ReachKey, ProbeResult]]:
    answers = await asyncio.gather(*(prober.areachability(None, PROBES, f) for f in FAMILIES))
    return dict(zip(FAMILIES, answers, strict=True))


@settings(
    max_examples=int(os.environ.get("STOCKADE_PROPERTY_EXAMPLES", "25")),
    deadline=None,
    derandomize=bool(os.environ.get("CI")),
    phases=_PHASES,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(model=models())
def test_kernel_enforces_the_reference_semantics(conformance_lab: KernelLab, model: ClusterModel) -> None:
    lab = conformance_lab.lab
    # ~900 probes at once queue up in the agents: a first round as tight as the conformance
    # tier's would only send most of them to the confirmation round.
    prober = conformance_lab.prober_for("property", timeout=0.8, confirm_timeout=1.2)
    ruleset = render_nft(build_plan(model, node=NODE_NAME))
    try:
        lab.load_nft(ruleset)
    except NftError as exc:
        pytest.fail(f"the compiled ruleset does not load:\n{exc}\n\nmodel:\n{describe(model)}\n\n{ruleset}")
    lab.reset_flows()
    measured = asyncio.run(_probe_both(prober))
    failures = []
    for family in FAMILIES:
        expected = connectivity(model, ports=PROBES, family=family)
        got = {k: r.reachable for k, r in measured[family].items()}
        if got == expected:
            continue
        for proto, port in PROBES:
            want = {(s, d): ok for (s, d, p, n), ok in expected.items() if (p, n) == (proto, port)}
            have = {(s, d): ok for (s, d, p, n), ok in got.items() if (p, n) == (proto, port)}
            if want != have:
                failures.append(
                    render_comparison(want, have, names=PODS, title=f"IPv{family} {proto}/{port}")
                )
    if failures:
        pytest.fail("\n\n".join([*failures, f"model:\n{describe(model)}", f"ruleset:\n{ruleset}"]))
