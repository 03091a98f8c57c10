"""controller.agent.loop: events in, plans out, equal to the compiler's full compile of the same
objects; bursts coalesce; CNI waiters; retries; readiness; Events; metrics.

The kernel side is a recording applier (a test double of the applier seam only). The oracle is
``build_plan`` of the objects read by the manifest loader, not by the agent's own parsing.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from prometheus_client import generate_latest

from compiler.ir import NodePlan
from compiler.loader import load_manifests
from compiler.options import CompileOptions
from compiler.plan import build_plan
from compiler.render_nft import rule_text
from controller.agent.loop import Agent
from controller.agent.notices import Notice
from controller.agent.objects import Kind, parse
from controller.agent.seams import PodForget, PodReport
from controller.applier import ApplyResult, Counts
from controller.errors import KernelRejected
from controller.kernelstate import RuleKey
from tests.unit.agent.bodies import namespace_body, node_body, pod_body, policy_body

NODE = "n1"


class RecordingApplier:
    def __init__(self, *, failures: int = 0, deferrals: int = 0) -> None:
        self.plans: list[NodePlan] = []
        self.failures = failures
        self.deferrals = deferrals
        self.checks = 0

    def apply(self, plan: NodePlan) -> ApplyResult:
        """As the applier answers: KernelRejected with the retry it scheduled, or a "deferred"
        result while that backoff runs."""
        if self.failures:
            self.failures -= 1
            raise KernelRejected("full rebuild", "Error: Could not process rule", retry_in=0.05)
        if self.deferrals:
            self.deferrals -= 1
            return ApplyResult("deferred", 0, 0.0, retry_in=0.05)
        self.plans.append(plan)
        return ApplyResult("diff", 1, 0.001)

    def check(self) -> None:
        self.checks += 1


class RecordingEvents:
    def __init__(self) -> None:
        self.posted: list[Notice] = []

    def post(self, notice: Notice) -> None:
        self.posted.append(notice)


def oracle(bodies: dict[str, dict[str, Any]]) -> NodePlan:
    text = json.dumps({"apiVersion": "v1", "kind": "List", "items": list(bodies.values())})
    return build_plan(load_manifests([("cluster.json", text)]).model, node=NODE)


class Harness:
    """An agent on a running loop, and the objects the "API server" holds."""

    def __init__(self, agent: Agent, applier: RecordingApplier) -> None:
        self.agent = agent
        self.applier = applier
        self.objects: dict[str, dict[str, Any]] = {}

    def put(self, *bodies: dict[str, Any]) -> None:
        for body in bodies:
            kind: Kind = body["kind"]
            self.objects[body["metadata"]["uid"]] = body
            self.agent.observe(kind, parse(kind, body), uid=body["metadata"]["uid"], deleted=False)

    def replace(self, new: dict[str, Any], old: dict[str, Any]) -> None:
        """A new incarnation of an object, then a late DELETE of the old one."""
        self.put(new)
        self.delete(old)

    def delete(self, body: dict[str, Any]) -> None:
        self.objects.pop(body["metadata"]["uid"])
        self.agent.observe(body["kind"], None, uid=body["metadata"]["uid"], deleted=True)

    async def settle(self) -> NodePlan:
        await asyncio.sleep(self.agent.coalescer.window * 5 + 0.05)
        # On a busy machine a batch may still be compiling: wait until nothing is pending and no
        # plan came for a while (bounded).
        count, deadline = -1, time.monotonic() + 5
        while time.monotonic() < deadline:
            if not self.agent.coalescer.pending and len(self.applier.plans) == count:
                break
            count = len(self.applier.plans)
            await asyncio.sleep(0.1)
        assert self.applier.plans, "nothing was applied"
        return self.applier.plans[-1]


def run_agent(
    scenario: Callable[[Harness], Awaitable[None]],
    *,
    seed: list[dict[str, Any]] | None = None,
    applier: RecordingApplier | None = None,
    events: RecordingEvents | None = None,
    compile_options: CompileOptions | None = None,
) -> Harness:
    async def main() -> Harness:
        rec = applier or RecordingApplier()
        agent = Agent(
            node=NODE,
            applier=rec,
            events=events,
            debounce=0.01,
            check_interval=0.05,
            notice_delay=0.01,
            compile_options=compile_options or CompileOptions(),
        )
        harness = Harness(agent, rec)
        initial = seed if seed is not None else [node_body(NODE), namespace_body("default")]
        for body in initial:
            harness.objects[body["metadata"]["uid"]] = body
        task = asyncio.create_task(agent.run())
        agent.seed((b["kind"], parse(b["kind"], b)) for b in initial)
        try:
            await scenario(harness)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        return harness

    return asyncio.run(main())


ALLOW_WEB = {
    "podSelector": {"matchLabels": {"app": "web"}},
    "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "client"}}}], "ports": [{"port": 80}]}],
}


FROM_TEAM_A = {
    "podSelector": {"matchLabels": {"app": "web"}},
    "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "a"}}}]}],
}


def test_each_step_equals_the_full_compile_of_the_same_objects() -> None:
    web = pod_body("web", labels={"app": "web"}, ips=("10.244.1.2",))
    client = pod_body("client", labels={"role": "client"}, ips=("10.244.2.3",), node="n2")
    steps: list[tuple[str, Callable[[Harness], None]]] = [
        ("pods", lambda h: h.put(web, client)),
        ("policy", lambda h: h.put(policy_body("allow-web", spec=ALLOW_WEB))),
        (
            "relabel",
            lambda h: h.put(pod_body("client", labels={"role": "other"}, ips=("10.244.2.3",), node="n2")),
        ),
        ("team-policy", lambda h: h.put(policy_body("from-team", spec=FROM_TEAM_A))),
        ("namespace", lambda h: h.put(namespace_body("default", labels={"team": "a"}))),
        ("namespace-recreated", lambda h: h.replace(recreated, namespace_body("default"))),
        ("pod-gone", lambda h: h.delete(web)),
        ("policy-gone", lambda h: h.delete(policy_body("allow-web"))),
    ]
    recreated = namespace_body("default", labels={"team": "b"})
    recreated["metadata"]["uid"] = "uid-ns-default-2"  # a new incarnation; the old one's DELETE comes late
    seen: list[str] = []

    async def scenario(h: Harness) -> None:
        for name, step in steps:
            step(h)
            plan = await h.settle()
            assert plan == oracle(h.objects), f"after step {name}"
            seen.append(name)
        # Only the first batch compiled the whole model: policies and namespaces are incremental.
        assert h.agent.metrics.registry.get_sample_value("stockade_full_compiles_total") == 1

    run_agent(scenario)
    assert seen == [name for name, _ in steps]


@pytest.mark.parametrize(
    ("options", "untracked"),
    [
        pytest.param(CompileOptions(), ["ip saddr 192.0.2.1 udp dport 4789 notrack"], id="overlay"),
        pytest.param(CompileOptions(overlay_port=None), [], id="no-overlay"),
    ],
)
def test_the_agents_overlay_decides_which_tunnel_packets_go_untracked(
    options: CompileOptions, untracked: list[str]
) -> None:
    """The agent that runs the overlay untracks its VXLAN packets (to and from the node's
    InternalIP); one started with --no-overlay leaves another plugin's tunnel alone."""

    async def scenario(h: Harness) -> None:
        plan = await h.settle()
        output = [c for c in plan.base_chains if c.name == "output"]
        assert [rule_text(r).split(" comment ")[0] for c in output for r in c.rules] == untracked

    run_agent(scenario, compile_options=options)


