"""compiler.podindex: address parsing, the label index, address owners."""

from __future__ import annotations

import ipaddress
import random

import pytest

from compiler.model import LabelSelector
from compiler.podindex import PodIndex, addr_key, normalize
from compiler.selectors import matches
from tests.unit import clustergen
from tests.unit.test_plan import pod


def _reference(text: str) -> str | None:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("10.0.0.1", id="v4"),
        pytest.param("0.0.0.0", id="v4-zero"),
        pytest.param("255.255.255.255", id="v4-max"),
        pytest.param("010.0.0.1", id="v4-leading-zero"),
        pytest.param("256.1.1.1", id="v4-octet-too-big"),
        pytest.param("1.2.3", id="v4-three-octets"),
        pytest.param("1.2.3.4 ", id="v4-trailing-space"),
        pytest.param("\u0661.2.3.4", id="v4-non-ascii-digit"),
        pytest.param("+1.2.3.4", id="v4-sign"),
        pytest.param("FD00:0::1", id="v6-uppercase-uncompressed"),
        pytest.param("::ffff:10.0.0.1", id="v6-mapped"),
        pytest.param("fe80::1%eth0", id="v6-scoped"),
        pytest.param("not-an-ip", id="garbage"),
        pytest.param("", id="empty"),
    ],
)
def test_normalize_agrees_with_ipaddress(text: str) -> None:
    assert normalize(text) == _reference(text)
    if normalize(text) is not None and "%" not in text:
        parsed = ipaddress.ip_address(text)
        assert addr_key(normalize(text) or "") == (parsed.version, int(parsed))


@pytest.mark.parametrize("seed", [pytest.param(s, id=f"seed-{s}") for s in range(20)])
def test_index_selects_what_matches_selects(seed: int) -> None:
    rng = random.Random(seed)
    m = clustergen.random_model(seed, pods=30)
    index = PodIndex(m.pods)
    for _ in range(20):
        selector = LabelSelector.model_validate(clustergen.selector(rng, clustergen.LABELS))
        for ns in clustergen.NAMESPACES:
            expected = {
                p.key
                for p in m.pods
                if (p.metadata.namespace or "default") == ns
                and not p.spec.host_network
                and matches(selector, p.metadata.labels)
            }
            assert index.select(ns, selector) == expected


@pytest.mark.parametrize(
    ("holders", "owner"),
    [
        pytest.param([("x", "b", "Running"), ("x", "a", "Running")], "x/a", id="smaller-key-wins"),
        pytest.param([("x", "a", "Succeeded"), ("y", "z", "Running")], "y/z", id="live-beats-finished"),
        pytest.param([("x", "a", "Failed"), ("x", "b", "Succeeded")], "x/a", id="all-finished"),
    ],
)
def test_address_owner(holders: list[tuple[str, str, str]], owner: str) -> None:
    pods = [pod(name, "10.244.1.9", ns=ns, phase=phase) for ns, name, phase in holders]
    index = PodIndex(pods)
    assert index.owner == {"10.244.1.9": owner}
    index.remove(owner)
    remaining = sorted(k for k in (f"{ns}/{n}" for ns, n, _ in holders) if k != owner)
    assert index.owner == {"10.244.1.9": remaining[0]}


def test_host_network_pods_own_nothing_and_are_not_selected() -> None:
    host = pod("h", "192.168.0.10", host_network=True, labels={"app": "web"})
    index = PodIndex([host])
    assert index.owner == {} and index.select("x", LabelSelector()) == set()
