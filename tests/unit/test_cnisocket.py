"""The CNI socket server, spoken to byte by byte over a real Unix socket (no client code of ours),
with a fake agent (the sink): the protocol is ours, so the sink is the only thing faked."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import stat
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from controller.cniproto import PodForget, PodReport
from controller.cnisocket import CniServer
from controller.errors import InputError, KernelRejected, Problem, UsageError


class FakeSink:
    def __init__(self) -> None:
        self.programmed: list[PodReport] = []
        self.forgotten: list[PodForget] = []
        self.gate: asyncio.Event | None = None
        self.fail: BaseException | None = None

    async def program_pod(self, report: PodReport) -> None:
        if self.gate is not None:
            await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        self.programmed.append(report)

    async def forget_pod(self, forget: PodForget) -> None:
        self.forgotten.append(forget)


@pytest.fixture
def sockdir() -> Iterator[Path]:
    """A short directory (Unix socket paths are limited to 107 bytes; pytest's tmp_path is long)."""
    top = Path(tempfile.mkdtemp(prefix="stkcni", dir="/tmp"))
    try:
        yield top
    finally:
        shutil.rmtree(top)


def run(
    path: Path, scenario: Callable[[FakeSink], Awaitable[Any]], *, timeout: float = 10.0
) -> tuple[FakeSink, Any]:
    async def main() -> tuple[FakeSink, Any]:
        sink = FakeSink()
        async with CniServer(sink=sink, path=path, program_timeout=timeout):
            return sink, await scenario(sink)

    return asyncio.run(main())


async def talk(path: Path, *lines: bytes) -> list[dict[str, Any]]:
    """Send ``lines`` on one connection; read one reply per line, then whatever else arrives."""
    reader, writer = await asyncio.open_unix_connection(str(path))
    writer.write(b"".join(lines))
    await writer.drain()
    writer.write_eof()
    replies = [json.loads(line) for line in (await asyncio.wait_for(reader.read(), 5)).splitlines()]
    writer.close()
    return replies


def line(message: Any) -> bytes:
    return json.dumps(message).encode() + b"\n"


ADD = {
    "version": 1,
    "op": "ADD",
    "uid": "u-1",
    "namespace": "x",
    "name": "a",
    "containerID": "c0ffee",
    "addresses": ["10.244.1.5", "FD00:10:244:1:0::5"],
}
DEL = {"version": 1, "op": "DEL", "containerID": "c0ffee"}


def test_add_and_del_reach_the_sink_and_are_answered_in_order(sockdir: Path) -> None:
    path = sockdir / "cni.sock"
    sink, replies = run(path, lambda _: talk(path, line(ADD), line(DEL)))
    assert replies == [{"version": 1, "ok": True}, {"version": 1, "ok": True}]
    assert sink.programmed == [PodReport("u-1", "x", "a", "c0ffee", ("10.244.1.5", "fd00:10:244:1::5"))]
    assert sink.forgotten == [PodForget("c0ffee")]


def test_add_is_answered_only_once_the_sink_has_programmed_the_pod(sockdir: Path) -> None:
    path = sockdir / "cni.sock"

    async def scenario(sink: FakeSink) -> list[bytes]:
        sink.gate = asyncio.Event()
        reader, writer = await asyncio.open_unix_connection(str(path))
        writer.write(line(ADD))
        early = b""
        with contextlib.suppress(TimeoutError):
            early = await asyncio.wait_for(reader.readline(), 0.3)
        sink.gate.set()
        late = await asyncio.wait_for(reader.readline(), 5)
        writer.close()
        return [early, late]

    _, (early, late) = run(path, scenario)
    assert early == b"" and json.loads(late) == {"version": 1, "ok": True}


def test_the_socket_is_0600_in_a_directory_the_server_creates(sockdir: Path) -> None:
    path = sockdir / "run" / "stockade" / "cni.sock"

    async def scenario(_: FakeSink) -> tuple[int, int]:
        return stat.S_IMODE(path.stat().st_mode), stat.S_IMODE(path.parent.stat().st_mode)

    old = os.umask(0)  # the mode must not depend on the umask
    try:
        _, (sock_mode, dir_mode) = run(path, scenario)
    finally:
        os.umask(old)
    assert (sock_mode, dir_mode) == (0o600, 0o700)
    assert not path.exists(), "the socket outlived the server"
    assert os.listdir(path.parent) == []


def test_a_stale_socket_is_replaced_and_a_regular_file_is_not(sockdir: Path) -> None:
    path = sockdir / "cni.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()
    _, replies = run(path, lambda _: talk(path, line(DEL)))
    assert replies == [{"version": 1, "ok": True}]
    path.write_text("not a socket")
    with pytest.raises(UsageError, match="not a socket"):
        run(path, lambda _: talk(path, line(DEL)))
    assert path.read_text() == "not a socket"


def _without(field: str) -> dict[str, Any]:
    return {k: v for k, v in ADD.items() if k != field}


REFUSED = [
    pytest.param(b"{not json\n", "malformed", "not a JSON line", id="not-json"),
    pytest.param(b"\xff\xfe\n", "malformed", "not a JSON line", id="not-utf8"),
    pytest.param(line([1, 2]), "malformed", "JSON object, not list", id="array"),
    pytest.param(line(_without("version")), "invalid", "version: required", id="no-version"),
    pytest.param(line({**ADD, "version": 2}), "unsupported_version", "version 2", id="version-2"),
    pytest.param(line({**ADD, "version": True}), "unsupported_version", "True", id="version-bool"),
    pytest.param(line({**ADD, "op": "CHECK"}), "unknown_op", "'CHECK'", id="unknown-op"),
    pytest.param(line(_without("op")), "unknown_op", "None", id="no-op"),
    pytest.param(line(_without("uid")), "invalid", "uid: required", id="no-uid"),
    pytest.param(line({**ADD, "name": ""}), "invalid", "name: must not be empty", id="empty-name"),
    pytest.param(line({**ADD, "namespace": 3}), "invalid", "namespace: must be a string", id="int-ns"),
    pytest.param(line(_without("containerID")), "invalid", "containerID: required", id="no-container"),
    pytest.param(line({**ADD, "addresses": []}), "invalid", "addresses: must be a non-empty", id="none"),
    pytest.param(line({**ADD, "addresses": "10.0.0.1"}), "invalid", "addresses: must be", id="str"),
    pytest.param(
        line({**ADD, "addresses": ["10.0.0.0/24"]}), "invalid", "addresses[0]: not an IP", id="cidr"
    ),
    pytest.param(
        line({**ADD, "addresses": ["10.0.0.1", "10.0.0.01"]}), "invalid", "addresses[1]", id="bad-2nd"
    ),
    pytest.param(line({**ADD, "addresses": ["::1", "0::1"]}), "invalid", "given twice", id="duplicate"),
    pytest.param(
        line({**ADD, "addresses": [f"10.0.0.{i}" for i in range(17)]}), "invalid", "at most", id="many"
    ),
    pytest.param(
        line({"version": 1, "op": "DEL"}), "invalid", "containerID: required", id="del-no-container"
    ),
]


@pytest.mark.parametrize(("request_line", "code", "text"), REFUSED)
def test_a_bad_request_gets_an_error_and_the_connection_goes_on(
    sockdir: Path, request_line: bytes, code: str, text: str
) -> None:
    path = sockdir / "cni.sock"
    sink, replies = run(path, lambda _: talk(path, request_line, line(ADD)))
    refused, then = replies
    assert refused["version"] == 1 and refused["ok"] is False
    assert refused["error"]["code"] == code and text in refused["error"]["message"]
    assert ("supported" in refused) == (code == "unsupported_version")
    if code == "unsupported_version":
        assert refused["supported"] == [1]
    assert then == {"version": 1, "ok": True} and len(sink.programmed) == 1


def test_a_line_too_long_is_refused_and_the_server_keeps_serving(sockdir: Path) -> None:
    path = sockdir / "cni.sock"

    async def scenario(_: FakeSink) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        too_long = await talk(path, b"x" * 70000 + b"\n", line(DEL))
        return too_long, await talk(path, line(DEL))

    _, (too_long, after) = run(path, scenario)
    assert len(too_long) == 1 and too_long[0]["error"]["code"] == "malformed"
    assert "at most 65536 bytes" in too_long[0]["error"]["message"]
    assert after == [{"version": 1, "ok": True}]


def test_a_last_line_without_newline_is_malformed(sockdir: Path) -> None:
    path = sockdir / "cni.sock"
    _, replies = run(path, lambda _: talk(path, json.dumps(DEL).encode()))
    assert replies[0]["error"] == {"code": "malformed", "message": "the line has no newline"}


SINK_FAILURES = [
    pytest.param(
        KernelRejected("diff", "Error: conflicting intervals"), "failed", "conflicting", id="kernel"
    ),
    pytest.param(
        InputError([Problem("cni", "pod x/a", "addresses", "outside the podCIDRs")]),
        "failed",
        "outside the podCIDRs",
        id="bad-input",
    ),
    pytest.param(RuntimeError("boom"), "internal", "RuntimeError: boom", id="bug"),
]


@pytest.mark.parametrize(("failure", "code", "text"), SINK_FAILURES)
def test_a_failing_sink_is_reported_and_the_server_survives(
    sockdir: Path, failure: BaseException, code: str, text: str
) -> None:
    path = sockdir / "cni.sock"

    async def scenario(sink: FakeSink) -> list[dict[str, Any]]:
        sink.fail = failure
        first = await talk(path, line(ADD))
        sink.fail = None
        return first + await talk(path, line(ADD))

    _, (failed, ok) = run(path, scenario)
    assert failed["error"]["code"] == code and text in failed["error"]["message"]
    assert ok == {"version": 1, "ok": True}


def test_a_sink_slower_than_the_bound_gets_timeout(sockdir: Path) -> None:
    path = sockdir / "cni.sock"

    async def scenario(sink: FakeSink) -> list[dict[str, Any]]:
        sink.gate = asyncio.Event()  # never set
        return await talk(path, line(ADD))

    _, replies = run(path, scenario, timeout=0.2)
    assert replies[0]["error"]["code"] == "timeout" and "ADD x/a" in replies[0]["error"]["message"]


def test_the_ready_marker_appears_once_the_agent_is_ready_and_outlives_the_server(sockdir: Path) -> None:
    """stockade-cni STATUS reads the marker: absent until the first plan is in the kernel, then
    kept when the agent stops (a restarted agent must not make its node flap NotReady)."""
    path = sockdir / "cni.sock"
    marker = sockdir / "agent-ready"
    applied = asyncio.Event()

    async def main() -> tuple[bool, bool]:
        async with CniServer(sink=FakeSink(), path=path, ready=applied.is_set):
            await asyncio.sleep(0.3)
            before = marker.exists()
            applied.set()
            for _ in range(50):
                if marker.exists():
                    break
                await asyncio.sleep(0.05)
            return before, marker.exists()

    before, after = asyncio.run(main())
    assert (before, after) == (False, True)
    assert marker.exists() and not path.exists()
    assert stat.S_IMODE(marker.stat().st_mode) == 0o644
    assert sorted(os.listdir(sockdir)) == ["agent-ready"]  # no staging file left
    assert json.loads(marker.read_text())["pid"] == os.getpid()
