"""The upstream NetworkPolicy table (tests/data/upstream-netpol.yaml) as real API objects in a lab.

Namespaces x, y, z and pods a, b, c in each (the lab's test-pod image serving every port and
protocol of the table, container ports named ``serve-<port>-<proto>``), alternating between the two
nodes so that most ordered pairs cross nodes (egress enforced on the source's node, ingress on the
destination's) and some stay on one node. One Service per pod (``s-<ns>-<pod>``, selector
``pod=<name>`` as upstream, dual-stack, target ports by name). A step's policies are applied and
deleted with ``kubectl``, its label changes are ``kubectl patch``es: only what differs from the
state in force is touched, so the pods are reused by every case.

Probes go from each pod's own network namespace (`tests.cluster.lab.podclients`) to every other
pod's address and to its Service's ClusterIP, IPv4 and IPv6, all at once. Expected-reachable probes
get the prober's confirmation rounds (a slow answer is not a drop); expected-blocked ones one longer
round without confirmation: any answer is a leak, and silence is what the step wants.

Programming barrier: before the probes that judge a step, every node's agent must have programmed
as many watch events as objects were changed (`stockade_programming_latency_seconds_count`, read
through the API server's pod proxy). Without it a step whose expected table equals the previous
one would pass on the previous step's rules.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from tests.cluster.lab import Lab, LabError
from tests.cluster.lab.kube import ApiError
from tests.cluster.lab.nodes import TEST_POD_IMAGE
from tests.cluster.lab.podclients import stop_clients
from tests.cluster.lab.workloads import endpoints, pods, wait_gone, wait_pods, wait_proxied
from tests.cluster.release import NAMESPACE as AGENT_NAMESPACE
from tests.support.addressing import Family, PodAddress
from tests.support.conformance import NAMESPACES, PODS, Case, Probe, serving_container_ports, serving_ports
from tests.support.probe import DEFAULT_CONFIRM_TIMEOUT, Prober, ProbeRequest, ProbeResult, ReachKey

NODES = ("node-1", "node-2")
AGENTS = "app.kubernetes.io/component=agent"
AGENT_PORT = 9542  # the chart's default agent.port: /metrics on every node
# How long a step may take from the last kubectl call to every node programmed and every probe as
# expected (the agents' debounce is milliseconds; the rest is the watch, compile and nft on a
# shared, loaded host, and kube-proxy's own sync for a Service's endpoints).
ENFORCE_WITHIN = 30.0
# Expected-blocked probes: one round, no confirmation, as long as the prober's confirmation round:
# silence that long is the prober's own verdict "blocked", and any answer is a leak.
BLOCKED_TIMEOUT = DEFAULT_CONFIRM_TIMEOUT
_LATENCY_COUNT = re.compile(r"^stockade_programming_latency_seconds_count\s+(\S+)$", re.M)

Target = Literal["pod", "service"]
TARGETS: tuple[Target, ...] = ("pod", "service")
# (target, family) -> measured results keyed like the table: (src, dst, protocol, port).
Measured = dict[tuple[Target, Family], dict[ReachKey, ProbeResult]]


def node_of(key: str) -> str:
    """Pods alternate between the nodes in the table's order: x/a on node-1, x/b on node-2, ..."""
    return NODES[PODS.index(key) % len(NODES)]


def service_of(key: str) -> str:
    namespace, name = key.split("/")
    return f"s-{namespace}-{name}"


def manifests(cases: Sequence[Case] | None = None) -> list[dict[str, Any]]:
    """Namespaces, pods and Services for the table (every port of `cases`, every protocol)."""
    ports = serving_container_ports(cases)
    served = serving_ports(cases)
    args = ["--control", "/tmp/agent.sock"]
    for proto, numbers in served.items():
        args += [f"--{proto.lower()}", ",".join(str(p) for p in numbers)]
    first_tcp = served["TCP"][0]
    out: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}} for ns in NAMESPACES
    ]
    for key in PODS:
        namespace, name = key.split("/")
        out.append(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name, "namespace": namespace, "labels": {"pod": name}},
                "spec": {
                    "nodeSelector": {"kubernetes.io/hostname": node_of(key)},
                    "terminationGracePeriodSeconds": 1,
                    "containers": [
                        {
                            "name": "cont",
                            "image": TEST_POD_IMAGE,
                            "imagePullPolicy": "Never",
                            "args": args,
                            "ports": ports,
                            # Ready once it serves; no readiness probe after that, so a policy
                            # never flips the pod's Service endpoints (kubelet probes from the node).
                            "startupProbe": {
                                "tcpSocket": {"port": first_tcp},
                                "periodSeconds": 1,
                                "failureThreshold": 60,
                            },
                        }
                    ],
                },
            }
        )
        out.append(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": service_of(key), "namespace": namespace},
                "spec": {
                    "ipFamilyPolicy": "RequireDualStack",
                    "ipFamilies": ["IPv4", "IPv6"],
                    "selector": {"pod": name},
                    "ports": [
                        {
                            "name": p["name"],
                            "port": p["containerPort"],
                            "targetPort": p["name"],
                            "protocol": p["protocol"],
                        }
                        for p in ports
                    ],
                },
            }
        )
    return out


