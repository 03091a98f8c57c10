"""``stockade agent``: runs the node agent (the CLI parses its flags, then imports this)."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
from collections.abc import Callable
from typing import Any

import kubernetes

from controller.agent.http import parse_listen
from controller.agent.loop import Agent
from controller.agent.operator import Options, Server, run
from controller.agent.seams import PlanApplier
from controller.errors import UsageError


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
    )


def _node_module(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        raise UsageError(f"this installation lacks {name} ({exc}); the agent cannot run on a node") from exc


def node_applier() -> PlanApplier:
    """The libnftables applier: ``controller.applier.Applier`` over ``controller.nft.Nft``."""
    nft = _node_module("controller.nft").Nft()
    applier: PlanApplier = _node_module("controller.applier").Applier(nft=nft)
    return applier


def cni_server(opts: Options) -> Callable[[Agent], Server] | None:
    """The CNI socket (``controller.cnisocket.CniServer``) with the agent as its sink; none when
    ``--cni-socket`` is empty."""
    if not opts.cni_socket:
        return None
    module = _node_module("controller.cnisocket")

    def make(agent: Agent) -> Server:
        server: Server = module.CniServer(sink=agent, path=opts.cni_socket, program_timeout=opts.cni_timeout)
        return server

    return make


def main(args: argparse.Namespace) -> int:
    opts = options(args)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("kopf").setLevel(max(logging.WARNING, logging.getLevelName(args.log_level)))
    applier = node_applier()
    try:
        asyncio.run(run(opts, applier, cni_server=cni_server(opts)))
    except kubernetes.config.ConfigException as exc:
        raise UsageError(f"no credentials for the API server: {exc}") from exc
    return 0
