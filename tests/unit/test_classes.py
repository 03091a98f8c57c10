"""The class-based connectivity against the per-pair reference (compiler.semantics.connectivity)."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compiler.classes import changed_pairs, class_connectivity
from compiler.cluster import ClusterModel
from compiler.loader import WORKLOAD_ANNOTATION
from compiler.matching import Address, parse_ip
from compiler.matrix import Probe, build_matrix
from compiler.model import Pod, Protocol
from compiler.semantics import Family, Peer, connectivity, evaluate
from tests.unit.clustergen import random_change, random_model
from tests.unit.test_semantics import _models

PROBES: list[tuple[Protocol, int]] = [
    ("TCP", 80),
    ("TCP", 81),
    ("UDP", 81),
    ("UDP", 53),
    ("TCP", 8080),
    ("SCTP", 5000),
]
# Addresses no pod or node of the random models holds, inside and outside their ipBlocks.
ADDRESSES: dict[Family, tuple[str, ...]] = {
    4: ("10.0.0.200", "10.9.9.9", "172.16.0.1", "8.8.8.8"),
    6: ("fd00::ffff", "fd09::9", "2001:db8::1"),
}


def _replicated(model: ClusterModel, copies: list[int]) -> ClusterModel:
    """``model`` with further pods equal to some of its pods but for name and address: the same
    class, so classes with several members (replicas) are drawn often."""
    extra: list[Pod] = []
    for n, i in enumerate(copies):
        pod = model.pods[i % len(model.pods)]
        ips = [ip.replace("10.0.0.", "10.0.1.").replace("fd00::", "fd01::") for ip in pod.ips()]
        doc = pod.model_dump(by_alias=True, exclude_none=True)
        doc["metadata"]["name"] = f"{pod.metadata.name}-r{n}"
        doc["status"] = {
            **doc["status"],
            "podIP": ips[0] if ips else None,
            "podIPs": [{"ip": ip} for ip in ips],
        }
        extra.append(Pod.model_validate(doc))
    return ClusterModel(model.namespaces, (*model.pods, *extra), model.policies, model.nodes)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    model=_models(),
    copies=st.lists(st.integers(0, 4), max_size=4),
    family=st.sampled_from([4, 6]),
)
def test_class_connectivity_equals_pair_connectivity(
    model: ClusterModel, copies: list[int], family: Family
) -> None:
    model = _replicated(model, copies)
    expected = connectivity(model, ports=PROBES, family=family)
    assert class_connectivity(model, ports=PROBES, family=family).pairs() == expected


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 10**6), family=st.sampled_from([4, 6]))
def test_class_connectivity_equals_pair_connectivity_on_generated_clusters(seed: int, family: Family) -> None:
    # Host-network pods, a finished pod whose address a live pod reuses, SCTP, endPort ranges.
    model = random_model(seed, pods=14, policies=6)
    expected = connectivity(model, ports=PROBES, family=family)
    assert class_connectivity(model, ports=PROBES, family=family).pairs() == expected


def _addresses(family: Family) -> list[Address]:
    return [a for a in map(parse_ip, ADDRESSES[family]) if a is not None]


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 10**6), family=st.sampled_from([4, 6]))
def test_changed_pairs_are_the_pairs_whose_verdict_changed(seed: int, family: Family) -> None:
    old = random_model(seed, pods=10, policies=4)
    _, _, moved = random_change(random.Random(seed), old)
    new = ClusterModel(moved.namespaces, moved.pods, random_model(seed + 1, pods=10).policies, moved.nodes)
    keys = sorted({p.key for p in old.pods} & {p.key for p in new.pods})
    addresses = _addresses(family)
    ends: list[Peer] = [Peer(*k.split("/")) for k in keys] + [Peer(ip=str(a)) for a in addresses]
    names: list[str | int] = [*keys, *range(len(addresses))]
    expected = set()
    for s, src in enumerate(ends):
        for d, dst in enumerate(ends):
            if s == d:
                continue
            for protocol, port in PROBES:
                was, now = (
                    evaluate(m, src=src, dst=dst, protocol=protocol, port=port, family=family).allowed
                    for m in (old, new)
                )
                if was != now:
                    expected.add((names[s], names[d], (protocol, port)))
    found = [
        (src, dst, probe)
        for pairs, probe in changed_pairs(
            old, new, keys=keys, replicas=set(), probes=PROBES, family=family, addresses=addresses
        )
        for src, dst in pairs
    ]
    assert len(found) == len(set(found))
    assert set(found) == expected


@pytest.mark.parametrize(
    ("replicas", "expected"),
    [
        pytest.param(set(), set(), id="plain-pod-never-with-itself"),
        pytest.param({"x/p"}, {("x/p", "x/p", ("TCP", 80))}, id="template-pod-replica-to-replica"),
    ],
)
def test_changed_pairs_pair_a_pod_with_itself_only_as_replicas(
    replicas: set[str], expected: set[tuple[str, str, tuple[Protocol, int]]]
) -> None:
    pod = Pod.model_validate({"metadata": {"name": "p", "namespace": "x", "labels": {"app": "a"}}})
    old = ClusterModel(pods=(pod,))
    deny = {"metadata": {"name": "deny", "namespace": "x"}, "spec": {"podSelector": {}}}
    new = ClusterModel(pods=(pod,), policies=(random_model(0).policies[0].model_validate(deny),))
    found = changed_pairs(old, new, keys=["x/p"], replicas=replicas, probes=[("TCP", 80)], family=4)
    assert {(src, dst, probe) for pairs, probe in found for src, dst in pairs} == expected


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 10**6), templates=st.integers(0, 2))
def test_matrix_counts_equal_the_sum_of_its_cells(seed: int, templates: int) -> None:
    model = random_model(seed, pods=8, policies=4)
    extra = [
        Pod.model_validate(
            {
                "metadata": {
                    "name": f"deploy{i}",
                    "namespace": "x",
                    "labels": {"app": "web"},
                    "annotations": {WORKLOAD_ANNOTATION: f"Deployment/deploy{i}"},
                }
            }
        )
        for i in range(templates)
    ]
    model = ClusterModel(model.namespaces, (*model.pods, *extra), model.policies, model.nodes)
    matrix = build_matrix(model, probes=[Probe("TCP", 80), Probe("UDP", 53)])
    cells = [matrix.cell(src, dst) for src in matrix.names() for dst in matrix.names()]
    flat = [v for cell in cells if cell is not None for v in cell]
    assert matrix.counts() == (sum(flat), len(flat))
