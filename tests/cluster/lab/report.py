"""What a lab is and what it left behind: `status` lines, and the leak check used by the tests."""

from __future__ import annotations

import contextlib
import ipaddress
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from pyroute2 import IPRoute

from .config import LabConfig
from .kube import ApiError
from .realnode import v1_hierarchies
from .state import NETNS_DIR, OwnerLock, alive, pod_records

if TYPE_CHECKING:
    from .lab import Lab


def status_lines(lab: Lab) -> Iterator[str]:
    rec, cfg = lab.rec, lab.cfg
    held = OwnerLock(lab.lock.path).held_elsewhere() or lab.lock.fd >= 0
    live = [p for p in rec.processes if alive(p)]
    owner = (
        f"foreground pid {rec.owner_pid}" if held else "detached" if rec.detached else "owner gone (crashed?)"
    )
    yield f"lab {cfg.name}: {rec.phase}, {owner}; {len(live)}/{len(rec.processes)} processes alive"
    yield f"  apiserver  {cfg.api_url_host} (from the host), {cfg.api_url_nodes} (from nodes)"
    yield f"  kubeconfig {cfg.kubeconfig}"
    yield f"  tools      {rec.info.get('bin_dir', '?')}"
    yield f"  proxy mode {rec.proxy_mode}; slot {rec.slot}; host link {cfg.host_link} {cfg.host_ip}/30"
    if rec.info.get("timings"):
        yield "  start-up   " + ", ".join(f"{k} {v}s" for k, v in rec.info["timings"].items())
    for p in rec.processes:
        yield f"  {'up  ' if alive(p) else 'DEAD'} {p.role:<28} pid {p.pid:<8} netns {p.netns}"
    clients = pod_records(cfg.dir)
    try:
        nodes = lab.nodes()
        pods = lab.kube.get("/api/v1/pods")["items"]
    except (ApiError, OSError) as exc:
        yield f"  apiserver unreachable: {exc}"
        return
    for n in nodes:
        conds = {c["type"]: c["status"] for c in n.get("status", {}).get("conditions", [])}
        ips = ", ".join(a["address"] for a in n["status"].get("addresses", []) if a["type"] == "InternalIP")
        cidrs = ", ".join(n.get("spec", {}).get("podCIDRs", []))
        ready = conds.get("Ready", "?")
        yield f"  node {n['metadata']['name']}: Ready={ready} InternalIP {ips}; podCIDRs {cidrs}"
    yield f"  pods: {len(pods)} in the API; {len(clients)} probe clients running in pods"
    for pod in pods:
        m, s = pod["metadata"], pod.get("status", {})
        ips = ",".join(i["ip"] for i in s.get("podIPs", []))
        key = f"{m['namespace']}/{m['name']}"
        yield f"    {key:<44} {s.get('phase', '?'):<10} {pod['spec'].get('nodeName', '-'):<8} {ips}"


def leftovers(cfg: LabConfig) -> list[str]:
    """Anything of this lab still on the host: namespaces, links, routes into its ranges, processes.

    Empty after a clean `down`. Judged by name and address only, so it never needs the record.
    """
    found = (
        [f"netns {n}" for n in sorted(os.listdir(NETNS_DIR)) if n.startswith(cfg.prefix)]
        if NETNS_DIR.is_dir()
        else []
    )
    lab_nets = [ipaddress.ip_network(c) for c in (cfg.host_link_cidr, cfg.underlay_v4, cfg.underlay_v6)]
    with IPRoute() as ipr:
        found += [f"link {cfg.host_link}" for _ in ipr.link_lookup(ifname=cfg.host_link)]
        for r in ipr.route("dump"):
            dst = r.get("dst")
            if dst is None:
                continue
            net = ipaddress.ip_network(f"{dst}/{r['dst_len']}", strict=False)
            if any(net.version == n.version and net.overlaps(n) for n in lab_nets):
                found.append(f"route {net} (table {r.get('table')})")
    # The nodes' cgroups (named after the lab's prefix) in every v1 hierarchy.
    found += [
        f"cgroup {h / (cfg.prefix + n.name)}"
        for h in v1_hierarchies()
        for n in cfg.all_nodes
        if (h / (cfg.prefix + n.name)).exists()
    ]
    needle = str(cfg.dir).encode()
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != me:
            with contextlib.suppress(OSError):
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
                if needle in cmdline:
                    argv = cmdline.replace(b"\0", b" ").decode(errors="replace")
                    found.append(f"process {entry}: {argv[:120]}")
    return found
