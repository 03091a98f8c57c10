"""The result object ADD prints, in the format of the requested cniVersion, chained on prevResult.

0.4.0 results carry ``"version"`` in each IP entry (removed in 1.0.0); 1.1.0 adds ``mtu`` to
interfaces. A plugin inside a conflist appends to the ``prevResult`` it was given: its
interfaces come after the earlier ones, and its IPs point at them by index.
"""

from __future__ import annotations

import copy
from typing import Any

from controller.cni.ipam import Allocation
from controller.cni.links import GATEWAY4, GATEWAY6, PodLink


def build(
    cni_version: str,
    *,
    link: PodLink,
    allocations: list[Allocation],
    mtu: int,
    prev: dict[str, Any] | None,
) -> dict[str, Any]:
    result: dict[str, Any] = copy.deepcopy(prev) if prev else {}
    result["cniVersion"] = cni_version
    interfaces: list[dict[str, Any]] = result.setdefault("interfaces", [])
    ips: list[dict[str, Any]] = result.setdefault("ips", [])
    routes: list[dict[str, Any]] = result.setdefault("routes", [])
    host: dict[str, Any] = {"name": link.host_ifname, "mac": link.host_mac}
    pod: dict[str, Any] = {"name": link.pod_ifname, "mac": link.pod_mac, "sandbox": link.sandbox}
    if cni_version == "1.1.0":
        host["mtu"] = mtu
        pod["mtu"] = mtu
    interfaces += [host, pod]
    pod_index = len(interfaces) - 1
    for allocation in allocations:
        address = allocation.address
        entry: dict[str, Any] = {
            "address": f"{address}/{address.max_prefixlen}",
            "gateway": GATEWAY4 if address.version == 4 else GATEWAY6,
            "interface": pod_index,
        }
        if cni_version == "0.4.0":
            entry["version"] = str(address.version)
        ips.append(entry)
        default = "0.0.0.0/0" if address.version == 4 else "::/0"
        routes.append({"dst": default, "gw": entry["gateway"]})
    result.setdefault("dns", {})
    return result


def addresses_in(prev: dict[str, Any]) -> set[str]:
    """The addresses (without prefix) a result lists."""
    out = set()
    for entry in prev.get("ips", []):
        if isinstance(entry, dict) and isinstance(entry.get("address"), str):
            out.add(entry["address"].split("/")[0])
    return out
