"""controller.agent.kopfconf: kopf keeps nothing per object, builds no diff-base, lists by page."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import kopf

from controller.agent.kopfconf import IDLE_WORKER, LISTING_PAGE, Forgetful, settings
from tests.unit.agent.bodies import pod_body


def test_memories_hand_out_fresh_records_and_keep_none() -> None:
    memories = Forgetful()
    body = pod_body("a")

    async def scenario() -> None:
        first = await memories.recall(body, noticed_by_listing=True)
        second = await memories.recall(body)
        assert first is not second
        assert first.noticed_by_listing and not second.noticed_by_listing
        await memories.forget(body)

    asyncio.run(scenario())
    assert list(memories.iter_all_memories()) == []


def test_settings_store_nothing_and_list_by_page() -> None:
    s = settings()
    body = kopf.Body(cast(Any, pod_body("a")))
    assert s.persistence.diffbase_storage.build(body=body) == {}
    assert s.persistence.diffbase_storage.fetch(body=body) is None
    assert s.persistence.progress_storage.fetch(key=kopf.HandlerId("h"), body=body) is None
    assert s.persistence.finalizer == ""
    assert (s.watching.chunk_size, s.queueing.idle_timeout) == (LISTING_PAGE, IDLE_WORKER)
    assert s.peering.standalone and not s.posting.enabled
