"""What a lab is made of: its name, its size, and every address and name it uses.

Everything here is derived from (name, slot, node count), so `down`, `status` and a crashed
lab's clean-up can recompute names without trusting anything but the state record.

Addressing (slot = 0..255, one per live lab on this host, so two labs never share a subnet):

    host <-> control plane link   10.251.<slot>.0/30       host .1, control plane .2
    underlay bridge (cp netns)    10.250.<slot>.0/24       control plane .1, node i .(10+i)
                                  fd5c:ade0:0:<slot>::/64  control plane ::1, node i ::(10+i)
    cluster CIDR (pods)           10.244.0.0/16, fd5c:ade2::/56   (/24 and /64 per node)
    service CIDR                  10.96.0.0/16, fd5c:ade3::/112

Pod and service ranges exist only inside the lab's namespaces, so labs may share them; the
host network namespace only ever sees the /30 of the host link.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

ProxyMode = Literal["nftables", "iptables"]
# Who writes the nodes' CNI config and how pods reach other nodes. "stockade" (the default): the
# Stockade chart's init container writes stockade-cni's conflist (the nodes stay NotReady until
# the release is installed) and the agents' VXLAN overlay carries pod traffic between nodes: the
# nodes get no underlay routes to each other's podCIDRs. "lab": the lab's own DaemonSet (Debian
# ptp + host-local, manifests/cni-installer.yaml) and underlay routes between the nodes' podCIDRs
# (a cluster without Stockade, e.g. `make e2e --enforcer none`'s baseline).
CniMode = Literal["lab", "stockade"]

NAME_RE = re.compile(r"^[a-z][a-z0-9]{0,7}$")

# The state root is not under /tmp: systemd-tmpfiles may reap /tmp, and a lab's record must
# outlive the process that made it so that a crash can be cleaned up.
DEFAULT_ROOT = Path(os.environ.get("STOCKADE_LAB_ROOT", "/run/stockade-lab"))

# The archives (tests/images/build.sh <name>) every lab imports. Each costs seconds per node at
# start (the test pod and CNI installer are python rootfs of ~180 MB), so `make e2e`'s agnhost is
# imported only by labs that ask for it.
LAB_IMAGES = ("pause", "testpod", "cni-installer")
# A lab whose CNI is Stockade's (cni="stockade") imports the chart's image instead of the installer.
STOCKADE_CNI_IMAGES = ("pause", "testpod", "stockade")


def default_images(cni: CniMode) -> tuple[str, ...]:
    return STOCKADE_CNI_IMAGES if cni == "stockade" else LAB_IMAGES


CLUSTER_CIDRS = ("10.244.0.0/16", "fd5c:ade2::/56")
SERVICE_CIDRS = ("10.96.0.0/16", "fd5c:ade3::/112")
NODE_MASK_V4 = 24
NODE_MASK_V6 = 64
APISERVER_PORT = 6443
ETCD_CLIENT_PORT = 2379
ETCD_PEER_PORT = 2380
# kube-proxy's ports are bound to 127.0.0.1 inside each node's own namespace, so they never clash.
KUBE_PROXY_METRICS = "127.0.0.1:10249"
KUBE_PROXY_HEALTHZ = "127.0.0.1:10256"


@dataclass(frozen=True)
class NodeAddrs:
    """One node: its Kubernetes name, its namespace and its underlay addresses."""

    name: str
    netns: str
    ipv4: str
    ipv6: str
    cp_port: str  # the bridge port's name inside the control-plane namespace


@dataclass(frozen=True)
class LabConfig:
    """A lab's identity and size. `slot` picks its subnets (see the module docstring)."""

    name: str = "lab"
    nodes: int = 2
    proxy_mode: ProxyMode = "nftables"
    slot: int = 0
    root: Path = field(default=DEFAULT_ROOT)
    # Image archives (tests/images names) imported into every node's containerd at start.
    images: tuple[str, ...] = STOCKADE_CNI_IMAGES
    cni: CniMode = "stockade"

    def __post_init__(self) -> None:
        if not NAME_RE.match(self.name):
            raise ValueError(f"lab name {self.name!r} must match {NAME_RE.pattern} (it goes into link names)")
        if not 1 <= self.nodes <= 50:
            raise ValueError(f"nodes must be 1..50, not {self.nodes}")
        if not 0 <= self.slot <= 255:
            raise ValueError(f"slot must be 0..255, not {self.slot}")

    # --- names -------------------------------------------------------------------------------

    @property
    def dir(self) -> Path:
        return self.root / self.name

    @property
    def prefix(self) -> str:
        """Every network namespace the lab makes starts with this."""
        return f"stklab-{self.name}-"  # distinct from the kernel tier's stk-k<pid>- namespaces

    @property
    def cp_netns(self) -> str:
        return f"{self.prefix}cp"

    @property
    def host_link(self) -> str:
        return f"stkl-{self.name}-h"  # <= 15 chars: IFNAMSIZ is 16 with the NUL

    # --- addresses ---------------------------------------------------------------------------

    @property
    def host_ip(self) -> str:
        return f"10.251.{self.slot}.1"

    @property
    def cp_host_ip(self) -> str:
        """The control plane's address on the host link: where kubectl on the host connects."""
        return f"10.251.{self.slot}.2"

    @property
    def host_link_cidr(self) -> str:
        return f"10.251.{self.slot}.0/30"

    @property
    def underlay_v4(self) -> str:
        return f"10.250.{self.slot}.0/24"

    @property
    def underlay_v6(self) -> str:
        return str(ipaddress.ip_network(f"fd5c:ade0:0:{self.slot:x}::/64"))

    @property
    def cp_ipv4(self) -> str:
        """The apiserver's advertised address, reached by the nodes over the underlay."""
        return f"10.250.{self.slot}.1"

    @property
    def cp_ipv6(self) -> str:
        return _v6(f"fd5c:ade0:0:{self.slot:x}::1")

    def node(self, i: int) -> NodeAddrs:
        """Node i, counted from 1."""
        return NodeAddrs(
            name=f"node-{i}",
            netns=f"{self.prefix}node-{i}",
            ipv4=f"10.250.{self.slot}.{10 + i}",
            ipv6=_v6(f"fd5c:ade0:0:{self.slot:x}::{10 + i:x}"),
            cp_port=f"n{i}",
        )

    @property
    def all_nodes(self) -> tuple[NodeAddrs, ...]:
        return tuple(self.node(i) for i in range(1, self.nodes + 1))

    @property
    def api_url_host(self) -> str:
        return f"https://{self.cp_host_ip}:{APISERVER_PORT}"

    @property
    def api_url_nodes(self) -> str:
        return f"https://{self.cp_ipv4}:{APISERVER_PORT}"

    @property
    def kubeconfig(self) -> Path:
        """The admin kubeconfig, for kubectl and tests in the host namespace."""
        return self.dir / "kubeconfig"

    def ranges(self) -> dict[str, str]:
        """Every range the lab uses, by purpose: checked against the host before start."""
        return {
            "host link": self.host_link_cidr,
            "underlay IPv4": self.underlay_v4,
            "underlay IPv6": self.underlay_v6,
            "cluster CIDR IPv4": CLUSTER_CIDRS[0],
            "cluster CIDR IPv6": CLUSTER_CIDRS[1],
            "service CIDR IPv4": SERVICE_CIDRS[0],
            "service CIDR IPv6": SERVICE_CIDRS[1],
        }


def _v6(address: str) -> str:
    """Canonical text (RFC 5952): what the apiserver stores and what tests compare against."""
    return str(ipaddress.IPv6Address(address))


def collisions(cfg: LabConfig, host_prefixes: list[str]) -> list[str]:
    """Lab ranges that overlap a prefix routed or assigned on the host (default routes aside)."""
    found = []
    for purpose, cidr in cfg.ranges().items():
        net = ipaddress.ip_network(cidr)
        for p in host_prefixes:
            other = ipaddress.ip_network(p, strict=False)
            if other.prefixlen == 0 or other.version != net.version:
                continue
            if net.overlaps(other):
                found.append(f"{purpose} {cidr} overlaps host prefix {other}")
    return found
