"""The agent against a real kube-apiserver: every change made through the API leads, within a
latency bound, to a plan equal to ``build_plan`` of the same objects (read back from the API and
through the manifest loader, not through the agent's own parsing); bursts coalesce; the agent
writes nothing to what it watches; Events; /readyz and /metrics.

No kubelets run here: pods get their addresses from the test, through the status subresource,
as a kubelet would report them. The kernel side is a recording applier (tests/cluster/agentrun.py).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from compiler.ir import NodePlan
from compiler.loader import load_manifests
from compiler.plan import build_plan
from controller.agent import apiclient
from controller.agent import kube as kube_client
from controller.agent.apiclient import ApiClient, load_credentials
from controller.agent.loop import Agent
from controller.agent.notices import Notice, ObjectRef
from controller.agent.objects import parse
from controller.agent.operator import resync
from tests.cluster.agentrun import AGENT_OPTIONS, RecordingApplier, RunningAgent, running_agent
from tests.cluster.apiserver import ControlPlane, control_plane, free_port
from tests.cluster.lab.kube import MERGE, Kube
from tests.cluster.lab.pki import Identity

pytestmark = pytest.mark.cluster

NODE = "n1"
NS = "agent-test"
LATENCY_BOUND = 3.0  # seconds from an API write to the plan: generous for a loaded 2-core machine
LISTS = ("/apis/networking.k8s.io/v1/networkpolicies", "/api/v1/pods", "/api/v1/namespaces", "/api/v1/nodes")


def oracle(kube: Kube) -> NodePlan:
    sources = [(path, json.dumps(kube.get(path))) for path in LISTS]
    return build_plan(load_manifests(sources).model, node=NODE, options=AGENT_OPTIONS)


def create_pod(
    kube: Kube,
    name: str,
    *,
    ip: str,
    labels: dict[str, str],
    node: str = NODE,
    ports: dict[str, int] | None = None,
) -> None:
    container: dict[str, Any] = {"name": "c", "image": "registry.k8s.io/pause:3.10.2"}
    if ports:
        container["ports"] = [{"name": n, "containerPort": p} for n, p in ports.items()]
    kube.create(
        f"/api/v1/namespaces/{NS}/pods",
        {"metadata": {"name": name, "labels": labels}, "spec": {"nodeName": node, "containers": [container]}},
    )
    status = {"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}}
    kube.patch(f"/api/v1/namespaces/{NS}/pods/{name}/status", status, kind=MERGE)


def policy(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": NS}, "spec": spec}


POLICIES = f"/apis/networking.k8s.io/v1/namespaces/{NS}/networkpolicies"
ALLOW_WEB = {
    "podSelector": {"matchLabels": {"app": "web"}},
    "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "client"}}}], "ports": [{"port": 80}]}],
}


def wait_equal(agent: RunningAgent, kube: Kube, *, since: float, bound: float = LATENCY_BOUND) -> float:
    """Seconds from ``since`` until the agent's last applied plan equals the oracle."""
    expected = oracle(kube)
    deadline = since + bound
    applier: RecordingApplier = agent.applier
    while time.monotonic() < deadline:
        with applier.lock:
            hit = next((t for t, p in reversed(applier.plans) if p == expected), None)
            latest = applier.plans[-1][1] if applier.plans else None
        if hit is not None and latest == expected:
            return max(0.0, hit - since)
        assert not agent.errors, agent.errors
        time.sleep(0.01)
    raise AssertionError(f"the applied plan did not equal build_plan of the API's objects within {bound}s")


def resource_versions(kube: Kube) -> dict[str, str]:
    out = {}
    for path in LISTS:
        for item in kube.get(path)["items"]:
            meta = item["metadata"]
            out[f"{path}/{meta.get('namespace', '')}/{meta['name']}"] = meta["resourceVersion"]
    return out


