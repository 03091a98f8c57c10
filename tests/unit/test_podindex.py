"""compiler.podindex: address parsing, the label index, address owners."""

from __future__ import annotations

import ipaddress
import random
from typing import Any

import pytest

from compiler.model import LabelSelector, Pod
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
                p.uid
                for p in m.pods
                if (p.metadata.namespace or "default") == ns
                and not p.spec.host_network
                and matches(selector, p.metadata.labels)
            }
            assert index.select(ns, selector) == expected


@pytest.mark.parametrize("seed", [pytest.param(s, id=f"seed-{s}") for s in range(10)])
def test_index_still_selects_what_matches_selects_after_removals_and_relabels(seed: int) -> None:
    """Removing the last pod with a label (or a key) forgets that label: Exists, DoesNotExist and
    NotIn still agree with ``matches`` over the pods left."""
    rng = random.Random(seed)
    m = clustergen.random_model(seed, pods=30)
    index = PodIndex(m.pods)
    live = {p.uid: p for p in m.pods}
    for p in rng.sample(m.pods, k=len(m.pods) * 2 // 3):
        index.remove(p.uid)
        del live[p.uid]
    for p in rng.sample(list(live.values()), k=len(live) // 2):  # relabelled: an update in place
        labels = {k: v for k, v in p.metadata.labels.items() if rng.random() < 0.5}
        moved = p.model_copy(update={"metadata": p.metadata.model_copy(update={"labels": labels})})
        index.add(moved)
        live[p.uid] = moved
    for _ in range(30):
        selector = LabelSelector.model_validate(clustergen.selector(rng, clustergen.LABELS))
        for ns in clustergen.NAMESPACES:
            expected = {
                p.uid
                for p in live.values()
                if (p.metadata.namespace or "default") == ns
                and not p.spec.host_network
                and matches(selector, p.metadata.labels)
            }
            assert index.select(ns, selector) == expected


def _claimant(
    name: str, phase: str = "Running", *, created: str | None = None, deleting: bool = False
) -> Pod:
    meta: dict[str, Any] = {"name": name, "namespace": "x"}
    if created:
        meta["creationTimestamp"] = created
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:10:00Z"
    return Pod.model_validate(
        {"metadata": meta, "status": {"phase": phase, "podIPs": [{"ip": "10.244.1.9"}]}}
    )


T1, T2 = "2026-01-01T00:00:00Z", "2026-01-01T00:05:00Z"


@pytest.mark.parametrize(
    ("holders", "owner"),
    [
        pytest.param([_claimant("a")], "a", id="sole-live-pod"),
        pytest.param([_claimant("a", "Succeeded")], None, id="finished-alone-owns-nothing"),
        pytest.param([_claimant("a", "Failed"), _claimant("b", "Succeeded")], None, id="all-finished"),
        pytest.param(
            [_claimant("z"), _claimant("a", "Succeeded", created=T2)], "z", id="live-beats-finished"
        ),
        pytest.param([_claimant("a", created=T1), _claimant("b", created=T2)], "b", id="newest-wins"),
        pytest.param([_claimant("b", created=T1), _claimant("a", created=T2)], "a", id="newest-not-name"),
        pytest.param([_claimant("a", created=T1), _claimant("b")], "a", id="timestamp-beats-none"),
        pytest.param(
            [_claimant("a", created=T1), _claimant("b", created=T2, deleting=True)],
            "a",
            id="not-deleting-wins",
        ),
        pytest.param([_claimant("a"), _claimant("b")], None, id="tie-is-nobodys"),
        pytest.param([_claimant("a", created=T1), _claimant("b", created=T1)], None, id="same-second-tie"),
    ],
)
def test_address_owner(holders: list[Pod], owner: str | None) -> None:
    index = PodIndex(holders)
    names = {p.uid: p.metadata.name for p in holders}
    assert {a: names[u] for a, u in index.owner.items()} == ({"10.244.1.9": owner} if owner else {})
    # Removing the winner hands the address on by the same rule; adding it back restores it.
    for winner in holders:
        if winner.metadata.name == owner:
            index.remove(winner.uid)
            assert index.owner == PodIndex([p for p in holders if p is not winner]).owner
            index.add(winner)
            assert index.owner == PodIndex(holders).owner


def test_index_keys_pods_by_uid() -> None:
    old = pod("db-0", "10.244.1.5", labels={"app": "db"})
    meta = {**old.metadata.model_dump(), "uid": "new-incarnation"}
    new = old.model_copy(update={"metadata": old.metadata.model_validate(meta)})
    new = new.model_copy(update={"status": new.status.model_copy(update={"pod_ips": ()})})
    index = PodIndex([old, new])
    assert set(index.pods) == {old.uid, "new-incarnation"}
    index.remove(old.uid)  # the late DELETE of the previous incarnation
    assert set(index.pods) == {"new-incarnation"} and index.select("x", LabelSelector()) == {
        "new-incarnation"
    }


def test_host_network_pods_own_nothing_and_are_not_selected() -> None:
    host = pod("h", "192.168.0.10", host_network=True, labels={"app": "web"})
    index = PodIndex([host])
    assert index.owner == {} and index.select("x", LabelSelector()) == set()
