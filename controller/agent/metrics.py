"""Prometheus metrics of one agent, in its own registry (so two agents in one process never mix).

Measured by the agent: applies and their duration and errors, compile duration, watch events by
kind, and the programming latency (from a watch event's arrival to the applier's return for the
plan that includes it). Sizes (rules, chains, set elements and map entries) are those of the plan
last applied, which the applier makes the kernel equal to. Drift repairs and the per-policy
packet and byte counters are read from the applier at scrape time, when it offers them
(:class:`~controller.agent.seams.ApplierReadings`).
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from compiler.ir import NodePlan
from controller.agent.seams import ApplierReadings
from controller.kernelstate import ISOLATION

# Programming latency is a budget of milliseconds (p50 under 50 ms, p99 under 250 ms).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def plan_sizes(plan: NodePlan) -> tuple[int, int, int]:
    """(rules, chains, set elements + map entries) of a plan."""
    chains = plan.chains
    elements = sum(len(s.elements) for s in plan.sets) + sum(len(m.entries) for m in plan.maps)
    return sum(len(c.rules) for c in chains), len(chains), elements


class _ApplierCollector(Collector):
    def __init__(self, applier: object) -> None:
        self._applier = applier

    def collect(self) -> Iterator[Metric]:
        applier = self._applier
        if not isinstance(applier, ApplierReadings):
            return
        repairs = CounterMetricFamily(
            "stockade_drift_repairs",
            "Times the applier found the kernel differing from the plan and repaired it",
        )
        repairs.add_metric([], applier.drift_repairs_total)
        yield repairs
        labels = ["namespace", "policy", "direction", "rule"]
        packets = CounterMetricFamily(
            "stockade_policy_rule_packets",
            "Packets matched by a NetworkPolicy rule on this node; rule=isolation: dropped at pods the "
            "policy isolates, as no rule allowed them (a pod several policies isolate counts under each)",
            labels=labels,
        )
        octets = CounterMetricFamily(
            "stockade_policy_rule_bytes",
            "Bytes matched by a NetworkPolicy rule on this node; rule=isolation as for packets",
            labels=labels,
        )
        rows = [
            (
                [k.namespace, k.policy, k.direction, "isolation" if k.index == ISOLATION else str(k.index)],
                c.packets,
                c.bytes,
            )
            for k, c in applier.rule_counters().items()
        ]
        for key, n_packets, n_bytes in sorted(rows):
            packets.add_metric(key, n_packets)
            octets.add_metric(key, n_bytes)
        yield packets
        yield octets


class AgentMetrics:
    def __init__(self, applier: object) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.applies = Counter("stockade_applies", "Plans handed to the applier", registry=r)
        self.apply_errors = Counter("stockade_apply_errors", "Applies that failed", registry=r)
        self.apply_seconds = Histogram(
            "stockade_apply_duration_seconds", "Time the applier took", buckets=LATENCY_BUCKETS, registry=r
        )
        self.compile_seconds = Histogram(
            "stockade_compile_duration_seconds",
            "Time to compile a batch",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.full_compiles = Counter(
            "stockade_full_compiles", "Batches compiled from the whole model", registry=r
        )
        self.watch_events = Counter(
            "stockade_watch_events", "Watch events received", labelnames=["kind"], registry=r
        )
        self.latency = Histogram(
            "stockade_programming_latency_seconds",
            "From a watch event's (or CNI report's) arrival to the kernel holding the plan that includes it",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.rules = Gauge("stockade_ruleset_rules", "Rules in the applied plan", registry=r)
        self.chains = Gauge("stockade_ruleset_chains", "Chains in the applied plan", registry=r)
        self.elements = Gauge(
            "stockade_ruleset_set_elements", "Set elements and map entries in the applied plan", registry=r
        )
        self.ready = Gauge("stockade_ready", "1 when /readyz answers ready", registry=r)
        r.register(_ApplierCollector(applier))

    def applied(self, plan: NodePlan) -> None:
        rules, chains, elements = plan_sizes(plan)
        self.rules.set(rules)
        self.chains.set(chains)
        self.elements.set(elements)
