"""``stockade agent``: runs the node agent (the CLI parses its flags, then imports this)."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging

import kubernetes

from controller.agent.http import parse_listen
from controller.agent.operator import Options, run
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
    )


def node_applier() -> PlanApplier:
    """The libnftables applier (``controller.applier.Applier``)."""
    try:
        module = importlib.import_module("controller.applier")
    except ModuleNotFoundError as exc:
        raise UsageError(
            f"this installation has no applier ({exc}); the agent cannot program nftables"
        ) from exc
    applier: PlanApplier = module.Applier()
    return applier


def main(args: argparse.Namespace) -> int:
    opts = options(args)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("kopf").setLevel(max(logging.WARNING, logging.getLevelName(args.log_level)))
    applier = node_applier()
    try:
        asyncio.run(run(opts, applier))
    except kubernetes.config.ConfigException as exc:
        raise UsageError(f"no credentials for the API server: {exc}") from exc
    return 0
