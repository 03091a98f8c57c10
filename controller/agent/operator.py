"""kopf wiring: standalone, cluster-wide, watching NetworkPolicy, Pod, Namespace and Node, and
writing nothing to them.

Only event handlers are registered: kopf keeps no handler progress or diff-base for
those, adds no finalizers and patches nothing, and keeps nothing per object
(:mod:`controller.agent.kopfconf`); posting kopf's own log lines as Events is off, and peering is
off (``standalone``: one agent per node, none elects another).

Before kopf starts, the agent lists the four kinds itself and is seeded from that listing
(:func:`initial_listing`), so only a plan compiled from a complete picture ever reaches the
kernel; kopf's own listing and watches then bring what changed since (an object seen again
unchanged is no change). kopf's indexes are not used for this: kopf makes every object's first
event wait until every object of every indexed kind is indexed, with a wake-up of every waiting
object per object indexed, which made an agent start take longer than ten minutes at 10,000 pods.
An object deleted between the two listings is forgotten by the first resync (one soon after start).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import kopf

from compiler.options import CompileOptions
from controller.agent import kube
from controller.agent.apiclient import ApiClient, Credentials, load_credentials
from controller.agent.http import serve
from controller.agent.kopfconf import Forgetful, settings
from controller.agent.loop import Agent
from controller.agent.notices import Notice, ObjectRef
from controller.agent.objects import Kind, Model, UnreadableObject, parse
from controller.agent.overlaysync import OverlaySync
from controller.agent.seams import PlanApplier, PodSourceReader

log = logging.getLogger(__name__)

# kind -> (group/version as kopf takes it, plural, API version of Events' references)
RESOURCES: dict[Kind, tuple[str, str, str]] = {
    "NetworkPolicy": ("networking.k8s.io/v1", "networkpolicies", "networking.k8s.io/v1"),
    "Pod": ("v1", "pods", "v1"),
    "Namespace": ("v1", "namespaces", "v1"),
    "Node": ("v1", "nodes", "v1"),
}
COLLECTIONS: dict[Kind, str] = {
    "NetworkPolicy": "/apis/networking.k8s.io/v1/networkpolicies",
    "Pod": "/api/v1/pods",
    "Namespace": "/api/v1/namespaces",
    "Node": "/api/v1/nodes",
}
RESYNC_INTERVAL = 300.0  # seconds; also right after the API server answers again after an outage
FIRST_RESYNC = 15.0  # seconds after the agent was seeded
TRIM_INTERVAL = 30.0  # seconds between two returns of freed heap to the system


def _unreadable(kind: Kind, body: Any, exc: UnreadableObject) -> Notice:
    meta = body.get("metadata", {})
    ref = ObjectRef(
        kind, RESOURCES[kind][2], meta.get("name", ""), meta.get("namespace"), meta.get("uid", "")
    )
    return Notice(ref, "Unreadable", f"Stockade cannot read this object, so it is ignored: {exc}")


async def initial_listing(agent: Agent, api: ApiClient) -> None:
    """Seed the agent with every object of the four kinds (retried until the API answers)."""
    loop = asyncio.get_running_loop()
    delay = 0.5
    while True:
        try:
            # Parsed page by page in the thread: the raw JSON of 10,000 pods is never held at once.
            listed = {
                kind: await loop.run_in_executor(None, _parsed, api, kind, path)
                for kind, path in COLLECTIONS.items()
            }
            break
        except Exception as exc:
            log.warning("initial listing failed, retrying in %.1fs: %s", delay, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)
    for _, unreadable in listed.values():
        for notice in unreadable:
            agent.notice(notice)
    agent.seed((kind, model) for kind, (models, _) in listed.items() for model in models)


def _parsed(api: ApiClient, kind: Kind, path: str) -> tuple[list[Model], list[Notice]]:
    models: list[Model] = []
    unreadable: list[Notice] = []
    for page in kube.list_pages(api, path):
        for body in page:
            try:
                models.append(parse(kind, body))
            except UnreadableObject as exc:
                log.error("%s", exc)
                unreadable.append(_unreadable(kind, body, exc))
    return models, unreadable


def registry(agent: Agent, *, credentials: Credentials | None = None) -> kopf.OperatorRegistry:
    reg = kopf.OperatorRegistry()

    if credentials is not None:

        @kopf.on.login(registry=reg)
        def login(**_: Any) -> kopf.ConnectionInfo:
            return kube.login(credentials)

    for kind, (group_version, plural, _) in RESOURCES.items():
        _watch(reg, agent, kind, group_version, plural)
    return reg


def _watch(reg: kopf.OperatorRegistry, agent: Agent, kind: Kind, group_version: str, plural: str) -> None:
    async def on_event(event: Any, body: Any, uid: str, **_: Any) -> None:
        handle_event(agent, kind, event_type=event.get("type"), body=body, uid=uid)

    kopf.on.event(group_version, plural, id=f"stockade_{plural}_event", registry=reg)(on_event)


def handle_event(agent: Agent, kind: Kind, *, event_type: str | None, body: Any, uid: str) -> None:
    """One watch event (``event_type`` None: from a listing), after the agent was seeded."""
    arrived = time.monotonic()
    deleted = event_type == "DELETED"
    obj: Model | None = None
    if not deleted:
        try:
            obj = parse(kind, body)
        except UnreadableObject as exc:  # absent for the compiler; say why
            log.error("%s", exc)
            agent.notice(_unreadable(kind, body, exc))
    agent.observe(kind, obj, uid=uid, deleted=deleted, arrived=arrived)


@dataclass(frozen=True)
class Options:
    node: str
    kubeconfig: str | None = None
    listen: tuple[str, int] = ("0.0.0.0", 9542)
    debounce_ms: float = 10.0
    check_interval: float = 30.0
    cni_socket: str = "/run/stockade/cni.sock"
    cni_timeout: float = 10.0
    overlay: bool = True  # keep this node's VXLAN overlay in sync with the Node objects


async def _kube_proxy_watch(agent: Agent, api: ApiClient) -> None:
    """Looks once at start, then every 5 minutes (kube-proxy's mode changes only with a redeploy)."""
    loop = asyncio.get_running_loop()
    while True:
        try:
            evidence = await loop.run_in_executor(None, kube.ipvs_evidence, api)
            if evidence is not None:
                node = await loop.run_in_executor(None, api.request, "GET", f"/api/v1/nodes/{agent.node}")
                uid = node.get("metadata", {}).get("uid")
                notice = kube.ipvs_notice(agent.node, uid or "", evidence)
                if agent.notice(notice):
                    log.error("!!! %s", notice.message)
        except Exception:
            log.exception("could not tell kube-proxy's mode")
        await asyncio.sleep(300)


async def resync(agent: Agent, api: ApiClient) -> int:
    """Forget objects deleted while the watches were away (see :meth:`Agent.prune`)."""
    loop = asyncio.get_running_loop()
    pruned = 0
    for kind, path in COLLECTIONS.items():
        before = agent.known(kind)
        listed = await loop.run_in_executor(None, kube.list_uids, api, path)
        stale = agent.prune(kind, listed=listed, known_before=before)
        if stale:
            log.info("resync: %d %s object(s) were deleted while unseen: %s", len(stale), kind, sorted(stale))
        pruned += len(stale)
    return pruned


async def _resync_loop(agent: Agent, api: ApiClient, health: kube.ApiHealth) -> None:
    await agent.synced.wait()
    # The first resync comes soon: it forgets what was deleted between the agent's own initial
    # listing and kopf's (kopf's listing shows what exists, not what went).
    last = time.monotonic() - RESYNC_INTERVAL + FIRST_RESYNC
    trimmed = time.monotonic()
    was_healthy = True
    while True:
        await asyncio.sleep(1.0)
        if time.monotonic() - trimmed >= TRIM_INTERVAL:
            # kopf's own listing at start and bursts of events leave freed heap behind, at
            # moments the agent cannot see; giving it back costs milliseconds (in a thread: ctypes
            # lets go of the GIL, so the loop goes on meanwhile).
            await asyncio.get_running_loop().run_in_executor(None, kube.release_memory)
            trimmed = time.monotonic()
        healthy = health.healthy()
        recovered = healthy and not was_healthy
        was_healthy = healthy
        if not healthy or not (recovered or time.monotonic() - last >= RESYNC_INTERVAL):
            continue
        if recovered:
            await asyncio.sleep(5.0)  # let kopf's watches re-list first
        try:
            await resync(agent, api)
            last = time.monotonic()
        except Exception:
            log.exception("resync failed; trying again in a second")
            continue
        # The start (two listings of every object, kopf's per-object workers) and a resync leave
        # freed heap behind; give it back, so the resident size is what the agent holds.
        kube.release_memory()


class Server(Protocol):
    """A server the agent runs alongside its watches (the CNI socket: ``controller.cnisocket``)."""

    async def start(self) -> None: ...
    async def close(self) -> None: ...


async def run(
    options: Options,
    applier: PlanApplier,
    *,
    stop: asyncio.Event | None = None,
    cni_server: Callable[[Agent], Server] | None = None,
    sources: PodSourceReader | None = None,
) -> None:
    """Run the agent until ``stop`` is set (or SIGINT/SIGTERM in the main thread);
    ``cni_server`` makes the CNI socket's server for the agent (its sink); ``sources`` reads the
    node's routed pod sources (none: every pod packet takes the route lookup)."""
    credentials = load_credentials(options.kubeconfig)
    api = ApiClient(credentials)
    health = kube.ApiHealth(api)
    agent = Agent(
        node=options.node,
        applier=applier,
        events=kube.KubeEvents(api, node=options.node),
        debounce=options.debounce_ms / 1000,
        check_interval=options.check_interval,
        watches_healthy=health.healthy,
        sources=sources,
        # Without the overlay, UDP 4789 is another plugin's tunnel (or nobody's): leave it tracked.
        compile_options=CompileOptions() if options.overlay else CompileOptions(overlay_port=None),
    )
    overlay: OverlaySync | None = None
    if options.overlay:
        overlay = OverlaySync(
            node=options.node,
            nodes=agent.store.nodes.values,
            ready=agent.synced,
            registry=agent.metrics.registry,
            notify=agent.notice,
            check_interval=options.check_interval,
        )
        agent.on_nodes = overlay.nodes_changed
    runner = await serve(agent, host=options.listen[0], port=options.listen[1])
    cni = cni_server(agent) if cni_server is not None else None
    if cni is not None:
        await cni.start()
    tasks = [
        asyncio.create_task(agent.run(), name="stockade agent"),
        asyncio.create_task(health.run(), name="stockade api health"),
        asyncio.create_task(_kube_proxy_watch(agent, api), name="stockade kube-proxy mode"),
        asyncio.create_task(_resync_loop(agent, api, health), name="stockade resync"),
    ]
    if overlay is not None:
        tasks.append(asyncio.create_task(overlay.run(), name="stockade overlay"))
    log.info("agent for node %s: endpoints on %s:%d", options.node, *options.listen)
    try:
        await initial_listing(agent, api)
        await kopf.operator(
            registry=registry(agent, credentials=credentials),
            settings=settings(),
            memories=Forgetful(),
            standalone=True,
            clusterwide=True,
            stop_flag=stop,
        )
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if cni is not None:
            await cni.close()
        await runner.cleanup()
