"""A malformed NetworkPolicy in the kernel: its bad rule matches nothing, every other rule and
policy still enforces, with real packets on the lab's nine pods (TCP, UDP, SCTP; IPv4 and IPv6).

The policies are built as the agent builds them (``model_validate`` of watch-event objects, not
the loader). Expectations are written out below from the policies' text (what each pod may be
reached by); the reference semantics must say the same, and so must the probes.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from compiler.cluster import ClusterModel
from compiler.model import NetworkPolicy
from compiler.plan import build_plan
from compiler.render_nft import render_nft
from compiler.semantics import connectivity
from tests.kernel.conftest import KernelLab
from tests.support.addressing import FAMILIES, Family
from tests.support.conformance import (
    LAB_ADDRESSES,
    NAMESPACES,
    NODE_NAME,
    PODS,
    container_port,
    make_namespace,
    make_node,
    make_pod,
)
from tests.support.policies import PORTS, PROBES, PROTOCOLS
from tests.support.probe import ProbeResult, ReachKey, render_comparison

pytestmark = pytest.mark.kernel


def from_watch(namespace: str, name: str, spec: dict[str, Any]) -> NetworkPolicy:
    obj = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}", "resourceVersion": "7"},
        "spec": spec,
    }
    return NetworkPolicy.model_validate(obj)


def pod_is(name: str) -> dict[str, Any]:
    return {"podSelector": {"matchLabels": {"pod": name}}}


POLICIES = (
    # Valid: x/a admits only x/b, on TCP 80.
    from_watch("x", "good", {**pod_is("a"), "ingress": [{"from": [pod_is("b")], "ports": [{"port": 80}]}]}),
    # y/a: rule 0 names CIDRs in a form the API server once accepted (octal or decimal?) that
    # would admit every pod if read as decimal; rule 1 admits namespace z on TCP 81.
    from_watch(
        "y",
        "legacy-cidr",
        {
            **pod_is("a"),
            "ingress": [
                {"from": [{"ipBlock": {"cidr": "010.244.0.0/16"}}, {"ipBlock": {"cidr": "10.0244.0.0/16"}}]},
                {
                    "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "z"}}}],
                    "ports": [{"port": 81}],
                },
            ],
        },
    ),
    # z/c egress: rule 0 has a port outside 1-65535 (read alone, its TCP 80 would open TCP 80 to
    # everyone); rule 1 allows TCP 80 to the c pods of every namespace.
    from_watch(
        "z",
        "bad-port",
        {
            **pod_is("c"),
            "policyTypes": ["Egress"],
            "egress": [
                {"ports": [{"protocol": "UDP", "port": 0}, {"protocol": "TCP", "port": 80}]},
                {
                    "to": [{"namespaceSelector": {}, "podSelector": pod_is("c")["podSelector"]}],
                    "ports": [{"port": 80}],
                },
            ],
        },
    ),
)


def expected_allowed(src: str, dst: str, protocol: str, port: int) -> bool:
    """The policies above, read by a person."""
    if src == "z/c" and not (dst.endswith("/c") and (protocol, port) == ("TCP", 80)):
        return False  # z/c may reach only the c pods, on TCP 80 (its rule 0 is malformed: nothing)
    if dst == "x/a":
        return (src, protocol, port) == ("x/b", "TCP", 80)
    if dst == "y/a":
        return src.startswith("z/") and (protocol, port) == ("TCP", 81)  # rule 0: nothing
    return True


def lab_model() -> ClusterModel:
    ports = [container_port(port, proto) for port in PORTS for proto in PROTOCOLS]
    pods = tuple(
        make_pod(key, address, labels={"pod": key.split("/")[1]}, ports=ports)
        for address, key in zip(LAB_ADDRESSES, PODS, strict=True)
    )
    namespaces = tuple(make_namespace(ns, {}) for ns in NAMESPACES)
    return ClusterModel(namespaces=namespaces, pods=pods, policies=POLICIES, nodes=(make_node(),))


async def _probe_both(lab: KernelLab) -> dict[Family, dict[ReachKey, ProbeResult]]:
    prober = lab.prober_for("defects", timeout=0.8, confirm_timeout=1.2)
    answers = await asyncio.gather(*(prober.areachability(None, PROBES, f) for f in FAMILIES))
    return dict(zip(FAMILIES, answers, strict=True))


def test_malformed_rules_match_nothing_and_everything_else_enforces(conformance_lab: KernelLab) -> None:
    model = lab_model()
    expected = {
        (s, d, proto, port): expected_allowed(s, d, proto, port)
        for s in PODS
        for d in PODS
        if s != d
        for proto, port in PROBES
    }
    for family in FAMILIES:
        assert connectivity(model, ports=PROBES, family=family) == expected, "the semantics disagree"
    plan = build_plan(model, node=NODE_NAME)
    notes = "\n".join(plan.notes)
    assert "NetworkPolicy y/legacy-cidr: spec.ingress[0].from[0].ipBlock.cidr" in notes
    assert "NetworkPolicy y/legacy-cidr: spec.ingress[0].from[1].ipBlock.cidr" in notes
    assert "NetworkPolicy z/bad-port: spec.egress[0].ports[0].port" in notes
    lab = conformance_lab.lab
    lab.load_nft(render_nft(plan))
    lab.reset_flows()
    measured = asyncio.run(_probe_both(conformance_lab))
    failures = []
    for family in FAMILIES:
        for proto, port in PROBES:
            want = {(s, d): ok for (s, d, p, n), ok in expected.items() if (p, n) == (proto, port)}
            have = {
                (s, d): r.reachable for (s, d, p, n), r in measured[family].items() if (p, n) == (proto, port)
            }
            if want != have:
                failures.append(
                    render_comparison(want, have, names=PODS, title=f"IPv{family} {proto}/{port}")
                )
    assert not failures, "\n\n".join(failures)
