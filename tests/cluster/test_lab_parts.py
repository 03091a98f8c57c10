"""The lab's pure parts, without a lab: addressing, collision checks, what kube-proxy programmed,
which images the nodes get, the e2e summary. Fast; these run wherever the cluster tier runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cluster.e2e import summary
from tests.cluster.lab import LabError
from tests.cluster.lab.config import LAB_IMAGES, STOCKADE_CNI_IMAGES, LabConfig, collisions, default_images
from tests.cluster.lab.nodes import NodeTools
from tests.cluster.lab.proxy import programmed


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


# What `nft list table ip kube-proxy` prints for its two Service maps (kube-proxy v1.37, trimmed;
# nft indents with tabs, spaces here).
NFT = """table ip kube-proxy {
    map no-endpoint-services {
        type ipv4_addr . inet_proto . inet_service : verdict
        comment "vmap to drop or reject packets to services with no endpoints"
        elements = { 10.96.7.7 . tcp . 80 comment "ns/empty:tcp" : goto reject-chain }
    }

    map service-ips {
        type ipv4_addr . inet_proto . inet_service : verdict
        comment "ClusterIP, ExternalIP and LoadBalancer IP traffic"
        elements = { 10.96.0.1 . tcp . 443 : goto service-2QRHZV4L-default/kubernetes/tcp/https,
                 110.96.3.3 . tcp . 80 : goto service-AAAA-x/y/tcp/tcp }
    }
}
"""
IPT = "-A KUBE-SERVICES -d 10.96.0.1/32 -p tcp -m comment --comment x -m tcp --dport 443 -j KUBE-SVC-NPX\n"


@pytest.mark.parametrize(
    ("dump", "ip", "mode", "want"),
    [
        pytest.param(NFT, "10.96.0.1", "nftables", True, id="nft-with-endpoints"),
        pytest.param(NFT, "10.96.7.7", "nftables", False, id="nft-no-endpoints"),
        pytest.param(NFT, "10.96.9.9", "nftables", False, id="nft-unknown"),
        pytest.param(NFT, "10.96.3.3", "nftables", False, id="nft-only-a-longer-address-ends-so"),
        pytest.param("", "10.96.0.1", "nftables", False, id="nft-no-table"),
        pytest.param(IPT, "10.96.0.1", "iptables", True, id="iptables-svc-chain"),
        pytest.param(IPT, "10.96.0.2", "iptables", False, id="iptables-unknown"),
    ],
)
def test_programmed_reads_kube_proxy_rules(dump: str, ip: str, mode: str, want: bool) -> None:
    assert programmed(dump, ip, mode=mode) is want


@pytest.mark.parametrize(
    ("cni", "has", "lacks"),
    [
        pytest.param("stockade", "stockade", "cni-installer", id="stockade-cni-needs-the-charts-image"),
        pytest.param("lab", "cni-installer", "stockade", id="lab-cni-needs-its-installer"),
    ],
)
def test_each_cni_mode_imports_what_writes_its_cni_config(cni: str, has: str, lacks: str) -> None:
    images = default_images("stockade" if cni == "stockade" else "lab")
    assert has in images and lacks not in images and {"pause", "testpod"} <= set(images)


def test_a_lab_uses_stockade_cni_and_its_image_unless_told_otherwise() -> None:
    cfg = LabConfig(name="x")
    assert (cfg.cni, cfg.images) == ("stockade", STOCKADE_CNI_IMAGES)


@pytest.mark.parametrize(
    ("present", "wanted", "missing"),
    [
        pytest.param(["pause", "testpod", "cni-installer"], LAB_IMAGES, "", id="lab-images"),
        pytest.param(["pause", "testpod"], LAB_IMAGES, "cni-installer", id="one-missing"),
        pytest.param(list(LAB_IMAGES), (*LAB_IMAGES, "agnhost"), "agnhost", id="e2e-needs-agnhost"),
    ],
)
def test_node_tools_take_exactly_the_asked_images_and_name_the_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, present: list[str], wanted: tuple[str, ...], missing: str
) -> None:
    (tmp_path / "bin").mkdir()
    for tool in ("kubelet", "containerd", "containerd-shim-runc-v2", "ctr"):
        (tmp_path / "bin" / tool).write_text("")
    (tmp_path / "images").mkdir()
    for name in [*present, "unrelated"]:
        (tmp_path / "images" / f"{name}.tar").write_text("")
    monkeypatch.setenv("STOCKADE_NODE_BIN", str(tmp_path / "bin"))
    monkeypatch.setenv("STOCKADE_IMAGES_DIR", str(tmp_path / "images"))
    if missing:
        with pytest.raises(LabError, match=rf"images {missing} in .*build.sh {missing} builds"):
            NodeTools.find(tmp_path / "unused", wanted)
    else:
        tools = NodeTools.find(tmp_path / "unused", wanted)
        assert [p.name for p in tools.images] == [f"{n}.tar" for n in wanted]


JUNIT = """<?xml version="1.0" encoding="UTF-8"?>
<testsuites><testsuite name="Kubernetes e2e suite">
<testcase name="[SynchronizedBeforeSuite]" status="passed"></testcase>
<testcase name="[It] [sig-network] Netpol API works" status="passed"></testcase>
<testcase name="[It] [sig-network] Netpol default-deny" status="failed">
  <failure message="wrong">x</failure></testcase>
<testcase name="[It] [sig-network] Netpol windows" status="skipped">
  <skipped message="skipped - not on linux"/></testcase>
<testcase name="[It] [sig-apps] unrelated" status="skipped"><skipped message="skipped"/></testcase>
<testcase name="[It] [sig-apps] also unrelated" status="skipped"><skipped message="skipped"/></testcase>
<testcase name="[ReportAfterSuite] Kubernetes e2e suite report" status="passed"></testcase>
</testsuite></testsuites>
"""


def test_e2e_summary_counts_specs_and_tells_skipped_from_not_selected(tmp_path: Path) -> None:
    junit = tmp_path / "junit.xml"
    junit.write_text(JUNIT)
    assert summary(junit) == (2, 1, 1, 1, 2)
