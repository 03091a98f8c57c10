"""Kernel tier: real nftables and netlink in network namespaces, as root.

A machine that cannot run this tier (not root, no network namespaces, no `nft`) FAILS it with a
clear message: a silently skipped tier would look like a green one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from pyroute2 import netns

from tests.support.conformance import LAB_ADDRESSES, serving_ports
from tests.support.netlab import NetLab
from tests.support.probe import Prober

_REQUIRED_COMMANDS = ("nft", "nsenter", "conntrack")
_timings: dict[str, list[float]] = {}
_notes: list[str] = []


def _requirement_problems() -> list[str]:
    problems = []
    if os.geteuid() != 0:
        problems.append(f"must run as root (euid is {os.geteuid()})")
    if not os.path.exists("/proc/self/ns/net"):
        problems.append("no network namespace support (/proc/self/ns/net missing)")
    problems += [
        f"`{cmd}` not found in PATH (Debian package: {'nftables' if cmd == 'nft' else cmd})"
        for cmd in _REQUIRED_COMMANDS
        if shutil.which(cmd) is None
    ]
    if problems:
        return problems
    name = f"stk-k{os.getpid()}-check"
    try:
        netns.create(name)
    except OSError as exc:
        return [f"cannot create a network namespace: {exc}"]
    try:
        result = subprocess.run(
            ["nsenter", f"--net=/run/netns/{name}", "nft", "-f", "-"],
            input="table inet stockade_check {\n chain c {\n  type filter hook forward priority 0;\n }\n}\n",
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if result.returncode != 0:
            problems.append(f"nft cannot load a ruleset in a netns: {result.stderr.strip()}")
    finally:
        netns.remove(name)
    return problems


@pytest.fixture(scope="session", autouse=True)
def kernel_requirements() -> None:
    problems = _requirement_problems()
    if problems:
        pytest.fail(
            "the kernel tier cannot run on this machine:\n  - "
            + "\n  - ".join(problems)
            + "\n(run as root on Linux with nftables, nsenter and conntrack installed; see .ci/setup)",
            pytrace=False,
        )


_probers: dict[str, Prober] = {}


def _env_float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


@dataclass
class KernelLab:
    """The session's lab: node + the nine conformance pods (a, b, c in each of x, y, z), agents serving."""

    lab: NetLab
    prober: Prober

    def prober_for(self, name: str, *, timeout: float, confirm_timeout: float) -> Prober:
        """Another prober over the same pods (own timeouts), whose figures the summary reports."""
        if name not in _probers:
            _probers[name] = Prober(self.lab.endpoints(), timeout=timeout, confirm_timeout=confirm_timeout)
        return _probers[name]


@pytest.fixture(scope="session")
def conformance_lab(kernel_requirements: None) -> Iterator[KernelLab]:
    """Timeouts: STOCKADE_PROBE_TIMEOUT (first round, default 0.4 s) and
    STOCKADE_PROBE_CONFIRM_TIMEOUT (re-probe of silent pairs, default 1.2 s)."""
    started = time.monotonic()
    lab = NetLab(LAB_ADDRESSES)
    with lab:
        ports = serving_ports()
        lab.start_agents(tcp=ports.get("TCP", ()), udp=ports.get("UDP", ()), sctp=ports.get("SCTP", ()))
        prober = Prober(
            lab.endpoints(),
            timeout=_env_float("STOCKADE_PROBE_TIMEOUT", 0.4),
            confirm_timeout=_env_float("STOCKADE_PROBE_CONFIRM_TIMEOUT", 1.2),
        )
        _probers["conformance"] = prober
        _notes.append(
            f"lab: {len(lab.pods)} pods up in {time.monotonic() - started:.2f}s "
            f"(netns {lab.setup_seconds:.2f}s), serving {ports}"
        )
        yield KernelLab(lab=lab, prober=prober)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if "tests/kernel/" in report.nodeid:
        _timings.setdefault(report.nodeid.split("::")[0], []).append(report.duration)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _timings and not _notes and not _probers:
        return
    terminalreporter.section("kernel tier timings")
    for path, durations in sorted(_timings.items()):
        terminalreporter.write_line(f"{path}: {sum(durations):.1f}s over {len(durations)} phases")
    for note in _notes:
        terminalreporter.write_line(note)
    for name, prober in _probers.items():
        s = prober.stats
        if not s.calls:
            continue
        terminalreporter.write_line(
            f"prober {name} (timeouts {prober.timeout}s/{prober.confirm_timeout}s): {s.calls} rounds, "
            f"{s.probes} probes in {s.seconds:.1f}s; {s.confirmations} re-probed, {s.rescued} answered "
            f"only on re-probe, {s.stressed_rounds} stressed rounds; slowest answer {s.slowest_ms:.0f}ms; "
            f"outcomes {s.outcomes}"
        )
