"""Stockade installed with `helm install` on the lab's real nodes (kubelet + containerd, the chart's
image built by tests/images and imported into every node) enforces policy in the running cluster.

The lab starts with no CNI config at all (`cni="stockade"`): the nodes turn Ready only once the
chart's init containers have put stockade-cni and its conflist on them. Then: pods get addresses
from their node's podCIDRs through stockade-cni (which asks the agent over its socket); a
NetworkPolicy applied with `kubectl apply` is enforced live, same node, across nodes (the lab's
underlay routes podCIDRs between nodes; the overlay is not driven by the agent yet) and through a
Service's ClusterIP, on IPv4 and IPv6, and lifted again on delete; `helm upgrade` to a changed
image rolls every agent while a continuous probe sees no allowed flow cut and no denied flow let
through; `helm uninstall` leaves every node clean. The lab binds per-node directories over the
chart's host paths (realnode.STOCKADE_BINDS), so each node has its own IPAM state, CNI socket and
plugin runtime, as real hosts do.
"""

from __future__ import annotations

import ipaddress
import json
import math
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from pyroute2 import IPRoute

from tests.cluster.chart import CHART, REPO
from tests.cluster.conftest import running_lab
from tests.cluster.lab import Lab
from tests.cluster.lab.config import STOCKADE_CNI_IMAGES
from tests.cluster.lab.nodes import TEST_POD_IMAGE
from tests.cluster.lab.podclients import ctr
from tests.cluster.lab.workloads import apply, endpoints, pods, wait_gone, wait_pods, wait_proxied
from tests.cluster.release import (
    DAEMONSET,
    NAMESPACE,
    RELEASE,
    agent_logs,
    helm,
    install,
    installed,
    uninstall,
    write_values,
)
from tests.images.build import File
from tests.images.derive import derive
from tests.support.probe import Family, PodEndpoint, Prober, ProbeRequest
from tests.support.probing import Probing

pytestmark = pytest.mark.cluster

APP_NS = "chartapp"
CONFLIST = "10-stockade.conflist"
# How long a policy change may take from `kubectl apply` to a changed probe outcome (the agent's
# debounce is 10 ms; the rest is the watch, the compile and one nft transaction on a loaded host).
ENFORCE_WITHIN = 20.0
# Where the upgrade's image carries the file only it has (inside the image, no leading slash).
MARKER = "opt/stockade/UPGRADE-MARKER"
IMAGES_DIR = Path(os.environ.get("STOCKADE_IMAGES_DIR") or "/var/cache/stockade/images")


@pytest.fixture(scope="module")
def rlab() -> Iterator[Lab]:
    # The chart's image (cached: relinked in a second when built before), imported into every node.
    built = subprocess.run(
        ["bash", str(REPO / "tests/images/build.sh"), "stockade"], capture_output=True, text=True, check=False
    )
    assert built.returncode == 0, f"tests/images/build.sh stockade: {built.stderr[-2000:]}"
    name = "chart" + os.environ.get("PYTEST_XDIST_WORKER", "").removeprefix("gw")
    yield from running_lab(Lab.create(name=name, nodes=2, images=STOCKADE_CNI_IMAGES, cni="stockade"))