# The agent runs as a user with exactly the permissions README.md lists ("Agent": RBAC): reading
# the four kinds, creating Events, reading kube-proxy's ConfigMap. Any other call, a write to a
# watched object above all, is refused by the API server.
AGENT = Identity("stockade-agent", "stockade-agent")
RBAC: list[tuple[str, dict[str, Any]]] = [
    (
        "/apis/rbac.authorization.k8s.io/v1/clusterroles",
        {
            "metadata": {"name": "stockade-agent"},
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["pods", "namespaces", "nodes"],
                    "verbs": ["get", "list", "watch"],
                },
                {
                    "apiGroups": ["networking.k8s.io"],
                    "resources": ["networkpolicies"],
                    "verbs": ["get", "list", "watch"],
                },
                {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
            ],
        },
    ),
    (
        "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
        {
            "metadata": {"name": "stockade-agent"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "stockade-agent",
            },
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": AGENT.user}],
        },
    ),
    (
        "/apis/rbac.authorization.k8s.io/v1/namespaces/kube-system/roles",
        {
            "metadata": {"name": "stockade-agent"},
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["configmaps"],
                    "resourceNames": ["kube-proxy"],
                    "verbs": ["get"],
                }
            ],
        },
    ),
    (
        "/apis/rbac.authorization.k8s.io/v1/namespaces/kube-system/rolebindings",
        {
            "metadata": {"name": "stockade-agent"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "stockade-agent"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": AGENT.user}],
        },
    ),
]


@pytest.fixture(scope="module")
def cp() -> Iterator[ControlPlane]:
    with control_plane(clients=(AGENT,)) as plane:
        kube = plane.kube
        for path, body in RBAC:
            kube.create(path, body)
        kube.create(
            "/api/v1/nodes",
            {"metadata": {"name": NODE}, "spec": {"podCIDR": "10.244.1.0/24", "podCIDRs": ["10.244.1.0/24"]}},
        )
        kube.create(
            "/api/v1/nodes",
            {"metadata": {"name": "n2"}, "spec": {"podCIDR": "10.244.2.0/24", "podCIDRs": ["10.244.2.0/24"]}},
        )
        kube.create("/api/v1/namespaces", {"metadata": {"name": NS}})
        # kube-proxy's configuration as kubeadm stores it, in IPVS mode: the agent must warn.
        kube.create(
            "/api/v1/namespaces/kube-system/configmaps",
            {
                "metadata": {"name": "kube-proxy"},
                "data": {"config.conf": "kind: KubeProxyConfiguration\nmode: ipvs\n"},
            },
        )
        create_pod(kube, "web", ip="10.244.1.10", labels={"app": "web"})
        create_pod(kube, "client", ip="10.244.2.10", labels={"role": "client"}, node="n2")
        yield plane


@pytest.fixture(scope="module")
def started(cp: ControlPlane) -> Iterator[tuple[RunningAgent, dict[str, str], list[tuple[int, str]]]]:
    """The agent, the resourceVersions before it started, and /readyz answers before its first apply."""
    before = resource_versions(cp.kube)
    applier = RecordingApplier()
    applier.gate.clear()  # hold the first apply: /readyz must say not ready meanwhile
    kubeconfig = cp.kubeconfig_for(AGENT)
    with running_agent(node=NODE, kubeconfig=kubeconfig, port=free_port(), applier=applier) as agent:
        answers: list[tuple[int, str]] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not answers:
            try:
                answers.append(agent.get("/readyz"))
            except OSError:
                time.sleep(0.1)  # not listening yet
        time.sleep(0.5)
        answers.append(agent.get("/readyz"))
        applier.gate.set()
        yield agent, before, answers


@pytest.fixture
def agent(started: tuple[RunningAgent, dict[str, str], list[tuple[int, str]]]) -> RunningAgent:
    return started[0]


def test_readyz_flips_to_ready_after_the_first_apply(
    started: tuple[RunningAgent, dict[str, str], list[tuple[int, str]]],
) -> None:
    agent, _, answers = started
    assert answers and all(status == 503 for status, _ in answers), answers
    deadline = time.monotonic() + 30
    while agent.get("/readyz")[0] != 200:
        assert time.monotonic() < deadline, "the agent never became ready"
        time.sleep(0.1)
    assert agent.applier.count >= 1
    assert agent.get("/healthz")[0] == 200


def test_first_plan_equals_the_full_compile(agent: RunningAgent, cp: ControlPlane) -> None:
    wait_equal(agent, cp.kube, since=time.monotonic())


def _create_policy(kube: Kube) -> None:
    kube.create(POLICIES, policy("allow-web", ALLOW_WEB))


