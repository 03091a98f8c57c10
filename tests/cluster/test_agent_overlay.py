"""End to end without kubelets: real ``stockade agent`` processes, one per node namespace, drive
the VXLAN overlay and the ruleset from the API; pods attached by ``stockade-cni`` as a runtime
attaches them talk across nodes over IPv4 and IPv6 with strict reverse-path filtering on; a
namespace-isolating policy is enforced on both nodes (ingress on one, egress on the other) and
from a new pod's first packet; a third node joins by its Node object alone; deleting a Node
removes its overlay entries from the others; CNI DEL leaves nothing behind.

The tests run in order on one lab (module scope), each building on the state the previous left.
See :mod:`tests.cluster.overlaylab` for what stands in for kubelets and the runtime.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from pyroute2 import netns

from tests.cluster.apiserver import ControlPlane, control_plane
from tests.cluster.lab.kube import MERGE
from tests.cluster.overlaylab import (
    HUB_ADDRESS,
    Node,
    Pod,
    make_hub,
    make_root,
    remove_root,
    underlay_address,
    wait_until,
)
from tests.cluster.overlaystate import (
    add_underlay_address,
    holds,
    lacks,
    leftovers,
    overlay_entries,
    pod_links,
    remove_by_hand,
)
from tests.support.nodelab import has_table

pytestmark = pytest.mark.cluster

BOUND = 10.0  # seconds from an API write to enforcement or overlay change on a loaded machine
FIRST_SYN = 0.5  # a probe shorter than TCP's 1 s SYN retransmission: one packet decides
ISOLATED, OPEN = "alpha", "beta"
FAMILIES = (4, 6)
# alpha's pods talk among themselves only, both ways.
ISOLATE = {
    "metadata": {"name": "isolate", "namespace": ISOLATED},
    "spec": {
        "podSelector": {},
        "policyTypes": ["Ingress", "Egress"],
        "ingress": [{"from": [{"podSelector": {}}]}],
        "egress": [{"to": [{"podSelector": {}}]}],
    },
}


@dataclass
class Lab:
    hub: str
    root: Path
    cp: ControlPlane
    nodes: dict[str, Node] = field(default_factory=dict)
    pods: dict[str, Pod] = field(default_factory=dict)

    def add_node(self, name: str, index: int) -> Node:
        return self.start(self.join(name, index))

    def join(self, name: str, index: int) -> Node:
        """The node's namespace on the underlay, and its Node object (as a kubelet registers it)."""
        node = Node(name=name, index=index, hub=self.hub, root=self.root, kube=self.cp.kube)
        self.nodes[name] = node
        node.create()
        with self.cp.here():
            node.register()
        return node

    def start(self, node: Node) -> Node:
        """The DaemonSet's pod on it: the CNI installer, then the agent."""
        node.install_cni()
        node.start_agent(self.cp.kubeconfig)
        wait_until(f"{node.name} ready", node.agent_ready, timeout=90, nodes=(node,))
        return node

    def add_pod(self, namespace: str, name: str, node: str, *, status: bool = True) -> Pod:
        pod = Pod(namespace=namespace, name=name, node=self.nodes[node])
        self.pods[name] = pod
        with self.cp.here():
            pod.create()
        pod.add()
        if status:
            self.report(pod)
        return pod

    def report(self, pod: Pod) -> None:
        with self.cp.here():
            pod.report_status()

    def agents(self) -> tuple[Node, ...]:
        return tuple(self.nodes.values())


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    hub = f"stkow{os.getpid()}"
    root = make_root()
    make_hub(hub)
    try:
        with control_plane(netns=hub, address=HUB_ADDRESS) as cp:
            the_lab = Lab(hub, root, cp)
            try:
                with cp.here():
                    for namespace in (ISOLATED, OPEN):
                        cp.kube.create("/api/v1/namespaces", {"metadata": {"name": namespace}})
                the_lab.add_node("node1", 1)
                the_lab.add_node("node2", 2)
                for name, namespace, where in (
                    ("a1", ISOLATED, "node1"),
                    ("b1", OPEN, "node1"),
                    ("a2", ISOLATED, "node2"),
                    ("b2", OPEN, "node2"),
                ):
                    the_lab.add_pod(namespace, name, where).serve()
                yield the_lab
            finally:
                for pod in the_lab.pods.values():
                    pod.close()
                for node in the_lab.nodes.values():
                    node.close()
    finally:
        with contextlib.suppress(OSError):
            netns.remove(hub)
        remove_root(root)


def matrix(lab: Lab, pairs: list[tuple[str, str]]) -> dict[str, bool]:
    return {
        f"{src}->{dst} v{family}": lab.pods[src].reach(lab.pods[dst], family)
        for src, dst in pairs
        for family in FAMILIES
    }


