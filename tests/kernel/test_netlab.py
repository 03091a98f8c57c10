"""The harness itself, with hand-written rulesets: before any compiled ruleset is trusted to it, the lab
must show that it routes, that probes see drops, and that it leaves nothing behind."""

from __future__ import annotations

import os
import select
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest
from pyroute2 import netns

from tests.support.addressing import Family, allocate
from tests.support.netlab import NETNS_DIR, LabError, NetLab, NftError, cleanup_leftovers
from tests.support.probe import Prober, ProbeRequest, Protocol, all_pairs, render_matrix

pytestmark = pytest.mark.kernel

PODS = ("h/a", "h/b", "h/c")
PROTOCOLS: tuple[Protocol, ...] = ("TCP", "UDP", "SCTP")
IP_TRANSPARENT = 19
IPV6_TRANSPARENT = 75


@pytest.fixture(scope="module")
def lab(kernel_requirements: None) -> Iterator[NetLab]:
    with NetLab(allocate(PODS)) as lab:
        lab.start_agents(tcp=[80], udp=[80], sctp=[80])
        yield lab


@pytest.fixture
def prober(lab: NetLab) -> Prober:
    lab.flush_ruleset()
    lab.reset_flows()
    return Prober(lab.endpoints())


def _everyone(value: bool) -> dict[tuple[str, str], bool]:
    return dict.fromkeys(all_pairs(PODS), value)


@pytest.mark.parametrize("family", [4, 6], ids=["v4", "v6"])
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_every_pod_reaches_every_other(prober: Prober, protocol: Protocol, family: Family) -> None:
    measured = prober.matrix(None, 80, protocol, family)
    assert measured == _everyone(True), render_matrix(measured, names=PODS)


@pytest.mark.parametrize("family", [4, 6], ids=["v4", "v6"])
def test_a_port_nobody_serves_is_refused_not_blocked(prober: Prober, family: Family) -> None:
    results = prober.reachability([("h/a", "h/b")], [(p, 81) for p in PROTOCOLS], family)
    assert {k[2]: r.outcome for k, r in results.items()} == dict.fromkeys(PROTOCOLS, "refused")
    assert all(r.reachable for r in results.values())


@pytest.mark.parametrize("family", [4, 6], ids=["v4", "v6"])
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_drop_rule_blocks_exactly_one_pair(
    lab: NetLab, prober: Prober, protocol: Protocol, family: Family
) -> None:
    src, dst = lab.pods["h/a"], lab.pods["h/c"]
    ip = "ip" if family == 4 else "ip6"
    lab.load_nft(
        "table inet stk_test {\n"
        "  chain stkfwd {\n"
        "    type filter hook forward priority 0;\n"
        f"    {ip} saddr {src.address(family)} {ip} daddr {dst.address(family)}"
        f" meta l4proto {protocol.lower()} th dport 80 drop\n"
        "  }\n"
        "}\n"
    )
    measured = prober.matrix(None, 80, protocol, family)
    assert measured == {**_everyone(True), ("h/a", "h/c"): False}, render_matrix(measured, names=PODS)
    # The other protocols are untouched by a rule for one of them.
    for other in PROTOCOLS:
        if other != protocol:
            assert prober.matrix([("h/a", "h/c")], 80, other, family) == {("h/a", "h/c"): True}


@pytest.mark.parametrize("family", [4, 6], ids=["v4", "v6"])
def test_sctp_is_blocked_by_an_l4proto_drop(lab: NetLab, prober: Prober, family: Family) -> None:
    lab.load_nft(
        "table inet stk_test {\n chain stkfwd {\n"
        "  type filter hook forward priority 0;\n  meta l4proto sctp drop\n }\n}\n"
    )
    results = prober.reachability(None, [("SCTP", 80), ("TCP", 80)], family)
    assert {k: r.reachable for k, r in results.items()} == {
        (s, d, p, 80): p == "TCP" for p in ("SCTP", "TCP") for s, d in all_pairs(PODS)
    }


@pytest.mark.parametrize("family", [4, 6], ids=["v4", "v6"])
def test_conntrack_accepts_our_packets_and_replies_pass_as_established(
    lab: NetLab, prober: Prober, family: Family
) -> None:
    # Only new connections from h/a are accepted; everything else must be a reply. This also
    # proves conntrack finds our SCTP packets valid (a bad CRC32c would make them `invalid`).
    src = lab.pods["h/a"].address(family)
    ip = "ip" if family == 4 else "ip6"
    lab.load_nft(
        "table inet stk_test {\n"
        "  chain stkfwd {\n"
        "    type filter hook forward priority 0; policy drop;\n"
        "    ct state established,related accept\n"
        "    ct state invalid drop\n"
        f"    ct state new {ip} saddr {src} accept\n"
        "  }\n"
        "}\n"
    )
    results = prober.reachability(None, [(p, 80) for p in PROTOCOLS], family)
    for protocol in PROTOCOLS:
        measured = {(s, d): r.reachable for (s, d, p, _), r in results.items() if p == protocol}
        expected = {(s, d): s == "h/a" for s, d in all_pairs(PODS)}
        assert measured == expected, f"{protocol}\n{render_matrix(measured, names=PODS)}"

    def count() -> int:
        listing = lab.run_in(lab.node_netns, ["conntrack", "-L", "-f", f"ipv{family}"])
        assert listing.returncode == 0, listing.stderr
        return len(listing.stdout.splitlines())

    assert count() > 0
    lab.flush_conntrack()
    assert count() == 0


