"""The lab: start, inspect and stop a local Kubernetes cluster made of real parts.

    lab = Lab.create(name="lab", nodes=2)   # cni="stockade" (default) or "lab"
    lab.up()          # etcd, apiserver, controller manager, scheduler; per node containerd,
                      # kubelet and kube-proxy; with cni="lab" the lab's CNI installer DaemonSet
    release.install_default(lab)   # cni="stockade": stockade-cni and the overlay make nodes Ready
    lab.kubectl("apply", "-f", "app.yaml")
    lab.add_node()    # a node joins the running lab (lab.remove_node("node-3"): it leaves)
    lab.down()        # removes every namespace, link and process the lab made

`up` first cleans up a crashed lab of the same name (from its record) and refuses to start over
one that is still running. Any failure during `up` tears down what was made and raises
`LabError` with the reason and the tail of the failing component's log.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from . import controlplane, membership, nodes, proxy, realnode
from .config import (
    APISERVER_PORT,
    DEFAULT_ROOT,
    LAB_IMAGES,
    CniMode,
    LabConfig,
    NodeAddrs,
    ProxyMode,
    collisions,
    default_images,
)
from .kube import ApiError, Credentials, Kube, Obj
from .pki import PKI
from .preflight import LabError, choose_slot, host_prefixes, tools_bin, wait_for
from .report import status_lines
from .state import OwnerLock, Record, alive, cleanup, proc_of, terminate
from .underlay import Underlay, spawn

REPO = Path(__file__).resolve().parents[3]


class Lab:
    def __init__(self, cfg: LabConfig, *, bin_dir: Path | None = None) -> None:
        self.cfg = cfg
        self.bin_dir = bin_dir
        self.rec = Record(name=cfg.name, slot=cfg.slot, nodes=cfg.nodes, proxy_mode=cfg.proxy_mode)
        self.lock = OwnerLock(cfg.root / f"{cfg.name}.lock")
        self.pki = PKI(cfg.dir / "pki")
        self.popen: dict[str, subprocess.Popen[bytes]] = {}
        self.timings: dict[str, float] = {}

    # --- construction ----------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        *,
        name: str = "lab",
        nodes: int = 2,
        proxy_mode: ProxyMode = "nftables",
        root: Path = DEFAULT_ROOT,
        images: tuple[str, ...] | None = None,
        cni: CniMode = "stockade",
    ) -> Lab:
        """A lab not started yet; its slot is chosen when `up` runs (after crash clean-up).
        `images`: the archives of tests/images to import into every node (default: what `cni`
        needs); `cni`: see CniMode (with "stockade" the nodes turn Ready once the Stockade release
        is installed: `tests.cluster.release.install_default`)."""
        imgs = default_images(cni) if images is None else images
        return cls(LabConfig(name=name, nodes=nodes, proxy_mode=proxy_mode, root=root, images=imgs, cni=cni))

    @classmethod
    def load(cls, name: str, *, root: Path = DEFAULT_ROOT) -> Lab:
        """A lab from its record (for status, down, and tests attaching to a running lab)."""
        state = root / name / "state.json"
        if not state.exists():
            raise LabError(f"no lab named {name!r} under {root}")
        rec = Record.load(state)
        mode: ProxyMode = "iptables" if rec.proxy_mode == "iptables" else "nftables"
        lab = cls(
            LabConfig(
                name=name,
                nodes=rec.nodes,
                proxy_mode=mode,
                slot=rec.slot,
                root=root,
                images=tuple(rec.info.get("images", LAB_IMAGES)),
                # Records written before stockade-cni became the default were all "lab".
                cni="stockade" if rec.info.get("cni") == "stockade" else "lab",
            ),
            bin_dir=Path(rec.info["bin_dir"]) if rec.info.get("bin_dir") else None,
        )
        lab.rec = rec
        return lab

    # --- helpers ---------------------------------------------------------------------------------

    def save(self) -> None:
        self.rec.save(self.cfg.dir / "state.json")

    def log_path(self, role: str) -> Path:
        return self.cfg.dir / "logs" / f"{role}.log"

    def node_dir(self, node: str) -> Path:
        return self.cfg.dir / "nodes" / node

    def spawn_role(
        self, role: str, argv: list[str], netns_name: str, *, env: dict[str, str] | None = None
    ) -> None:
        proc = spawn(
            argv,
            netns_name=netns_name,
            log=self.log_path(role),
            env=dict(env or os.environ, PYTHONPATH=str(REPO)),
        )
        self.popen[role] = proc
        self.rec.processes.append(proc_of(proc.pid, role, netns_name))
        self.save()

    def check_alive(self) -> None:
        for role, proc in self.popen.items():
            if proc.poll() is not None:
                raise LabError(f"{role} exited with {proc.returncode}:\n{self.log_tail(role)}")

    def log_tail(self, role: str, lines: int = 25) -> str:
        try:
            text = self.log_path(role).read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(f"  | {line}" for line in text[-lines:])

    def _step(self, name: str, started: float) -> None:
        self.timings[name] = round(time.monotonic() - started, 2)

    @property
    def kube(self) -> Kube:
        """An admin client, from the host namespace."""
        p = self.pki
        return Kube(
            Credentials(
                server=self.cfg.api_url_host,
                ca=p.path("ca.crt"),
                cert=p.path("admin.crt"),
                key=p.path("admin.key"),
            )
        )

    # --- up --------------------------------------------------------------------------------------

    def up(self, *, timeout: float = 240.0) -> None:
        if os.geteuid() != 0:
            raise LabError("the lab needs root (network namespaces, veths, nftables)")
        started = time.monotonic()
        self._take_over()
        try:
            self._up(timeout=timeout)
        except BaseException as exc:
            self.rec.phase = "failed"
            with contextlib.suppress(OSError):
                self.save()
            failed_logs = self.cfg.root / f"{self.cfg.name}.failed-logs"
            shutil.rmtree(failed_logs, ignore_errors=True)
            with contextlib.suppress(Exception):
                cleanup(self.cfg.dir, keep_logs_to=failed_logs)
            if self.lock.fd >= 0:
                self.lock.path.unlink(missing_ok=True)
            self.lock.release()
            if isinstance(exc, LabError) and not failed_logs.exists():
                raise LabError(f"lab {self.cfg.name!r} did not start: {exc}") from None
            if isinstance(exc, LabError):
                raise LabError(
                    f"lab {self.cfg.name!r} did not start: {exc}\n(logs kept in {failed_logs})"
                ) from None
            raise
        self._step("total", started)
        self.rec.info["timings"] = self.timings
        self.save()

    def _take_over(self) -> None:
        """Hold the lab's lock; clean up a crashed lab of this name; refuse a live one."""
        cfg = self.cfg
        if not self.lock.try_acquire():
            raise LabError(f"lab {cfg.name!r} is already up in the foreground (lock {self.lock.path} held)")
        state = cfg.dir / "state.json"
        if state.exists():
            old = Record.load(state)
            if old.detached and any(alive(p) for p in old.processes):
                self.lock.release()
                raise LabError(
                    f"lab {cfg.name!r} is up (detached); "
                    f"run `python -m tests.cluster.lab down --name {cfg.name}` first"
                )
            removed = cleanup(cfg.dir)
            print(f"lab {cfg.name}: cleaned up a crashed lab ({len(removed)} things)", file=sys.stderr)
        elif cfg.dir.exists():
            shutil.rmtree(cfg.dir)

    def _up(self, *, timeout: float) -> None:
        t = time.monotonic()
        bin_dir = self.bin_dir = self.bin_dir or tools_bin()
        # Fails early, naming what is missing (node binaries, runc, the images).
        tools = nodes.NodeTools.find(bin_dir, self.cfg.images)
        for tool in ("nsenter", "nft") + (("iptables-restore",) if self.cfg.proxy_mode == "iptables" else ()):
            if shutil.which(tool) is None:
                raise LabError(f"{tool} not found on PATH")
        self._step("tools", t)

        prefixes = host_prefixes()
        # Choosing a slot and recording it is one step for all labs on the host (xdist workers
        # start theirs at the same moment).
        slots = OwnerLock(self.cfg.root / ".slots.lock")
        slots.acquire()
        try:
            slot = choose_slot(self.cfg.root, self.cfg.name, prefixes)
            self.cfg = cfg = dataclasses.replace(self.cfg, slot=slot)
            if clash := collisions(cfg, prefixes):
                raise LabError("address ranges collide with the host: " + "; ".join(clash))
            cfg.dir.mkdir(parents=True)
            self.rec = Record(
                name=cfg.name,
                slot=slot,
                nodes=cfg.nodes,
                proxy_mode=cfg.proxy_mode,
                owner_pid=os.getpid(),
                info={
                    "bin_dir": str(bin_dir),
                    "node_tools": str(tools.bin_dir),
                    "images": list(cfg.images),
                    "cni": cfg.cni,
                },
            )
            self.save()
        finally:
            slots.release()

        t = time.monotonic()
        ips, dns = controlplane.apiserver_sans(cfg)
        self.pki.create(server_ips=ips, server_dns=dns, clients=controlplane.identities(cfg))
        self.pki.kubeconfig(cfg.kubeconfig, stem="admin", user="kubernetes-admin", server=cfg.api_url_host)
        local = f"https://127.0.0.1:{APISERVER_PORT}"
        kc_cm = self.pki.kubeconfig(
            cfg.dir / "kubeconfigs" / "controller-manager",
            stem="controller-manager",
            user="system:kube-controller-manager",
            server=local,
        )
        kc_sched = self.pki.kubeconfig(
            cfg.dir / "kubeconfigs" / "scheduler",
            stem="scheduler",
            user="system:kube-scheduler",
            server=local,
        )
        kc_proxy = self.pki.kubeconfig(
            cfg.dir / "kubeconfigs" / "kube-proxy",
            stem="kube-proxy",
            user="system:kube-proxy",
            server=cfg.api_url_nodes,
        )
        self._step("pki", t)

        t = time.monotonic()
        Underlay(cfg, self.rec, self.save).build()
        self._step("network", t)

        t = time.monotonic()
        pki = self.pki.dir
        self.spawn_role("etcd", controlplane.etcd(bin_dir, cfg.dir / "etcd"), cfg.cp_netns)
        self.spawn_role("kube-apiserver", controlplane.apiserver(cfg, bin_dir, pki), cfg.cp_netns)
        kube = self.kube
        wait_for("the apiserver to be ready", kube.healthy, timeout=timeout, alive=self.check_alive)
        self._step("apiserver", t)
        self.spawn_role(
            "kube-controller-manager", controlplane.controller_manager(cfg, bin_dir, pki, kc_cm), cfg.cp_netns
        )
        self.spawn_role("kube-scheduler", controlplane.scheduler(bin_dir, kc_sched), cfg.cp_netns)

        t = time.monotonic()
        self.start_nodes(tools, cfg.all_nodes, timeout=timeout)
        cidrs = self.wait_pod_cidrs(cfg.all_nodes, timeout=timeout)
        self._step("nodes registered", t)

        t = time.monotonic()
        Underlay(cfg, self.rec, self.save).route_pod_cidrs(cidrs, between_nodes=cfg.cni == "lab")
        for node in cfg.all_nodes:
            self.spawn_role(
                f"kube-proxy-{node.name}", controlplane.kube_proxy(cfg, bin_dir, node, kc_proxy), node.netns
            )
        self.rec.info["pod_cidrs"] = cidrs
        self.save()
        # Nodes are NotReady until a CNI config exists; a DaemonSet writes it, as in production:
        # the lab's own, or (cni="stockade") the Stockade chart's, installed by whoever starts the
        # lab (tests.cluster.release.install_default: the CLI's `up`, the test session, the demo).
        if cfg.cni == "lab":
            self.kubectl("apply", "-f", "-", input=nodes.cni_installer_manifest())
            self.wait_nodes_ready(timeout=timeout)
        wait_for(
            f"kube-proxy ({cfg.proxy_mode}) to program the kubernetes Service",
            lambda: all(proxy.synced(cfg, n.netns) for n in cfg.all_nodes),
            timeout=timeout,
            alive=self.check_alive,
        )
        wait_for(
            "the default ServiceAccount",
            lambda: self._exists("/api/v1/namespaces/default/serviceaccounts/default"),
            timeout=timeout,
            alive=self.check_alive,
        )
        # With cni="stockade" the nodes are not Ready yet: the step ends with kube-proxy synced.
        self._step("nodes ready" if cfg.cni == "lab" else "kube-proxy synced", t)
        self.rec.phase = "up"
        self.save()

    def wait_pod_cidrs(self, which: tuple[NodeAddrs, ...], *, timeout: float) -> dict[str, list[str]]:
        """Node name -> podCIDRs (IPv4, IPv6), once each of `which` registered and got both."""
        cidrs: dict[str, list[str]] = {}

        def all_cidrs() -> bool:
            for node in which:
                with contextlib.suppress(ApiError):
                    got = self.kube.get(f"/api/v1/nodes/{node.name}").get("spec", {}).get("podCIDRs", [])
                    if len(got) == 2:
                        cidrs[node.name] = got
            return len(cidrs) == len(which)

        wait_for("nodes to register and get podCIDRs", all_cidrs, timeout=timeout, alive=self.check_alive)
        return cidrs

    def nodes_ready(self) -> bool:
        """Every node Ready (kubelet reports Ready once a CNI config is in place)."""
        return all(self.node_ready(n.name) for n in self.cfg.all_nodes)

    def wait_nodes_ready(self, *, timeout: float = 240.0) -> None:
        wait_for("nodes to be Ready", self.nodes_ready, timeout=timeout, alive=self.check_alive)

    def add_node(self, *, timeout: float = 240.0) -> NodeAddrs:
        """One more node joins the running lab (see `membership`); returns it once Ready."""
        return membership.add_node(self, timeout=timeout)

    def remove_node(self, name: str) -> None:
        """The newest node leaves the lab, then its Node object is deleted (see `membership`)."""
        membership.remove_node(self, name)

    def import_images(self, names: tuple[str, ...]) -> None:
        """More tests/images archives into every node's containerd of a running lab (all at once)."""
        if self.bin_dir is None:
            raise LabError("lab has no tools dir (not started?)")
        tools = nodes.NodeTools.find(self.bin_dir, names)
        socks = [realnode.containerd_socket(self.node_dir(n.name)) for n in self.cfg.all_nodes]
        with ThreadPoolExecutor(max_workers=len(socks)) as pool:
            list(pool.map(tools.import_images, socks))

    def start_nodes(self, tools: nodes.NodeTools, which: tuple[NodeAddrs, ...], *, timeout: float) -> None:
        """containerd and kubelet per node, each in its node's network, mount and cgroup space."""
        cfg = self.cfg
        for node in which:
            nd = self.node_dir(node.name)
            realnode.write_node_files(
                cfg=cfg,
                node=node,
                node_dir=nd,
                ca=self.pki.path("ca.crt"),
                runtime_bin=tools.runc,
                sandbox_image=tools.pause_image,
            )
            cg = realnode.cgroup_name(cfg, node)
            self.rec.cgroups.append(cg)
            self.save()
            realnode.make_cgroup(cg)
            ready = nd / "mounts.ready"
            self.spawn_role(f"mntns-{node.name}", realnode.holder_argv(nd, ready), node.netns)
            wait_for(f"{node.name}'s mount namespace", ready.exists, timeout=timeout, alive=self.check_alive)
            holder = self.popen[f"mntns-{node.name}"].pid
            enter = ["nsenter", f"--mount=/proc/{holder}/ns/mnt", "--"]
            env = dict(os.environ, PATH=f"{tools.bin_dir}:{os.environ.get('PATH', '/usr/sbin:/usr/bin')}")
            self.spawn_role(
                f"containerd-{node.name}",
                enter + realnode.containerd_argv(bin_dir=tools.bin_dir, node_dir=nd),
                node.netns,
                env=env,
            )
        socks = [realnode.containerd_socket(self.node_dir(node.name)) for node in which]
        for node, sock in zip(which, socks, strict=True):
            wait_for(f"containerd on {node.name}", sock.exists, timeout=timeout, alive=self.check_alive)
        # Importing (and unpacking) the images is most of a node's start: all nodes at once.
        t = time.monotonic()
        with ThreadPoolExecutor(max_workers=len(socks)) as pool:
            list(pool.map(tools.import_images, socks))
        self._step("images imported", t)
        for node in which:
            nd = self.node_dir(node.name)
            kc = self.pki.kubeconfig(
                nd / "kubeconfig", stem=node.name, user=f"system:node:{node.name}", server=cfg.api_url_nodes
            )
            holder = self.popen[f"mntns-{node.name}"].pid
            enter = ["nsenter", f"--mount=/proc/{holder}/ns/mnt", "--"]
            self.spawn_role(
                f"kubelet-{node.name}",
                enter + realnode.kubelet_argv(bin_dir=tools.bin_dir, node=node, node_dir=nd, kubeconfig=kc),
                node.netns,
            )

    def _exists(self, path: str) -> bool:
        try:
            self.kube.get(path)
        except ApiError:
            return False
        return True

    def node_ready(self, name: str) -> bool:
        try:
            node = self.kube.get(f"/api/v1/nodes/{name}")
        except ApiError:
            return False
        conds = {c["type"]: c["status"] for c in node.get("status", {}).get("conditions", [])}
        taints = [t["key"] for t in node.get("spec", {}).get("taints", []) or []]
        return conds.get("Ready") == "True" and "node.kubernetes.io/not-ready" not in taints

    # --- use -------------------------------------------------------------------------------------

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        if self.bin_dir is None:
            raise LabError("lab has no tools dir (not started?)")
        proc = subprocess.run(
            [str(self.bin_dir / "kubectl"), *args],
            input=input,
            capture_output=True,
            text=True,
            check=False,
            env=dict(os.environ, KUBECONFIG=str(self.cfg.kubeconfig)),
        )
        if check and proc.returncode != 0:
            raise LabError(f"kubectl {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc

    def nodes(self) -> list[Obj]:
        return list(self.kube.get("/api/v1/nodes")["items"])

    def in_node(self, node: str, argv: list[str]) -> list[str]:
        """argv run inside the node: its network namespace and its private mount namespace
        (where its pods' netns files, CNI state and kubelet's directories are)."""
        addrs = next((n for n in self.cfg.all_nodes if n.name == node), None)
        holder = next((p for p in self.rec.processes if p.role == f"mntns-{node}"), None)
        if addrs is None or holder is None or not alive(holder):
            raise LabError(f"lab {self.cfg.name} has no running node {node}")
        return realnode.in_node(addrs, holder.pid, argv)

    # --- down and status ---------------------------------------------------------------------------

    def status(self) -> Iterator[str]:
        """Human-readable lines: record, processes, nodes and pods."""
        return status_lines(self)

    def down(self) -> list[str]:
        """Remove everything the lab recorded. Safe on a lab that is half up, crashed, or gone."""
        cfg = self.cfg
        state = cfg.dir / "state.json"
        if state.exists():
            owner = Record.load(state).owner_pid
            if owner and owner != os.getpid() and OwnerLock(self.lock.path).held_elsewhere():
                # A foreground `up` owns it: ask it to stop, it cleans up after itself.
                with contextlib.suppress(ProcessLookupError):
                    os.kill(owner, signal.SIGTERM)
                with contextlib.suppress(LabError):
                    wait_for("the foreground lab to stop", lambda: not state.exists(), timeout=60)
        removed = cleanup(cfg.dir, keep_logs_to=cfg.root / f"{cfg.name}.last-logs")
        terminate([])  # reap any children we started ourselves
        self.popen.clear()
        if self.lock.fd >= 0 or not self.lock.held_elsewhere():
            self.lock.path.unlink(missing_ok=True)
        self.lock.release()
        return removed
