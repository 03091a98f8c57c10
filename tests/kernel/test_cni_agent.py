"""Policy before the first packet: ADD reports the sandbox to the agent over the CNI socket and
returns only when the agent answered; it proceeds without an agent, fails (and rolls back) when
the agent refuses, and a crash while waiting leaves nothing a retried ADD cannot take over."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.cniagent import FakeAgent
from tests.support.cnilab import CniLab, PluginRun

# What containerd passes (K8S_POD_INFRA_CONTAINER_ID and IgnoreUnknown included).
POD_ARGS = ";".join(
    [
        "IgnoreUnknown=1",
        "K8S_POD_NAMESPACE=ns-a",
        "K8S_POD_NAME=pod-a",
        "K8S_POD_UID=uid-a",
        "K8S_POD_INFRA_CONTAINER_ID=c1",
    ]
)


@pytest.fixture
def lab() -> Iterator[CniLab]:
    with CniLab() as lab:
        Path(lab.agent_socket).parent.mkdir(mode=0o700)
        yield lab


def _addresses(run: PluginRun) -> tuple[str, ...]:
    return tuple(entry["address"].split("/")[0] for entry in run.json()["ips"])


def _wait_for(check: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what}: not within {timeout:g}s"
        time.sleep(0.02)


def test_links_are_made_while_the_agent_programs(lab: CniLab) -> None:
    """With the agent holding its answer, the pod's veth and routes are made (ADD sends the report
    first and configures the links while the agent works), and ADD still does not return until
    the agent answers: the pod is never handed to the runtime before it is programmed."""
    before = lab.snapshot()
    with FakeAgent(lab.agent_socket) as agent:
        agent.sink.release.clear()
        pod = lab.new_pod()
        proc = lab.start("ADD", container_id="c1", pod=pod, args=POD_ARGS)
        try:
            report = agent.wait_for_report()
            routes = {f"{a}/{32 if '.' in a else 128}" for a in report.addresses}
            _wait_for(lambda: lab.snapshot().routes - before.routes == routes, "the pod's routes")
            time.sleep(0.3)
            assert proc.poll() is None, "ADD returned before the agent answered"
        finally:
            agent.sink.release.set()
        stdout, stderr = proc.communicate(timeout=30)
        assert proc.returncode == 0, (stdout, stderr)
        assert lab.run("DEL", container_id="c1", pod=pod, args=POD_ARGS).returncode == 0


def test_a_link_failure_after_the_report_tells_the_agent(lab: CniLab) -> None:
    """The agent heard of the pod before the links failed (the sandbox already has an eth0 that is
    not Stockade's): ADD fails with 104, tells the agent to forget the sandbox, leaves nothing."""

    def squat() -> None:
        from pyroute2 import IPRoute  # noqa: PLC0415 - inside the pod's worker thread

        with IPRoute() as ipr:
            ipr.link("add", ifname="eth0", kind="veth", peer={"ifname": "squat0"})

    before = lab.snapshot()
    with FakeAgent(lab.agent_socket) as agent:
        pod = lab.new_pod()
        lab.in_pod(pod, squat)
        run = lab.run("ADD", container_id="c1", pod=pod, args=POD_ARGS)
        assert run.returncode != 0 and run.error_code == 104, run
        assert [r.container_id for r in agent.sink.reports] == ["c1"]
        assert [f.container_id for f in agent.sink.forgets] == ["c1"]
    after = lab.snapshot()
    assert after.links == before.links and after.routes == before.routes and not after.allocations


def test_add_waits_for_the_agent_and_reports_the_pod(lab: CniLab) -> None:
    with FakeAgent(lab.agent_socket) as agent:
        agent.sink.delay = 1.0
        pod = lab.new_pod()
        started = time.monotonic()
        run = lab.run("ADD", container_id="c1", pod=pod, args=POD_ARGS)
        took = time.monotonic() - started
        assert run.returncode == 0, run
        assert took >= 1.0
        (report,) = agent.sink.reports
        assert (report.namespace, report.name, report.uid, report.container_id) == (
            "ns-a",
            "pod-a",
            "uid-a",
            "c1",
        )
        assert report.addresses == _addresses(run)

        assert lab.run("DEL", container_id="c1", pod=pod, args=POD_ARGS).returncode == 0
        (forget,) = agent.sink.forgets
        assert (forget.container_id, forget.uid) == ("c1", "uid-a")


@pytest.mark.parametrize("agent_state", ["no-socket", "socket-nobody-listens"])
def test_add_proceeds_without_an_agent(lab: CniLab, agent_state: str) -> None:
    holder = None
    if agent_state == "socket-nobody-listens":
        holder = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        holder.bind(lab.agent_socket)  # bound, never listening: connect is refused
    try:
        pod = lab.new_pod()
        started = time.monotonic()
        run = lab.run("ADD", container_id="c1", pod=pod, args=POD_ARGS)
        assert run.returncode == 0, run
        assert time.monotonic() - started < 5
        assert "proceeding without the agent" in run.stderr
        assert lab.run("DEL", container_id="c1", pod=pod, args=POD_ARGS).returncode == 0
    finally:
        if holder is not None:
            holder.close()


def test_add_does_not_ask_the_agent_when_switched_off(lab: CniLab) -> None:
    with FakeAgent(lab.agent_socket) as agent:
        pod = lab.new_pod()
        run = lab.run("ADD", conf=lab.conf(waitForAgent=False), container_id="c1", pod=pod, args=POD_ARGS)
        assert run.returncode == 0, run
        assert not agent.sink.reports
        lab.run("DEL", conf=lab.conf(waitForAgent=False), container_id="c1", pod=pod)


@pytest.mark.parametrize(("failure", "code"), [("agent-fails", 102), ("agent-times-out", 11)])
def test_add_fails_and_rolls_back_when_the_agent_cannot_program(lab: CniLab, failure: str, code: int) -> None:
    with FakeAgent(lab.agent_socket, program_timeout=0.5) as agent:
        if failure == "agent-fails":
            agent.sink.fail = True
        else:
            agent.sink.delay = 2.0
        pod = lab.new_pod()
        before = lab.snapshot()
        run = lab.run("ADD", container_id="c1", pod=pod, args=POD_ARGS)
        assert run.returncode != 0
        error = run.json()
        assert error["code"] == code and "ns-a/pod-a" in error["msg"], error
        assert [f.container_id for f in agent.sink.forgets] == ["c1"]  # told to drop what it saw
        assert lab.snapshot() == before
        assert not [p for p in (lab.ipam_dir / lab.network).iterdir() if p.is_file() and p.name[0].isdigit()]


def test_add_after_a_crash_while_waiting_for_the_agent(lab: CniLab) -> None:
    """SIGKILL the plugin mid-ADD (veth made, addresses allocated, agent not answered yet); the
    runtime's retry of ADD succeeds with the same addresses, and DEL then leaves nothing."""
    before = lab.snapshot()
    with FakeAgent(lab.agent_socket) as agent:
        agent.sink.release.clear()
        pod = lab.new_pod()
        proc = lab.start("ADD", container_id="c1", pod=pod, args=POD_ARGS)
        report = agent.wait_for_report()
        # The report goes out before the links are made: wait for the veth before the crash.
        _wait_for(lambda: len(lab.snapshot().links - before.links) == 1, "the host veth")
        proc.kill()
        proc.wait(10)
        crashed = lab.snapshot()
        assert len(crashed.allocations) == 2 and len(crashed.links - before.links) == 1
        agent.sink.release.set()

        run = lab.run("ADD", container_id="c1", pod=pod, args=POD_ARGS)
        assert run.returncode == 0, run
        assert _addresses(run) == report.addresses
        assert lab.snapshot().links == crashed.links
        assert (
            lab.run("CHECK", conf=lab.conf(prevResult=run.json()), container_id="c1", pod=pod).returncode == 0
        )
        assert lab.run("DEL", container_id="c1", pod=pod, args=POD_ARGS).returncode == 0
    after = lab.snapshot()
    assert after.links == before.links and after.routes == before.routes and not after.allocations
