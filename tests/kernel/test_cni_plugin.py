"""stockade-cni through the CNI protocol: ADD, CHECK, DEL, GC, STATUS, VERSION, chained results
and traffic, each checked against the kernel and the IPAM directory (nothing leaks)."""

from __future__ import annotations

import ipaddress
import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
from pyroute2 import IPRoute

from tests.support.cnilab import NODE_V4, NODE_V6, CniLab, connect, listen, serve_once

VERSIONS = ["0.4.0", "1.0.0", "1.1.0"]


@pytest.fixture
def lab() -> Iterator[CniLab]:
    with CniLab() as lab:
        yield lab


def _pod_addresses(result: dict[str, object]) -> list[str]:
    ips = result["ips"]
    assert isinstance(ips, list)
    return [str(entry["address"]).split("/")[0] for entry in ips]


def test_version_lists_supported_versions(lab: CniLab) -> None:
    started = time.monotonic()
    run = lab.run("VERSION", conf=b'{"cniVersion": "1.0.0"}', ifname="")
    took = time.monotonic() - started
    assert run.returncode == 0, run
    assert run.json() == {"cniVersion": "1.0.0", "supportedVersions": VERSIONS}
    print(f"VERSION took {took * 1000:.0f} ms")


def test_cnitool_add_check_del(lab: CniLab) -> None:
    lab.write_conflist()
    before = lab.snapshot()
    pod = lab.new_pod()
    add = lab.cnitool("add", pod)
    assert add.returncode == 0, add
    result = add.json()
    assert result["cniVersion"] == "1.1.0"
    v4, v6 = _pod_addresses(result)
    assert ipaddress.ip_address(v4) in ipaddress.ip_network(lab.pod_cidrs[0])
    assert ipaddress.ip_address(v6) in ipaddress.ip_network(lab.pod_cidrs[1])
    host, inner = result["interfaces"]
    assert host["name"].startswith("stk") and len(host["name"]) <= 15
    assert inner == {"name": "eth0", "mac": inner["mac"], "sandbox": lab.netns_path(pod), "mtu": inner["mtu"]}
    assert all(entry["interface"] == 1 for entry in result["ips"])
    after = lab.snapshot()
    assert after.links - before.links == {host["name"]}
    assert after.routes - before.routes == {f"{v4}/32", f"{v6}/128"}
    assert after.allocations == {v4, v6}

    check = lab.cnitool("check", pod)
    assert check.returncode == 0, check

    assert lab.cnitool("del", pod).returncode == 0
    assert lab.cnitool("del", pod).returncode == 0  # again: already gone is not an error
    final = lab.snapshot()
    assert final.links == before.links and final.routes == before.routes
    assert final.allocations == frozenset() and final.partial_files == frozenset()


@pytest.mark.parametrize("version", VERSIONS)
def test_add_result_format_per_version(lab: CniLab, version: str) -> None:
    pod = lab.new_pod()
    run = lab.run("ADD", conf=lab.conf(version), container_id="c1", pod=pod)
    assert run.returncode == 0, run
    result = run.json()
    assert result["cniVersion"] == version
    for entry in result["ips"]:
        assert ("version" in entry) == (version == "0.4.0")
    assert all(("mtu" in i) == (version == "1.1.0") for i in result["interfaces"])
    assert {r["dst"] for r in result["routes"]} == {"0.0.0.0/0", "::/0"}
    assert lab.run("DEL", conf=lab.conf(version), container_id="c1", pod=pod).returncode == 0


def test_add_appends_to_prev_result_and_check_reads_it(lab: CniLab) -> None:
    pod = lab.new_pod()
    prev: dict[str, Any] = {
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "other0", "mac": "02:00:00:00:00:01"}],
        "ips": [{"address": "192.0.2.9/24", "interface": 0}],
        "routes": [{"dst": "198.51.100.0/24"}],
        "dns": {"nameservers": ["192.0.2.53"]},
    }
    run = lab.run("ADD", conf=lab.conf("1.0.0", prevResult=prev), container_id="c1", pod=pod)
    assert run.returncode == 0, run
    result = run.json()
    assert result["interfaces"][0]["name"] == "other0"
    assert result["ips"][0] == prev["ips"][0]
    assert all(entry["interface"] == 2 for entry in result["ips"][1:])
    assert result["routes"][0] == prev["routes"][0]
    assert result["dns"] == prev["dns"]

    assert (
        lab.run("CHECK", conf=lab.conf("1.0.0", prevResult=result), container_id="c1", pod=pod).returncode
        == 0
    )
    check = lab.run("CHECK", conf=lab.conf("1.0.0", prevResult=prev), container_id="c1", pod=pod)
    assert check.error_code == 103 and "prevResult does not list" in check.json()["msg"]
    lab.run("DEL", container_id="c1", pod=pod)


def test_check_reports_what_is_missing(lab: CniLab) -> None:
    pod = lab.new_pod()
    result = lab.run("ADD", container_id="c1", pod=pod).json()
    v4 = _pod_addresses(result)[0]

    def drop_route() -> None:
        with IPRoute() as ipr:
            ipr.route("del", dst=f"{v4}/32", scope=253)

    lab.in_node(drop_route)
    check = lab.run("CHECK", conf=lab.conf(prevResult=result), container_id="c1", pod=pod)
    assert check.error_code == 103
    assert f"no route {v4}/32" in check.json()["msg"]
    assert lab.run("DEL", container_id="c1", pod=pod).returncode == 0
    assert lab.snapshot().allocations == frozenset()


