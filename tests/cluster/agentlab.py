"""The chart's agents on the release lab's real nodes, as the agent tests see them: the agent pod
and process of a node, its flags, its /metrics scraped from inside the node, the node's table,
and the reachability the reference semantics expects of pods read back from the API.

The oracle side never uses agent code: the expected matrix is `compiler.semantics.evaluate` (the
reference semantics, tested against the upstream tables) over the namespaces, pods, policies and
nodes listed from the API; the kernel side is `nft` run in the node's network namespace.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterable, Sequence
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from pyroute2 import IPRoute

from compiler.cluster import ClusterModel
from compiler.loader import load_manifests
from compiler.semantics import Peer, evaluate
from tests.cluster.lab import Lab, LabError
from tests.cluster.lab.kube import Obj
from tests.cluster.lab.nodes import TEST_POD_IMAGE
from tests.cluster.lab.podclients import running_tasks
from tests.cluster.lab.workloads import pods
from tests.cluster.release import DAEMONSET, NAMESPACE
from tests.kernel.test_render_load import listing
from tests.support.nodelab import entered
from tests.support.probe import Family, Prober, ProbeRequest, render_comparison

AGENTS = "app.kubernetes.io/component=agent"
PORT = 8080  # every test pod serves TCP here (the test-pod image's agent)
LISTS = ("/apis/networking.k8s.io/v1/networkpolicies", "/api/v1/pods", "/api/v1/namespaces", "/api/v1/nodes")
Matrix = dict[tuple[str, str, Family], bool]


def pod_spec(node: str) -> dict[str, Any]:
    """A test pod's spec pinned to `node`, serving TCP on PORT, Ready once it listens (kubelet's
    probe comes from the node, which Stockade always lets through)."""
    probe = {"tcpSocket": {"port": PORT}, "periodSeconds": 1}
    return {
        "nodeSelector": {"kubernetes.io/hostname": node},
        "terminationGracePeriodSeconds": 1,
        "containers": [
            {
                "name": "agent",
                "image": TEST_POD_IMAGE,
                "imagePullPolicy": "Never",
                "args": ["--control", "/tmp/agent.sock", "--tcp", str(PORT)],
                "startupProbe": probe | {"failureThreshold": 60},
                "readinessProbe": probe,
            }
        ],
    }


def pod_manifest(name: str, namespace: str, node: str, labels: dict[str, str]) -> str:
    meta = {"name": name, "namespace": namespace, "labels": labels}
    return json.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": pod_spec(node)})


# --- the node and its agent ----------------------------------------------------------------------


def node_netns(lab: Lab, node: str) -> str:
    return next(n.netns for n in lab.cfg.all_nodes if n.name == node)


def nft(lab: Lab, node: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`nft` in the node's network namespace (where the hostNetwork agent keeps its table)."""
    return subprocess.run(
        ["nsenter", f"--net=/run/netns/{node_netns(lab, node)}", "nft", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )


def table(lab: Lab, node: str) -> dict[str, Any]:
    """The node's `inet stockade` without handles and counter values (comparable over time)."""
    return listing(node_netns(lab, node))


def agent_pod(lab: Lab, node: str) -> Obj:
    found = [
        p
        for p in pods(lab, NAMESPACE, AGENTS)
        if p["spec"].get("nodeName") == node and not p["metadata"].get("deletionTimestamp")
    ]
    if len(found) != 1:
        raise LabError(f"want one agent pod on {node}, found {[p['metadata']['name'] for p in found]}")
    return found[0]


def agent_status(pod: Obj) -> dict[str, Any]:
    statuses = pod.get("status", {}).get("containerStatuses", [])
    return next((s for s in statuses if s["name"] == "agent"), {})


def agent_pid(lab: Lab, node: str) -> int:
    """The host pid of the node's agent process: its container's task in the node's containerd."""
    container = str(agent_status(agent_pod(lab, node)).get("containerID", "")).removeprefix("containerd://")
    pid = running_tasks(lab, node).get(container)
    if pid is None:
        raise LabError(f"the agent container {container!r} on {node} has no running task")
    return pid


def agent_flag(lab: Lab, flag: str) -> str:
    """The value of `--flag=value` on the DaemonSet's agent command line (the chart's values)."""
    ds = lab.kube.get(f"/apis/apps/v1/namespaces/{NAMESPACE}/daemonsets/{DAEMONSET}")
    args = next(c["args"] for c in ds["spec"]["template"]["spec"]["containers"] if c["name"] == "agent")
    values = [a.split("=", 1)[1] for a in args if a.startswith(f"--{flag}=")]
    if len(values) != 1:
        raise LabError(f"--{flag} not on the agent's command line: {args}")
    return str(values[0])


def scrape(lab: Lab, node: str) -> str:
    """The node's agent's /metrics, fetched from inside the node (the agent has hostNetwork and
    listens on the node's addresses, `--listen`)."""
    port = agent_flag(lab, "listen").rpartition(":")[2]
    # The socket is made, and stays, in the node's namespace.
    with (
        entered(node_netns(lab, node)),
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp,
    ):
        return str(resp.read().decode())


def samples(text: str, name: str, **labels: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Every sample `name` whose labels include `labels`: {sorted labels: value}."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                out[tuple(sorted(s.labels.items()))] = s.value
    return out


# --- the oracle: the reference semantics of the objects in the API ------------------------------


def api_model(lab: Lab) -> ClusterModel:
    """The cluster as the API holds it now (every namespace, pod, policy and node)."""
    return load_manifests([(path, json.dumps(lab.kube.get(path))) for path in LISTS]).model


def expected(model: ClusterModel, names: Sequence[str], families: Iterable[Family]) -> Matrix:
    """{(src, dst, family): allowed} on TCP PORT for every ordered pair of `names` (`ns/pod`)."""
    out: Matrix = {}
    for family in families:
        for src in names:
            for dst in names:
                if src != dst:
                    s, d = (Peer(*n.split("/")) for n in (src, dst))
                    verdict = evaluate(model, src=s, dst=d, protocol="TCP", port=PORT, family=family)
                    out[src, dst, family] = verdict.allowed
    return out


def measure(prober: Prober, keys: Iterable[tuple[str, str, Family]]) -> Matrix:
    keys = list(keys)
    requests = [ProbeRequest(src=s, dst=d, protocol="TCP", port=PORT, family=f) for s, d, f in keys]
    return {k: r.reachable for k, r in zip(keys, prober.probe(requests), strict=True)}


def comparison(want: Matrix, got: Matrix, title: str) -> str:
    parts = []
    for family in sorted({f for _, _, f in want}):
        pairs = [({(s, d): v for (s, d, f), v in m.items() if f == family}) for m in (want, got)]
        parts.append(render_comparison(*pairs, title=f"{title} IPv{family}"))
    return "\n\n".join(parts)


def converge(prober: Prober, want: Matrix, *, since: float, bound: float, title: str) -> float:
    """Seconds from `since` until the measured matrix equals `want`; fails after `bound`.

    Polled with short timeouts (a blocked probe costs 0.2 s, not the prober's confirmation
    rounds); a matching poll is confirmed by one full measurement with `prober`'s own timeouts,
    whose result is the verdict. `bound` 0: one full measurement, no polling."""
    fast = Prober(list(prober.pods.values()), timeout=0.2, confirm_timeout=0.3)
    while True:
        polled = time.monotonic()
        if (bound <= 0 or measure(fast, want) == want) and measure(prober, want) == want:
            return polled - since
        if time.monotonic() - since > bound:
            got = measure(prober, want)
            raise AssertionError(f"not enforced within {bound:.0f}s:\n{comparison(want, got, title)}")
        time.sleep(0.1)


def routed_pod_sources(lab: Lab, node: str) -> set[tuple[str, str]]:
    """(host-side pod interface, address) of every host route to a pod interface in the node's
    main table, read with pyroute2 here (not with the agent's reader it checks)."""
    out: set[tuple[str, str]] = set()
    with IPRoute(netns=node_netns(lab, node)) as ipr:
        names = {link["index"]: str(link.get_attr("IFLA_IFNAME")) for link in ipr.get_links()}
        for family, host in ((socket.AF_INET, 32), (socket.AF_INET6, 128)):
            for route in ipr.get_routes(family=family, table=254):
                name = names.get(route.get_attr("RTA_OIF"), "")
                if route["dst_len"] == host and name.startswith("stk"):
                    out.add((name, str(route.get_attr("RTA_DST"))))
    return out
