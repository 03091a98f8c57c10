"""The plugin's input: its network configuration (stdin) and the CNI_* environment, validated.

Configuration keys (the plugin's entry in a conflist; see README "CNI plugin")::

    {"cniVersion": "1.1.0", "name": "stockade", "type": "stockade-cni",
     "podCIDRs": ["10.244.1.0/24", "fd00:10:244:1::/64"],   # required, one per family at most
     "mtu": 1450,                          # optional; default: uplink MTU minus VXLAN overhead
     "ipamDir": "/var/lib/stockade/ipam",  # allocations, one file per address
     "quarantineSeconds": 60,              # a released address is not reused before this
     "agentSocket": "/run/stockade/cni.sock",
     "waitForAgent": true,                 # ADD waits until the agent programmed the pod
     "agentTimeoutSeconds": 5}

Every problem is a :class:`CniError` naming the key or variable, raised before anything is
touched, so a bad configuration never leaves a half-made sandbox behind.
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass, field
from typing import Any

from controller import cniproto
from controller.cni.errors import (
    DECODING_FAILURE,
    INCOMPATIBLE_VERSION,
    INVALID_CONFIG,
    INVALID_ENVIRONMENT,
    CniError,
)

SUPPORTED_VERSIONS: tuple[str, ...] = ("0.4.0", "1.0.0", "1.1.0")
LATEST = SUPPORTED_VERSIONS[-1]
COMMANDS = ("ADD", "DEL", "CHECK", "VERSION", "STATUS", "GC")

DEFAULT_IPAM_DIR = "/var/lib/stockade/ipam"
DEFAULT_QUARANTINE_SECONDS = 60.0
DEFAULT_AGENT_TIMEOUT = 5.0

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# Container ids and interface names as the spec allows them (CNI_CONTAINERID: alphanumerics plus
# `_.-`, starting alphanumeric; an interface name is what Linux takes: 1-15 bytes, no `/`,
# whitespace or `:`, not `.` or `..`).
_CONTAINER_ID = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$")
_IFNAME = re.compile(r"^[^\s/:]{1,15}$")
_NETWORK_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$")


@dataclass(frozen=True)
class Attachment:
    container_id: str
    ifname: str


@dataclass(frozen=True)
class NetConf:
    cni_version: str
    name: str
    pod_cidrs: tuple[Network, ...]
    mtu: int | None = None
    ipam_dir: str = DEFAULT_IPAM_DIR
    quarantine_seconds: float = DEFAULT_QUARANTINE_SECONDS
    agent_socket: str = cniproto.DEFAULT_SOCKET
    wait_for_agent: bool = True
    agent_timeout: float = DEFAULT_AGENT_TIMEOUT
    prev_result: dict[str, Any] | None = None
    valid_attachments: tuple[Attachment, ...] | None = None
    raw: dict[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class CniEnv:
    command: str
    container_id: str = ""
    netns: str = ""
    ifname: str = ""
    args: tuple[tuple[str, str], ...] = ()

    def arg(self, key: str) -> str:
        return next((v for k, v in self.args if k == key), "")


def version_of(data: bytes) -> str:
    """The cniVersion the runtime asked for, if it can be read at all (for error objects)."""
    try:
        value = json.loads(data).get("cniVersion")
    except (ValueError, AttributeError):
        return LATEST
    return value if isinstance(value, str) and value in SUPPORTED_VERSIONS else LATEST


def parse_env(environ: dict[str, str]) -> CniEnv:
    command = environ.get("CNI_COMMAND", "")
    if command not in COMMANDS:
        raise CniError(
            INVALID_ENVIRONMENT,
            f"CNI_COMMAND must be one of {', '.join(COMMANDS)}, not {command[:32]!r}",
        )
    if command in ("VERSION", "STATUS", "GC"):
        return CniEnv(command=command)
    container_id = environ.get("CNI_CONTAINERID", "")
    if not _CONTAINER_ID.match(container_id):
        raise CniError(
            INVALID_ENVIRONMENT,
            "CNI_CONTAINERID must be set: letters, digits, '_', '.', '-', starting with a letter "
            f"or digit (got {container_id[:80]!r})",
        )
    ifname = environ.get("CNI_IFNAME", "")
    if not _IFNAME.match(ifname) or ifname in (".", ".."):
        raise CniError(
            INVALID_ENVIRONMENT,
            "CNI_IFNAME must be a Linux interface name (1-15 bytes, no '/', ':' or space), "
            f"got {ifname[:32]!r}",
        )
    netns = environ.get("CNI_NETNS", "")
    if command in ("ADD", "CHECK") and not netns:
        raise CniError(
            INVALID_ENVIRONMENT, f"CNI_NETNS must name the sandbox's network namespace for {command}"
        )
    return CniEnv(
        command=command,
        container_id=container_id,
        netns=netns,
        ifname=ifname,
        args=parse_args(environ.get("CNI_ARGS", "")),
    )


def parse_args(text: str) -> tuple[tuple[str, str], ...]:
    """CNI_ARGS: ``K=V`` pairs separated by ``;`` (the spec's format); an empty string is none."""
    if not text:
        return ()
    pairs: list[tuple[str, str]] = []
    for i, item in enumerate(text.split(";")):
        key, sep, value = item.partition("=")
        if not sep or not key or "=" in value:
            raise CniError(
                INVALID_ENVIRONMENT,
                f"CNI_ARGS: item {i} ({item[:64]!r}) is not KEY=VALUE; the format is K1=V1;K2=V2",
            )
        pairs.append((key, value))
    return tuple(pairs)


def parse_netconf(data: bytes, *, command: str) -> NetConf:
    try:
        conf = json.loads(data)
    except (UnicodeDecodeError, ValueError) as exc:
        raise CniError(DECODING_FAILURE, f"the network configuration on stdin is not JSON: {exc}") from exc
    if not isinstance(conf, dict):
        raise CniError(DECODING_FAILURE, "the network configuration on stdin must be a JSON object")
    version = conf.get("cniVersion")
    if version not in SUPPORTED_VERSIONS:
        raise CniError(
            INCOMPATIBLE_VERSION,
            f"cniVersion {str(version)[:32]!r} is not supported; stockade-cni speaks "
            f"{', '.join(SUPPORTED_VERSIONS)}",
        )
    name = conf.get("name")
    if not isinstance(name, str) or not _NETWORK_NAME.match(name):
        raise CniError(
            INVALID_CONFIG, f"name: must be a network name (letters, digits, '_.-'), got {name!r:.64}"
        )
    if command in ("VERSION",):
        return NetConf(cni_version=version, name=name, pod_cidrs=(), raw=conf)
    return NetConf(
        cni_version=version,
        name=name,
        pod_cidrs=_pod_cidrs(conf.get("podCIDRs")),
        mtu=_mtu(conf.get("mtu")),
        ipam_dir=_text(conf, "ipamDir", DEFAULT_IPAM_DIR),
        quarantine_seconds=_seconds(conf, "quarantineSeconds", DEFAULT_QUARANTINE_SECONDS),
        agent_socket=_text(conf, "agentSocket", cniproto.DEFAULT_SOCKET),
        wait_for_agent=_flag(conf, "waitForAgent", default=True),
        agent_timeout=_seconds(conf, "agentTimeoutSeconds", DEFAULT_AGENT_TIMEOUT),
        prev_result=_prev_result(conf.get("prevResult")),
        valid_attachments=_attachments(conf.get("cni.dev/valid-attachments")) if command == "GC" else None,
        raw=conf,
    )


def _pod_cidrs(value: object) -> tuple[Network, ...]:
    if not isinstance(value, list) or not value or len(value) > 2:
        raise CniError(INVALID_CONFIG, "podCIDRs: must list the node's podCIDRs (one IPv4 and/or one IPv6)")
    out: list[Network] = []
    for i, item in enumerate(value):
        try:
            network = ipaddress.ip_network(item, strict=True) if isinstance(item, str) else None
        except ValueError as exc:
            raise CniError(INVALID_CONFIG, f"podCIDRs[{i}]: {item!r:.64} is not a network: {exc}") from exc
        if network is None:
            raise CniError(INVALID_CONFIG, f"podCIDRs[{i}]: must be a string like 10.244.1.0/24")
        # At least two usable addresses besides the network (and v4 broadcast) address.
        if network.max_prefixlen - network.prefixlen < 2:
            raise CniError(INVALID_CONFIG, f"podCIDRs[{i}]: {network} is too small for pods")
        if any(other.version == network.version for other in out):
            raise CniError(INVALID_CONFIG, f"podCIDRs[{i}]: a second IPv{network.version} podCIDR")
        out.append(network)
    return tuple(out)


def _mtu(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 576 <= value <= 65535:
        raise CniError(INVALID_CONFIG, f"mtu: must be an integer from 576 to 65535, got {value!r:.32}")
    return value


def _text(conf: dict[str, Any], key: str, default: str) -> str:
    value = conf.get(key, default)
    if not isinstance(value, str) or not value.startswith("/"):
        raise CniError(INVALID_CONFIG, f"{key}: must be an absolute path, got {value!r:.64}")
    return value


def _seconds(conf: dict[str, Any], key: str, default: float) -> float:
    value = conf.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 3600:
        raise CniError(
            INVALID_CONFIG, f"{key}: must be a number of seconds from 0 to 3600, got {value!r:.32}"
        )
    return float(value)


def _flag(conf: dict[str, Any], key: str, *, default: bool) -> bool:
    value = conf.get(key, default)
    if not isinstance(value, bool):
        raise CniError(INVALID_CONFIG, f"{key}: must be true or false, got {value!r:.32}")
    return value


def _prev_result(value: object) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise CniError(INVALID_CONFIG, "prevResult: must be a result object")
    for key in ("interfaces", "ips", "routes"):
        if key in value and not isinstance(value[key], list):
            raise CniError(INVALID_CONFIG, f"prevResult.{key}: must be a list")
    return value


def _attachments(value: object) -> tuple[Attachment, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise CniError(INVALID_CONFIG, "cni.dev/valid-attachments: must be a list")
    out = []
    for i, item in enumerate(value):
        if not isinstance(item, dict) or not isinstance(item.get("containerID"), str):
            raise CniError(INVALID_CONFIG, f"cni.dev/valid-attachments[{i}]: needs containerID and ifname")
        out.append(Attachment(container_id=item["containerID"], ifname=str(item.get("ifname", ""))))
    return tuple(out)