def _relabel_client(kube: Kube) -> None:
    kube.patch(
        f"/api/v1/namespaces/{NS}/pods/client", {"metadata": {"labels": {"role": "other"}}}, kind=MERGE
    )


def _new_local_pod(kube: Kube) -> None:
    create_pod(kube, "web2", ip="10.244.1.11", labels={"app": "web"})


def _namespace_relabel(kube: Kube) -> None:
    kube.patch(f"/api/v1/namespaces/{NS}", {"metadata": {"labels": {"team": "blue"}}}, kind=MERGE)


def _new_namespace(kube: Kube) -> None:
    kube.create("/api/v1/namespaces", {"metadata": {"name": "other", "labels": {"team": "blue"}}})


def _edit_policy(kube: Kube) -> None:
    spec = {**ALLOW_WEB, "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "blue"}}}]}]}
    kube.patch(f"{POLICIES}/allow-web", {"spec": spec}, kind=MERGE)


def _delete_pod(kube: Kube) -> None:
    kube.delete(f"/api/v1/namespaces/{NS}/pods/web2", {"gracePeriodSeconds": 0})


def _delete_policy(kube: Kube) -> None:
    kube.delete(f"{POLICIES}/allow-web")


STEPS: list[tuple[str, Callable[[Kube], None]]] = [
    ("create-policy", _create_policy),
    ("relabel-pod", _relabel_client),
    ("new-local-pod", _new_local_pod),
    ("relabel-namespace", _namespace_relabel),
    ("new-namespace", _new_namespace),
    ("edit-policy", _edit_policy),
    ("delete-pod", _delete_pod),
    ("delete-policy", _delete_policy),
]


@pytest.mark.parametrize("step", [s for _, s in STEPS], ids=[n for n, _ in STEPS])
def test_each_change_reaches_the_plan_within_the_bound(
    agent: RunningAgent, cp: ControlPlane, step: Callable[[Kube], None]
) -> None:
    wait_equal(agent, cp.kube, since=time.monotonic())  # the previous step is done
    started = time.monotonic()
    step(cp.kube)
    latency = wait_equal(agent, cp.kube, since=started)
    print(f"{step.__name__}: plan equal {latency * 1000:.0f} ms after the API write returned")
    assert latency < LATENCY_BOUND


def test_a_burst_of_100_pod_changes_coalesces(agent: RunningAgent, cp: ControlPlane) -> None:
    kube = cp.kube
    names = [f"burst-{i}" for i in range(100)]
    with ThreadPoolExecutor(8) as pool:
        list(
            pool.map(
                lambda n: create_pod(kube, n, ip=f"10.244.1.{100 + names.index(n)}", labels={"app": "web"}),
                names,
            )
        )
    wait_equal(agent, kube, since=time.monotonic())
    before = agent.applier.count
    started = time.monotonic()
    # One request, 100 pod deletions: the watch delivers 100 events in a burst.
    kube.call(
        "DELETE",
        f"/api/v1/namespaces/{NS}/pods",
        query={"labelSelector": "app=web", "gracePeriodSeconds": "0"},
    )
    wait_equal(agent, kube, since=started)
    applies = agent.applier.count - before
    print(f"100 pod deletions: {applies} applies, {time.monotonic() - started:.2f}s to the plan")
    assert 1 <= applies <= 10, f"100 deletions took {applies} applies"


def test_a_named_port_no_pod_declares_is_an_event_on_the_policy(
    agent: RunningAgent, cp: ControlPlane
) -> None:
    kube = cp.kube
    spec = {"podSelector": {"matchLabels": {"role": "other"}}, "ingress": [{"ports": [{"port": "metrics"}]}]}
    created = kube.create(POLICIES, policy("named-port", spec))
    deadline = time.monotonic() + 10
    found: list[dict[str, Any]] = []
    while not found and time.monotonic() < deadline:
        events = kube.get(f"/api/v1/namespaces/{NS}/events")["items"]
        found = [e for e in events if e["involvedObject"].get("uid") == created["metadata"]["uid"]]
        time.sleep(0.1)
    assert found, "no Event for the policy"
    (event,) = found
    assert event["reason"] == "NamedPortUnresolved"
    assert event["type"] == "Warning"
    assert "'metrics'" in event["message"]
    assert event["source"] == {"component": "stockade-agent", "host": NODE}
    kube.delete(f"{POLICIES}/named-port")


def test_kube_proxy_in_ipvs_mode_is_a_warning_event_on_the_node(
    agent: RunningAgent, cp: ControlPlane
) -> None:
    node_uid = cp.kube.get(f"/api/v1/nodes/{NODE}")["metadata"]["uid"]
    deadline = time.monotonic() + 10
    found: list[dict[str, Any]] = []
    while not found and time.monotonic() < deadline:
        events = cp.kube.get("/api/v1/namespaces/default/events")["items"]
        found = [e for e in events if e["involvedObject"].get("uid") == node_uid]
        time.sleep(0.1)
    assert [(e["reason"], e["type"]) for e in found] == [("KubeProxyIPVS", "Warning")]
    assert "ConfigMap kube-system/kube-proxy sets mode: ipvs" in found[0]["message"]


def test_the_agent_writes_nothing_to_what_it_watches(
    started: tuple[RunningAgent, dict[str, str], list[tuple[int, str]]], cp: ControlPlane
) -> None:
    agent, before, _ = started
    # Objects that existed before the agent started and that no test step changed.
    untouched = {
        k: v for k, v in before.items() if "/agent-test/" not in k and "/namespaces/agent-test" not in k
    }
    untouched = {k: v for k, v in untouched.items() if not k.startswith("/api/v1/namespaces//agent-test")}
    now = resource_versions(cp.kube)
    assert {k: now.get(k) for k in untouched} == untouched
    for path in LISTS:
        for item in cp.kube.get(path)["items"]:
            meta = item["metadata"]
            assert not any(k.startswith("kopf.") for k in meta.get("annotations", {})), meta["name"]
            assert not any("kopf" in f for f in meta.get("finalizers", [])), meta["name"]
            managers = {m.get("manager") for m in meta.get("managedFields", [])}
            assert not any("python" in str(m) or "kopf" in str(m) for m in managers), (meta["name"], managers)
    assert agent.applier.count >= 1


def test_metrics(agent: RunningAgent) -> None:
    status, text = agent.get("/metrics")
    assert status == 200
    for name in (
        "stockade_applies_total",
        "stockade_apply_duration_seconds_bucket",
        "stockade_apply_errors_total 0.0",
        "stockade_ruleset_rules",
        "stockade_ruleset_chains",
        "stockade_ruleset_set_elements",
        'stockade_watch_events_total{kind="Pod"}',
        'stockade_watch_events_total{kind="NetworkPolicy"}',
        "stockade_programming_latency_seconds_bucket",
        "stockade_ready 1.0",
    ):
        assert name in text, name


def test_resync_forgets_objects_deleted_while_unseen(cp: ControlPlane) -> None:
    """After a long outage kopf re-lists without reporting deletions; the resync lists UIDs
    (metadata only, paged) and forgets what is gone, keeping what exists."""
    client = ApiClient(load_credentials(str(cp.kubeconfig)))
    assert kube_client.list_uids(client, "/api/v1/namespaces", page=1) == {
        ns["metadata"]["uid"] for ns in cp.kube.get("/api/v1/namespaces")["items"]
    }

    async def scenario() -> set[str]:
        agent = Agent(node=NODE, applier=RecordingApplier())
        live = cp.kube.get(f"/api/v1/namespaces/{NS}/pods")["items"][0]
        stale = {**live, "metadata": {**live["metadata"], "uid": "deleted-while-away", "name": "ghost"}}
        agent.seed([("Pod", parse("Pod", live)), ("Pod", parse("Pod", stale))])
        await resync(agent, client)
        return agent.known("Pod")

    held = asyncio.run(scenario())
    assert "deleted-while-away" not in held
    assert held  # the pod that exists stays


def is_ready(agent: RunningAgent) -> bool:
    assert not agent.errors, agent.errors
    try:
        return agent.get("/readyz")[0] == 200
    except OSError:
        return False  # not listening yet


def wait_for(what: str, check: Callable[[], bool], *, timeout: float) -> float:
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < timeout, f"{what}: not within {timeout:.0f}s"
        time.sleep(0.1)
    return time.monotonic() - started


def test_an_api_outage_keeps_the_plan_and_later_changes_are_enforced(
    agent: RunningAgent, cp: ControlPlane
) -> None:
    """It stops the API server. While it is away no plan is handed over (the kernel keeps
    the last one) and /readyz says not ready; once it is back, a change reaches the plan."""
    kube = cp.kube
    wait_equal(agent, kube, since=time.monotonic())
    applies, plan = agent.applier.count, agent.applier.last()
    assert agent.get("/readyz")[0] == 200
    stopping = time.monotonic()
    cp.stop("kube-apiserver")  # a graceful shutdown: takes seconds
    try:
        wait_for("/readyz 503", lambda: agent.get("/readyz")[0] == 503, timeout=40)
        unready = time.monotonic() - stopping
        time.sleep(2)
        assert agent.applier.count == applies, "a plan was handed over while the API server was away"
    finally:
        cp.start("kube-apiserver")
        cp.wait_ready()
    back = time.monotonic()
    create_pod(kube, "after-outage", ip="10.244.1.200", labels={"app": "web"})  # a new local pod
    latency = wait_equal(agent, kube, since=back, bound=90)
    assert agent.applier.last() != plan
    wait_for("/readyz 200", lambda: agent.get("/readyz")[0] == 200, timeout=30)
    print(f"outage: not ready {unready:.1f}s after the stop began; a later change applied in {latency:.1f}s")


def test_in_cluster_credentials(cp: ControlPlane, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No --kubeconfig: the agent uses a ServiceAccount token as a pod would find it (the files
    kubelet mounts, the environment kubelet sets), bound to the same RBAC as the user above."""
    kube = cp.kube
    kube.create("/api/v1/namespaces/kube-system/serviceaccounts", {"metadata": {"name": "stockade-agent"}})
    for kind in ("clusterrolebindings", "namespaces/kube-system/rolebindings"):
        kube.patch(
            f"/apis/rbac.authorization.k8s.io/v1/{kind}/stockade-agent",
            {
                "subjects": [
                    {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": AGENT.user},
                    {"kind": "ServiceAccount", "name": "stockade-agent", "namespace": "kube-system"},
                ]
            },
            kind=MERGE,
        )
    token = kube.create(
        "/api/v1/namespaces/kube-system/serviceaccounts/stockade-agent/token",
        {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": 3600},
        },
    )["status"]["token"]
    (tmp_path / "token").write_text(token)
    (tmp_path / "ca.crt").write_bytes((cp.dir / "pki" / "ca.crt").read_bytes())
    host, port = cp.url.removeprefix("https://").rsplit(":", 1)
    monkeypatch.setattr(apiclient, "SERVICE_ACCOUNT", tmp_path)  # where kubelet would mount them
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", host)
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", port)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))  # no fallback to a kubeconfig
    with running_agent(node=NODE, kubeconfig=None, port=free_port(), applier=RecordingApplier()) as agent:
        wait_for("/readyz 200", lambda: is_ready(agent), timeout=60)
        wait_equal(agent, kube, since=time.monotonic())


def test_an_event_into_a_namespace_being_deleted_is_dropped_not_an_error(cp: ControlPlane) -> None:
    """The API server refuses new objects in a terminating namespace; an Event about a policy that
    goes with its namespace is not worth an error (no namespace controller runs here, so a deleted
    namespace stays Terminating). An Event into a live namespace still posts."""
    kube = cp.kube
    kube.create("/api/v1/namespaces", {"metadata": {"name": "going"}})
    kube.delete("/api/v1/namespaces/going")
    assert kube.get("/api/v1/namespaces/going")["status"]["phase"] == "Terminating"
    api = ApiClient(load_credentials(str(cp.kubeconfig_for(AGENT))))
    events = kube_client.KubeEvents(api, node=NODE)

    def notice(namespace: str, reason: str) -> Notice:
        return Notice(
            ObjectRef("NetworkPolicy", "networking.k8s.io/v1", "p", namespace, "uid-1"), reason, "m"
        )

    events.post(notice("going", "GoingAway"))  # no exception
    events.post(notice("never-was", "Gone"))  # nor for a namespace already gone
    assert kube.get("/api/v1/namespaces/going/events")["items"] == []
    events.post(notice("default", "Posted"))
    assert "Posted" in {e["reason"] for e in kube.get("/api/v1/namespaces/default/events")["items"]}
