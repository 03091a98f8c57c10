"""controller.agent.operator.handle_event: seeding from kopf's indexes, one event at a time, and
objects the model cannot read (kopf itself is exercised by tests/cluster/test_agent.py)."""

from __future__ import annotations

import asyncio
from typing import Any

from controller.agent.loop import Agent
from controller.agent.objects import Kind, parse
from controller.agent.operator import RESOURCES, handle_event, index_id
from tests.unit.agent.bodies import namespace_body, node_body, pod_body, policy_body
from tests.unit.agent.test_loop import RecordingApplier, RecordingEvents

LISTED = [node_body("n1"), namespace_body("default"), pod_body("a"), policy_body("p")]


def indexes(bodies: list[dict[str, Any]]) -> dict[str, dict[str, list[Any]]]:
    """As kopf's indexes: id -> {uid: [the parsed object]}."""
    out: dict[str, dict[str, list[Any]]] = {index_id(kind): {} for kind in RESOURCES}
    for body in bodies:
        kind: Kind = body["kind"]
        out[index_id(kind)][body["metadata"]["uid"]] = [parse(kind, body)]
    return out


def test_the_first_event_seeds_the_agent_from_every_index() -> None:
    agent = Agent(node="n1", applier=RecordingApplier())
    handle_event(agent, "Pod", event_type=None, body=LISTED[2], uid="uid-default-a", indexes=indexes(LISTED))
    assert agent.synced.is_set()
    assert {k: agent.known(k) for k in RESOURCES} == {
        "NetworkPolicy": {"uid-np-default-p"},
        "Pod": {"uid-default-a"},
        "Namespace": {"uid-ns-default"},
        "Node": {"uid-node-n1"},
    }


def test_deleted() -> None:
    agent = Agent(node="n1", applier=RecordingApplier())
    index = indexes(LISTED)
    handle_event(agent, "Pod", event_type=None, body=LISTED[2], uid="uid-default-a", indexes=index)
    del index[index_id("Pod")]["uid-default-a"]
    handle_event(agent, "Pod", event_type="DELETED", body=LISTED[2], uid="uid-default-a", indexes=index)
    assert agent.known("Pod") == set()


def test_an_unreadable_object_is_absent_and_an_event_says_why() -> None:
    events = RecordingEvents()
    bad = policy_body("future", spec={"podSelector": {}, "futureField": 1})

    async def scenario() -> Agent:
        agent = Agent(node="n1", applier=RecordingApplier(), events=events)
        index = indexes(LISTED)  # the index handler could not read `bad`: it is not indexed
        handle_event(
            agent, "NetworkPolicy", event_type="ADDED", body=bad, uid="uid-np-default-future", indexes=index
        )
        await asyncio.sleep(0.05)  # posting runs in a thread
        return agent

    agent = asyncio.run(scenario())
    assert agent.known("NetworkPolicy") == {"uid-np-default-p"}
    ((notice),) = events.posted
    assert (notice.reason, notice.ref.kind, notice.ref.name, notice.ref.uid) == (
        "Unreadable",
        "NetworkPolicy",
        "future",
        "uid-np-default-future",
    )
    assert "spec.futureField" in notice.message
