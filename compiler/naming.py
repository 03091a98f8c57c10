"""Names of every nftables object Stockade creates, and the text of every comment it writes.

Object names never carry API text. Kubernetes names, label keys and values may hold characters
that nft's grammar gives meaning to, and they are longer than anything worth typing in
``nft list``; names derived from them would also change whenever a label is renamed. Every
name here is either a fixed word or a fixed prefix plus a hash of a canonical key, so identical
keys share one object (the point of peer sets) and any two different keys practically never
meet (64 bits of SHA-256: a collision among a million objects has odds of about 1 in 10^7, and
the plan builder checks for one anyway and stops with an InternalError).

API text appears only in comments, after :func:`sanitize`: nft's scanner reads a quoted string
up to the next ``"`` with no escapes at all, so a ``"`` cannot be written (the kernel would store
it, and ``nft list`` would then print text nft cannot read back), and control characters would
let a newline end a ``#`` line in the text rendering and start a statement. The kernel keeps at
most 128 bytes of a rule comment (``NFTNL_UDATA_COMMENT_MAXLEN``; nft refuses longer ones), so
:func:`comment` truncates on a UTF-8 character boundary.
"""

from __future__ import annotations

import hashlib
from typing import Literal

from compiler.ifnames import IFNAME_MAX as IFNAME_MAX  # noqa: PLC0414 - re-export

# Interface names are defined in compiler.ifnames (import-free, for the CNI plugin) and re-exported.
from compiler.ifnames import POD_INTERFACE_PREFIX as POD_INTERFACE_PREFIX  # noqa: PLC0414 - re-export
from compiler.ifnames import VXLAN_INTERFACE as VXLAN_INTERFACE  # noqa: PLC0414 - re-export
from compiler.model import Direction, Family

TABLE = "stockade"
FAMILY = "inet"

# Hex digits of SHA-256 kept in hashed names (64 bits).
HASH_HEX = 16
COMMENT_MAX_BYTES = 128
# `#` lines of the text rendering carry descriptions for people; keep them to one screen line.
NOTE_MAX_CHARS = 200
_ELLIPSIS = "..."

Tier = Literal["admin", "baseline"]

# Host-side interfaces of pods start with this prefix: stockade-cni names each pod's host-side veth
# "stk" + a short hash of the container id and interface (within IFNAMSIZ), and the ruleset scopes
# its host-wide checks (anti-spoofing, `ct state invalid drop`) to interfaces matching "stk*", so
# the node's uplinks, VXLAN device and anything else it routes are never judged by them. A compile
# option (:class:`compiler.options.CompileOptions`) can change it for nodes whose pod interfaces
# are named otherwise; this is the default, and the CNI plugin's name (defined in compiler.ifnames,
# re-exported above).

# Base chains, named after their hooks.
CHAIN_PREROUTING = "prerouting"
CHAIN_INPUT = "input"
CHAIN_FORWARD = "forward"
CHAIN_OUTPUT = "output"


def interface_wildcard(prefix: str) -> str:
    """nft's pattern for every interface named ``prefix`` + anything: ``stk*``."""
    return f"{prefix}*"


def ip_keyword(family: Family) -> str:
    """nft's word for the address header of ``family``: ``ip saddr``, ``ip6 daddr``."""
    return "ip" if family == 4 else "ip6"


def addr_type(family: Family) -> str:
    """nft's data type of an address of ``family``, for sets and maps."""
    return "ipv4_addr" if family == 4 else "ipv6_addr"


def digest(*parts: str) -> str:
    """A short stable hash of ``parts``; length-prefixed so ("ab", "c") and ("a", "bc") differ."""
    h = hashlib.sha256()
    for part in parts:
        data = part.encode("utf-8", "surrogatepass")
        h.update(len(data).to_bytes(8, "big"))
        h.update(data)
    return h.hexdigest()[:HASH_HEX]


def tier_chain(tier: Tier, direction: Direction) -> str:
    """The chain every per-pod chain jumps to at the position of a cluster-scoped tier."""
    return f"{tier}-{direction}"


def pod_chain(direction: Direction, content: str) -> str:
    """A per-pod chain, named by a hash of its content: pods whose chains would be equal share one."""
    return f"{direction}-{digest('chain', direction, content)}"


def dispatch_map(direction: Direction, family: Family) -> str:
    """The verdict map from a local pod's address to its per-pod chain."""
    return f"dispatch-{direction}-v{family}"


def local_set(family: Family) -> str:
    """Addresses of the pods this node hosts (what the fail-closed rules compare against)."""
    return f"local-pods-v{family}"


def hairpin_set(family: Family) -> str:
    """(address . address) of each local pod: a packet from a pod to itself, back through a Service."""
    return f"hairpin-v{family}"


def pod_source_set(family: Family) -> str:
    """(pod interface . address) pairs the node routes: sources that pass anti-spoofing at once."""
    return f"pod-sources-v{family}"


def podcidr_set(family: Family) -> str:
    """The node's podCIDRs."""
    return f"podcidrs-v{family}"


def pod_set(key: str, family: Family) -> str:
    """Addresses of the pods a (namespace selector, pod selector) peer selects, cluster-wide."""
    return f"pods-{digest('pods', key)}-v{family}"


def cidr_set(key: str, family: Family) -> str:
    """The address intervals a rule's ipBlocks allow (cidr minus except, merged)."""
    return f"cidrs-{digest('cidrs', key)}-v{family}"


def named_port_set(key: str, family: Family) -> str:
    """(address . protocol . port) of the pods a peer selects that have the named ports of a rule."""
    return f"named-{digest('named', key)}-v{family}"


def sanitize(text: str) -> str:
    """``text`` with what nft strings and ``#`` lines cannot carry replaced: ``"`` by ``'``, and
    control or otherwise unprintable characters (newlines, U+2028, ...) by ``?``."""
    return "".join("'" if ch == '"' else ch if ch.isprintable() else "?" for ch in text)


def _truncate_bytes(text: str, limit: int) -> str:
    """The longest prefix of ``text`` whose UTF-8 encoding fits ``limit`` bytes."""
    data = text.encode("utf-8", "surrogatepass")
    if len(data) <= limit:
        return text
    return data[:limit].decode("utf-8", "ignore")


def comment(text: str) -> str:
    """A rule comment: sanitized, at most 128 bytes, ending in ``...`` when it was cut."""
    clean = sanitize(text)
    if len(clean.encode("utf-8", "surrogatepass")) <= COMMENT_MAX_BYTES:
        return clean
    return _truncate_bytes(clean, COMMENT_MAX_BYTES - len(_ELLIPSIS)) + _ELLIPSIS


def rule_comment(policy: str, direction: Direction, *, index: int) -> str:
    """``ns/name ingress[0]``; a long policy key is cut so the direction and index always remain."""
    tail = f" {direction}[{index}]"
    head = sanitize(policy)
    budget = COMMENT_MAX_BYTES - len(tail.encode())
    if len(head.encode("utf-8", "surrogatepass")) > budget:
        head = _truncate_bytes(head, budget - len(_ELLIPSIS)) + _ELLIPSIS
    return head + tail


def note(text: str) -> str:
    """A line for people in the text rendering (a ``#`` comment): sanitized and bounded."""
    clean = sanitize(text)
    if len(clean) <= NOTE_MAX_CHARS:
        return clean
    return clean[: NOTE_MAX_CHARS - len(_ELLIPSIS)] + _ELLIPSIS