def test_del_after_the_sandbox_is_gone(lab: CniLab) -> None:
    pod = lab.new_pod()
    before = lab.snapshot()
    assert lab.run("ADD", container_id="c1", pod=pod).returncode == 0
    lab.remove_pod(pod)  # the runtime removed the netns first: the veth pair died with it
    for _ in range(2):
        run = lab.run("DEL", container_id="c1", pod=pod)
        assert run.returncode == 0, run
    run = lab.run("DEL", container_id="c1", ifname="eth0")  # and without CNI_NETNS at all
    assert run.returncode == 0, run
    after = lab.snapshot()
    assert after.links == before.links and after.routes == before.routes and not after.allocations


def test_gc_releases_what_no_valid_attachment_owns(lab: CniLab) -> None:
    pods = [lab.new_pod() for _ in range(3)]
    results = [lab.run("ADD", container_id=f"c{i}", pod=p).json() for i, p in enumerate(pods)]
    kept = set(_pod_addresses(results[1]))
    conf = lab.conf()
    conf["cni.dev/valid-attachments"] = [{"containerID": "c1", "ifname": "eth0"}]
    run = lab.run("GC", conf=conf, ifname="")
    assert run.returncode == 0, run
    after = lab.snapshot()
    assert after.allocations == kept
    assert {r.split("/")[0] for r in after.routes} == kept
    assert sum(1 for name in after.links if name.startswith("stk") and len(name) == 15) == 1
    assert (
        lab.run("CHECK", conf=lab.conf(prevResult=results[1]), container_id="c1", pod=pods[1]).returncode == 0
    )


def test_cnitool_gc_and_status(lab: CniLab) -> None:
    lab.write_conflist()
    lab.mark_agent_ready()
    pod = lab.new_pod()
    assert lab.cnitool("add", pod).returncode == 0
    status = lab.cnitool("status", pod)
    assert status.returncode == 0, status
    gc = lab.cnitool("gc", pod)  # cnitool passes no valid attachments: everything goes
    assert gc.returncode == 0, gc
    after = lab.snapshot()
    assert not after.allocations and not after.routes
    assert not any(name.startswith("stk") and len(name) == 15 for name in after.links)


def test_status_waits_for_the_agents_first_plan(lab: CniLab) -> None:
    """STATUS is the node's NetworkReady (containerd runs it for the kubelet): not ready while the
    agent has no plan in the kernel, unless the plugin does not wait for the agent."""
    status = lab.run("STATUS", ifname="")
    assert status.error_code == 50, status
    assert "agent-ready is missing" in status.json()["msg"] and "waitForAgent" in status.json()["details"]
    assert lab.run("STATUS", ifname="", conf=lab.conf(waitForAgent=False)).returncode == 0
    lab.mark_agent_ready()
    assert lab.run("STATUS", ifname="").returncode == 0


def test_status_fails_when_addresses_run_out() -> None:
    with CniLab(pod_cidrs=("10.99.3.0/30",)) as lab:
        lab.mark_agent_ready()
        assert lab.run("STATUS", ifname="").returncode == 0
        for i in range(2):
            assert lab.run("ADD", container_id=f"c{i}", pod=lab.new_pod()).returncode == 0
        status = lab.run("STATUS", ifname="")
        assert status.error_code == 50
        assert "10.99.3.0/30 is exhausted" in status.json()["msg"]


def test_pod_reaches_node_and_pod_over_v4_and_v6(lab: CniLab) -> None:
    a, b = lab.new_pod(), lab.new_pod()
    addr_a = _pod_addresses(lab.run("ADD", container_id="a", pod=a).json())
    addr_b = _pod_addresses(lab.run("ADD", container_id="b", pod=b).json())
    for family, node_address in enumerate((NODE_V4, NODE_V6)):
        server = lab.in_node(listen, node_address)
        port = server.getsockname()[1]
        thread = serve_once(server, b"node")
        assert lab.in_pod(a, connect, node_address, port) == f"node {addr_a[family]}"
        thread.join(5)
        server.close()

        server = lab.in_pod(b, listen, addr_b[family])
        port = server.getsockname()[1]
        thread = serve_once(server, b"pod-b")
        assert lab.in_pod(a, connect, addr_b[family], port) == f"pod-b {addr_a[family]}"
        thread.join(5)
        server.close()
    for container, pod in (("a", a), ("b", b)):
        assert lab.run("DEL", container_id=container, pod=pod).returncode == 0


def test_mtu_from_config_and_default(lab: CniLab) -> None:
    pod = lab.new_pod()
    result = lab.run("ADD", conf=lab.conf(mtu=1400), container_id="c1", pod=pod).json()
    assert {i["mtu"] for i in result["interfaces"]} == {1400}

    def pod_mtu() -> int:
        with IPRoute() as ipr:
            return int(ipr.get_links(ipr.link_lookup(ifname="eth0")[0])[0].get_attr("IFLA_MTU"))

    assert lab.in_pod(pod, pod_mtu) == 1400
    lab.run("DEL", container_id="c1", pod=pod)
    # No default route in the lab's node: the fallback is 1500 minus the IPv6 VXLAN overhead.
    result = lab.run("ADD", container_id="c2", pod=pod).json()
    assert {i["mtu"] for i in result["interfaces"]} == {1430}
    lab.run("DEL", container_id="c2", pod=pod)


def test_result_is_json_on_stdout_only(lab: CniLab) -> None:
    pod = lab.new_pod()
    run = lab.run("ADD", container_id="c1", pod=pod)
    assert json.loads(run.stdout)["ips"]
    assert socket.inet_pton(socket.AF_INET6, _pod_addresses(run.json())[1])
    lab.run("DEL", container_id="c1", pod=pod)