def test_pods_on_different_nodes_reach_each_other_over_the_overlay(lab: Lab) -> None:
    """No policy yet: every pair across the nodes connects, on both families, from the pod's own
    address (no NAT), with strict rp_filter and the agents' tables (anti-spoofing) loaded."""
    for node in lab.agents():
        assert has_table(node.netns), f"{node.name} has no stockade table"
    assert holds(lab.nodes["node1"], 2) == {"routes": True, "neigh": True, "fdb": True}
    assert holds(lab.nodes["node2"], 1) == {"routes": True, "neigh": True, "fdb": True}
    pairs = [("a1", "b2"), ("b2", "a1"), ("a2", "b1"), ("b1", "a2"), ("a1", "a2"), ("b2", "b1")]
    assert matrix(lab, pairs) == dict.fromkeys(matrix_keys(pairs), True)


def matrix_keys(pairs: list[tuple[str, str]]) -> list[str]:
    return [f"{src}->{dst} v{family}" for src, dst in pairs for family in FAMILIES]


def test_a_namespace_isolating_policy_is_enforced_on_both_nodes(lab: Lab) -> None:
    with lab.cp.here():
        lab.cp.kube.create(f"/apis/networking.k8s.io/v1/namespaces/{ISOLATED}/networkpolicies", ISOLATE)
    a1, b2 = lab.pods["a1"], lab.pods["b2"]
    took = wait_until(
        "b2 -> a1 blocked (ingress on node1)",
        lambda: not b2.reach(a1, 4, timeout=FIRST_SYN),
        timeout=BOUND,
        nodes=lab.agents(),
    )
    print(f"policy create -> enforced across nodes: {took * 1000:.0f} ms")
    denied = [
        ("b2", "a1"),  # ingress, on node1 (b2's egress on node2 allows it)
        ("a1", "b2"),  # egress, on node1
        ("a2", "b1"),  # egress, on node2
        ("b1", "a2"),  # ingress, on node2
    ]
    allowed = [("a1", "a2"), ("a2", "a1"), ("b1", "b2"), ("b2", "b1")]
    expected = {**dict.fromkeys(matrix_keys(denied), False), **dict.fromkeys(matrix_keys(allowed), True)}
    seen: dict[str, bool] = {}
    rounds: list[float] = []

    def enforced() -> bool:
        seen.update(matrix(lab, denied + allowed))
        rounds.append(time.monotonic())
        return seen == expected

    # Each round costs a second per denied probe: the bound covers a few rounds.
    wait_until("the whole matrix as the policy says", enforced, timeout=3 * BOUND, nodes=lab.agents())
    print(f"the whole matrix as the policy says in round {len(rounds)} of probes")


@pytest.mark.parametrize(
    ("name", "node", "local", "remote"),
    [("a3", "node2", "2", "1"), ("a4", "node1", "1", "2"), ("a5", "node2", "2", "1")],
    ids=["a3-on-node2", "a4-on-node1", "a5-on-node2-again"],
)
def test_a_pod_sending_as_its_first_act_is_already_subject_to_policy(
    lab: Lab, name: str, node: str, local: str, remote: str
) -> None:
    """ADD returns once the agent programmed the pod, before the kubelet reports its addresses:
    the pod's first SYN is judged by its policy (denied to beta here and on the other node,
    allowed to alpha on its own node, where its reported address is already a peer)."""
    pod = lab.add_pod(ISOLATED, name, node, status=False)
    first = {
        f"-> b{local} v4": pod.reach(lab.pods[f"b{local}"], 4, timeout=FIRST_SYN),
        f"-> b{remote} v6": pod.reach(lab.pods[f"b{remote}"], 6, timeout=FIRST_SYN),
        f"-> a{local} v4": pod.reach(lab.pods[f"a{local}"], 4, timeout=FIRST_SYN),
    }
    assert first == {f"-> b{local} v4": False, f"-> b{remote} v6": False, f"-> a{local} v4": True}
    lab.report(pod)
    pod.serve()
    peer = lab.pods[f"a{remote}"]
    across = f"a{remote} -> {name} across nodes once the API shows it"
    wait_until(across, lambda: peer.reach(pod, 4), timeout=BOUND)
    assert not lab.pods[f"b{remote}"].reach(pod, 6, timeout=FIRST_SYN)


def test_a_third_node_joins_without_restarting_the_agents(lab: Lab) -> None:
    pids = {name: node.agent.proc.pid for name, node in lab.nodes.items() if node.agent is not None}
    node3 = lab.join("node3", 3)
    took = wait_until(
        "node3's route, neighbours and FDB entry on node1 and node2",
        lambda: all(all(holds(lab.nodes[n], 3).values()) for n in ("node1", "node2")),
        timeout=BOUND,
        nodes=lab.agents(),
    )
    print(f"Node object -> in the others' overlay: {took * 1000:.0f} ms")
    lab.start(node3)
    lab.add_pod(OPEN, "b3", "node3").serve()
    b1, b2, b3 = lab.pods["b1"], lab.pods["b2"], lab.pods["b3"]
    took = wait_until(
        "b1 -> b3 and b3 -> b2 on both families",
        lambda: all(b1.reach(b3, f) and b3.reach(b2, f) for f in FAMILIES),
        timeout=BOUND,
        nodes=lab.agents(),
    )
    print(f"third node's pod reachable {took * 1000:.0f} ms after its ADD")
    assert not lab.pods["a1"].reach(b3, 4, timeout=FIRST_SYN)  # alpha's egress, on node1
    assert not b3.reach(lab.pods["a2"], 6, timeout=FIRST_SYN)  # alpha's ingress, on node2
    assert {name: lab.nodes[name].agent.proc.pid for name in pids} == pids  # type: ignore[union-attr]


