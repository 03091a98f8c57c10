"""Names of the network interfaces Stockade creates (one definition for the CNI, the overlay and
the compiler, which scopes pod-only checks such as anti-spoofing to them).

Kept free of imports: the CNI plugin, a short-lived process started for every sandbox, reads
these without loading the compiler.
"""

from __future__ import annotations

import hashlib

# Host-side veth of every pod: the prefix plus a hash, so `iifname "stk*"` matches pod
# interfaces only (never an uplink, the VXLAN device or a bridge).
POD_INTERFACE_PREFIX = "stk"
# Linux interface names hold at most 15 bytes (IFNAMSIZ 16 with the NUL).
IFNAME_MAX = 15
# The node's VXLAN device (not under POD_INTERFACE_PREFIX: decapsulated traffic is not pod traffic
# of this node).
VXLAN_INTERFACE = "stockade.vx"
# The UDP port of the overlay's VXLAN packets (IANA's 4789); the compiler exempts them from
# conntrack on the node's own addresses (compiler.basechains says why).
VXLAN_PORT = 4789


def pod_interface(container_id: str, ifname: str) -> str:
    """The host-side veth of (sandbox, interface in the sandbox): stable across retries."""
    h = hashlib.sha256(f"{container_id}\0{ifname}".encode("utf-8", "surrogatepass")).hexdigest()
    return POD_INTERFACE_PREFIX + h[: IFNAME_MAX - len(POD_INTERFACE_PREFIX)]
