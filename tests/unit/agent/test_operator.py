"""controller.agent.operator: seeding from the agent's own initial listing, events one at a time, and
objects the model cannot read (kopf itself is exercised by tests/cluster/test_agent.py)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any, cast

import pytest

from controller.agent.apiclient import ApiClient
from controller.agent.loop import Agent
from controller.agent.operator import COLLECTIONS, RESOURCES, handle_event, initial_listing
from tests.unit.agent.bodies import namespace_body, node_body, pod_body, policy_body
from tests.unit.agent.test_loop import RecordingApplier, RecordingEvents

LISTED = [node_body("n1"), namespace_body("default"), pod_body("a"), policy_body("p")]


class ListingApi:
    """What kube.list_pages reads, served from bodies: a fake of the agent's API client (a real
    one is exercised against a real API server by tests/cluster/test_agent.py)."""

    def __init__(self, bodies: list[dict[str, Any]], *, failures: int = 0) -> None:
        self.bodies = bodies
        self.failures = failures

    def connect(self) -> Any:
        return SimpleNamespace(close=lambda: None)

    def request(self, method: str, path: str, **_: Any) -> Any:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("the API server is not answering")
        return {"items": [b for b in self.bodies if COLLECTIONS[b["kind"]] == path]}


def seeded(
    bodies: list[dict[str, Any]], *, failures: int = 0, events: RecordingEvents | None = None
) -> Agent:
    async def scenario() -> Agent:
        agent = Agent(node="n1", applier=RecordingApplier(), events=events)
        await initial_listing(agent, cast(ApiClient, ListingApi(bodies, failures=failures)))
        await asyncio.sleep(0.05)  # posting runs in a thread
        return agent

    return asyncio.run(scenario())


@pytest.mark.parametrize("failures", [0, 2], ids=["api-up", "api-down-at-first"])
def test_the_initial_listing_seeds_the_agent_with_every_kind(failures: int) -> None:
    agent = seeded(LISTED, failures=failures)
    assert agent.synced.is_set()
    assert {k: agent.known(k) for k in RESOURCES} == {
        "NetworkPolicy": {"uid-np-default-p"},
        "Pod": {"uid-default-a"},
        "Namespace": {"uid-ns-default"},
        "Node": {"uid-node-n1"},
    }


def test_an_unreadable_listed_object_is_absent_and_an_event_says_why() -> None:
    events = RecordingEvents()
    bad = policy_body("future", spec={"podSelector": {}, "futureField": 1})
    agent = seeded([*LISTED, bad], events=events)
    assert agent.known("NetworkPolicy") == {"uid-np-default-p"}
    assert [(n.reason, n.ref.name) for n in events.posted] == [("Unreadable", "future")]


def test_events_after_the_seed() -> None:
    agent = seeded(LISTED)
    before = agent.store.pods["uid-default-a"]
    handle_event(agent, "Pod", event_type=None, body=LISTED[2], uid="uid-default-a")  # kopf's listing
    assert agent.store.pods["uid-default-a"] is before  # seen again unchanged: no change
    handle_event(agent, "Pod", event_type="DELETED", body=LISTED[2], uid="uid-default-a")
    assert agent.known("Pod") == set()


def test_an_unreadable_object_is_absent_and_an_event_says_why() -> None:
    events = RecordingEvents()
    bad = policy_body("future", spec={"podSelector": {}, "futureField": 1})

    async def scenario() -> Agent:
        agent = Agent(node="n1", applier=RecordingApplier(), events=events)
        await initial_listing(agent, cast(ApiClient, ListingApi(LISTED)))
        handle_event(agent, "NetworkPolicy", event_type="ADDED", body=bad, uid="uid-np-default-future")
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