def test_overlay_drift_is_repaired_within_the_check_interval(lab: Lab) -> None:
    node1 = lab.nodes["node1"]
    node1.call(remove_by_hand, 2)
    assert holds(node1, 2) == {"routes": False, "neigh": True, "fdb": False}
    took = wait_until(
        "node1's route and FDB entry for node2 back",
        lambda: all(holds(node1, 2).values()),
        timeout=BOUND,
        nodes=lab.agents(),
    )
    print(f"overlay drift repaired after {took * 1000:.0f} ms (check interval 1 s)")
    assert lab.pods["a1"].reach(lab.pods["a2"], 4)


def _report_internal_ip(lab: Lab, name: str, address: str) -> None:
    """Node ``name`` reports ``address`` as its InternalIP; the others follow."""
    with lab.cp.here():
        status = {"status": {"addresses": [{"type": "InternalIP", "address": address}]}}
        lab.cp.kube.patch(f"/api/v1/nodes/{name}/status", status, kind=MERGE)


def test_a_node_changing_its_internal_ip_stays_reachable(lab: Lab) -> None:
    """node2 moves to another underlay address: node1's FDB entry follows (and node2's device is
    re-created with its new local address); pods across the two talk again within the bound."""
    node1, node2 = lab.nodes["node1"], lab.nodes["node2"]
    a1, a2 = lab.pods["a1"], lab.pods["a2"]
    moved = underlay_address(12)
    node2.call(add_underlay_address, moved)
    for address in (moved, underlay_address(2)):  # there and back (the later tests expect .2)
        _report_internal_ip(lab, "node2", address)
        took = wait_until(
            f"node1's FDB entry for node2 at {address}, and a1 <-> a2 on both families",
            lambda address=address: (
                address in node1.call(overlay_entries)["fdb"]
                and all(a1.reach(a2, f) and a2.reach(a1, f) for f in FAMILIES)
            ),
            timeout=BOUND,
            nodes=lab.agents(),
        )
        print(f"InternalIP -> {address}: reachable again after {took * 1000:.0f} ms")
        assert node1.call(overlay_entries)["fdb"] & {moved, underlay_address(2)} == {address}


def test_deleting_a_node_removes_its_overlay_entries_from_the_others(lab: Lab) -> None:
    node1, node2, node3 = lab.nodes["node1"], lab.nodes["node2"], lab.nodes["node3"]
    for node in (node1, node2):
        assert holds(node, 3) == {"routes": True, "neigh": True, "fdb": True}
    b3 = lab.pods.pop("b3")
    with lab.cp.here():
        b3.delete()
    b3.close()
    node3.stop_agent()
    with lab.cp.here():
        lab.cp.kube.delete("/api/v1/nodes/node3")
    took = wait_until(
        "node3's route, neighbours and FDB entry gone from node1 and node2",
        lambda: lacks(node1, 3) and lacks(node2, 3),
        timeout=BOUND,
        nodes=(node1, node2),
    )
    print(f"Node delete -> overlay entries gone: {took * 1000:.0f} ms")
    assert holds(node1, 2) == {"routes": True, "neigh": True, "fdb": True}  # the others stay


def test_cni_del_leaves_no_addresses_links_or_routes(lab: Lab) -> None:
    by_node: dict[str, list[str]] = {}
    for pod in lab.pods.values():
        by_node.setdefault(pod.node.name, []).extend(pod.addresses)
    with lab.cp.here():
        for pod in list(lab.pods.values()):
            before = pod.node.call(leftovers, list(pod.addresses))
            assert before["links"] and before["routes"], f"{pod.name} was not attached: {before}"
            pod.delete()
            pod.node.cni("DEL", container_id=pod.container_id, pod=pod)  # idempotent: again is fine
            assert pod.worker is not None
            assert pod.worker.call(pod_links) == ["lo"], f"{pod.name}'s sandbox keeps links"
    for name, addresses in by_node.items():
        node = lab.nodes[name]
        assert node.call(leftovers, addresses) == {"links": [], "routes": []}, name
        network = node.ipam / str(node.plugin_conf["name"])
        held = sorted(
            p.name
            for p in network.iterdir()
            if p.is_file() and p.name != "lock" and not p.name.startswith("last-")
        )
        assert held == [], f"{name}: IPAM still holds {held}"
