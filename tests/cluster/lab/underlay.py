"""The lab's network: namespaces, the underlay bridge, the host link and the pod routes.

    host ns ── stkl-<lab>-h ══ host0 ──┐
                                      │  control-plane netns (stklab-<lab>-cp): etcd, apiserver,
                                      │  controller manager, scheduler; bridge br0 = underlay
               node netns (stklab-<lab>-node-i): eth0 ══ n<i> ──┘
               containerd, kubelet, kube-proxy, and the pods' host-side veths

Every name is recorded in the state record before it is made. The host namespace gets one veth
with a /30 and nothing else: no forwarding, no routes beyond the link's own.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path

from pyroute2 import IPRoute, NetlinkError, NetNS, netns

from .config import SERVICE_CIDRS, LabConfig, NodeAddrs
from .preflight import LabError
from .state import Record, netns_exists

IFA_F_NODAD = 0x02  # the underlay is ours alone: skip duplicate address detection's delay

NODE_SYSCTLS = {
    # A node routes for its pods.
    "net.ipv4.ip_forward": "1",
    "net.ipv6.conf.all.forwarding": "1",
    # No duplicate address detection on the node's interfaces, in particular the host side of
    # every pod veth that CNI makes later: while its addresses are tentative (a second or two)
    # the node cannot resolve the pod's IPv6 address, and a pod that is Ready would not answer.
    "net.ipv6.conf.all.accept_dad": "0",
    "net.ipv6.conf.default.accept_dad": "0",
}


def in_netns(name: str, argv: list[str]) -> list[str]:
    """argv run inside network namespace `name` (nsenter execs, so the pid stays the same)."""
    return ["nsenter", f"--net=/run/netns/{name}", "--", *argv]


def spawn(
    argv: list[str], *, netns_name: str, log: Path, env: Mapping[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start a long-running process in a namespace, in its own session, logging to `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        return subprocess.Popen(
            in_netns(netns_name, argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            start_new_session=True,  # a Ctrl-C on the terminal must not kill the lab half-way
        )


def sysctl(name: str, values: Mapping[str, str]) -> None:
    """Set net.* sysctls of namespace `name` (they are per namespace; the host's stay as they are)."""
    script = "; ".join(f"echo {v} > /proc/sys/{k.replace('.', '/')}" for k, v in values.items())
    subprocess.run(in_netns(name, ["sh", "-ec", script]), check=True, capture_output=True)


def _up(ns: IPRoute | NetNS, ifname: str) -> int:
    idx: int = ns.link_lookup(ifname=ifname)[0]
    ns.link("set", index=idx, state="up")
    return idx


def _addr(ns: IPRoute | NetNS, idx: int, cidr_host: str) -> None:
    address, plen = cidr_host.split("/")
    if ":" in address:
        ns.addr("add", index=idx, address=address, prefixlen=int(plen), flags=IFA_F_NODAD)
    else:
        ns.addr("add", index=idx, address=address, prefixlen=int(plen))


class Underlay:
    """Builds the namespaces and links of a lab, recording each before it exists."""

    def __init__(self, cfg: LabConfig, rec: Record, save: Callable[[], None]) -> None:
        self.cfg = cfg
        self.rec = rec
        self.save = save

    def _new_netns(self, name: str) -> None:
        if name in netns.listnetns():
            raise LabError(f"network namespace {name} exists but this lab did not record it; not touching it")
        self.rec.netns.append(name)
        self.save()
        netns.create(name)

    def build(self) -> None:
        cfg = self.cfg
        with IPRoute() as ipr:
            if ipr.link_lookup(ifname=cfg.host_link):
                raise LabError(f"link {cfg.host_link} exists but this lab did not record it; not touching it")
        self._new_netns(cfg.cp_netns)
        with NetNS(cfg.cp_netns) as cp:
            _up(cp, "lo")
            cp.link("add", ifname="br0", kind="bridge")
            br = _up(cp, "br0")
            _addr(cp, br, f"{cfg.cp_ipv4}/24")
            _addr(cp, br, f"{cfg.cp_ipv6}/64")

        self.rec.links.append(cfg.host_link)
        self.save()
        with IPRoute() as ipr:
            ipr.link(
                "add", ifname=cfg.host_link, kind="veth", peer={"ifname": "host0", "net_ns_fd": cfg.cp_netns}
            )
            _addr(ipr, _up(ipr, cfg.host_link), f"{cfg.host_ip}/30")
        with NetNS(cfg.cp_netns) as cp:
            _addr(cp, _up(cp, "host0"), f"{cfg.cp_host_ip}/30")

        for node in cfg.all_nodes:
            self.node(node)

    def node(self, node: NodeAddrs) -> None:
        """A node's namespace, its underlay port and its routes to the Service ranges."""
        self._new_netns(node.netns)
        with NetNS(node.netns) as ns:
            _up(ns, "lo")
            ns.link(
                "add",
                ifname="eth0",
                kind="veth",
                peer={"ifname": node.cp_port, "net_ns_fd": self.cfg.cp_netns},
            )
            eth0 = _up(ns, "eth0")
            _addr(ns, eth0, f"{node.ipv4}/24")
            _addr(ns, eth0, f"{node.ipv6}/64")
        with NetNS(self.cfg.cp_netns) as cp:
            br = cp.link_lookup(ifname="br0")[0]
            port = cp.link_lookup(ifname=node.cp_port)[0]
            cp.link("set", index=port, master=br)
            cp.link("set", index=port, state="up")
        sysctl(node.netns, NODE_SYSCTLS)
        # A node's own processes (kubelet's hostNetwork pods, e.g. the CNI installer talking to
        # the `kubernetes` Service) need a route to the Service ranges for kube-proxy's DNAT to
        # happen at all; a real node's default route gives it. Here: towards the control plane.
        with NetNS(node.netns) as ns:
            for cidr, via in ((SERVICE_CIDRS[0], self.cfg.cp_ipv4), (SERVICE_CIDRS[1], self.cfg.cp_ipv6)):
                self.rec.routes.append({"netns": node.netns, "dst": cidr, "via": via})
                self.save()
                ns.route("replace", dst=cidr, gateway=via)

    def route_pod_cidrs(self, pod_cidrs: Mapping[str, list[str]], *, between_nodes: bool) -> None:
        """Routes to the nodes' podCIDRs over the underlay.

        The control plane always gets them: no agent (and so no overlay) runs there, yet the
        apiserver's answers to pods (the `kubernetes` Service, DNATed on the pod's node to the
        control plane's address) must find their way back to the pod's node. With
        `between_nodes` (the lab's own CNI) each node also reaches the others' podCIDRs this
        way; with stockade-cni the agents' VXLAN overlay is the only path between nodes.
        """
        nodes = {n.name: n for n in self.cfg.all_nodes}
        here_all: list[NodeAddrs | None] = [*self.cfg.all_nodes] if between_nodes else []
        for here in [*here_all, None]:
            ns_name = here.netns if here else self.cfg.cp_netns
            with NetNS(ns_name) as ns:
                for name, cidrs in sorted(pod_cidrs.items()):
                    if here is not None and name == here.name:
                        continue
                    for cidr in cidrs:
                        via = nodes[name].ipv6 if ":" in cidr else nodes[name].ipv4
                        self.rec.routes.append({"netns": ns_name, "dst": cidr, "via": via})
                        self.save()
                        ns.route("replace", dst=cidr, gateway=via)

    def unroute_pod_cidrs(self, cidrs: list[str]) -> None:
        """Remove the underlay routes to `cidrs` (a node that left) from every namespace."""
        for route in [r for r in self.rec.routes if r["dst"] in cidrs]:
            if netns_exists(route["netns"]):
                with NetNS(route["netns"]) as ns, contextlib.suppress(NetlinkError):
                    ns.route("del", dst=route["dst"], gateway=route["via"])
            self.rec.routes.remove(route)
        self.save()
