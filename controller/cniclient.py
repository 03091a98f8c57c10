"""The CNI plugin's end of the CNI socket (protocol: :mod:`controller.cniproto`).

Synchronous and self-contained (a CNI plugin is a short-lived process): connect, send one
request, wait for its reply with one deadline covering all of it. No answer in time, no socket,
or a refused connection raise :class:`AgentUnavailable`; an error reply raises
:class:`AgentRefused` with the protocol's code.
"""

from __future__ import annotations

import json
import socket
import time
from typing import Any

from controller import cniproto
from controller.cniproto import PodForget, PodReport
from controller.errors import AgentRefused, AgentUnavailable


def call(request: cniproto.Request, *, path: str = cniproto.DEFAULT_SOCKET, timeout: float) -> None:
    """Send ``request`` and wait at most ``timeout`` seconds for the agent's answer."""
    reply = _exchange(cniproto.encode_request(request), path=path, timeout=timeout)
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


def add_pod(report: PodReport, *, path: str = cniproto.DEFAULT_SOCKET, timeout: float) -> None:
    """Report a new sandbox's addresses; returns once the agent has programmed the pod."""
    call(report, path=path, timeout=timeout)


def del_pod(forget: PodForget, *, path: str = cniproto.DEFAULT_SOCKET, timeout: float) -> None:
    call(forget, path=path, timeout=timeout)


def _exchange(line: bytes, *, path: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        try:
            sock.settimeout(timeout)
            sock.connect(path)
            sock.sendall(line)
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
                    raise AgentUnavailable(
                        f"the agent at {path} answered more than {cniproto.MAX_LINE} bytes"
                    )
        except TimeoutError as exc:
            raise AgentUnavailable(f"no answer from the agent at {path} within {timeout:g}s") from exc
        except OSError as exc:
            raise AgentUnavailable(f"cannot reach the agent at {path}: {exc}") from exc
    try:
        reply = json.loads(received.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise AgentUnavailable(f"the agent at {path} answered something that is not JSON") from exc
    if not isinstance(reply, dict):
        raise AgentUnavailable(f"the agent at {path} answered something that is not a reply: {reply!r:.200}")
    return reply