def _nft(netns: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["nsenter", f"--net=/run/netns/{netns}", "nft", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )


def _links(netns: str) -> set[str]:
    with IPRoute(netns=netns) as ipr:
        return {str(link.get_attr("IFLA_IFNAME")) for link in ipr.get_links()}


@dataclass(frozen=True)
class Release:
    ready_seconds: float  # from `helm install` to the DaemonSet and every node Ready


@pytest.fixture(scope="module")
def release(rlab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Release]:
    values = write_values(rlab, str(tmp_path_factory.mktemp("chart") / "values.yaml"))
    try:
        yield Release(ready_seconds=install(rlab, values))
    finally:
        if installed(rlab):
            uninstall(rlab, hooks=False)


def test_helm_install_makes_the_daemonset_and_every_node_ready(rlab: Lab, release: Release) -> None:
    print(f"helm install -> DaemonSet and nodes Ready: {release.ready_seconds:.1f}s")
    for node in rlab.cfg.all_nodes:
        # Stockade's conflist is the node's only CNI config: the node is Ready through it alone.
        assert sorted(p.name for p in (rlab.node_dir(node.name) / "cni-net.d").iterdir()) == [CONFLIST]
        assert (rlab.node_dir(node.name) / "cni-bin" / "stockade-cni").exists(), node.name
        assert "table inet stockade" in _nft(node.netns, "list", "tables").stdout, node.name
        # stockade-cni STATUS (the kubelet's NetworkReady, through containerd) waits for the agent's
        # first plan: the node turned Ready no earlier than the agent wrote its marker.
        marker = json.loads((rlab.node_dir(node.name) / "stockade-run" / "agent-ready").read_text())
        obj = json.loads(rlab.kubectl("get", "node", node.name, "-o", "json").stdout)
        ready = next(c for c in obj["status"]["conditions"] if c["type"] == "Ready")
        became_ready = datetime.fromisoformat(ready["lastTransitionTime"].replace("Z", "+00:00"))
        assert became_ready.timestamp() >= math.floor(marker["since"]), (node.name, ready, marker)


# --- the workload: two servers (one per node), a friend and a stranger on node-1 ----------------

AGENT_ARGS = '[--control, /tmp/agent.sock, --tcp, "8080"]'


def _pod(name: str, node: str, role: str) -> str:
    return f"""
apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: {APP_NS}, labels: {{role: {role}}}}}
spec:
  nodeSelector: {{kubernetes.io/hostname: {node}}}
  terminationGracePeriodSeconds: 1
  containers:
  - name: agent
    image: {TEST_POD_IMAGE}
    imagePullPolicy: Never
    args: {AGENT_ARGS}
    ports: [{{containerPort: 8080, protocol: TCP}}]
    # kubelet's probe goes from the node to the pod: Stockade lets the node reach its pods.
    startupProbe: {{tcpSocket: {{port: 8080}}, periodSeconds: 1, failureThreshold: 60}}
    readinessProbe: {{tcpSocket: {{port: 8080}}, periodSeconds: 1}}
"""


APP = "\n---\n".join(
    [
        f"apiVersion: v1\nkind: Namespace\nmetadata: {{name: {APP_NS}}}\n",
        _pod("server-1", "node-1", "server"),
        _pod("server-2", "node-2", "server"),
        _pod("friend", "node-1", "friend"),
        _pod("stranger", "node-1", "stranger"),
        f"""
apiVersion: v1
kind: Service
metadata: {{name: server, namespace: {APP_NS}}}
spec:
  ipFamilyPolicy: RequireDualStack
  selector: {{role: server}}
  ports: [{{name: tcp, port: 80, targetPort: 8080, protocol: TCP}}]
""",
    ]
)

POLICY = f"""
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: servers-from-friends, namespace: {APP_NS}}}
spec:
  podSelector: {{matchLabels: {{role: server}}}}
  policyTypes: [Ingress]
  ingress:
  - from: [{{podSelector: {{matchLabels: {{role: friend}}}}}}]
    ports: [{{port: 8080, protocol: TCP}}]
"""


@dataclass(frozen=True)
class App:
    prober: Prober
    by_name: dict[str, PodEndpoint]
    service_ips: list[str]


@pytest.fixture(scope="module")
def app(rlab: Lab, release: Release) -> Iterator[App]:
    apply(rlab, APP)
    try:
        ready = wait_pods(rlab, APP_NS, "", count=4, timeout=180)
        eps = endpoints(rlab, ready)
        ips = wait_proxied(rlab, APP_NS, "server")
        yield App(prober=Prober(eps), by_name={e.name: e for e in eps}, service_ips=ips)
    finally:
        rlab.kubectl("delete", "namespace", APP_NS, "--ignore-not-found", "--wait=false", check=False)
        wait_gone(rlab, APP_NS, "", timeout=120)


def test_pods_get_addresses_from_their_nodes_pod_cidrs_through_stockade_cni(rlab: Lab, app: App) -> None:
    cidrs: dict[str, list[str]] = rlab.rec.info["pod_cidrs"]
    for pod in pods(rlab, APP_NS):
        node = pod["spec"]["nodeName"]
        nets = [ipaddress.ip_network(c) for c in cidrs[node]]
        ips = [ipaddress.ip_address(i["ip"]) for i in pod["status"]["podIPs"]]
        assert sorted(ip.version for ip in ips) == [4, 6], pod["metadata"]["name"]
        assert all(any(ip in net for net in nets) for ip in ips), (pod["metadata"]["name"], ips, cidrs[node])
    for node in rlab.cfg.all_nodes:
        # The host side of every pod's veth carries Stockade's prefix (what the rules scope to).
        count = sum(1 for p in pods(rlab, APP_NS) if p["spec"]["nodeName"] == node.name)
        assert len([n for n in _links(node.netns) if n.startswith("stk")]) == count, node.name
        ipam = rlab.node_dir(node.name) / "stockade-state" / "ipam"
        assert ipam.is_dir(), f"{node.name}: no IPAM state in its own /var/lib/stockade"


def _requests(app: App, src: str, family: Family) -> dict[str, ProbeRequest]:
    """What `src` probes: each server by pod IP (same node and across nodes) and the Service."""
    out = {
        dst: ProbeRequest(src=src, dst=dst, protocol="TCP", port=8080, family=family)
        for dst in ("chartapp/server-1", "chartapp/server-2")
    }
    ip = next(i for i in app.service_ips if (":" in i) == (family == 6))
    out["service"] = ProbeRequest(
        src=src, dst="chartapp/server-1", protocol="TCP", port=80, family=family, dst_address=ip
    )
    return out


def _outcomes(app: App, family: Family) -> dict[tuple[str, str], bool]:
    reqs = {
        (src, dst): r
        for src in ("friend", "stranger")
        for dst, r in _requests(app, f"{APP_NS}/{src}", family).items()
    }
    results = app.prober.probe(list(reqs.values()))
    return {key: res.reachable for key, res in zip(reqs, results, strict=True)}


def _until(app: App, family: Family, *, stranger: bool, since: float) -> float:
    """Seconds from `since` (before kubectl ran) to the first probe of server-1 (same node) by the
    stranger whose outcome is `stranger` (reachable or not): the probe was sent after the change
    reached the kernel, so this bounds the apply-to-enforced latency from above."""
    req = _requests(app, f"{APP_NS}/stranger", family)["chartapp/server-1"]
    fast = Prober(list(app.by_name.values()), timeout=0.2, confirm_timeout=0.3)
    while True:
        sent = time.monotonic()
        if fast.probe([req])[0].reachable == stranger:
            return sent - since
        assert time.monotonic() - since < ENFORCE_WITHIN, f"not enforced within {ENFORCE_WITHIN}s"


@pytest.mark.parametrize("family", [4, 6], ids=["ipv4", "ipv6"])
def test_policy_applied_with_kubectl_is_enforced_live(rlab: Lab, app: App, family: Family) -> None:
    every = {
        (s, d): True
        for s in ("friend", "stranger")
        for d in ("chartapp/server-1", "chartapp/server-2", "service")
    }
    assert _outcomes(app, family) == every, "before the policy everything is reachable"

    started = time.monotonic()
    apply(rlab, POLICY)
    blocked = _until(app, family, stranger=False, since=started)
    print(f"IPv{family}: kubectl apply -> stranger blocked: {blocked * 1000:.0f} ms")
    want = every | {("stranger", d): False for d in ("chartapp/server-1", "chartapp/server-2", "service")}
    assert _outcomes(app, family) == want

    started = time.monotonic()
    rlab.kubectl("delete", "-n", APP_NS, "networkpolicy", "servers-from-friends")
    lifted = _until(app, family, stranger=True, since=started)
    print(f"IPv{family}: kubectl delete -> stranger allowed again: {lifted * 1000:.0f} ms")
    assert _outcomes(app, family) == every


# --- helm upgrade under a continuous probe --------------------------------------------------

AGENTS = "app.kubernetes.io/component=agent"
# Denied probes get no confirmation round: any answer is a flow let through, and an answer cannot be
# invented by a loaded machine; 0.5 s is the prober's default first timeout.
DENIED_TIMEOUT = 0.5
# The longest pause allowed between two probe rounds of one pair class: a cut or a leak shorter than
# this could slip between rounds (an allowed round that needs its confirmations takes up to 5 s).
MAX_GAP = 6.0
# Between two allowed rounds (a round takes ~5 ms): still hundreds of probes a second, without
# the probe loop taking a whole core from the rollout it watches on a shared machine.
ALLOWED_PAUSE = 0.01


def _agents(rlab: Lab) -> list[dict[str, Any]]:
    return pods(rlab, NAMESPACE, AGENTS)


def _rolled(rlab: Lab, image: str, before: set[str]) -> bool:
    """Every node runs a new, Ready agent pod of `image`, and no old agent pod is left."""
    agents = _agents(rlab)
    return (
        len(agents) == rlab.cfg.nodes
        and not before & {a["metadata"]["uid"] for a in agents}
        and all(
            a["metadata"].get("deletionTimestamp") is None
            and a["spec"]["containers"][0]["image"] == image
            and all(c.get("ready") for c in a.get("status", {}).get("containerStatuses", []))
            and any(c["type"] == "Ready" and c["status"] == "True" for c in a["status"].get("conditions", []))
            for a in agents
        )
    )


def test_helm_upgrade_rolls_the_agents_without_cutting_or_leaking_a_flow(
    rlab: Lab, app: App, tmp_path: Path
) -> None:
    ds = rlab.kube.get(f"/apis/apps/v1/namespaces/{NAMESPACE}/daemonsets/{DAEMONSET}")
    old_image = ds["spec"]["template"]["spec"]["containers"][0]["image"]
    repo, _, old_tag = old_image.rpartition(":")
    new_tag = f"{old_tag}-next"
    new_image = f"{repo}:{new_tag}"
    # A changed image: the built one plus a layer holding a marker only this build has (another
    # digest, other content), imported into every node's containerd as a user's new version is.
    marker = f"upgrade {time.time_ns()}\n"
    archive = tmp_path / "stockade-next.tar"
    derive(IMAGES_DIR / "stockade.tar", archive, name=new_image, files=[File(MARKER, marker.encode())])
    for node in rlab.cfg.all_nodes:
        ctr(rlab, node.name, "images", "import", str(archive))
    old_ids = {c["imageID"] for a in _agents(rlab) for c in a["status"]["containerStatuses"]}
    before = {a["metadata"]["uid"] for a in _agents(rlab)}
    assert len(before) == rlab.cfg.nodes

    apply(rlab, POLICY)
    _until(app, 4, stranger=False, since=time.monotonic())
    friend = [r for f in (4, 6) for r in _requests(app, f"{APP_NS}/friend", f).values()]
    stranger = [r for f in (4, 6) for r in _requests(app, f"{APP_NS}/stranger", f).values()]
    eps = list(app.by_name.values())
    allowed = Probing(Prober(eps), friend, pause=ALLOWED_PAUSE)
    denied = Probing(Prober(eps, timeout=DENIED_TIMEOUT, confirm_timeout=0), stranger)
    stop = threading.Event()
    threads = [threading.Thread(target=p.run, args=(stop,), daemon=True) for p in (allowed, denied)]
    started = time.monotonic()
    for t in threads:
        t.start()
    try:
        time.sleep(2)  # probes before the first agent stops
        upgrade_at = time.monotonic()
        out = helm(
            rlab, "upgrade", RELEASE, str(CHART), "-n", NAMESPACE, "--reuse-values",
            "--set", f"image.tag={new_tag}", "--wait", "--timeout", "3m",
        )  # fmt: skip
        assert out.returncode == 0, f"helm upgrade: {out.stderr.strip()}"
        # helm's --wait accepts a DaemonSet with maxUnavailable pods not Ready yet: wait for all.
        deadline = time.monotonic() + 120
        while not _rolled(rlab, new_image, before):
            assert time.monotonic() < deadline, f"agents not rolled to {new_image}:\n{agent_logs(rlab)}"
            time.sleep(0.5)
        rolled_at = time.monotonic()
        time.sleep(2)  # and after the last new agent became Ready
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
        rlab.kubectl("delete", "-n", APP_NS, "networkpolicy", "servers-from-friends", check=False)
    for p in (allowed, denied):
        if p.error is not None:
            raise p.error
    print(
        f"helm upgrade -> every agent Ready on {new_tag}: {rolled_at - upgrade_at:.1f}s; "
        f"allowed probes {len(allowed.results)} ({allowed.prober.stats.rescued} answered only on "
        f"confirmation, longest gap {allowed.max_gap(started):.2f}s), denied probes "
        f"{len(denied.results)} (longest gap {denied.max_gap(started):.2f}s)"
    )
    cut = [r for r in allowed.results if not r.reachable]
    leaked = [r for r in denied.results if r.reachable]
    assert cut == [], f"{len(cut)} allowed probes cut, first: {cut[:3]}"
    # Stricter than the verdict: a cut shorter than the confirmation timeout would be hidden by the
    # prober's second try, so no allowed probe may have needed one (a SYN's answer on a veth takes
    # milliseconds; a first try silent for 0.5 s is a dropped packet or a starved machine).
    late = [r for r in allowed.results if r.attempts > 1]
    assert late == [], f"{len(late)} allowed probes answered only on a second try, first: {late[:3]}"
    assert leaked == [], f"{len(leaked)} denied probes let through, first: {leaked[:3]}"
    # The probes covered the whole rollout: from before `helm upgrade` to after the last agent was
    # Ready, with no pause long enough to hide a cut or a leak.
    for p in (allowed, denied):
        assert p.ends[-1] > rolled_at, "probing stopped before the rollout ended"
        assert p.max_gap(started) < MAX_GAP
    agents = _agents(rlab)
    assert {a["spec"]["containers"][0]["image"] for a in agents} == {new_image}
    # The new agents run the new content: another image digest, and the marker file is there.
    new_ids = {c["imageID"] for a in agents for c in a["status"]["containerStatuses"]}
    assert new_ids.isdisjoint(old_ids), f"agents still on the old image: {new_ids} vs {old_ids}"
    for a in agents:
        seen = rlab.kubectl(
            "exec", "-n", NAMESPACE, a["metadata"]["name"], "-c", "agent", "--",
            "python3", "-c", f"print(open('/{MARKER}').read(), end='')",
        ).stdout  # fmt: skip
        assert seen == marker, a["metadata"]["name"]


def test_helm_uninstall_cleans_every_node(rlab: Lab, release: Release, tmp_path: Path) -> None:
    nodes = rlab.cfg.all_nodes
    # No pod left for the plugin to delete once it is gone (their DELs go through stockade-cni).
    rlab.kubectl("delete", "namespace", APP_NS, "--ignore-not-found", "--wait=false")
    wait_gone(rlab, APP_NS, "", timeout=120)
    for node in nodes:
        # The agent does not drive the overlay yet: give each node the device it will make.
        if "stockade.vx" not in _links(node.netns):
            with IPRoute(netns=node.netns) as ipr:
                ipr.link("add", ifname="stockade.vx", kind="vxlan", vxlan_id=4242, vxlan_port=4789)
    uninstall(rlab)

    for node in nodes:
        assert "inet stockade" not in _nft(node.netns, "list", "tables").stdout, node.name
        assert "stockade.vx" not in _links(node.netns), node.name
        node_dir = rlab.node_dir(node.name)
        assert not (node_dir / "cni-bin" / "stockade-cni").exists(), node.name
        assert list((node_dir / "cni-net.d").iterdir()) == [], node.name
        for sub in ("stockade-state", "stockade-run", "stockade-runtime"):
            assert list((node_dir / sub).iterdir()) == [], f"{node.name}: {sub} not emptied"
    left = rlab.kubectl(
        "get", "daemonsets,jobs,serviceaccounts,roles,rolebindings,configmaps,pods", "-A",
        "-l", f"app.kubernetes.io/instance={RELEASE}", "-o", "name",
    ).stdout  # fmt: skip
    assert left == ""
    assert "stk-stockade" not in rlab.kubectl("get", "clusterroles", "-o", "name").stdout
