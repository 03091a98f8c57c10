"""Command lines of the real Kubernetes parts the lab runs, and the identities they use.

Everything binds inside the lab's own namespaces, so fixed well-known ports never clash with
the host or another lab: etcd on the control-plane namespace's loopback (plain HTTP: nothing
outside that namespace can reach it), the apiserver on the control plane's underlay and
host-link addresses, kube-proxy's metrics and healthz on each node's loopback.
"""

from __future__ import annotations

from pathlib import Path

from .config import (
    APISERVER_PORT,
    CLUSTER_CIDRS,
    ETCD_CLIENT_PORT,
    ETCD_PEER_PORT,
    KUBE_PROXY_HEALTHZ,
    KUBE_PROXY_METRICS,
    NODE_MASK_V4,
    NODE_MASK_V6,
    SERVICE_CIDRS,
    LabConfig,
    NodeAddrs,
)
from .pki import Identity

SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"


def identities(cfg: LabConfig) -> list[Identity]:
    """One client certificate per component, named as kubeadm names them."""
    ids = [
        Identity("admin", "kubernetes-admin", ("system:masters",)),
        Identity("controller-manager", "system:kube-controller-manager"),
        Identity("scheduler", "system:kube-scheduler"),
        Identity("kube-proxy", "system:kube-proxy"),
        # The apiserver's client certificate towards kubelets (logs, exec, port-forward).
        Identity("apiserver-kubelet-client", "kube-apiserver-kubelet-client", ("system:masters",)),
    ]
    ids += [Identity(n.name, f"system:node:{n.name}", ("system:nodes",)) for n in cfg.all_nodes]
    return ids


def apiserver_sans(cfg: LabConfig) -> tuple[list[str], list[str]]:
    """(IPs, DNS names) the apiserver's certificate must carry: every way it is reached."""
    ips = [cfg.cp_ipv4, cfg.cp_ipv6, cfg.cp_host_ip, "127.0.0.1", "::1", "10.96.0.1", "fd5c:ade3::1"]
    dns = [
        "localhost",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
    ]
    return ips, dns


def etcd(bin_dir: Path, data_dir: Path) -> list[str]:
    client = f"http://127.0.0.1:{ETCD_CLIENT_PORT}"
    peer = f"http://127.0.0.1:{ETCD_PEER_PORT}"
    return [
        str(bin_dir / "etcd"),
        "--name=lab",
        f"--data-dir={data_dir}",
        f"--listen-client-urls={client}",
        f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=lab={peer}",
        "--initial-cluster-state=new",
        # A lab's data is thrown away with it: durability buys nothing, fsync costs seconds.
        "--unsafe-no-fsync",
        "--log-level=warn",
    ]


def apiserver(cfg: LabConfig, bin_dir: Path, pki: Path) -> list[str]:
    return [
        str(bin_dir / "kube-apiserver"),
        f"--etcd-servers=http://127.0.0.1:{ETCD_CLIENT_PORT}",
        "--bind-address=0.0.0.0",  # every address of the control-plane netns, no more
        f"--secure-port={APISERVER_PORT}",
        f"--advertise-address={cfg.cp_ipv4}",
        f"--tls-cert-file={pki / 'apiserver.crt'}",
        f"--tls-private-key-file={pki / 'apiserver.key'}",
        f"--client-ca-file={pki / 'ca.crt'}",
        "--authorization-mode=Node,RBAC",
        "--enable-admission-plugins=NodeRestriction",
        f"--service-cluster-ip-range={','.join(SERVICE_CIDRS)}",
        f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
        f"--service-account-key-file={pki / 'sa.pub'}",
        f"--service-account-signing-key-file={pki / 'sa.key'}",
        "--allow-privileged=true",
        # Reach kubelets by their InternalIP (nodes have no DNS names here), as their CA's client.
        "--kubelet-preferred-address-types=InternalIP",
        f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
        f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
        "--profiling=false",
        "--v=1",
    ]


def controller_manager(cfg: LabConfig, bin_dir: Path, pki: Path, kubeconfig: Path) -> list[str]:
    return [
        str(bin_dir / "kube-controller-manager"),
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--bind-address=127.0.0.1",
        "--leader-elect=false",
        "--allocate-node-cidrs=true",
        f"--cluster-cidr={','.join(CLUSTER_CIDRS)}",
        f"--node-cidr-mask-size-ipv4={NODE_MASK_V4}",
        f"--node-cidr-mask-size-ipv6={NODE_MASK_V6}",
        f"--service-cluster-ip-range={','.join(SERVICE_CIDRS)}",
        f"--service-account-private-key-file={pki / 'sa.key'}",
        f"--root-ca-file={pki / 'ca.crt'}",
        "--use-service-account-credentials=true",
        f"--cluster-name=stockade-lab-{cfg.name}",
        "--profiling=false",
        "--v=1",
    ]


def scheduler(bin_dir: Path, kubeconfig: Path) -> list[str]:
    return [
        str(bin_dir / "kube-scheduler"),
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--bind-address=127.0.0.1",
        "--leader-elect=false",
        "--profiling=false",
        "--v=1",
    ]


def kube_proxy(cfg: LabConfig, bin_dir: Path, node: NodeAddrs, kubeconfig: Path) -> list[str]:
    return [
        str(bin_dir / "kube-proxy"),
        f"--kubeconfig={kubeconfig}",
        f"--hostname-override={node.name}",
        f"--proxy-mode={cfg.proxy_mode}",
        f"--cluster-cidr={','.join(CLUSTER_CIDRS)}",
        # Leave the host's global conntrack settings alone (nf_conntrack_max is not per netns)
        # and the node namespace's timeouts as the kernel made them.
        "--conntrack-max-per-core=0",
        "--conntrack-tcp-timeout-established=0",
        "--conntrack-tcp-timeout-close-wait=0",
        f"--metrics-bind-address={KUBE_PROXY_METRICS}",
        f"--healthz-bind-address={KUBE_PROXY_HEALTHZ}",
        "--v=1",
    ]