def test_a_burst_of_100_pod_changes_is_a_few_applies() -> None:
    async def scenario(h: Harness) -> None:
        await h.settle()
        before = len(h.applier.plans)
        for i in range(100):
            h.put(pod_body(f"p{i}", labels={"app": "web"}, ips=(f"10.244.1.{i + 10}",)))
        plan = await h.settle()
        assert len(h.applier.plans) - before <= 3
        assert plan == oracle(h.objects)

    run_agent(scenario)


def test_program_pod_returns_once_the_pod_is_applied() -> None:
    report = PodReport("uid-default-new", "default", "new", "c0ffee", ("10.244.1.77",))

    async def scenario(h: Harness) -> None:
        await h.settle()
        # The CNI reports before the API shows the pod: the wait lasts until the pod is known.
        waiter = asyncio.create_task(h.agent.program_pod(report))
        await asyncio.sleep(0.1)
        assert not waiter.done()
        h.put(pod_body("new"))  # no IP in the API yet: the CNI's address stands
        await asyncio.wait_for(waiter, timeout=2)
        (local,) = [p for p in h.applier.plans[-1].local_pods if p.key == "default/new"]
        assert local.addresses == ("10.244.1.77",)
        # A retried ADD answers at once.
        await asyncio.wait_for(h.agent.program_pod(report), timeout=0.05)

    run_agent(scenario)


