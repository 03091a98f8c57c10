"""Nodes joining and leaving a running lab, as machines join and leave a real cluster.

    node = lab.add_node()        # node-<n+1>: namespace, underlay port, containerd, kubelet,
                                 # kube-proxy; registers, gets podCIDRs, DaemonSets land on it
    lab.remove_node(node.name)   # the machine goes away (every process, namespace, cgroup),
                                 # then its Node object is deleted, as an operator would

Nothing that already runs is restarted: the control plane and the other nodes only learn about
the change through the API, like in production (the agents' overlay follows Node objects). Node
names derive from their index, so only the newest node can leave (the lab stays `node-1..n`).
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import TYPE_CHECKING

from pyroute2 import netns

from . import controlplane, nodes, proxy, realnode
from .config import NodeAddrs
from .kube import ApiError
from .pki import Identity
from .preflight import LabError, wait_for
from .state import netns_exists, pids_in_netns, pod_records, proc_of, terminate
from .underlay import Underlay

if TYPE_CHECKING:
    from .lab import Lab


def add_node(lab: Lab, *, timeout: float = 240.0) -> NodeAddrs:
    """Node n+1 joins the running lab; returns it once Ready and its kube-proxy synced.

    Ready needs a CNI config on it: the lab's installer DaemonSet, or (cni="stockade") the
    Stockade release's, which must be installed already."""
    if lab.bin_dir is None or lab.rec.phase != "up":
        raise LabError(f"lab {lab.cfg.name} is not up")
    tools = nodes.NodeTools.find(lab.bin_dir, lab.cfg.images)
    lab.cfg = cfg = dataclasses.replace(lab.cfg, nodes=lab.cfg.nodes + 1)
    node = cfg.node(cfg.nodes)
    lab.rec.nodes = cfg.nodes
    lab.save()
    lab.pki.add_client(Identity(node.name, f"system:node:{node.name}", ("system:nodes",)))
    underlay = Underlay(cfg, lab.rec, lab.save)
    underlay.node(node)
    lab.start_nodes(tools, (node,), timeout=timeout)
    cidrs = lab.wait_pod_cidrs((node,), timeout=timeout)
    known: dict[str, list[str]] = lab.rec.info.setdefault("pod_cidrs", {})
    known.update(cidrs)
    lab.save()
    if cfg.cni == "lab":
        # The others reach the new node's pods and it theirs over the underlay (`replace`: the
        # existing routes stay as they are).
        underlay.route_pod_cidrs(known, between_nodes=True)
    else:
        underlay.route_pod_cidrs(cidrs, between_nodes=False)
    kc_proxy = cfg.dir / "kubeconfigs" / "kube-proxy"
    argv = controlplane.kube_proxy(cfg, lab.bin_dir, node, kc_proxy)
    lab.spawn_role(f"kube-proxy-{node.name}", argv, node.netns)
    wait_for(
        f"kube-proxy on {node.name} to program the kubernetes Service",
        lambda: proxy.synced(cfg, node.netns),
        timeout=timeout,
        alive=lab.check_alive,
    )
    ready = functools.partial(lab.node_ready, node.name)
    wait_for(f"{node.name} to be Ready", ready, timeout=timeout, alive=lab.check_alive)
    return node


def remove_node(lab: Lab, name: str, *, timeout: float = 60.0) -> None:
    """The newest node leaves: its machine is gone (processes, pods, namespace, cgroup, underlay
    routes to it), then its Node object is deleted."""
    cfg = lab.cfg
    node = cfg.node(cfg.nodes)
    if name != node.name or cfg.nodes < 2:
        raise LabError(f"only the newest node ({node.name}) of a lab of several can leave, not {name}")
    clients = [p for p in pod_records(cfg.dir) if p.get("node") == name and p.get("agent")]
    procs = [p for p in lab.rec.processes if p.netns == node.netns]
    terminate([proc_of(c["agent"]["pid"], "client") for c in clients] + procs, timeout=2.0)
    terminate([proc_of(pid, "stray") for pid in pids_in_netns([node.netns])], timeout=2.0)
    cgroup = realnode.cgroup_name(cfg, node)
    realnode.remove_cgroup(cgroup)
    # The node's eth0 goes with its namespace, and with it its bridge port (the veth's peer).
    if netns_exists(node.netns):
        netns.remove(node.netns)
    for role in [r for r in lab.popen if any(p.role == r for p in procs)]:
        del lab.popen[role]
    lab.rec.processes = [p for p in lab.rec.processes if p.netns != node.netns]
    lab.rec.netns.remove(node.netns)
    lab.rec.cgroups.remove(cgroup)
    lab.rec.routes = [r for r in lab.rec.routes if r["netns"] != node.netns]
    Underlay(cfg, lab.rec, lab.save).unroute_pod_cidrs(lab.rec.info.get("pod_cidrs", {}).pop(name, []))
    lab.cfg = dataclasses.replace(cfg, nodes=cfg.nodes - 1)
    lab.rec.nodes = lab.cfg.nodes
    lab.save()
    # Out of the way of a node that joins under the same name later, without the seconds that
    # deleting containerd's unpacked images takes: `down` removes it with the lab's directory.
    if lab.node_dir(name).exists():
        lab.node_dir(name).rename(lab.node_dir(f".gone-{name}-{time.time_ns()}"))
    try:
        lab.kube.delete(f"/api/v1/nodes/{name}")
    except ApiError as exc:
        if exc.status != 404:
            raise

    def gone() -> bool:
        try:
            lab.kube.get(f"/api/v1/nodes/{name}")
        except ApiError as exc:
            return exc.status == 404
        return False

    wait_for(f"Node {name} to be deleted", gone, timeout=timeout)
