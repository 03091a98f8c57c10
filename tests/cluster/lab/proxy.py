"""What kube-proxy programmed in a node, read back from the node's namespace.

kube-proxy (nftables or iptables mode) runs in every node's network namespace; the lab waits for
it at start (`synced`) and tests wait for a Service's addresses before probing them (`forwards`):
pods turn Ready before kube-proxy, which syncs at most once a second, has their EndpointSlices,
and a ClusterIP probed in between is rejected on that node.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Sequence

from .config import LabConfig
from .underlay import in_netns

# The `kubernetes` Service: the first address of the IPv4 Service range, single-stack.
KUBERNETES_SERVICE_IP = "10.96.0.1"


def rules(netns: str, family: str, mode: str) -> str:
    """kube-proxy's rules for `family` ("ip" or "ip6") as text, or '' if there are none yet."""
    if mode == "nftables":
        argv = ["nft", "list", "table", family, "kube-proxy"]
    else:
        argv = ["iptables-save" if family == "ip" else "ip6tables-save", "-t", "nat"]
    out = subprocess.run(in_netns(netns, argv), capture_output=True, text=True, check=False)
    return out.stdout if out.returncode == 0 else ""


def _map_body(dump: str, name: str) -> str:
    """The text of nft map `name` up to its first closing brace (its elements), or ''."""
    head = f"map {name} {{"
    return dump.split(head, 1)[1].split("}", 1)[0] if head in dump else ""


def programmed(dump: str, ip: str, *, mode: str) -> bool:
    """Whether kube-proxy's rules (`nft list table` / `iptables-save -t nat` text) send Service
    address `ip` to endpoints."""
    if mode == "nftables":
        # In the service-ips map: a Service kube-proxy knows without endpoints sits in the
        # no-endpoint-services map instead, and its packets are rejected ("refused").
        # An element starts with the address: nothing address-like right before it.
        element = re.compile(rf"(?<![0-9a-fA-F.:]){re.escape(ip)} \. ")
        return bool(element.search(_map_body(dump, "service-ips"))) and not element.search(
            _map_body(dump, "no-endpoint-services")
        )
    return any(f"-d {ip}/" in line and "-j KUBE-SVC-" in line for line in dump.splitlines())


def forwards(cfg: LabConfig, ips: Sequence[str]) -> bool:
    """Whether every node's kube-proxy forwards each of `ips` to endpoints."""
    return all(
        programmed(rules(node.netns, "ip6" if ":" in ip else "ip", cfg.proxy_mode), ip, mode=cfg.proxy_mode)
        for node in cfg.all_nodes
        for ip in ips
    )


def synced(cfg: LabConfig, netns: str) -> bool:
    """Whether kube-proxy in `netns` has made its first sync: the `kubernetes` Service forwarded,
    and its IPv6 rules present (that Service is IPv4-only, so their existence is the sign)."""
    ipv6 = rules(netns, "ip6", cfg.proxy_mode)
    return programmed(rules(netns, "ip", cfg.proxy_mode), KUBERNETES_SERVICE_IP, mode=cfg.proxy_mode) and (
        bool(ipv6) if cfg.proxy_mode == "nftables" else "KUBE-SERVICES" in ipv6
    )