def as_list(objects: Sequence[Mapping[str, Any]]) -> str:
    """Objects for `kubectl apply -f -` as one JSON List: kubectl reads YAML as YAML 1.1, where the
    namespace name ``y`` would be the boolean true."""
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objects)})


def namespace_exists(lab: Lab, name: str) -> bool:
    try:
        lab.kube.get(f"/api/v1/namespaces/{name}")
    except ApiError as exc:
        if exc.status == 404:
            return False
        raise
    return True


@dataclass
class Changes:
    """Objects one `converge` call changed through kubectl (each one watch event per agent)."""

    applied: int = 0
    deleted: int = 0
    pods: int = 0
    namespaces: int = 0

    @property
    def total(self) -> int:
        return self.applied + self.deleted + self.pods + self.namespaces


@dataclass
class ConformanceLab:
    lab: Lab
    cases: Sequence[Case] | None = None
    prober: Prober | None = None
    addresses: dict[str, PodAddress] = field(default_factory=dict)
    service_ips: dict[tuple[str, Family], str] = field(default_factory=dict)
    # What is in force now, as last written through kubectl.
    policies: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    pod_labels: dict[str, dict[str, str]] = field(default_factory=dict)
    namespace_labels: dict[str, dict[str, str]] = field(default_factory=dict)
    _pods: list[dict[str, Any]] = field(default_factory=list)

    # --- the workload ----------------------------------------------------------------------------

    def start(self) -> None:
        self.lab.kubectl("apply", "-f", "-", input=as_list(manifests(self.cases)))
        for ns in NAMESPACES:
            self._pods += wait_pods(self.lab, ns, "", count=3, timeout=240)
        for pod in self._pods:
            key = f"{pod['metadata']['namespace']}/{pod['metadata']['name']}"
            if pod["spec"]["nodeName"] != node_of(key):
                raise LabError(f"pod {key} runs on {pod['spec']['nodeName']}, not {node_of(key)}")
        eps = endpoints(self.lab, self._pods)
        self.prober = Prober(eps)
        for ep in eps:
            if ep.ipv4 is None or ep.ipv6 is None:
                raise LabError(f"pod {ep.name} is not dual-stack: {ep.ipv4}, {ep.ipv6}")
            self.addresses[ep.name] = PodAddress(name=ep.name, ipv4=ep.ipv4, ipv6=ep.ipv6)
        for key in PODS:
            namespace = key.split("/")[0]
            for ip in wait_proxied(self.lab, namespace, service_of(key), timeout=120):
                self.service_ips[(key, 6 if ":" in ip else 4)] = ip
        self.pod_labels = {key: {"pod": key.split("/")[1]} for key in PODS}
        self.namespace_labels = {ns: {} for ns in NAMESPACES}

    def stop(self) -> None:
        """Stop the probe clients, delete the namespaces (policies, pods, Services go with them)."""
        stop_clients(self.lab, self._pods)
        self.lab.kubectl(
            "delete", "namespace", *NAMESPACES, "--ignore-not-found", "--wait=false", check=False
        )
        deadline = time.monotonic() + 180
        for ns in NAMESPACES:
            wait_gone(self.lab, ns, "", timeout=180)
            while namespace_exists(self.lab, ns):
                if time.monotonic() > deadline:
                    raise LabError(f"namespace {ns} still there 180s after its delete")
                time.sleep(0.3)

    # --- a step's state --------------------------------------------------------------------------

    def converge(
        self,
        *,
        policies: Iterable[Mapping[str, Any]],
        pod_labels: Mapping[str, Mapping[str, str]],
        namespace_labels: Mapping[str, Mapping[str, str]],
    ) -> Changes:
        """Make the cluster hold exactly these policies and labels, changing only what differs."""
        changes = Changes()
        want = {(p["metadata"]["namespace"], p["metadata"]["name"]): dict(p) for p in policies}
        gone = sorted(k for k in self.policies if k not in want)
        if gone:
            # One kubectl call for every namespace: each call costs a process start and discovery.
            refs = [
                {
                    "apiVersion": "networking.k8s.io/v1",
                    "kind": "NetworkPolicy",
                    "metadata": {"namespace": ns, "name": name},
                }
                for ns, name in gone
            ]
            out = self.lab.kubectl("delete", "-f", "-", input=as_list(refs)).stdout
            if len(re.findall(r" deleted", out)) != len(gone):
                raise LabError(f"kubectl delete of {len(gone)} policies:\n{out}")
            changes.deleted += len(gone)
            for ref in gone:
                del self.policies[ref]
        changed = [p for k, p in want.items() if self.policies.get(k) != p]
        if changed:
            out = self.lab.kubectl("apply", "-f", "-", input=as_list(changed)).stdout
            done = re.findall(r"^networkpolicy\S* (created|configured)$", out, re.M)
            if len(done) != len(changed):
                raise LabError(f"kubectl apply of {len(changed)} policies changed {len(done)}:\n{out}")
            changes.applied += len(changed)
            self.policies.update(want)
        for key in PODS:
            if self._relabel("pod", key, self.pod_labels[key], dict(pod_labels[key])):
                changes.pods += 1
        for ns in NAMESPACES:
            if self._relabel("namespace", ns, self.namespace_labels[ns], dict(namespace_labels[ns])):
                changes.namespaces += 1
        return changes

    def _relabel(self, kind: str, key: str, now: dict[str, str], want: dict[str, str]) -> bool:
        """A JSON merge patch of the labels: set what `want` has, remove (null) what only `now` has."""
        if now == want:
            return False
        labels: dict[str, str | None] = {k: None for k in now if k not in want}
        labels |= want
        patch = json.dumps({"metadata": {"labels": labels}})
        target = ["-n", *key.split("/")] if kind == "pod" else [key]
        self.lab.kubectl("patch", kind, *target, "--type", "merge", "-p", patch)
        now.clear()
        now.update(want)
        return True

    # --- the programming barrier -------------------------------------------------------------------

    def programmed(self) -> dict[str, float]:
        """node -> watch events its agent has carried to the kernel so far."""
        out = {}
        for agent in pods(self.lab, AGENT_NAMESPACE, AGENTS):
            name = agent["metadata"]["name"]
            text = self.lab.kube.text(
                f"/api/v1/namespaces/{AGENT_NAMESPACE}/pods/{name}:{AGENT_PORT}/proxy/metrics"
            )
            m = _LATENCY_COUNT.search(text)
            if m is None:
                raise LabError(f"agent {name}: no stockade_programming_latency_seconds_count in /metrics")
            out[agent["spec"]["nodeName"]] = float(m.group(1))
        return out

    def wait_programmed(self, before: Mapping[str, float], changes: int, *, timeout: float) -> float:
        """Seconds until every node's agent programmed `changes` more events than in `before`."""
        started = time.monotonic()
        while True:
            now = self.programmed()
            late = {
                n: now.get(n, 0.0) - before.get(n, 0.0)
                for n in NODES
                if now.get(n, 0.0) < before.get(n, 0.0) + changes
            }
            if not late:
                return time.monotonic() - started
            if time.monotonic() - started > timeout:
                raise LabError(f"agents programmed only {late} of {changes} changes within {timeout:.0f}s")
            time.sleep(0.05)

    # --- probing -----------------------------------------------------------------------------------

    def requests(
        self, probes: Sequence[Probe], families: Sequence[Family]
    ) -> dict[tuple[Target, Family, ReachKey], ProbeRequest]:
        out = {}
        for target in TARGETS:
            for family in families:
                for proto, port in probes:
                    for src in PODS:
                        for dst in PODS:
                            if src == dst:
                                continue
                            address = self.service_ips[(dst, family)] if target == "service" else None
                            out[(target, family, (src, dst, proto, port))] = ProbeRequest(
                                src=src,
                                dst=dst,
                                protocol=proto,
                                port=port,
                                family=family,
                                dst_address=address,
                            )
        return out

    def measure(self, expected: Mapping[ReachKey, bool], families: Sequence[Family]) -> Measured:
        """One round: every pair to pod IPs and ClusterIPs in `families`, all at once."""
        if self.prober is None:
            raise LabError("the conformance workload is not started")
        probes = sorted({(p, n) for (_, _, p, n) in expected})
        reqs = self.requests(probes, families)
        allowed = [k for k in reqs if expected[k[2]]]
        blocked = [k for k in reqs if not expected[k[2]]]
        strict = Prober(list(self.prober.pods.values()), timeout=BLOCKED_TIMEOUT, confirm_timeout=0)

        async def both() -> tuple[list[ProbeResult], list[ProbeResult]]:
            assert self.prober is not None
            a, b = await asyncio.gather(
                self.prober.aprobe([reqs[k] for k in allowed]), strict.aprobe([reqs[k] for k in blocked])
            )
            return a, b

        got_allowed, got_blocked = asyncio.run(both())
        out: Measured = {}
        for (target, family, key), result in zip(
            [*allowed, *blocked], [*got_allowed, *got_blocked], strict=True
        ):
            out.setdefault((target, family), {})[key] = result
        return out
