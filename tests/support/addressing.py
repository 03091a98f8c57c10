"""Pod addressing shared by the lab and the models compiled for it (pure: no I/O).

Every pod is dual-stack. The IPv6 host id equals the IPv4 one (pod 10.244.1.10 is
fd00:10:244:1::a), so a prefix over the last bits means the same pods in both families
(/28 in IPv4 holds the same pods as /124 in IPv6).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

Family = Literal[4, 6]
FAMILIES: tuple[Family, ...] = (4, 6)

# The pod CIDRs of the lab's node. 10.244.1.0/24 lies in 0.0.0.0/4 and fd00:10:244:1::/64 in
# f000::/4, so "the /4 network that holds a pod" holds every pod of the node in either family.
DEFAULT_POD_CIDR4 = "10.244.1.0/24"
DEFAULT_POD_CIDR6 = "fd00:10:244:1::/64"
# The node's InternalIPs (on the node netns's loopback; outside the pod CIDRs).
DEFAULT_NODE_IPV4 = "172.31.250.1"
DEFAULT_NODE_IPV6 = "fd00:172:31:250::1"
# First host id handed out; lower ids are left free (a CNI keeps .1 for its gateway).
FIRST_HOST_ID = 10


@dataclass(frozen=True)
class PodAddress:
    """The addresses of one pod of the lab. `name` is the caller's key (e.g. ``x/a``)."""

    name: str
    ipv4: str
    ipv6: str

    def address(self, family: Family) -> str:
        return self.ipv4 if family == 4 else self.ipv6


def allocate(
    names: Sequence[str],
    *,
    cidr4: str = DEFAULT_POD_CIDR4,
    cidr6: str = DEFAULT_POD_CIDR6,
    first: int = FIRST_HOST_ID,
) -> tuple[PodAddress, ...]:
    """Give each name the next host id of both CIDRs, in order (deterministic)."""
    net4 = ipaddress.IPv4Network(cidr4)
    net6 = ipaddress.IPv6Network(cidr6)
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate pod names: {sorted(names)}")
    last = first + len(names) - 1
    if last >= net4.num_addresses - 1:
        raise ValueError(f"{len(names)} pods do not fit {cidr4} from host id {first}")
    return tuple(
        PodAddress(
            name=name,
            ipv4=str(net4.network_address + first + i),
            ipv6=str(net6.network_address + first + i),
        )
        for i, name in enumerate(names)
    )


def host_prefix(address: str) -> str:
    """The address as a host CIDR (/32 or /128)."""
    ip = ipaddress.ip_address(address)
    return f"{ip}/{ip.max_prefixlen}"


def supernet(address: str, prefixlen: int) -> str:
    """The network of length `prefixlen` that holds `address` (e.g. 10.244.1.10, 4 -> 0.0.0.0/4)."""
    ip = ipaddress.ip_address(address)
    return str(ipaddress.ip_network(f"{ip}/{prefixlen}", strict=False))
