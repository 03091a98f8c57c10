"""Real nodes: containerd and kubelet per node, each node in its own network, mount and cgroup space.

Two kubelets on one host collide on hard-coded paths (`/var/lib/kubelet/device-plugins`,
`/var/log/containers`, `/var/lib/cni`, `/run/containerd/s`, `/opt/containerd`), so every node gets
a private mount namespace, held open by a small holder process started with `unshare --mount
--propagation private`: tmpfs over those paths and per-node bind mounts of `/etc/cni/net.d` and
`/opt/cni/bin` and of Stockade's host paths (STOCKADE_BINDS). Nothing of it reaches the host's
mount table, and it goes when its last process goes. containerd and kubelet are started with
`nsenter --net=… --mount=…` (not `ip netns exec`, which remounts /sys and would hide the cgroup v1
mounts kubelet needs).

Settings forced by this host (see tests/cluster/README.md): cgroups are hybrid (controllers in
v1 hierarchies), so kubelet runs with `failCgroupV1: false` and `cgroupDriver: cgroupfs` under
its own `cgroupRoot`, created in every v1 hierarchy beforehand; `CAP_SYS_RESOURCE` is not in
the bounding set, so containerd restricts oom_score_adj and kubelet keeps `oomScoreAdj: 0`.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import time
from pathlib import Path

import yaml

from .config import LabConfig, NodeAddrs

CGROUP_ROOT = Path("/sys/fs/cgroup")

# Paths kubelet and containerd hard-code; each node gets its own empty tmpfs over them.
PRIVATE_TMPFS = (
    "/var/lib/kubelet",
    "/var/log/containers",
    "/var/log/pods",
    "/var/lib/cni",
    "/run/containerd",
    "/opt/containerd",
    # containerd makes pod network namespace files here; they stay inside the node.
    "/run/netns",
)
# Per-node directories bound over the CNI locations a CNI vendor's installer writes to, and over
# Stockade's host paths (the chart's defaults: state and IPAM, the agent's CNI socket, the plugin's
# Python runtime), which on a real host are the node's own: without the binds every node of the lab
# would share one IPAM directory and one CNI socket.
CNI_BINDS = {"/etc/cni/net.d": "cni-net.d", "/opt/cni/bin": "cni-bin"}
STOCKADE_BINDS = {
    "/var/lib/stockade": "stockade-state",
    "/run/stockade": "stockade-run",
    "/opt/stockade": "stockade-runtime",
}


# --- cgroups ---------------------------------------------------------------------------------------


def v1_hierarchies() -> list[Path]:
    """Mount points of the cgroup v1 hierarchies (the controllers live there on this host)."""
    out = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        sep = fields.index("-")
        if fields[sep + 1] == "cgroup":
            out.append(Path(fields[4]))
    return sorted(out)


def cgroup_name(cfg: LabConfig, node: NodeAddrs) -> str:
    """The node's cgroupRoot, the same name in every hierarchy."""
    return f"/{cfg.prefix}{node.name}"


def make_cgroup(name: str) -> None:
    for h in v1_hierarchies():
        d = h / name.lstrip("/")
        d.mkdir(exist_ok=True)
        if (h / "cpuset.cpus").exists():
            # A new cpuset cgroup starts with no CPUs and no memory nodes: nothing could run in it.
            for f in ("cpuset.cpus", "cpuset.mems"):
                (d / f).write_text((h / f).read_text())


def remove_cgroup(name: str, *, timeout: float = 10.0) -> list[str]:
    """Kill what still runs in the node's cgroups, then remove them deepest first."""
    removed = []
    for h in v1_hierarchies():
        top = h / name.lstrip("/")
        if not top.is_dir():
            continue
        dirs = [*sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)), top]
        deadline = time.monotonic() + timeout
        for d in dirs:
            while True:
                with contextlib.suppress(FileNotFoundError):
                    for pid in (d / "cgroup.procs").read_text().split():
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(int(pid), signal.SIGKILL)
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
        removed.append(f"cgroup {top}")
    return removed


# --- the node's mount namespace --------------------------------------------------------------------


def mount_script(node_dir: Path, ready: Path) -> str:
    """What the mount-namespace holder runs before it sleeps: the node's private mounts."""
    lines = ["set -e"]
    for path in PRIVATE_TMPFS:
        lines.append(f"mkdir -p {path}; mount -t tmpfs -o mode=0755 tmpfs {path}")
    for path, sub in (CNI_BINDS | STOCKADE_BINDS).items():
        src = node_dir / sub
        lines.append(f"mkdir -p {path} {src}; mount --bind {src} {path}")
    lines.append(f"touch {shlex.quote(str(ready))}")
    lines.append("exec sleep infinity")
    return "; ".join(lines)


def holder_argv(node_dir: Path, ready: Path) -> list[str]:
    return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", mount_script(node_dir, ready)]