@pytest.mark.parametrize(
    "applier",
    [RecordingApplier(failures=2), RecordingApplier(deferrals=2), RecordingApplier(failures=1, deferrals=1)],
    ids=["rejected", "deferred", "rejected-then-deferred"],
)
def test_a_plan_not_applied_is_retried_and_readiness_waits_for_success(applier: RecordingApplier) -> None:

    async def scenario(h: Harness) -> None:
        assert not h.agent.ready
        await asyncio.sleep(1.0)  # at most 0.1 s, then 0.25 s
        assert h.agent.ready
        assert h.applier.plans
        text = generate_latest(h.agent.metrics.registry).decode()
        assert "stockade_apply_errors_total 2.0" in text
        assert "stockade_ready 1.0" in text

    run_agent(scenario, applier=applier)


def test_a_previous_incarnation_of_the_pod_does_not_answer_for_the_new_one() -> None:
    old = pod_body("db-0", uid="old", ips=("10.244.1.60",))
    new = pod_body("db-0", uid="new")  # re-created under the same name; no address in the API yet
    report = PodReport("new", "default", "db-0", "sandbox-new", ("10.244.1.61",))

    async def scenario(h: Harness) -> None:
        h.put(old)
        await h.settle()
        waiter = asyncio.create_task(h.agent.program_pod(report))
        await h.settle()  # the report alone: the API has not shown the new pod, the old one stands
        assert not waiter.done(), "answered while only the previous incarnation was in the kernel"
        h.delete(old)
        h.put(new)
        await asyncio.wait_for(waiter, timeout=2)
        (local,) = [p for p in h.applier.plans[-1].local_pods if p.key == "default/db-0"]
        assert local.addresses == ("10.244.1.61",)

    run_agent(scenario)


def test_forget_pod_forgets_only_the_sandbox_that_reported() -> None:
    first = PodReport("uid-default-p", "default", "p", "sandbox-1", ("10.244.1.50",))
    second = PodReport("uid-default-p", "default", "p", "sandbox-2", ("10.244.1.51",))

    def addresses(plan: NodePlan) -> tuple[str, ...]:
        return next((p.addresses for p in plan.local_pods if p.key == "default/p"), ())

    async def scenario(h: Harness) -> None:
        h.put(pod_body("p"))
        await asyncio.wait_for(h.agent.program_pod(first), timeout=2)
        await asyncio.wait_for(h.agent.program_pod(second), timeout=2)  # the sandbox was re-created
        await h.agent.forget_pod(PodForget("sandbox-1"))  # a late DEL of the first sandbox
        assert addresses(await h.settle()) == ("10.244.1.51",)
        await h.agent.forget_pod(PodForget("sandbox-2", uid="uid-default-p"))
        assert addresses(await h.settle()) == ()

    run_agent(scenario)


def test_not_ready_while_the_api_does_not_answer() -> None:
    healthy = [True]

    async def scenario(h: Harness) -> None:
        h.agent.watches_healthy = lambda: healthy[0]
        await h.settle()
        assert h.agent.ready
        healthy[0] = False
        assert not h.agent.ready

    run_agent(scenario)


def test_the_drift_check_runs_periodically() -> None:
    async def scenario(h: Harness) -> None:
        await asyncio.sleep(0.3)
        assert h.applier.checks >= 2

    run_agent(scenario)


