"""The CNI plugin's end of the CNI socket (protocol: :mod:`controller.cniproto`).

Synchronous and self-contained (a CNI plugin is a short-lived process): connect, send one
request, wait for its reply with one deadline covering all of it. No answer in time, no socket,
or a refused connection raise :class:`AgentUnavailable`; an error reply raises
:class:`AgentRefused` with the protocol's code. :func:`send` and :meth:`Pending.wait` split a
call in two, so the plugin can configure the pod's links while the agent programs the pod.
"""

from __future__ import annotations

import json
import socket
import time
from typing import Any

from controller import cniproto
from controller.cniproto import PodForget, PodReport
from controller.errors import AgentRefused, AgentUnavailable


class Pending:
    """A request sent; :meth:`wait` reads the agent's answer (at most once) within the deadline
    that began when it was sent. Close it (or use it as a context manager) when done."""

    def __init__(self, sock: socket.socket, *, path: str, timeout: float, deadline: float) -> None:
        self._sock = sock
        self._path = path
        self._timeout = timeout
        self._deadline = deadline

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> Pending:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def wait(self) -> None:
        """Return when the agent answered yes; AgentRefused / AgentUnavailable otherwise."""
        try:
            reply = _receive(self._sock, path=self._path, deadline=self._deadline)
        except TimeoutError as exc:
            raise AgentUnavailable(
                f"no answer from the agent at {self._path} within {self._timeout:g}s"
            ) from exc
        except OSError as exc:
            raise AgentUnavailable(f"cannot reach the agent at {self._path}: {exc}") from exc
        finally:
            self.close()
        _check(reply, path=self._path)


def send(request: cniproto.Request, *, path: str = cniproto.DEFAULT_SOCKET, timeout: float) -> Pending:
    """Connect and send ``request``; the answer is read by the returned :class:`Pending`."""
    deadline = time.monotonic() + timeout
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(cniproto.encode_request(request))
    except TimeoutError as exc:
        sock.close()
        raise AgentUnavailable(f"no answer from the agent at {path} within {timeout:g}s") from exc
    except OSError as exc:
        sock.close()
        raise AgentUnavailable(f"cannot reach the agent at {path}: {exc}") from exc
    return Pending(sock, path=path, timeout=timeout, deadline=deadline)


def call(request: cniproto.Request, *, path: str = cniproto.DEFAULT_SOCKET, timeout: float) -> None:
    """Send ``request`` and wait at most ``timeout`` seconds for the agent's answer."""
    send(request, path=path, timeout=timeout).wait()


def add_pod(report: PodReport, *, path: str = cniproto.DEFAULT_SOCKET, timeout: float) -> None:
    """Report a new sandbox's addresses; returns once the agent has programmed the pod."""
    call(report, path=path, timeout=timeout)


def del_pod(forget: PodForget, *, path: str = cniproto.DEFAULT_SOCKET, timeout: float) -> None:
    call(forget, path=path, timeout=timeout)


def _check(reply: dict[str, Any], *, path: str) -> None:
    if reply.get("ok") is True:
        return
    error = reply.get("error")
    if not isinstance(error, dict):
        raise AgentUnavailable(f"the agent at {path} answered something that is not a reply: {reply!r:.200}")
    supported = reply.get("supported", [])
    raise AgentRefused(
        str(error.get("code", "")),
        str(error.get("message", "")),
        supported=tuple(v for v in supported if isinstance(v, int)) if isinstance(supported, list) else (),
    )


def _receive(sock: socket.socket, *, path: str, deadline: float) -> dict[str, Any]:
    received = b""
    while not received.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        sock.settimeout(left)
        chunk = sock.recv(cniproto.MAX_LINE)
        if not chunk:
            raise AgentUnavailable(f"the agent at {path} closed the connection without answering")
        received += chunk
        if len(received) > cniproto.MAX_LINE:
            raise AgentUnavailable(f"the agent at {path} answered more than {cniproto.MAX_LINE} bytes")
    try:
        reply = json.loads(received.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise AgentUnavailable(f"the agent at {path} answered something that is not JSON") from exc
    if not isinstance(reply, dict):
        raise AgentUnavailable(f"the agent at {path} answered something that is not a reply: {reply!r:.200}")
    return reply
