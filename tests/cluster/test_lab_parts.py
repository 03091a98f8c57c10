"""The lab's pure parts, without a lab: addressing, collision checks, CNI config handling, the
stand-in's work queue. Fast; these run wherever the cluster tier runs."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.cluster.lab import cni
from tests.cluster.lab.config import LabConfig, collisions
from tests.cluster.lab.workqueue import WorkQueue


@pytest.mark.parametrize(
    ("slot", "node", "v4", "v6"),
    [
        pytest.param(0, 1, "10.250.0.11", "fd5c:ade0::b", id="slot0-node1"),
        pytest.param(17, 2, "10.250.17.12", "fd5c:ade0:0:11::c", id="slot17-node2"),
        pytest.param(255, 50, "10.250.255.60", "fd5c:ade0:0:ff::3c", id="last-slot-last-node"),
    ],
)
def test_node_addresses_follow_slot_and_index(slot: int, node: int, v4: str, v6: str) -> None:
    addrs = LabConfig(name="x", slot=slot, nodes=50).node(node)
    assert (addrs.ipv4, addrs.ipv6, addrs.netns) == (v4, v6, f"stklab-x-node-{node}")


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        pytest.param("lab", True, id="plain"),
        pytest.param("pytest12", True, id="eight-chars"),
        pytest.param("pytest123", False, id="nine-chars-too-long-for-a-link-name"),
        pytest.param("Lab", False, id="upper-case"),
        pytest.param("1lab", False, id="leading-digit"),
        pytest.param("a-b", False, id="dash"),
    ],
)
def test_lab_names_fit_interface_names(name: str, ok: bool) -> None:
    if ok:
        assert len(LabConfig(name=name).host_link) <= 15
    else:
        with pytest.raises(ValueError, match="lab name"):
            LabConfig(name=name)


@pytest.mark.parametrize(
    ("host", "clashes"),
    [
        pytest.param(["192.0.2.0/24", "fd00::/64", "0.0.0.0/0", "::/0"], [], id="this-host"),
        pytest.param(
            ["10.0.0.0/8"],
            ["host link", "underlay IPv4", "cluster CIDR IPv4", "service CIDR IPv4"],
            id="all-of-10/8",
        ),
        pytest.param(["10.250.3.0/24"], ["underlay IPv4"], id="same-underlay"),
        pytest.param(["10.250.4.0/24"], [], id="other-slot's-underlay"),
        pytest.param(["fd5c:ade2:0:7::/64"], ["cluster CIDR IPv6"], id="inside-cluster-v6"),
    ],
)
def test_collisions_name_the_overlapping_ranges(host: list[str], clashes: list[str]) -> None:
    found = collisions(LabConfig(name="x", slot=3), host)
    assert [f.split(" 10.")[0].split(" fd5c")[0] for f in found] == clashes


def test_cni_config_dir_first_file_wins_and_single_conf_becomes_a_list(tmp_path: Path) -> None:
    assert cni.load_network(tmp_path) is None
    (tmp_path / "README").write_text("not a config")
    assert cni.load_network(tmp_path) is None
    (tmp_path / "20-other.conflist").write_text(
        json.dumps({"cniVersion": "1.0.0", "name": "b", "plugins": []})
    )
    (tmp_path / "10-single.conf").write_text(
        json.dumps({"cniVersion": "0.4.0", "name": "a", "type": "ptp", "ipam": {"type": "host-local"}})
    )
    net = cni.load_network(tmp_path)
    assert net is not None
    assert (net.file.name, net.name, net.version) == ("10-single.conf", "a", "0.4.0")
    assert net.plugins == [{"type": "ptp", "ipam": {"type": "host-local"}}]


def test_lab_conflist_is_dual_stack_host_local_in_the_lab_dir(tmp_path: Path) -> None:
    conf = cni.lab_conflist(pod_cidrs=["10.244.1.0/24", "fd5c:ade2:0:1::/64"], ipam_dir=tmp_path)
    ipam = conf["plugins"][0]["ipam"]
    assert ipam["ranges"] == [[{"subnet": "10.244.1.0/24"}], [{"subnet": "fd5c:ade2:0:1::/64"}]]
    assert ipam["routes"] == [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]
    assert ipam["dataDir"] == str(tmp_path)


@pytest.mark.parametrize(
    ("ips", "want"),
    [
        pytest.param(["fd5c::2/64", "10.244.0.2/24"], ["10.244.0.2", "fd5c::2"], id="v6-first-reordered"),
        pytest.param(["10.244.0.2/24"], ["10.244.0.2"], id="v4-only"),
        pytest.param([], [], id="none"),
    ],
)
def test_result_ips_lists_ipv4_first_without_prefix(ips: list[str], want: list[str]) -> None:
    assert cni.result_ips({"ips": [{"address": a} for a in ips]}) == want


def test_cni_add_reports_a_missing_plugin(tmp_path: Path) -> None:
    net = cni.Network(
        file=tmp_path / "x.conflist", conf={"name": "x", "plugins": [{"type": "no-such-plugin"}]}
    )
    inv = cni.Invocation(container_id="c", netns_path="/run/netns/none", ifname="eth0", args={})
    with pytest.raises(cni.CNIError, match=r"no-such-plugin.*not found"):
        cni.add(net, inv, cni_path=str(tmp_path))


def _run_queue(
    handler: Callable[[str], float | None], keys: list[tuple[str, float]], *, settle: float
) -> None:
    queue = WorkQueue(handler, workers=3)
    queue.start()
    for key, delay in keys:
        queue.add(key, delay)
    time.sleep(settle)
    queue.stop()


def test_workqueue_never_runs_one_key_twice_at_once_and_reruns_if_added_meanwhile() -> None:
    active: set[str] = set()
    overlaps: list[str] = []
    calls: list[str] = []
    lock = threading.Lock()

    def handler(key: str) -> None:
        with lock:
            if key in active:
                overlaps.append(key)
            active.add(key)
            calls.append(key)
            first = calls.count(key) == 1
        if first:
            queue.add(key)  # added while being handled: one more pass afterwards
        time.sleep(0.05)
        with lock:
            active.discard(key)

    queue = WorkQueue(handler, workers=3)
    queue.start()
    for key in ["a", "a", "b", "a"]:
        queue.add(key)
    time.sleep(0.5)
    queue.stop()
    assert not overlaps
    assert sorted(calls) == ["a", "a", "b", "b"]


def test_workqueue_honours_delays_and_retries_failures() -> None:
    seen: list[tuple[str, float]] = []
    t0 = time.monotonic()
    failures = {"flaky": 1}

    def handler(key: str) -> float | None:
        seen.append((key, time.monotonic() - t0))
        if failures.get(key, 0) > 0:
            failures[key] -= 1
            raise RuntimeError("first attempt fails")
        return 0.2 if key == "again" and len([k for k, _ in seen if k == "again"]) == 1 else None

    _run_queue(handler, [("later", 0.3), ("flaky", 0.0), ("again", 0.0)], settle=1.2)
    keys = [k for k, _ in seen]
    assert keys.count("flaky") == 2, seen  # retried after its failure
    assert keys.count("again") == 2, seen  # asked to be called again
    later = [t for k, t in seen if k == "later"]
    assert later and later[0] >= 0.3, seen
