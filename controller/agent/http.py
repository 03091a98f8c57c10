"""``/healthz``, ``/readyz`` and ``/metrics`` on one configurable address (aiohttp, kopf's own
HTTP library, on the agent's event loop).

``/healthz`` answers 200 while the loop runs (a stalled loop cannot answer at all); ``/readyz``
answers 200 once the first plan of the complete initial listing is applied and while the API
server answers, 503 otherwise; ``/metrics`` is Prometheus' text format, rendered in a thread
(the applier's per-rule counters are read from the kernel at scrape time).
"""

from __future__ import annotations

import asyncio

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from controller.agent.loop import Agent


def app(agent: Agent) -> web.Application:
    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(_: web.Request) -> web.Response:
        if agent.ready:
            return web.Response(text="ready\n")
        why = "no plan applied yet" if agent.applied_plan is None else "the API server does not answer"
        return web.Response(status=503, text=f"not ready: {why}\n")

    async def metrics(_: web.Request) -> web.Response:
        agent.ready  # noqa: B018 - refreshes the stockade_ready gauge
        # In a thread: the applier's per-rule counters are a kernel listing, not for the loop.
        body = await asyncio.get_running_loop().run_in_executor(None, generate_latest, agent.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    application = web.Application()
    application.add_routes(
        [web.get("/healthz", healthz), web.get("/readyz", readyz), web.get("/metrics", metrics)]
    )
    return application


def parse_listen(text: str) -> tuple[str, int]:
    """``ADDR:PORT`` (``[v6]:PORT`` for IPv6); raises ValueError."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"--listen {text!r}: expected ADDR:PORT, like 0.0.0.0:9542 or [::1]:9542")
    return host.strip("[]") or "0.0.0.0", int(port)


async def serve(agent: Agent, *, host: str, port: int) -> web.AppRunner:
    """Start the endpoints; the caller cleans the runner up."""
    runner = web.AppRunner(app(agent), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