def in_node(node: NodeAddrs, holder_pid: int, argv: list[str]) -> list[str]:
    """argv inside the node: its network namespace and its mount namespace."""
    return ["nsenter", f"--net=/run/netns/{node.netns}", f"--mount=/proc/{holder_pid}/ns/mnt", "--", *argv]


# --- containerd ------------------------------------------------------------------------------------


def containerd_socket(node_dir: Path) -> Path:
    # Under the lab dir, reachable from the host too: `ctr --address` needs no nsenter.
    return node_dir / "containerd" / "containerd.sock"


def containerd_config(*, node_dir: Path, runtime_bin: str, sandbox_image: str) -> str:
    sock = containerd_socket(node_dir)
    return f"""version = 3
root = "{node_dir / "containerd" / "root"}"
state = "/run/containerd"

[grpc]
  address = "{sock}"

[ttrpc]
  address = "{sock}.ttrpc"

[debug]
  address = "{node_dir / "containerd" / "debug.sock"}"

[plugins.'io.containerd.cri.v1.images']
  # Images are built here and imported; nothing can be pulled.
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "{sandbox_image}"

[plugins.'io.containerd.cri.v1.runtime']
  # CAP_SYS_RESOURCE is not in this host's bounding set: without this, runc fails to set a
  # lower oom_score_adj and every sandbox dies with "can't get final child's PID from pipe".
  restrict_oom_score_adj = true
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["/opt/cni/bin"]
    conf_dir = "/etc/cni/net.d"
    # containerd brings up each pod's lo itself instead of calling a `loopback` plugin: the
    # node's CNI dirs hold only what the installed CNI (the lab's DaemonSet or Stockade's chart)
    # put there, and stockade-cni does not ship a loopback plugin.
    use_internal_loopback = true
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = "runc"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = "{runtime_bin}"
        SystemdCgroup = false
"""


# --- kubelet ---------------------------------------------------------------------------------------


def kubelet_config(*, cfg: LabConfig, node: NodeAddrs, node_dir: Path, ca: Path) -> str:
    doc = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        # Hybrid cgroups on this host: v1 controllers, the cgroupfs driver, a root per node.
        "failCgroupV1": False,
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": cgroup_name(cfg, node),
        # No CAP_SYS_RESOURCE: kubelet may not lower its own oom_score_adj.
        "oomScoreAdj": 0,
        "failSwapOn": False,
        # Images cannot be pulled again here: never collect them, and evict only when truly full.
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {
            "memory.available": "10Mi",
            "nodefs.available": "1%",
            "imagefs.available": "1%",
            "nodefs.inodesFree": "1%",
        },
        "address": node.ipv4,
        "port": 10250,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": 10248,
        "authentication": {
            "x509": {"clientCAFile": str(ca)},
            "webhook": {"enabled": True},
            "anonymous": {"enabled": False},
        },
        "authorization": {"mode": "Webhook"},
        "containerRuntimeEndpoint": f"unix://{containerd_socket(node_dir)}",
        "podLogsDir": str(node_dir / "pod-logs"),
        "clusterDomain": "cluster.local",
        "resolvConf": "/etc/resolv.conf",
        "registerNode": True,
        "serializeImagePulls": False,
        "nodeStatusReportFrequency": "10s",
        "nodeStatusUpdateFrequency": "5s",
    }
    return yaml.safe_dump(doc, sort_keys=False)


def kubelet_argv(*, bin_dir: Path, node: NodeAddrs, node_dir: Path, kubeconfig: Path) -> list[str]:
    return [
        str(bin_dir / "kubelet"),
        f"--config={node_dir / 'kubelet.yaml'}",
        f"--kubeconfig={kubeconfig}",
        f"--root-dir={node_dir / 'kubelet'}",
        f"--cert-dir={node_dir / 'kubelet-pki'}",
        f"--hostname-override={node.name}",
        f"--node-ip={node.ipv4},{node.ipv6}",
        "--v=1",
    ]


def containerd_argv(*, bin_dir: Path, node_dir: Path) -> list[str]:
    return [str(bin_dir / "containerd"), f"--config={node_dir / 'containerd.toml'}", "--log-level=warn"]


def write_node_files(
    *, cfg: LabConfig, node: NodeAddrs, node_dir: Path, ca: Path, runtime_bin: str, sandbox_image: str
) -> None:
    for sub in ("containerd", "kubelet", "kubelet-pki", "pod-logs", *CNI_BINDS.values()):
        (node_dir / sub).mkdir(parents=True, exist_ok=True)
    (node_dir / "containerd.toml").write_text(
        containerd_config(node_dir=node_dir, runtime_bin=runtime_bin, sandbox_image=sandbox_image)
    )
    (node_dir / "kubelet.yaml").write_text(kubelet_config(cfg=cfg, node=node, node_dir=node_dir, ca=ca))


def host_mount_points() -> list[str]:
    """Mount points the node namespaces need that the host lacks (empty directories)."""
    return [p for p in (*PRIVATE_TMPFS, *CNI_BINDS) if not Path(p).is_dir()]