def _spoofed_arrives(lab: NetLab, family: Family, *, claimed: str, sender: str, receiver: str) -> bool:
    """Send a UDP datagram from `sender` with the source address of `claimed`; did `receiver` get it?"""
    af = socket.AF_INET if family == 4 else socket.AF_INET6
    marker = os.urandom(12)
    sniffer = lab.call_in(lab.pods[receiver].netns, socket.socket, af, socket.SOCK_RAW, socket.IPPROTO_UDP)
    sender_sock = lab.call_in(lab.pods[sender].netns, socket.socket, af, socket.SOCK_DGRAM)
    with sniffer, sender_sock:
        if family == 4:
            sender_sock.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
        else:
            sender_sock.setsockopt(socket.IPPROTO_IPV6, IPV6_TRANSPARENT, 1)
        sender_sock.bind((lab.pods[claimed].address(family), 0))
        sender_sock.sendto(marker, (lab.pods[receiver].address(family), 9))
        deadline = time.monotonic() + 1.0
        while (left := deadline - time.monotonic()) > 0:
            if not select.select([sniffer], [], [], left)[0]:
                break
            if marker in sniffer.recv(65535):
                return True
    return False


@pytest.mark.parametrize("family", [4, 6], ids=["v4", "v6"])
def test_spoofed_sources_are_dropped_by_a_fib_rule(lab: NetLab, prober: Prober, family: Family) -> None:
    # Without a rule the lab forwards a spoofed packet (rp_filter is off on purpose) ...
    assert _spoofed_arrives(lab, family, claimed="h/b", sender="h/a", receiver="h/c")
    lab.load_nft(
        "table inet stk_test {\n chain pre {\n  type filter hook prerouting priority -300;\n"
        "  fib saddr . iif oif missing drop\n }\n}\n"
    )
    # ... and a reverse-path rule drops it, while honest traffic still flows.
    assert not _spoofed_arrives(lab, family, claimed="h/b", sender="h/a", receiver="h/c")
    assert _spoofed_arrives(lab, family, claimed="h/a", sender="h/a", receiver="h/c")
    assert prober.matrix(None, 80, "TCP", family) == _everyone(True)


def test_probes_run_concurrently(prober: Prober) -> None:
    # 3 protocols x 6 pairs x 2 families, all silent: costs about one timeout plus one
    # confirmation, not 36 of them.
    lab_prober = Prober(list(prober.pods.values()), timeout=0.3, confirm_timeout=0.6)
    requests = [
        ProbeRequest(
            src=s, dst=d, protocol=p, port=80, family=f, dst_address="192.0.2.1" if f == 4 else "2001:db8::1"
        )
        for s, d in all_pairs(PODS)
        for p in PROTOCOLS
        for f in (4, 6)
    ]
    started = time.monotonic()
    results = lab_prober.probe(requests)
    elapsed = time.monotonic() - started
    assert {r.reachable for r in results} == {False}
    assert all(r.attempts == 2 for r in results)
    assert elapsed < 3.0, f"{len(requests)} silent probes took {elapsed:.1f}s"


def test_a_bad_ruleset_is_reported_with_nft_message(lab: NetLab) -> None:
    with pytest.raises(NftError, match="nft -f failed"):
        lab.load_nft("table inet stk_test {\n chain c {\n  no such thing\n }\n}\n")


def test_the_lab_leaves_nothing_behind(kernel_requirements: None) -> None:
    lab = NetLab(allocate(["t/a", "t/b"]))
    with lab:
        lab.start_agents(tcp=[80])
        agents = lab.agent_processes()
        names = [lab.node_netns, *(p.netns for p in lab.pods.values())]
        assert all((NETNS_DIR / n).exists() for n in names)
        assert Prober(lab.endpoints()).matrix(None, 80, "TCP", 4) == {
            ("t/a", "t/b"): True,
            ("t/b", "t/a"): True,
        }
    assert not any((NETNS_DIR / n).exists() for n in names)
    assert not lab.run_dir.exists()
    assert all(a.poll() is not None for a in agents)
    lab.stop()  # idempotent


def test_leftovers_of_a_dead_run_are_removed(kernel_requirements: None) -> None:
    proc = subprocess.Popen(["true"])
    proc.wait()  # a pid that no longer runs
    name = f"stk-k{proc.pid}-0-node"
    netns.create(name)
    try:
        assert name in cleanup_leftovers()
        assert not (NETNS_DIR / name).exists()
    finally:
        if (NETNS_DIR / name).exists():
            netns.remove(name)


def test_agents_need_a_started_lab() -> None:
    with pytest.raises(LabError):
        NetLab(allocate(["u/a"])).start_agents(tcp=[80])
