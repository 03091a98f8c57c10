"""The CNI socket protocol, version 1: how the CNI plugin asks the node agent to program a pod.

The agent listens on a Unix stream socket (default ``/run/stockade/cni.sock``, mode 0600, in a
directory created 0700: only root on the node may talk to it). The plugin connects, writes one
request per line and reads one reply per line, in order; it may send several requests on one
connection. A line is one JSON object, UTF-8, ending in ``\\n``, at most 65536 bytes.

Requests::

    {"version": 1, "op": "ADD", "uid": "<pod uid>", "namespace": "<ns>", "name": "<pod>",
     "containerID": "<sandbox id>", "addresses": ["10.244.1.5", "fd00:10:244:1::5"]}
    {"version": 1, "op": "DEL", "containerID": "<sandbox id>", "uid": "<pod uid>",
     "namespace": "<ns>", "name": "<pod>"}

ADD reports a new sandbox's addresses (one or more IPv4/IPv6 addresses, no prefix) and asks the
agent to program the pod; the agent answers once the pod's entries (its sets, map entries and
chains) are in the kernel, so the plugin returns to the runtime only when the pod is isolated as
its policies say. DEL says the sandbox is gone: only ``containerID`` is required (the runtime may
no longer know the pod), the rest helps the agent when given; the agent forgets only that
sandbox's addresses, so a late DEL of an old incarnation never removes a new one.

Replies::

    {"version": 1, "ok": true}
    {"version": 1, "ok": false, "error": {"code": "<code>", "message": "<text>"}}

with, for ``unsupported_version`` only, ``"supported": [1]``. Error codes:

- ``malformed``: the line is not a JSON object (or not UTF-8, or too long: the connection is
  then closed, as the stream cannot be re-synchronized);
- ``unsupported_version``: ``version`` is not one the agent speaks; ``supported`` lists those;
- ``invalid``: a field is missing or wrong; the message names the field;
- ``unknown_op``: ``op`` is not ``ADD`` or ``DEL``;
- ``timeout``: the agent could not program the pod within its bound;
- ``failed``: programming failed (the message says why, e.g. the kernel rejected it);
- ``internal``: a bug in the agent.

A malformed or refused request never ends the server; the plugin retries or fails the ADD.

Readiness: once its first plan is in the kernel, the agent writes a marker file next to the
socket (``agent-ready``, :func:`ready_marker`). ``stockade-cni STATUS`` (which containerd runs for
the kubelet every few seconds: the node's ``NetworkReady``) fails with CNI error 50 while the
marker is missing and the plugin waits for the agent: a node is not Ready, and gets no pods, before
its agent enforces. The agent never removes the marker: a restarted agent adopts the table with no
window, so its node stays Ready (a node flapping NotReady would mark its pods NotReady and take
them out of Services). The run directory is a tmpfs, so a reboot clears it; uninstall removes it.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from controller.errors import CniProtocolError

VERSION = 1
SUPPORTED_VERSIONS: tuple[int, ...] = (1,)
MAX_LINE = 65536
MAX_ADDRESSES = 16
DEFAULT_SOCKET = "/run/stockade/cni.sock"
READY_MARKER = "agent-ready"

MALFORMED = "malformed"
UNSUPPORTED_VERSION = "unsupported_version"
INVALID = "invalid"
UNKNOWN_OP = "unknown_op"
TIMEOUT = "timeout"
FAILED = "failed"
INTERNAL = "internal"


@dataclass(frozen=True)
class PodReport:
    """ADD: a sandbox and the addresses the CNI plugin gave it (normalized, in the order given)."""

    uid: str
    namespace: str
    name: str
    container_id: str
    addresses: tuple[str, ...]


@dataclass(frozen=True)
class PodForget:
    """DEL: a sandbox that is gone; fields other than ``container_id`` may be empty."""

    container_id: str
    uid: str = ""
    namespace: str = ""
    name: str = ""


Request = PodReport | PodForget


def _text(message: dict[str, Any], field: str, *, required: bool = True) -> str:
    value = message.get(field, "" if not required else None)
    if value is None:
        raise CniProtocolError(INVALID, f"{field}: required")
    if not isinstance(value, str):
        raise CniProtocolError(INVALID, f"{field}: must be a string, not {type(value).__name__}")
    if required and not value:
        raise CniProtocolError(INVALID, f"{field}: must not be empty")
    return value


def _addresses(message: dict[str, Any]) -> tuple[str, ...]:
    value = message.get("addresses")
    if not isinstance(value, list) or not value:
        raise CniProtocolError(INVALID, "addresses: must be a non-empty list of IP addresses")
    if len(value) > MAX_ADDRESSES:
        raise CniProtocolError(INVALID, f"addresses: at most {MAX_ADDRESSES}, got {len(value)}")
    out: list[str] = []
    for i, item in enumerate(value):
        try:
            address = str(ipaddress.ip_address(item)) if isinstance(item, str) else None
        except ValueError:
            address = None
        if address is None:
            raise CniProtocolError(INVALID, f"addresses[{i}]: not an IP address: {str(item)[:64]!r}")
        if address in out:
            raise CniProtocolError(INVALID, f"addresses[{i}]: {address} given twice")
        out.append(address)
    return tuple(out)


def parse_request(line: bytes) -> Request:
    """One request line (without its newline) as a request; :class:`CniProtocolError` otherwise."""
    try:
        message = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise CniProtocolError(MALFORMED, f"not a JSON line: {exc}") from exc
    if not isinstance(message, dict):
        raise CniProtocolError(MALFORMED, f"a request is a JSON object, not {type(message).__name__}")
    if "version" not in message:
        raise CniProtocolError(INVALID, "version: required")
    version = message["version"]
    if isinstance(version, bool) or version not in SUPPORTED_VERSIONS:
        raise CniProtocolError(UNSUPPORTED_VERSION, f"version {str(version)[:32]} is not supported")
    op = message.get("op")
    if op == "ADD":
        return PodReport(
            uid=_text(message, "uid"),
            namespace=_text(message, "namespace"),
            name=_text(message, "name"),
            container_id=_text(message, "containerID"),
            addresses=_addresses(message),
        )
    if op == "DEL":
        return PodForget(
            container_id=_text(message, "containerID"),
            uid=_text(message, "uid", required=False),
            namespace=_text(message, "namespace", required=False),
            name=_text(message, "name", required=False),
        )
    raise CniProtocolError(UNKNOWN_OP, f"op: {str(op)[:32]!r} is not ADD or DEL")


def encode_request(request: Request) -> bytes:
    if isinstance(request, PodReport):
        message: dict[str, Any] = {
            "version": VERSION,
            "op": "ADD",
            "uid": request.uid,
            "namespace": request.namespace,
            "name": request.name,
            "containerID": request.container_id,
            "addresses": list(request.addresses),
        }
    else:
        message = {
            "version": VERSION,
            "op": "DEL",
            "containerID": request.container_id,
            "uid": request.uid,
            "namespace": request.namespace,
            "name": request.name,
        }
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def encode_ok() -> bytes:
    return json.dumps({"version": VERSION, "ok": True}).encode() + b"\n"


def encode_error(code: str, message: str) -> bytes:
    reply: dict[str, Any] = {"version": VERSION, "ok": False, "error": {"code": code, "message": message}}
    if code == UNSUPPORTED_VERSION:
        reply["supported"] = list(SUPPORTED_VERSIONS)
    return json.dumps(reply).encode() + b"\n"


def ready_marker(socket_path: str | Path) -> Path:
    """The file the agent writes next to its socket once its first plan is in the kernel."""
    return Path(socket_path).parent / READY_MARKER
