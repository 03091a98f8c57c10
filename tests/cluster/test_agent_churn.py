"""Churn on the release lab's real nodes while policies exist: after each change made through the
API, the reachability measured between the churned pods (TCP 8080, IPv4 and IPv6, across and
within nodes) equals the reference semantics (`compiler.semantics.evaluate` of the namespaces,
pods, policies and nodes read back from the API) within the programming-latency bound.

The steps run in order on one workload, each a change a user or a controller makes:

    team-a (team=a)  web (node-1, app=web)   db-0 (StatefulSet db, node-2, app=db)
    team-b (team=b)  client (node-2, app=client)   late (created by a step, node-1)
    web-ingress: web admits app=client pods of team=b namespaces;  db-ingress: db admits web

(web-ingress is edited, then deleted; db-ingress stays, so db-0 is isolated when it is recreated.)

The StatefulSet step force-deletes db-0: the API forgets it at once and the StatefulSet controller
makes a new db-0 (same name, new UID, new sandbox, new address) while node-2's kubelet is still
tearing the old one down, so the old incarnation's sandbox DEL (stockade-cni -> agent) arrives
after the new pod is programmed. The matrix is measured again once node-2's containerd holds
nothing of the old incarnation: that late DELETE must not have removed the new pod.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

from tests.cluster.agentlab import api_model, converge, expected, pod_manifest, pod_spec
from tests.cluster.lab import Lab
from tests.cluster.lab.workloads import apply, endpoints, pods, wait_gone, wait_pods
from tests.support.probe import Prober

pytestmark = pytest.mark.cluster

A, B = "agentops-a", "agentops-b"
NAMESPACES = {A: {"team": "a"}, B: {"team": "b"}}
# From a change through the API to the kernel (the agent's debounce is 10 ms; the rest is the
# watch, the compile and an nft transaction, on a host shared with other sessions).
BOUND = 20.0
POD_START = 120.0


def _policy(namespace: str, name: str, selector: dict[str, str], peer: dict[str, object]) -> str:
    return json.dumps(
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "podSelector": {"matchLabels": selector},
                "policyTypes": ["Ingress"],
                "ingress": [{"from": [peer], "ports": [{"port": 8080, "protocol": "TCP"}]}],
            },
        }
    )


WEB_INGRESS = _policy(
    A,
    "web-ingress",
    {"app": "web"},
    {"namespaceSelector": {"matchLabels": {"team": "b"}}, "podSelector": {"matchLabels": {"app": "client"}}},
)
DB_INGRESS = _policy(A, "db-ingress", {"app": "db"}, {"podSelector": {"matchLabels": {"app": "web"}}})
STATEFULSET = json.dumps(
    {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": "db", "namespace": A},
        "spec": {
            "serviceName": "db",
            "replicas": 1,
            "selector": {"matchLabels": {"app": "db"}},
            "template": {"metadata": {"labels": {"app": "db"}}, "spec": pod_spec("node-2")},
        },
    }
)


@dataclass
class World:
    lab: Lab
    latencies: dict[str, float] = field(default_factory=dict)

    def settle(self, what: str, *, since: float, bound: float = BOUND, from_ready: bool = False) -> None:
        """Every churned pod Ready, then the measured matrix equals the semantics within `bound`,
        counted from `since` or (`from_ready`: the change started pods) from the moment they were
        Ready and could be probed: a pod's start is the kubelet's and containerd's time, not
        programming latency."""
        count = {ns: len(pods(self.lab, ns)) for ns in NAMESPACES}
        ready = [
            p for ns, n in count.items() for p in wait_pods(self.lab, ns, "", count=n, timeout=POD_START)
        ]
        eps = endpoints(self.lab, ready)  # starting new pods' probe clients takes a second or two
        if from_ready:
            since = time.monotonic()
        want = expected(api_model(self.lab), [e.name for e in eps], (4, 6))
        latency = converge(Prober(eps), want, since=since, bound=bound, title=what)
        self.latencies[what] = latency
        after = "its pods were Ready and probed" if from_ready else "it"
        print(f"{what}: " + (f"enforced {latency * 1000:.0f} ms after {after}" if bound > 0 else "as before"))


@pytest.fixture(scope="module")
def world(release_lab: Lab) -> Iterator[World]:
    lab = release_lab
    docs = [
        json.dumps({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": labels}})
        for ns, labels in NAMESPACES.items()
    ]
    docs += [WEB_INGRESS, DB_INGRESS, STATEFULSET]
    docs += [
        pod_manifest("web", A, "node-1", {"app": "web"}),
        pod_manifest("client", B, "node-2", {"app": "client"}),
    ]
    try:
        apply(lab, "\n---\n".join(docs))
        wait_pods(lab, A, "", count=2, timeout=POD_START)
        world = World(lab)
        world.settle("the workload with its policies", since=time.monotonic(), from_ready=True)
        yield world
        print("churn latencies (ms):", {k: round(v * 1000) for k, v in world.latencies.items()})
    finally:
        for ns in NAMESPACES:
            lab.kubectl("delete", "namespace", ns, "--ignore-not-found", "--wait=false", check=False)
        for ns in NAMESPACES:
            wait_gone(lab, ns, "", timeout=120)


# --- the steps ------------------------------------------------------------------------------------


def _new_pod(lab: Lab) -> None:
    apply(lab, pod_manifest("late", B, "node-1", {"app": "client"}))


def _pod_relabel(lab: Lab) -> None:
    lab.kube.patch(f"/api/v1/namespaces/{B}/pods/late", {"metadata": {"labels": {"app": "other"}}})


def _namespace_relabel(lab: Lab) -> None:
    lab.kube.patch(f"/api/v1/namespaces/{B}", {"metadata": {"labels": {"team": "x"}}})


def _policy_edit(lab: Lab) -> None:
    apply(
        lab, _policy(A, "web-ingress", {"app": "web"}, {"namespaceSelector": {"matchLabels": {"team": "x"}}})
    )


def _policy_delete(lab: Lab) -> None:
    lab.kubectl("delete", "-n", A, "networkpolicy", "web-ingress")


def _pod_delete(lab: Lab) -> None:
    lab.kubectl("delete", "-n", B, "pod", "late", "--wait=false")


STEPS: list[tuple[str, Callable[[Lab], None]]] = [
    ("a pod created", _new_pod),
    ("a pod relabelled", _pod_relabel),
    ("a namespace relabelled", _namespace_relabel),
    ("a policy edited", _policy_edit),
    ("a policy deleted", _policy_delete),
    ("a pod deleted", _pod_delete),
]


@pytest.mark.parametrize("change", [c for _, c in STEPS], ids=[i for i, _ in STEPS])
def test_each_change_is_enforced_as_the_semantics_say(world: World, change: Callable[[Lab], None]) -> None:
    what = next(i for i, c in STEPS if c is change)
    since = time.monotonic()
    change(world.lab)
    if change is _pod_delete:
        wait_gone(world.lab, B, "app=other", timeout=POD_START)
        since = time.monotonic()
    world.settle(what, since=since, from_ready=change is _new_pod)


def _allocated(lab: Lab, ip: str) -> bool:
    """Whether node-2's stockade-cni IPAM holds `ip` (host-local style: a file per allocated
    address in its network's directory; DEL removes it)."""
    return (lab.node_dir("node-2") / "stockade-state" / "ipam" / "stockade" / ip).exists()


