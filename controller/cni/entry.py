"""Where the ``stockade-cni`` process starts: the console script, the launcher ``stockade-cni
install`` writes and ``python -m controller.cni`` all call :func:`main`.

The container runtime starts one plugin process per command; it lives for a fraction of a second,
and most of its CPU goes to importing modules (config, protocol, IPAM, pyroute2's message classes).
Python's cyclic garbage collector runs whenever allocations of container objects outnumber
deallocations by 700, which imports (classes, functions, module dicts) do dozens of times, each
collection walking every object made so far. Nothing the plugin makes needs cycle collection in a
process this short: reference counting frees the rest, and the exit frees everything. So the
collector is off before the first import of the plugin: about 10 ms of an ~85 ms ADD on the
project machine (interleaved runs of the same imports, tests/bench/cni.py in BENCHMARKS.md).

Only here, in the process's entry: importing :mod:`controller.cni.plugin` (the agent's tests and
the unit tests do) changes nothing about the importer's collector.
"""

from __future__ import annotations

import gc


def main(argv: list[str] | None = None) -> int:
    """:func:`controller.cni.plugin.main`, with the collector off from here on."""
    gc.disable()
    from controller.cni.plugin import main as plugin_main  # noqa: PLC0415 - after the collector is off

    return plugin_main(argv)
