"""The CNI socket client against hand-written servers (raw sockets in a thread), and once against
the real server."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from controller import cniclient
from controller.cniproto import PodForget, PodReport
from controller.cnisocket import CniServer
from controller.errors import AgentRefused, AgentUnavailable

REPORT = PodReport("u-1", "x", "a", "c0ffee", ("10.244.1.5", "fd00::5"))


@pytest.fixture
def sockpath() -> Iterator[str]:
    top = tempfile.mkdtemp(prefix="stkcnic", dir="/tmp")
    try:
        yield f"{top}/cni.sock"
    finally:
        shutil.rmtree(top)


class RawServer:
    """Accepts one connection, records the request line, then does what ``behave`` says."""

    def __init__(self, path: str, behave: Callable[[socket.socket], None]) -> None:
        self.received = b""
        self._listener = socket.socket(socket.AF_UNIX)
        self._listener.bind(path)
        self._listener.listen(1)
        self._behave = behave
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        conn, _ = self._listener.accept()
        with conn:
            while not self.received.endswith(b"\n"):
                chunk = conn.recv(4096)
                if not chunk:
                    break
                self.received += chunk
            self._behave(conn)

    def close(self) -> None:
        self._thread.join(timeout=5)
        self._listener.close()


def answer(text: bytes) -> Callable[[socket.socket], None]:
    return lambda conn: conn.sendall(text)


def test_add_sends_the_documented_line_and_returns_on_ok(sockpath: str) -> None:
    server = RawServer(sockpath, answer(b'{"version": 1, "ok": true}\n'))
    cniclient.add_pod(REPORT, path=sockpath, timeout=2)
    server.close()
    assert json.loads(server.received) == {
        "version": 1,
        "op": "ADD",
        "uid": "u-1",
        "namespace": "x",
        "name": "a",
        "containerID": "c0ffee",
        "addresses": ["10.244.1.5", "fd00::5"],
    }


def test_a_reply_split_over_several_writes_is_read_whole(sockpath: str) -> None:
    def slowly(conn: socket.socket) -> None:
        for piece in (b'{"version": 1,', b' "ok": ', b"true}\n"):
            conn.sendall(piece)
            time.sleep(0.05)

    server = RawServer(sockpath, slowly)
    cniclient.del_pod(PodForget("c0ffee"), path=sockpath, timeout=2)
    server.close()
    assert json.loads(server.received)["op"] == "DEL"


def test_an_error_reply_raises_with_its_code_and_supported_versions(sockpath: str) -> None:
    error = b'"error": {"code": "unsupported_version", "message": "no"}'
    reply = b'{"version": 1, "ok": false, ' + error + b', "supported": [1]}\n'
    server = RawServer(sockpath, answer(reply))
    with pytest.raises(AgentRefused) as caught:
        cniclient.add_pod(REPORT, path=sockpath, timeout=2)
    server.close()
    assert (caught.value.code, caught.value.message, caught.value.supported) == (
        "unsupported_version",
        "no",
        (1,),
    )


UNAVAILABLE = [
    pytest.param(lambda conn: time.sleep(1.0), "within 0.3s", id="never-answers"),
    pytest.param(lambda conn: None, "closed the connection without answering", id="hangs-up"),
    pytest.param(answer(b"garbage\n"), "not JSON", id="garbage"),
    pytest.param(answer(b"[1]\n"), "not a reply", id="not-an-object"),
    pytest.param(answer(b'{"version": 1, "ok": false}\n'), "not a reply", id="error-without-error"),
]


@pytest.mark.parametrize(("behave", "text"), UNAVAILABLE)
def test_no_usable_answer_raises_agent_unavailable_in_time(
    sockpath: str, behave: Callable[[socket.socket], None], text: str
) -> None:
    server = RawServer(sockpath, behave)
    started = time.monotonic()
    with pytest.raises(AgentUnavailable, match=text):
        cniclient.add_pod(REPORT, path=sockpath, timeout=0.3)
    assert time.monotonic() - started < 0.8
    server.close()


def test_no_socket_raises_agent_unavailable(sockpath: str) -> None:
    with pytest.raises(AgentUnavailable, match="cannot reach the agent"):
        cniclient.add_pod(REPORT, path=sockpath, timeout=1)


def test_against_the_real_server(sockpath: str) -> None:
    programmed: list[PodReport] = []

    class Sink:
        async def program_pod(self, report: PodReport) -> None:
            programmed.append(report)

        async def forget_pod(self, forget: PodForget) -> None:
            raise AssertionError("not asked")

    async def main() -> None:
        async with CniServer(sink=Sink(), path=sockpath):
            await asyncio.to_thread(cniclient.add_pod, REPORT, path=sockpath, timeout=2)

    asyncio.run(main())
    assert programmed == [REPORT]
    assert not Path(sockpath).exists()