def test_a_statefulset_pod_recreated_with_its_name_survives_its_old_incarnations_delete(world: World) -> None:
    lab = world.lab
    (old,) = wait_pods(lab, A, "app=db", count=1, timeout=POD_START)
    old_uid, old_ips = old["metadata"]["uid"], [i["ip"] for i in old["status"]["podIPs"]]
    assert all(_allocated(lab, ip) for ip in old_ips), "node-2's IPAM does not hold db-0's addresses"
    since = time.monotonic()
    lab.kubectl("delete", "-n", A, "pod", "db-0", "--grace-period=0", "--force")
    deadline = since + POD_START
    while True:
        (new,) = wait_pods(lab, A, "app=db", count=1, timeout=POD_START)
        if new["metadata"]["uid"] != old_uid:
            break
        assert time.monotonic() < deadline, "the StatefulSet did not recreate db-0"
        time.sleep(0.3)
    world.settle("a StatefulSet pod recreated (same name, new UID)", since=since, from_ready=True)
    # The old incarnation's sandbox goes (and stockade-cni's DEL for it reaches the agent) only
    # now, or a moment ago: once its addresses are released (the DEL ran) and the agent had a
    # moment for it, the new db-0 must be as it was, at once: no waiting for a repair.
    while any(_allocated(lab, ip) for ip in old_ips):
        assert time.monotonic() < deadline, f"node-2 still holds the old db-0's addresses {old_ips}"
        time.sleep(0.3)
    gone = time.monotonic()
    time.sleep(2)
    world.settle("the old incarnation's DEL handled", since=gone, bound=0.0)
