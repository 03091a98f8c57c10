"""The agent's end of the CNI socket (protocol: :mod:`controller.cniproto`), on asyncio.

:class:`CniServer` listens on a Unix socket and hands each request to a :class:`PodSink` (the
agent), replying once the sink returns: for ADD that is when the pod's entries are in the kernel.
A bad line gets an error reply and never ends the server; a sink that raises gets ``failed``
(a :class:`StockadeError`: bad input or a kernel rejection) or ``internal`` (anything else, a
bug, logged with its traceback); a sink slower than ``program_timeout`` gets ``timeout``.

The socket appears with mode 0600 at once: it is bound under a temporary name in its directory
(created 0700), made 0600, then renamed into place, so the path never exists with the mode the
process's umask would give.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from controller import cniproto
from controller.cniproto import PodForget, PodReport
from controller.errors import CniProtocolError, StockadeError, UsageError

log = logging.getLogger("stockade.cnisocket")

# How long a connection that broke the protocol may keep sending before it is closed.
_DISCARD_SECONDS = 1.0


class PodSink(Protocol):
    """What the CNI socket asks of the agent."""

    async def program_pod(self, report: PodReport) -> None:
        """Return once the pod's addresses and entries are in the kernel."""

    async def forget_pod(self, forget: PodForget) -> None:
        """The sandbox is gone: forget the addresses it reported (only that sandbox's)."""


class CniServer:
    def __init__(
        self,
        *,
        sink: PodSink,
        path: str | Path = cniproto.DEFAULT_SOCKET,
        program_timeout: float = 10.0,
        ready: Callable[[], bool] | None = None,
    ) -> None:
        """``ready`` says when the agent's first plan is in the kernel: the server then writes the
        readiness marker next to the socket (:func:`controller.cniproto.ready_marker`)."""
        self.path = Path(path)
        self._sink = sink
        self._timeout = program_timeout
        self._ready = ready
        self._server: asyncio.AbstractServer | None = None
        self._marker: asyncio.Task[None] | None = None

    async def start(self) -> None:
        sock = _bound_socket(self.path)
        self._server = await asyncio.start_unix_server(self._serve, sock=sock, limit=cniproto.MAX_LINE + 1)
        if self._ready is not None:
            self._marker = asyncio.create_task(self._mark_ready(self._ready), name="stockade cni ready")

    async def close(self) -> None:
        if self._marker is not None:
            self._marker.cancel()
            await asyncio.gather(self._marker, return_exceptions=True)
            self._marker = None
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        # The readiness marker stays: a restarted agent adopts the table without a window, and
        # its node must not flap NotReady meanwhile (controller.cniproto says why).

    async def _mark_ready(self, ready: Callable[[], bool]) -> None:
        # Polled: readiness is a property of the agent; 0.1 s is nothing next to the kubelet's
        # 5 s STATUS period, and a poll costs a few attribute reads.
        while not ready():
            await asyncio.sleep(0.1)
        marker = cniproto.ready_marker(self.path)
        staging = marker.with_name(f".{marker.name}.{os.getpid()}")
        staging.write_text(json.dumps({"pid": os.getpid(), "since": time.time()}) + "\n")
        os.chmod(staging, 0o644)
        os.rename(staging, marker)
        log.info("first plan in the kernel: %s written, stockade-cni STATUS reports ready", marker)

    async def __aenter__(self) -> CniServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    line = await reader.readuntil(b"\n")
                except asyncio.IncompleteReadError as exc:
                    if exc.partial.strip():
                        writer.write(cniproto.encode_error(cniproto.MALFORMED, "the line has no newline"))
                        await writer.drain()
                    return
                except asyncio.LimitOverrunError:
                    message = f"a line is at most {cniproto.MAX_LINE} bytes; closing the connection"
                    writer.write(cniproto.encode_error(cniproto.MALFORMED, message))
                    await writer.drain()
                    await _discard(reader)
                    return
                if not line.strip():
                    continue
                writer.write(await self._answer(line.rstrip(b"\r\n")))
                await writer.drain()
        except (ConnectionError, BrokenPipeError):
            return  # the plugin went away; its request (if any) was still carried out
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, BrokenPipeError):
                await writer.wait_closed()

    async def _answer(self, line: bytes) -> bytes:
        try:
            request = cniproto.parse_request(line)
        except CniProtocolError as exc:
            log.warning("CNI socket: refused a request: %s", exc)
            return cniproto.encode_error(exc.code, exc.message)
        try:
            if isinstance(request, PodReport):
                await asyncio.wait_for(self._sink.program_pod(request), self._timeout)
            else:
                await asyncio.wait_for(self._sink.forget_pod(request), self._timeout)
        except TimeoutError:
            message = f"not done within {self._timeout:g}s: {_describe(request)}"
            log.error("CNI socket: %s", message)
            return cniproto.encode_error(cniproto.TIMEOUT, message)
        except StockadeError as exc:
            log.error("CNI socket: %s failed: %s", _describe(request), exc)
            return cniproto.encode_error(cniproto.FAILED, str(exc))
        except Exception as exc:
            log.exception("CNI socket: bug while handling %s", _describe(request))
            return cniproto.encode_error(cniproto.INTERNAL, f"{type(exc).__name__}: {exc}")
        return cniproto.encode_ok()


async def _discard(reader: asyncio.StreamReader) -> None:
    """Read and drop what the peer still sends (bounded): closing a socket with unread input
    resets the connection, and the peer would lose the error reply already sent."""
    with contextlib.suppress(TimeoutError, ConnectionError):
        async with asyncio.timeout(_DISCARD_SECONDS):
            while await reader.read(cniproto.MAX_LINE):
                pass


def _describe(request: cniproto.Request) -> str:
    if isinstance(request, PodReport):
        return f"ADD {request.namespace}/{request.name} ({request.container_id[:12]})"
    return f"DEL {request.container_id[:12]}"


def _bound_socket(path: Path) -> socket.socket:
    """A listening-ready Unix socket at ``path`` with mode 0600, never visible with another mode."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISSOCK(mode):
            raise UsageError(f"{path} exists and is not a socket; refusing to replace it")
    staging = path.with_name(f".{path.name}.{os.getpid()}")
    with contextlib.suppress(FileNotFoundError):
        staging.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(staging))
        os.chmod(staging, 0o600)
        # A socket left by an agent that died is replaced: nothing listens on it any more (one
        # agent per node), and rename over it is atomic for a plugin connecting meanwhile.
        os.rename(staging, path)
    except BaseException:
        sock.close()
        with contextlib.suppress(FileNotFoundError):
            staging.unlink()
        raise
    return sock
