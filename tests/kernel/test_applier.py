"""The applier against real nftables, each test in a fresh network namespace that the test's
thread has entered (the applier's libnftables context then manages that namespace, as the agent's
manages the node's).

The oracles are independent of the module under test: the table is read with the ``nft`` command
(``nft -j list table``, through nsenter) and changed by hand with it, and the no-window probe
uses its own libnftables context.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import nftables
import pytest
from pyroute2 import IPRoute, netns

from compiler.cluster import ClusterModel
from compiler.ir import Interval, IntervalSet, NodePlan
from compiler.model import Namespace, NetworkPolicy, Node, Pod
from compiler.plan import build_plan
from compiler.render_json import render_json
from controller.applier import Applier, Backoff
from controller.errors import KernelRejected
from controller.kernelstate import RuleKey
from controller.nft import Nft
from tests.kernel.test_render_load import listing, nsexec, scratch_netns
from tests.unit import clustergen, hostile

pytestmark = pytest.mark.kernel

NODE = "n1"
PODS = {"a": "10.244.1.2", "b": "10.244.1.3"}
GATEWAY = "169.254.1.1"
UDP_PORT = 5353
SCOPE_LINK = 253
B_FROM_A = RuleKey("x", "b-from-a", "ingress", 0)
A_TO_B = RuleKey("x", "a-out", "egress", 1)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@contextlib.contextmanager
def entered(ns: str) -> Iterator[None]:
    """This thread (and the threads it starts from now on) in ``ns``; back home afterwards."""
    home = os.open(f"/proc/self/task/{threading.get_native_id()}/ns/net", os.O_RDONLY)
    try:
        netns.setns(ns, flags=0)
        try:
            yield
        finally:
            netns.setns(home)
    finally:
        os.close(home)


@pytest.fixture
def node() -> Iterator[str]:
    with scratch_netns("applier") as ns, entered(ns):
        yield ns


def kernel(ns: str) -> dict[str, Any]:
    return listing(ns)


def has_table(ns: str) -> bool:
    return nsexec(ns, "nft", "list", "table", "inet", "stockade", check=False).returncode == 0


def cli_packets(ns: str) -> dict[str, list[int]]:
    """Packets of every rule, by rule comment, from `nft -j list table` (the oracle's own parse)."""
    doc = json.loads(nsexec(ns, "nft", "-j", "list", "table", "inet", "stockade").stdout)
    out: dict[str, list[int]] = {}
    for obj in doc["nftables"]:
        rule = obj.get("rule")
        if rule is None:
            continue
        for e in rule["expr"]:
            if "counter" in e:
                out.setdefault(rule.get("comment", ""), []).append(e["counter"]["packets"])
    return out


def cli_counters(ns: str) -> dict[str, int]:
    """Packets by rule comment, summed over the rules that carry it."""
    return {comment: sum(packets) for comment, packets in cli_packets(ns).items()}


# --- the model: b admits a on UDP 5353; a may send to b, and to an outside range on a TCP port ----


def _pod(name: str) -> Pod:
    return Pod.model_validate(
        {
            "metadata": {"name": name, "namespace": "x", "uid": f"uid-{name}", "labels": {"app": name}},
            "spec": {"nodeName": NODE},
            "status": {"phase": "Running", "podIP": PODS[name], "podIPs": [{"ip": PODS[name]}]},
        }
    )


def model(*, outside_port: int = 80, extra_policy: bool = False) -> ClusterModel:
    policies = [
        NetworkPolicy.model_validate(
            {
                "metadata": {"name": "b-from-a", "namespace": "x"},
                "spec": {
                    "podSelector": {"matchLabels": {"app": "b"}},
                    "ingress": [
                        {
                            "from": [{"podSelector": {"matchLabels": {"app": "a"}}}],
                            "ports": [{"protocol": "UDP", "port": UDP_PORT}],
                        }
                    ],
                },
            }
        ),
        NetworkPolicy.model_validate(
            {
                "metadata": {"name": "a-out", "namespace": "x"},
                "spec": {
                    "podSelector": {"matchLabels": {"app": "a"}},
                    "policyTypes": ["Egress"],
                    "egress": [
                        {"to": [{"ipBlock": {"cidr": "192.168.0.0/24"}}], "ports": [{"port": outside_port}]},
                        {
                            "to": [{"podSelector": {"matchLabels": {"app": "b"}}}],
                            "ports": [{"protocol": "UDP", "port": UDP_PORT}],
                        },
                    ],
                },
            }
        ),
    ]
    if extra_policy:
        policies.append(
            NetworkPolicy.model_validate(
                {
                    "metadata": {"name": "deny-c", "namespace": "x"},
                    "spec": {"podSelector": {"matchLabels": {"app": "c"}}},
                }
            )
        )
    return ClusterModel(
        namespaces=(Namespace.model_validate({"metadata": {"name": "x", "uid": "uid-x"}}),),
        pods=tuple(_pod(n) for n in PODS),
        policies=tuple(policies),
        nodes=(Node.model_validate({"metadata": {"name": NODE}, "spec": {"podCIDRs": ["10.244.1.0/24"]}}),),
    )


def plan(**kwargs: Any) -> NodePlan:
    return build_plan(model(**kwargs), node=NODE)


@pytest.fixture
def routed(node: str) -> Iterator[dict[str, str]]:
    """Pods a and b as network namespaces, routed through ``node`` (/32 route to each veth,
    proxy ARP for the gateway), so a -> b crosses the node's forward hook."""
    with contextlib.ExitStack() as stack:
        pods = {name: stack.enter_context(scratch_netns(name)) for name in PODS}
        nsexec(node, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv4.conf.all.rp_filter=0")
        with IPRoute() as ipr:  # this thread is in `node`
            ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
            ipr.addr("add", index=ipr.link_lookup(ifname="lo")[0], address=GATEWAY, prefixlen=32)
            for i, (name, address) in enumerate(PODS.items()):
                host = f"veth{i}"
                ipr.link("add", ifname=host, kind="veth", peer={"ifname": "eth0", "net_ns_fd": pods[name]})
                idx = ipr.link_lookup(ifname=host)[0]
                ipr.link("set", index=idx, state="up")
                ipr.route("add", dst=f"{address}/32", oif=idx, scope=SCOPE_LINK)
                nsexec(node, "sysctl", "-qw", f"net.ipv4.conf.{host}.proxy_arp=1")
                nsexec(node, "sysctl", "-qw", f"net.ipv4.neigh.{host}.proxy_delay=0")
        for name, address in PODS.items():
            with IPRoute(netns=pods[name]) as ipr:
                ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
                eth = ipr.link_lookup(ifname="eth0")[0]
                ipr.link("set", index=eth, state="up")
                ipr.addr("add", index=eth, address=address, prefixlen=32)
                ipr.route("add", dst=f"{GATEWAY}/32", oif=eth, scope=SCOPE_LINK)
                ipr.route("add", dst="0.0.0.0/0", gateway=GATEWAY, oif=eth)
        yield pods


def send_udp(pod_ns: str, src: str, dst: str, count: int) -> None:
    """``count`` datagrams from ``src`` (inside ``pod_ns``) to ``dst``: a thread that enters the
    pod's namespace, so no process is started."""
    failure: list[BaseException] = []

    def run() -> None:
        try:
            netns.setns(pod_ns, flags=0)
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.bind((src, 0))
                for i in range(count):
                    s.sendto(f"probe {i}".encode(), (dst, UDP_PORT))
        except BaseException as exc:
            failure.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    worker.join(timeout=10)
    assert not failure, failure


def wait_for(condition: Callable[[], bool], *, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


# --- first apply ----------------------------------------------------------------------------------

PLANS = [
    pytest.param(plan, id="routed-pair"),
    pytest.param(lambda: build_plan(clustergen.random_model(2, pods=30, policies=8), node="n3"), id="random"),
    pytest.param(lambda: build_plan(hostile.model(), node=hostile.NODE), id="hostile-api-text"),
    pytest.param(lambda: build_plan(ClusterModel(), node="n1"), id="empty-cluster"),
]


@pytest.mark.parametrize("make", PLANS)
def test_first_apply_loads_the_plan_and_a_check_finds_no_drift(
    node: str, make: Callable[[], NodePlan]
) -> None:
    wanted = make()
    applier = Applier(nft=Nft())
    result = applier.apply(wanted)
    assert result.outcome == "full"
    got = kernel(node)
    assert set(got["chain"]) == {c.name for c in wanted.chains}
    assert set(got["set"]) | set(got["map"]) == {s.name for s in wanted.sets} | {m.name for m in wanted.maps}
    assert (
        sum(map(len, got["rule"].values())) == sum(len(c.rules) for c in wanted.chains) == applier.rules_count
    )
    report = applier.check()
    assert report.checked and not report.drifted, report.differences
    assert applier.apply(wanted).outcome == "unchanged"
    assert (applier.applies_total, applier.errors_total, applier.drift_repairs_total) == (2, 0, 0)


# --- diff applies and counters --------------------------------------------------------------------


def test_a_diff_keeps_the_counters_of_unchanged_rules_and_counters_are_read_per_policy(
    node: str, routed: dict[str, str]
) -> None:
    applier = Applier(nft=Nft())
    applier.apply(plan())
    send_udp(routed["a"], PODS["a"], PODS["b"], 7)
    wait_for(lambda: cli_counters(node).get("x/b-from-a ingress[0]", 0) >= 7)
    counted = applier.rule_counters()
    assert counted[B_FROM_A].packets == cli_counters(node)["x/b-from-a ingress[0]"] == 7
    assert counted[A_TO_B].packets == 7  # a's egress to b, on the same packets
    assert counted[B_FROM_A].bytes > 0

    result = applier.apply(plan(outside_port=8080))  # a's egress changes; b's ingress does not
    assert result.outcome == "diff" and not result.fell_back
    after = applier.rule_counters()
    assert after[B_FROM_A].packets == 7, "b's ingress chain was untouched but its counter was reset"
    assert after[A_TO_B].packets == 0, "a's egress chain changed, so it counts afresh"
    assert kernel(node) == kernel_of(plan(outside_port=8080))

    applier.apply(plan(outside_port=8080, extra_policy=True))  # an unrelated policy appears
    assert applier.rule_counters()[B_FROM_A].packets == 7


def kernel_of(wanted: NodePlan) -> dict[str, Any]:
    """What a fresh load of ``wanted`` lists, in a namespace of its own (nft CLI)."""
    with scratch_netns("fresh") as fresh:
        nsexec(fresh, "nft", "-j", "-f", "-", stdin=json.dumps(render_json(wanted)))
        return kernel(fresh)


# --- rejected transactions ------------------------------------------------------------------------


def overlapping(good: NodePlan) -> NodePlan:
    """``good`` with intervals in the podCIDR set that overlap: the kernel (nft) rejects it."""
    bad = (Interval("10.244.0.0", "10.244.255.255", 16), Interval("10.244.1.0", "10.244.1.255", 24))
    sets = tuple(
        dataclasses.replace(s, elements=bad) if isinstance(s, IntervalSet) and s.name == "podcidrs-v4" else s
        for s in good.sets
    )
    assert sets != good.sets
    return dataclasses.replace(good, sets=sets)


def test_a_rejected_transaction_keeps_the_last_good_ruleset_and_backs_off(
    node: str, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    applier = Applier(nft=Nft(), clock=clock, backoff=Backoff(initial=1.0, factor=2.0, cap=3.0))
    good = plan()
    applier.apply(good)
    before = kernel(node)
    bad = overlapping(plan(outside_port=8080))

    with caplog.at_level(logging.ERROR, logger="stockade.applier"), pytest.raises(KernelRejected) as caught:
        applier.apply(bad)
    assert "conflicting intervals" in caught.value.nft_error
    assert caught.value.retry_in == 1.0
    assert kernel(node) == before, "a rejected transaction changed the kernel"
    assert applier.committed is good and applier.pending
    assert applier.errors_total == 2  # the diff, then the full rebuild it fell back to
    assert "diff for node n1 rejected" in caplog.text and "commands: [" in caplog.text

    assert applier.apply(bad).outcome == "deferred"  # the same plan waits out its backoff
    clock.now += 1.0
    with pytest.raises(KernelRejected) as again:
        applier.apply(bad)
    assert again.value.retry_in == 2.0
    clock.now += 2.0
    report = applier.check()  # a check retries the pending plan; the failure is reported, not raised
    assert report.retried is None and "rejected" in report.retry_error
    assert applier.retry_in == 3.0  # capped
    assert report.checked and not report.drifted  # and the last good ruleset is still whole
    assert kernel(node) == before


def test_after_a_rejection_a_new_plan_goes_in_as_a_full_rebuild(node: str) -> None:
    applier = Applier(nft=Nft(), clock=FakeClock())
    applier.apply(plan())
    with pytest.raises(KernelRejected):
        applier.apply(overlapping(plan()))
    result = applier.apply(plan(outside_port=8080))  # different: no waiting for the backoff
    assert result.outcome == "full"
    assert kernel(node) == kernel_of(plan(outside_port=8080))
    assert applier.apply(plan(outside_port=9090)).outcome == "diff"  # and diffs again afterwards


def test_a_diff_rejected_because_the_kernel_drifted_falls_back_to_a_full_rebuild(node: str) -> None:
    applier = Applier(nft=Nft())
    applier.apply(plan())
    nsexec(node, "nft", "delete", "table", "inet", "stockade")  # every diff command now fails
    result = applier.apply(plan(outside_port=8080))
    assert (result.outcome, result.fell_back) == ("full", True)
    assert kernel(node) == kernel_of(plan(outside_port=8080))
    assert applier.errors_total == 1


# --- adoption -------------------------------------------------------------------------------------


def load_with_counters(ns: str, wanted: NodePlan, packets: int) -> None:
    """Load ``wanted`` with the nft command, every rule's counter starting at ``packets``."""
    commands = []
    for command in render_json(wanted)["nftables"]:
        rule = command.get("add", {}).get("rule")
        if rule is not None:
            expr = [
                {"counter": {"packets": packets, "bytes": 64 * packets}} if "counter" in e else e
                for e in rule["expr"]
            ]
            commands.append({"add": {"rule": {**rule, "expr": expr}}})
        else:
            commands.append(command)
    nsexec(ns, "nft", "-j", "-f", "-", stdin=json.dumps({"nftables": commands}))


class TableProbe:
    """A thread listing table ``inet stockade`` in a loop with its own libnftables context; it
    records every listing without the table or without rules."""

    def __init__(self) -> None:
        self.listings = 0
        self.gaps: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)  # started here: inherits this netns

    def _run(self) -> None:
        nft = nftables.Nftables()
        nft.set_json_output(True)
        query = {"nftables": [{"list": {"table": {"family": "inet", "name": "stockade"}}}]}
        while not self._stop.is_set():
            rc, out, err = nft.json_cmd(query)
            self.listings += 1
            if rc != 0:
                self.gaps.append(f"no table: {err.strip()}")
            elif not any("rule" in o for o in out["nftables"]):
                self.gaps.append("a table without rules")

    def __enter__(self) -> TableProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def test_adoption_of_a_differing_table_has_no_window_and_keeps_unchanged_counters(node: str) -> None:
    old, new = plan(), plan(outside_port=8080, extra_policy=True)
    load_with_counters(node, old, 5)
    with TableProbe() as probe:
        time.sleep(0.05)
        results = []
        for i in range(20):  # restart after restart, alternating plans: every adoption is a diff
            results.append(Applier(nft=Nft()).apply(new if i % 2 == 0 else old))
        time.sleep(0.05)
    assert probe.listings > 20 and probe.gaps == []
    assert {r.outcome for r in results} == {"adopted"} and all(r.commands > 0 for r in results)
    assert kernel(node) == kernel_of(old)
    rules = cli_packets(node)["x/b-from-a ingress[0]"]
    assert rules and set(rules) == {5}, "adoption reset the counter of an unchanged rule"


def test_adoption_of_an_equal_table_writes_nothing(node: str) -> None:
    load_with_counters(node, plan(), 3)
    result = Applier(nft=Nft()).apply(plan())
    assert (result.outcome, result.commands) == ("adopted", 0)
    assert {p for packets in cli_packets(node).values() for p in packets} == {3}


def test_adoption_removes_what_was_added_by_hand_and_replaces_a_dormant_table(node: str) -> None:
    load_with_counters(node, plan(), 3)
    nsexec(node, "nft", "add", "chain", "inet", "stockade", "by-hand")
    nsexec(node, "nft", "add", "set", "inet", "stockade", "by-hand-set", "{ type ipv4_addr; }")
    nsexec(node, "nft", "add", "rule", "inet", "stockade", "forward", "counter", "accept")
    assert Applier(nft=Nft()).apply(plan()).outcome == "adopted"
    assert kernel(node) == kernel_of(plan())

    nsexec(node, "nft", "add", "table", "inet", "stockade", "{ flags dormant; }")
    assert Applier(nft=Nft()).apply(plan()).outcome == "adopted"
    assert kernel(node) == kernel_of(plan())  # not dormant any more: swapped whole


# --- drift ----------------------------------------------------------------------------------------


def test_drift_after_a_flush_is_repaired_by_a_diff(node: str) -> None:
    applier = Applier(nft=Nft())
    applier.apply(plan())
    want = kernel(node)
    nsexec(node, "nft", "flush", "table", "inet", "stockade")
    report = applier.check()
    assert report.drifted and report.repair == "diff"
    assert any(d.startswith("chain forward") for d in report.differences)
    assert kernel(node) == want
    assert applier.drift_repairs_total == 1
    assert not applier.check().drifted


def test_drift_after_deleting_a_rule_by_hand_repairs_only_that_chain(
    node: str, routed: dict[str, str]
) -> None:
    applier = Applier(nft=Nft())
    applier.apply(plan())
    send_udp(routed["a"], PODS["a"], PODS["b"], 4)
    wait_for(lambda: cli_counters(node).get("x/b-from-a ingress[0]", 0) >= 4)
    want = kernel(node)
    doc = json.loads(nsexec(node, "nft", "-a", "-j", "list", "chain", "inet", "stockade", "forward").stdout)
    handle = next(o["rule"]["handle"] for o in doc["nftables"] if "rule" in o)
    nsexec(node, "nft", "delete", "rule", "inet", "stockade", "forward", "handle", str(handle))
    report = applier.check()
    assert report.differences == ("chain forward: rules differ (" + report.differences[0].split("(", 1)[1],)
    assert report.repair == "diff"
    assert kernel(node) == want
    assert cli_counters(node)["x/b-from-a ingress[0]"] == 4  # another chain: untouched


def test_a_deleted_table_is_rebuilt_whole(node: str) -> None:
    applier = Applier(nft=Nft())
    applier.apply(plan())
    nsexec(node, "nft", "delete", "table", "inet", "stockade")
    report = applier.check()
    assert report.differences == ("table inet stockade: missing",) and report.repair == "full"
    assert kernel(node) == kernel_of(plan())


def test_remove_deletes_the_table_and_may_be_repeated(node: str) -> None:
    applier = Applier(nft=Nft())
    applier.apply(plan())
    applier.remove()
    assert not has_table(node)
    applier.remove()
    assert applier.committed is None and not applier.check().checked
