"""stockade-cni when things go wrong: bad input, exhaustion, concurrency, a crash mid-ADD. Each
failure is a spec error object with the right code, and leaves nothing behind."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.cnilab import CniLab, PluginRun


@pytest.fixture
def lab() -> Iterator[CniLab]:
    with CniLab() as lab:
        yield lab


def _addresses(run: PluginRun) -> list[str]:
    return [entry["address"].split("/")[0] for entry in run.json()["ips"]]


def _assert_error(run: PluginRun, code: int, *words: str) -> None:
    assert run.returncode != 0, run
    error = run.json()
    assert set(error) <= {"cniVersion", "code", "msg", "details"}, error
    assert error["code"] == code, error
    assert error["cniVersion"] in ("0.4.0", "1.0.0", "1.1.0")
    for word in words:
        assert word in error["msg"], error


# (id, conf change or raw stdin, env change, expected code, words in msg)
BAD_INPUT: list[tuple[str, Any, dict[str, str], int, tuple[str, ...]]] = [
    ("stdin-not-json", b"{not json", {}, 6, ("not JSON",)),
    ("stdin-not-object", b"[1, 2]", {}, 6, ("JSON object",)),
    ("old-cni-version", {"cniVersion": "0.3.1"}, {}, 1, ("0.3.1", "1.1.0")),
    ("no-pod-cidrs", {"podCIDRs": None}, {}, 7, ("podCIDRs",)),
    ("bad-pod-cidr", {"podCIDRs": ["10.99.1.7/24"]}, {}, 7, ("podCIDRs[0]",)),
    ("two-v4-pod-cidrs", {"podCIDRs": ["10.99.1.0/24", "10.99.2.0/24"]}, {}, 7, ("second IPv4",)),
    ("mtu-not-a-number", {"mtu": "1400"}, {}, 7, ("mtu",)),
    ("relative-ipam-dir", {"ipamDir": "ipam"}, {}, 7, ("ipamDir",)),
    ("wait-not-bool", {"waitForAgent": "yes"}, {}, 7, ("waitForAgent",)),
    ("prev-result-not-object", {"prevResult": [1]}, {}, 7, ("prevResult",)),
    ("cni-args-not-pairs", {}, {"CNI_ARGS": "K8S_POD_NAME=a;garbage"}, 4, ("CNI_ARGS", "garbage")),
    ("no-container-id", {}, {"CNI_CONTAINERID": ""}, 4, ("CNI_CONTAINERID",)),
    ("unknown-command", {}, {"CNI_COMMAND": "ATTACH"}, 4, ("CNI_COMMAND",)),
    ("ifname-too-long", {}, {"CNI_IFNAME": "a-very-long-ifname0"}, 4, ("CNI_IFNAME",)),
    ("no-netns-variable", {}, {"CNI_NETNS": ""}, 4, ("CNI_NETNS",)),
    ("netns-missing", {}, {"CNI_NETNS": "/run/netns/stk-no-such-netns"}, 3, ("does not exist",)),
    ("netns-not-a-netns", {}, {"CNI_NETNS": "/proc/self/status"}, 3, ("not a network namespace",)),
]


@pytest.mark.parametrize(
    ("change", "env", "code", "words"), [b[1:] for b in BAD_INPUT], ids=[b[0] for b in BAD_INPUT]
)
def test_bad_input_is_a_spec_error_and_leaves_nothing(
    lab: CniLab, change: Any, env: dict[str, str], code: int, words: tuple[str, ...]
) -> None:
    pod = lab.new_pod()
    before = lab.snapshot()
    conf = change if isinstance(change, bytes) else lab.conf(**change)
    run = lab.run("ADD", conf=conf, container_id="c1", pod=pod, env=env)
    _assert_error(run, code, *words)
    after = lab.snapshot()
    assert after == before
    if lab.ipam_dir.exists():
        assert not [
            p
            for p in lab.ipam_dir.rglob("*")
            if p.is_file() and p.name != "lock" and "quarantine" not in str(p)
        ]


def test_pod_interface_taken_by_someone_else(lab: CniLab) -> None:
    pod = lab.new_pod()
    assert lab.run("ADD", container_id="first", pod=pod).returncode == 0
    before = lab.snapshot()
    run = lab.run("ADD", container_id="second", pod=pod)
    _assert_error(run, 104, "eth0")
    assert lab.snapshot() == before
    assert lab.run("DEL", container_id="first", pod=pod).returncode == 0


def test_exhaustion_is_a_clear_error_then_quarantine_then_reuse() -> None:
    with CniLab(pod_cidrs=("10.99.3.0/30",)) as lab:
        pods = [lab.new_pod() for _ in range(3)]
        quarantined = lab.conf(quarantineSeconds=30)
        got = [
            _addresses(lab.run("ADD", conf=quarantined, container_id=f"c{i}", pod=pods[i])) for i in range(2)
        ]
        assert sorted(a for (a,) in got) == ["10.99.3.1", "10.99.3.2"]  # never .0 (network) or .3 (broadcast)
        before = lab.snapshot()
        started = time.monotonic()
        run = lab.run("ADD", conf=quarantined, container_id="c2", pod=pods[2])
        assert time.monotonic() - started < 10
        _assert_error(run, 100, "10.99.3.0/30 is exhausted")
        assert lab.snapshot() == before

        assert lab.run("DEL", conf=quarantined, container_id="c0", pod=pods[0]).returncode == 0
        run = lab.run("ADD", conf=quarantined, container_id="c2", pod=pods[2])
        _assert_error(run, 11, "released less than 30s ago")
        # A shorter grace period (a later config) lets the address go again.
        run = lab.run("ADD", conf=lab.conf(quarantineSeconds=0), container_id="c2", pod=pods[2])
        assert run.returncode == 0, run
        assert _addresses(run) == got[0]


def test_released_address_is_not_handed_out_during_quarantine(lab: CniLab) -> None:
    conf = lab.conf(quarantineSeconds=60)
    pod = lab.new_pod()
    first = _addresses(lab.run("ADD", conf=conf, container_id="c1", pod=pod))
    assert lab.run("DEL", conf=conf, container_id="c1", pod=pod).returncode == 0
    quarantine = lab.ipam_dir / lab.network / "quarantine"
    assert sorted(p.name for p in quarantine.iterdir()) == sorted(first)
    second = _addresses(lab.run("ADD", conf=conf, container_id="c2", pod=pod))
    assert not set(first) & set(second)
    lab.run("DEL", conf=conf, container_id="c2", pod=pod)


def test_fifty_concurrent_adds_get_distinct_addresses(lab: CniLab) -> None:
    before = lab.snapshot()
    pods = [lab.new_pod() for _ in range(50)]
    started = time.monotonic()
    procs = [lab.start("ADD", container_id=f"c{i}", pod=pod) for i, pod in enumerate(pods)]
    outputs = [p.communicate(timeout=240) for p in procs]
    took = time.monotonic() - started
    failures = [
        (p.returncode, err.decode()[-300:])
        for p, (_, err) in zip(procs, outputs, strict=True)
        if p.returncode
    ]
    assert not failures
    results = [json.loads(out) for out, _ in outputs]
    addresses = [entry["address"] for r in results for entry in r["ips"]]
    assert len(addresses) == 100 and len(set(addresses)) == 100
    after = lab.snapshot()
    assert len(after.links - before.links) == 50 and len(after.allocations) == 100
    print(f"50 concurrent ADDs: {took:.1f}s")

    procs = [lab.start("DEL", container_id=f"c{i}", pod=pod) for i, pod in enumerate(pods)]
    assert all(p.wait(timeout=240) == 0 for p in procs)
    final = lab.snapshot()
    assert final.links == before.links and final.routes == before.routes
    assert not final.allocations and not final.partial_files


def test_add_after_a_leftover_allocation_and_veth(lab: CniLab) -> None:
    """A crash between the steps of ADD: the allocation file and the veth exist, nothing else."""
    pod = lab.new_pod()
    first = lab.run("ADD", container_id="c1", pod=pod)
    addresses = _addresses(first)
    # Simulate the crash: remove what ADD does last (routes, pod addresses) but keep the rest,
    # and leave a half-written temporary file as an interrupted write would.
    network_dir = lab.ipam_dir / lab.network
    Path(network_dir / ".tmp-10.99.1.77.4242").write_text('{"contain')
    host = first.json()["interfaces"][0]["name"]

    def strip() -> None:
        from pyroute2 import IPRoute  # noqa: PLC0415 - inside the node's worker thread

        with IPRoute() as ipr:
            for address in addresses:
                ipr.route(
                    "del",
                    dst=address,
                    dst_len=32 if "." in address else 128,
                    scope=253 if "." in address else 0,
                )

    lab.in_node(strip)
    again = lab.run("ADD", container_id="c1", pod=pod)
    assert again.returncode == 0, again
    assert _addresses(again) == addresses
    assert again.json()["interfaces"][0]["name"] == host
    snap = lab.snapshot()
    assert snap.allocations == set(addresses) and not snap.partial_files
    assert (
        lab.run("CHECK", conf=lab.conf(prevResult=again.json()), container_id="c1", pod=pod).returncode == 0
    )
    assert lab.run("DEL", container_id="c1", pod=pod).returncode == 0
    assert not lab.snapshot().allocations
