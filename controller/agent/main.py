"""``stockade agent``: runs the node agent (the CLI parses its flags, then imports this)."""

from __future__ import annotations

import argparse
import asyncio
import logging
from collections.abc import Callable

from controller.agent import kube
from controller.agent.http import parse_listen
from controller.agent.loop import Agent
from controller.agent.operator import Options, Server, run
from controller.applier import Applier
from controller.cnisocket import CniServer
from controller.errors import UsageError
from controller.nft import Nft
from controller.podroutes import RoutedSources


def options(args: argparse.Namespace) -> Options:
    if args.debounce_ms < 0 or args.check_interval <= 0:
        raise UsageError("--debounce-ms must be >= 0 and --check-interval > 0")
    try:
        listen = parse_listen(args.listen)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    return Options(
        node=args.node,
        kubeconfig=args.kubeconfig,
        listen=listen,
        debounce_ms=args.debounce_ms,
        check_interval=args.check_interval,
        cni_socket=args.cni_socket,
        cni_timeout=args.cni_timeout,
        overlay=args.overlay,
    )


def node_applier() -> Applier:
    """The libnftables applier."""
    return Applier(nft=Nft())


def cni_server(opts: Options) -> Callable[[Agent], Server] | None:
    """The CNI socket's server with the agent as its sink; none when ``--cni-socket`` is empty."""
    if not opts.cni_socket:
        return None

    def make(agent: Agent) -> Server:
        return CniServer(
            sink=agent,
            path=opts.cni_socket,
            program_timeout=opts.cni_timeout,
            ready=lambda: agent.applied_plan is not None,  # the first plan is in the kernel
        )

    return make


def main(args: argparse.Namespace) -> int:
    opts = options(args)
    kube.limit_heap_arenas()
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("kopf").setLevel(max(logging.WARNING, logging.getLevelName(args.log_level)))
    applier = node_applier()
    asyncio.run(run(opts, applier, cni_server=cni_server(opts), sources=RoutedSources()))
    return 0
