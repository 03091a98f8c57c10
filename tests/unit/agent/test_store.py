"""controller.agent.store: each event reduced to what it changes for the compiler, keyed by UID."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from compiler.model import Pod
from controller.agent.objects import Kind, parse
from controller.agent.store import CniChange, ModelChange, NamespaceChange, PodChange, PolicyChange, Store
from tests.unit.agent.bodies import namespace_body, node_body, pod_body, policy_body


@dataclass(frozen=True)
class Ev:
    kind: Kind
    body: dict[str, Any]
    deleted: bool = False


def run(events: list[Ev]) -> tuple[Store, list[str]]:
    """Feed events; describe each change as text (None changes as "-")."""
    store = Store()
    out: list[str] = []
    for ev in events:
        uid = ev.body["metadata"]["uid"]
        change = store.delete(ev.kind, uid) if ev.deleted else store.upsert(ev.kind, parse(ev.kind, ev.body))
        if change is None:
            out.append("-")
        elif isinstance(change, PodChange):
            before = "none" if change.old is None else ",".join(change.old.ips()) or "noip"
            after = "none" if change.new is None else ",".join(change.new.ips()) or "noip"
            out.append(f"pod {uid} {before}>{after}")
        elif isinstance(change, PolicyChange | NamespaceChange):
            kind = "policy" if isinstance(change, PolicyChange) else "namespace"
            before = "none" if change.old is None else change.old.metadata.name
            after = "none" if change.new is None else change.new.metadata.name
            out.append(f"{kind} {before}>{after}")
        elif isinstance(change, ModelChange):
            out.append(f"model {change.kind}")
        elif isinstance(change, CniChange):
            out.append(f"cni {change.uid}")
        else:
            out.append(f"sources {len(change.sources)}")
    return store, out


CASES = {
    "new-pod": ([Ev("Pod", pod_body("a", ips=("10.0.0.1",)))], ["pod uid-default-a none>10.0.0.1"]),
    "relisted-pod-is-no-change": (
        [Ev("Pod", pod_body("a")), Ev("Pod", pod_body("a"))],
        ["pod uid-default-a none>noip", "-"],
    ),
    "pod-conditions-are-no-change": (
        [Ev("Pod", pod_body("a")), Ev("Pod", pod_body("a", ready="False"))],
        ["pod uid-default-a none>noip", "-"],
    ),
    "pod-gets-ip": (
        [Ev("Pod", pod_body("a")), Ev("Pod", pod_body("a", ips=("10.0.0.1",)))],
        ["pod uid-default-a none>noip", "pod uid-default-a noip>10.0.0.1"],
    ),
    "pod-deleted": (
        [Ev("Pod", pod_body("a", ips=("10.0.0.1",))), Ev("Pod", pod_body("a"), deleted=True)],
        ["pod uid-default-a none>10.0.0.1", "pod uid-default-a 10.0.0.1>none"],
    ),
    "delete-of-unknown-is-no-change": ([Ev("Pod", pod_body("a"), deleted=True)], ["-"]),
    "late-delete-of-old-incarnation": (
        [
            Ev("Pod", pod_body("db-0", uid="old", ips=("10.0.0.1",))),
            Ev("Pod", pod_body("db-0", uid="new", ips=("10.0.0.2",))),
            Ev("Pod", pod_body("db-0", uid="old"), deleted=True),
        ],
        ["pod old none>10.0.0.1", "pod new none>10.0.0.2", "pod old 10.0.0.1>none"],
    ),
    "policy-added-and-edited": (
        [
            Ev("NetworkPolicy", policy_body("p")),
            Ev("NetworkPolicy", policy_body("p", spec={"podSelector": {}, "policyTypes": ["Egress"]})),
            Ev("NetworkPolicy", policy_body("p"), deleted=True),
        ],
        ["policy none>p", "policy p>p", "policy p>none"],
    ),
    "namespace-relabel": (
        [Ev("Namespace", namespace_body("x")), Ev("Namespace", namespace_body("x", labels={"team": "a"}))],
        ["namespace none>x", "namespace x>x"],
    ),
    "node-heartbeat-is-no-change": (
        [Ev("Node", node_body("n1")), Ev("Node", node_body("n1", heartbeat="t1"))],
        ["model Node", "-"],
    ),
}


@pytest.mark.parametrize(("events", "expected"), CASES.values(), ids=CASES.keys())
def test_events_to_changes(events: list[Ev], expected: list[str]) -> None:
    assert run(events)[1] == expected


def test_late_delete_leaves_the_new_incarnation() -> None:
    store, _ = run(CASES["late-delete-of-old-incarnation"][0])
    assert [p.uid for p in store.pods.values()] == ["new"]


def test_cni_reports() -> None:
    store = Store()
    assert store.report_cni("u", ("10.0.0.1",)) == CniChange("u", ("10.0.0.1",))
    assert store.report_cni("u", ("10.0.0.1",)) is None  # a retried ADD
    assert store.report_cni("u", ()) == CniChange("u", ())
    assert store.report_cni("u", ()) is None


def test_deleting_a_pod_drops_its_cni_report() -> None:
    store = Store()
    store.upsert("Pod", parse("Pod", pod_body("a")))
    store.report_cni("uid-default-a", ("10.0.0.1",))
    store.delete("Pod", "uid-default-a")
    assert store.cni == {}


def test_snapshot_model_is_ordered_like_the_loader_and_applies_cni_addresses() -> None:
    store = Store()
    for name in ("b", "a"):
        store.upsert("Pod", parse("Pod", pod_body(name)))
    store.report_cni("uid-default-b", ("10.0.0.9",))
    model = store.snapshot().model()
    assert [p.metadata.name for p in model.pods] == ["a", "b"]
    pods: dict[str, Pod] = {p.metadata.name: p for p in model.pods}
    assert pods["b"].ips() == ("10.0.0.9",)
    assert pods["a"].ips() == ()