class RecordingHeap:
    """The heap seam as the agent uses it, recording what the agent had done when it was called."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.settled = False
        self.answered_at_settle: bool | None = None
        self.answered = False
        self.collections_asked: list[bool] = []  # per call: was a batch in progress?

    def settle(self) -> None:
        self.answered_at_settle = self.answered
        self.settled = True

    def maybe_collect(self, *, idle_for: float) -> bool:
        self.collections_asked.append(self.agent._stepping)
        return False


def test_the_heap_settles_after_the_first_plan_has_answered_its_pods() -> None:
    # The start's full collection is one long pause: a CNI ADD waiting for the first plan must
    # have its answer before it, not after.
    report = PodReport("uid-default-early", "default", "early", "c0ffee", ("10.244.1.9",))
    heaps: list[RecordingHeap] = []

    async def scenario(h: Harness) -> None:
        heap = RecordingHeap(h.agent)
        heaps.append(heap)
        h.agent.heap = heap  # type: ignore[assignment]
        await h.agent.program_pod(report)
        heap.answered = True
        for _ in range(50):
            if heap.settled:
                break
            await asyncio.sleep(0.01)

    run_agent(scenario, seed=[node_body(NODE), namespace_body("default"), pod_body("early")])
    (heap,) = heaps
    assert heap.settled and heap.answered_at_settle is True


class SlowApplier(RecordingApplier):
    def apply(self, plan: NodePlan) -> ApplyResult:
        time.sleep(0.3)  # in the agent's worker thread: a long transaction
        return super().apply(plan)


def test_no_full_collection_is_asked_for_while_a_batch_is_being_applied() -> None:
    heaps: list[RecordingHeap] = []

    async def scenario(h: Harness) -> None:
        heap = RecordingHeap(h.agent)
        heap.settled = True
        heaps.append(heap)
        h.agent.heap = heap  # type: ignore[assignment]
        while not h.applier.plans:  # the first plan (a slow one)
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.1)
        h.put(pod_body("late", ips=("10.244.1.10",)))  # one change, nothing queued behind it
        await asyncio.sleep(0.6)

    run_agent(scenario, applier=SlowApplier())
    (heap,) = heaps
    # The check loop (every 0.05 s) ran throughout: it asked while idle, never mid-batch.
    assert heap.collections_asked and not any(heap.collections_asked)


def test_a_defective_policy_is_posted_once() -> None:
    events = RecordingEvents()
    bad = {"podSelector": {}, "ingress": [{"ports": [{"port": 90, "endPort": 80}]}]}

    async def scenario(h: Harness) -> None:
        h.put(policy_body("bad", spec=bad))
        await h.settle()
        h.put(pod_body("x"))  # another compile: the notice stands, and is not posted again
        h.put(namespace_body("other"))
        await h.settle()
        await asyncio.sleep(0.05)  # posting runs in a thread

    run_agent(scenario, events=events)
    assert [(n.reason, n.ref.name) for n in events.posted] == [("PolicyDefect", "bad")]


@pytest.mark.parametrize(
    "name",
    [
        "stockade_applies_total",
        "stockade_apply_duration_seconds_bucket",
        "stockade_apply_errors_total",
        "stockade_ruleset_rules",
        "stockade_ruleset_chains",
        "stockade_ruleset_set_elements",
        'stockade_watch_events_total{kind="Pod"}',
        "stockade_programming_latency_seconds_bucket",
    ],
)
def test_metrics_are_exposed(name: str) -> None:
    text: list[str] = []

    async def scenario(h: Harness) -> None:
        h.put(pod_body("a", ips=("10.244.1.9",)))
        await h.settle()
        text.append(generate_latest(h.agent.metrics.registry).decode())

    run_agent(scenario)
    assert name in text[0]


class ReadingApplier(RecordingApplier):
    """An applier that offers the readings the Applier offers (controller.agent.seams.ApplierReadings)."""

    drift_repairs_total = 3

    def rule_counters(self) -> dict[RuleKey, Counts]:
        return {RuleKey("default", "allow-web", "ingress", 0): Counts(packets=5, bytes=300)}


def test_applier_readings_are_exposed() -> None:
    text: list[str] = []

    async def scenario(h: Harness) -> None:
        await h.settle()
        text.append(generate_latest(h.agent.metrics.registry).decode())

    run_agent(scenario, applier=ReadingApplier())
    labels = 'direction="ingress",namespace="default",policy="allow-web",rule="0"'
    assert f"stockade_policy_rule_packets_total{{{labels}}} 5.0" in text[0]
    assert f"stockade_policy_rule_bytes_total{{{labels}}} 300.0" in text[0]
    assert "stockade_drift_repairs_total 3.0" in text[0]


def test_prune_forgets_what_a_fresh_listing_no_longer_shows_and_keeps_late_arrivals() -> None:
    async def scenario(h: Harness) -> None:
        gone, kept, late = pod_body("gone"), pod_body("kept"), pod_body("late")
        h.put(gone, kept)
        await h.settle()
        before = h.agent.known("Pod")
        h.put(late)  # arrived while the listing was being made: not in it, not in before
        h.objects.pop(gone["metadata"]["uid"])
        stale = h.agent.prune("Pod", listed={kept["metadata"]["uid"]}, known_before=before)
        assert stale == {gone["metadata"]["uid"]}
        assert h.agent.known("Pod") == {kept["metadata"]["uid"], late["metadata"]["uid"]}
        assert await h.settle() == oracle(h.objects)

    run_agent(scenario)
