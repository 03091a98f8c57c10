"""kopf configured for an agent that only watches: nothing stored on the objects, nothing kept
per object in the agent's memory, and listings read a page at a time.

The agent registers event handlers only, so kopf has no handler progress, diff-base, daemons,
indexes or patches to keep for an object. What kopf would still do by default, and what it costs
at 10,000 pods (measured with tests/bench/agent.py):

- **per-object memories**: kopf remembers a record for every object it has seen (memo, error
  throttler, indexing and daemon state) until the object is deleted: five objects and their
  dicts per watched object, ~11,500 records, kept for the process's life. :class:`Forgetful`
  hands each event a fresh record and keeps none (kopf takes the memories as a parameter of
  :func:`kopf.operator`). The only per-object state an event handler could miss is the error
  throttler's backoff, and the agent's handler does not raise.
- **the diff-base essence**: built for every event (a deep copy of the whole body) to detect
  changes for change handlers, which the agent has none of. :class:`_NoDiffBase` builds an empty
  essence instead.
- **the initial listing in one response**: ``watching.chunk_size`` is unset by default, so
  kopf's own listing at start was one response holding every pod of the cluster (over 100 MiB
  as parsed JSON at 10,000 pods); a page at a time bounds that to what one page holds.
- **idle workers**: kopf keeps an object's worker (and with it the last event's raw body) for
  ``queueing.idle_timeout`` after its last event. At start kopf lists every object, so with the
  default 5 s every listed body stayed alive at once; half a second lets them go as the listing
  proceeds. A pod that changes again later gets a new worker, as it would after 5 s anyway.

Heap freed after such a peak stays mapped when long-lived objects were allocated in between (the
allocator returns only whole arenas), so a peak that is never reached is worth more than memory
freed afterwards.
"""

from __future__ import annotations

from typing import Any

import kopf

# kopf.operator() takes the memories as a parameter, but kopf does not export their class.
from kopf._core.reactor.inventory import ResourceMemories, ResourceMemory

LISTING_PAGE = 500  # objects per page of kopf's own listings (as controller.agent.kube lists)
IDLE_WORKER = 0.5  # seconds an object's kopf worker waits for another event before it exits


class _NoProgress(kopf.ProgressStorage):
    """Handler progress is never stored (event handlers have none to store)."""

    def fetch(self, **_: Any) -> None:
        return None

    def store(self, **_: Any) -> None:
        return None

    def purge(self, **_: Any) -> None:
        return None

    def touch(self, **_: Any) -> None:
        return None

    def clear(self, *, essence: Any) -> Any:
        return essence


class _NoDiffBase(kopf.DiffBaseStorage):
    """No last-handled state is kept, and no essence is built: no change handler would read it."""

    def build(self, **_: Any) -> kopf.BodyEssence:
        return {}

    def fetch(self, **_: Any) -> None:
        return None

    def store(self, **_: Any) -> None:
        return None


class Forgetful(ResourceMemories):
    """kopf's per-object memories, remembering nothing: every event gets a fresh record."""

    async def recall(self, raw_body: Any, *, noticed_by_listing: bool = False, **_: Any) -> ResourceMemory:
        return ResourceMemory(noticed_by_listing=noticed_by_listing)

    async def forget(self, raw_body: Any) -> None:
        return None


def settings() -> kopf.OperatorSettings:
    s = kopf.OperatorSettings()
    s.peering.standalone = True
    s.peering.clusterwide = True
    s.posting.enabled = False  # the agent posts its own Events (controller.agent.kube)
    s.scanning.disabled = True  # cluster-wide: no namespace or CRD scanning needed
    s.persistence.progress_storage = _NoProgress()
    s.persistence.diffbase_storage = _NoDiffBase()
    s.persistence.finalizer = ""  # never used: no handler needs one
    s.watching.chunk_size = LISTING_PAGE
    s.queueing.idle_timeout = IDLE_WORKER
    # Reconnect quickly after an API outage: the kernel keeps the last plan meanwhile.
    s.watching.reconnect_backoff = 0.5
    # kopf's default retries of a failed request wait 1, 1, 2, 3, 5, 8, 13, 21 s: after a 30 s API
    # outage the first change waited up to 21 s for the next try. Retry every 0.5 s for 5 s, every
    # second for a minute, then every 5 s for five more minutes before kopf escalates the error.
    s.networking.error_backoffs = (0.5,) * 10 + (1.0,) * 60 + (5.0,) * 60
    s.watching.server_timeout = 300
    s.watching.client_timeout = 330
    return s
