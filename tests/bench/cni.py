"""CNI benchmark: ADD and DEL latency of stockade-cni, run as the runtime runs it. Prints figures.

    sudo .venv/bin/python tests/bench/cni.py [--pods 40] [--no-real-agent]

Each pod is a fresh network namespace; ADD and DEL run one after another (a kubelet serializes
per pod; concurrency is the kernel tier's 50-ADD test), each a new process started with
``nsenter`` in a node namespace, with the CNI_* environment and the configuration on stdin, so
the figures include interpreter start-up and imports, as containerd would see them. Modes: no
agent (the socket is absent), an agent that answers at once (the real CniServer with a sink that
returns immediately: the protocol's own cost), waitForAgent off, and the real agent: the agent's
loop (controller.agent.loop.Agent, its real Applier on libnftables) on a thread inside the node
namespace, serving the CNI socket, seeded with the compile benchmark's cluster (10,000 pods,
1,000 policies; this node is ``node-00``). Before each ADD the pod object (no address yet) is
given to it as a watch event, as the API shows a scheduled pod before its sandbox exists, so ADD
returns once the agent compiled and applied the pod's entries into the node's table.

Besides wall time, the CPU time (user + system) of each plugin process is reported: on a shared
machine it says more than the wall time, which includes waiting for a CPU.

Which plugin runs (``--runtime``): ``installed`` (default) is the form a node runs, the launcher
``stockade-cni install`` writes (``#!<python> -I``) over an interpreter whose site directory holds
the project and pyroute2 as a wheel install leaves them (a fresh venv, the packages copied in and
byte-compiled); ``venv`` is the development venv's console script, whose ``site`` also loads the
editable install's import finder (pathlib, fnmatch, re and the finder itself, ~15-20 ms a start
that no node pays).

Target (issue 9): ADD p50 under 100 ms including the wait.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from controller.cni import install
from tests.support.cniagent import FakeAgent
from tests.support.cnilab import PLUGIN, CniLab

REPO = Path(__file__).resolve().parents[2]

POD_ARGS = "K8S_POD_NAMESPACE=bench;K8S_POD_NAME=p{i};K8S_POD_UID=uid-bench-p{i}"
AGENT_NODE = "node-00"
# Inside node-00's podCIDRs in the synthetic cluster (10.0.0.0/16, fd00::/64), unused by its pods
# and by dataplane.py's two bench pods (10.0.200.10, .20): an address the API shows for an older
# pod is that pod's, and ADD would wait for nothing.
AGENT_POD_CIDRS = ("10.0.201.0/24", "fd00::c9:0/112")

Samples = tuple[list[float], list[float], list[float], list[float]]  # ADD, DEL: wall, then CPU


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(lab: CniLab, pods: int, *, wait: bool, agent: RealAgent | None = None) -> Samples:
    conf = lab.conf(waitForAgent=wait)
    adds: list[float] = []
    dels: list[float] = []
    add_cpu: list[float] = []
    del_cpu: list[float] = []
    for i in range(pods):
        pod = lab.new_pod()
        args = POD_ARGS.format(i=i)
        if agent is not None:
            agent.schedule(i)
        cpu, started = _children_cpu(), time.monotonic()
        run = lab.run("ADD", conf=conf, container_id=f"b{i}", pod=pod, args=args)
        adds.append(time.monotonic() - started)
        add_cpu.append(_children_cpu() - cpu)
        if run.returncode:
            raise SystemExit(f"ADD failed: {run}")
        cpu, started = _children_cpu(), time.monotonic()
        run = lab.run("DEL", conf=conf, container_id=f"b{i}", pod=pod, args=args)
        dels.append(time.monotonic() - started)
        del_cpu.append(_children_cpu() - cpu)
        if run.returncode:
            raise SystemExit(f"DEL failed: {run}")
        lab.remove_pod(pod)
        if agent is not None:
            agent.unschedule(i)
    return adds, dels, add_cpu, del_cpu


class RealAgent:
    """The agent's loop with its real applier, on a thread inside ``lab``'s node namespace (its
    libnftables context, and its worker thread, created from that thread, act on that namespace
    only), serving the CNI socket; seeded with the compile benchmark's cluster."""

    def __init__(self, lab: CniLab) -> None:
        self.lab = lab
        self._loop: asyncio.AbstractEventLoop | None = None
        self._agent: Any = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._busy = False  # a batch is being compiled and applied
        self._thread = threading.Thread(target=self._run, name="bench-agent", daemon=True)
        self.started_in = 0.0

    def __enter__(self) -> RealAgent:
        started = time.monotonic()
        self._thread.start()
        if not self._ready.wait(900) or self._error is not None:
            raise SystemExit(f"the agent did not become ready: {self._error!r}")
        self.started_in = time.monotonic() - started
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(60)

    def _run(self) -> None:
        from pyroute2 import netns  # noqa: PLC0415

        from controller.agent.loop import Agent  # noqa: PLC0415 - only this mode needs the agent
        from controller.applier import Applier  # noqa: PLC0415
        from controller.cnisocket import CniServer  # noqa: PLC0415
        from controller.nft import Nft  # noqa: PLC0415

        # The agent's notices about the synthetic cluster (named ports no pod declares) are noise here.
        logging.getLogger("controller").setLevel(logging.ERROR)
        # This thread only, before it makes anything: the loop, the nft context and the agent's
        # worker thread (which inherits this thread's namespace) all live in the node namespace.
        netns.setns(self.lab.netns_path(self.lab.node), flags=0)

        async def serve() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            agent = Agent(node=AGENT_NODE, applier=Applier(nft=Nft()))
            self._agent = agent
            step = agent.step

            async def watched_step(batch: Any) -> None:  # tells _settle when a batch is in progress
                self._busy = True
                try:
                    await step(batch)
                finally:
                    self._busy = False

            agent.step = watched_step  # type: ignore[method-assign]
            task = asyncio.create_task(agent.run())
            agent.seed(_cluster_objects())
            try:
                async with CniServer(sink=agent, path=self.lab.agent_socket):
                    while not agent.ready:
                        await asyncio.sleep(0.05)
                    self._ready.set()
                    await self._stop.wait()
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

        try:
            asyncio.run(serve())
        except BaseException as exc:
            self._error = exc
            self._ready.set()

    def _call(self, fn: Any) -> Any:
        """``fn()`` on the agent's loop; its result."""
        assert self._loop is not None
        done = threading.Event()
        out: list[Any] = []

        def call() -> None:
            try:
                out.append(fn())
            finally:
                done.set()

        self._loop.call_soon_threadsafe(call)
        done.wait(30)
        return out[0] if out else None

    def _settle(self) -> None:
        """Wait until the agent has nothing queued and no batch in progress, so an ADD's wait is
        the programming of its own pod, not of the previous pod's DEL queued before it."""
        deadline = time.monotonic() + 120
        while self._call(lambda: self._busy or self._agent.coalescer.pending):
            if time.monotonic() > deadline:
                raise SystemExit("the agent did not settle within 120 s")
            time.sleep(0.01)

    def schedule(self, i: int) -> None:
        """The API shows pod ``bench/p<i>`` scheduled to this node, without an address yet."""
        self._call(lambda: self._agent.observe("Pod", _bench_pod(i), uid=f"uid-bench-p{i}", deleted=False))
        self._settle()

    def unschedule(self, i: int) -> None:
        self._call(lambda: self._agent.observe("Pod", None, uid=f"uid-bench-p{i}", deleted=True))
        self._settle()


def _with_uid(obj: Any, uid: str) -> Any:
    return obj.model_copy(update={"metadata": obj.metadata.model_copy(update={"uid": uid})})


def _cluster_objects() -> list[tuple[Any, Any]]:
    from tests.bench.dataplane import bench_model  # noqa: PLC0415 - the cluster dataplane.py uses

    model = bench_model()
    out: list[tuple[Any, Any]] = []
    for kind, objects in (
        ("Node", model.nodes),
        ("Namespace", model.namespaces),
        ("NetworkPolicy", model.policies),
        ("Pod", model.pods),
    ):
        out += [(kind, _with_uid(obj, f"uid-{kind.lower()}-{n}")) for n, obj in enumerate(objects)]
    return out


def _bench_pod(i: int) -> Any:
    from compiler.model import Pod  # noqa: PLC0415

    return Pod.model_validate(
        {
            "metadata": {
                "name": f"p{i}",
                "namespace": "bench",
                "uid": f"uid-bench-p{i}",
                "labels": {"app": "bench-server", "tier": "frontend"},
            },
            "spec": {"nodeName": AGENT_NODE, "containers": [{"ports": [{"containerPort": 8080}]}]},
            "status": {"phase": "Pending"},
        }
    )


@contextlib.contextmanager
def installed_plugin() -> Iterator[Path]:
    """The plugin as a node runs it: ``stockade-cni install``'s launcher over an interpreter whose
    site directory holds what the image's wheel install holds for the plugin (the project and
    pyroute2), byte-compiled as pip leaves a wheel install; nothing else on its path."""
    import pyroute2  # noqa: PLC0415 - only to find the installed copy

    work = Path(tempfile.mkdtemp(prefix="stockade-cni-bench-"))
    try:
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(work / "rt")], check=True)
        python = work / "rt" / "bin" / "python"
        site = Path(
            subprocess.run(
                [str(python), "-I", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                capture_output=True, text=True, check=True,
            ).stdout.strip()
        )  # fmt: skip
        skip = shutil.ignore_patterns("__pycache__", "*.pyc")
        for package in (REPO / "compiler", REPO / "controller", Path(pyroute2.__file__).parent):
            shutil.copytree(package, site / package.name, ignore=skip)
        subprocess.run([str(python), "-I", "-m", "compileall", "-q", str(site)], check=True)
        plugin = work / "stockade-cni"
        plugin.write_text(install.launcher(str(python)))
        plugin.chmod(0o755)
        yield plugin
    finally:
        shutil.rmtree(work, ignore_errors=True)


@contextlib.contextmanager
def _lab(plugin: Path, pod_cidrs: tuple[str, ...] | None = None) -> Iterator[CniLab]:
    with CniLab(pod_cidrs=pod_cidrs, plugin=plugin) if pod_cidrs else CniLab(plugin=plugin) as lab:
        Path(lab.agent_socket).parent.mkdir(mode=0o700)
        yield lab


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pods", type=int, default=40)
    parser.add_argument("--no-real-agent", action="store_true", help="skip the real agent's mode")
    parser.add_argument(
        "--runtime",
        choices=("installed", "venv"),
        default="installed",
        help="the plugin as a node runs it (default), or the development venv's console script",
    )
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root (network namespaces)")
    with installed_plugin() if args.runtime == "installed" else contextlib.nullcontext(PLUGIN) as plugin:
        print(f"plugin: {plugin.read_text().splitlines()[0] if args.runtime == 'installed' else plugin}")
        return run(args, plugin)


def run(args: argparse.Namespace, plugin: Path) -> int:
    rows = []
    print(f"load average before: {' '.join(Path('/proc/loadavg').read_text().split()[:3])}", flush=True)
    with _lab(plugin) as lab:
        rows.append(("no agent (socket absent)", *measure(lab, args.pods, wait=True)))
        with FakeAgent(lab.agent_socket):
            rows.append(("agent answering at once", *measure(lab, args.pods, wait=True)))
        rows.append(("waitForAgent off", *measure(lab, args.pods, wait=False)))
    if not args.no_real_agent:
        with _lab(plugin, AGENT_POD_CIDRS) as lab, RealAgent(lab) as agent:
            print(f"real agent ready in {agent.started_in:.1f}s (10,000 pods, 1,000 policies)", flush=True)
            rows.append(("real agent (10k pods)", *measure(lab, args.pods, wait=True, agent=agent)))
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    cpus = os.cpu_count()
    print(f"stockade-cni ({args.runtime}), {args.pods} pods per mode, load average after {load}, {cpus} CPUs")
    print(f"{'mode':<26} {'ADD p50':>8} {'ADD p99':>8} {'DEL p50':>8} {'DEL p99':>8}   CPU p50: ADD    DEL")
    for name, adds, dels, add_cpu, del_cpu in rows:
        figures = [
            statistics.median(adds),
            _percentile(adds, 0.99),
            statistics.median(dels),
            _percentile(dels, 0.99),
        ]
        cpu = f"{statistics.median(add_cpu) * 1000:>6.0f}ms {statistics.median(del_cpu) * 1000:>6.0f}ms"
        print(f"{name:<26} " + " ".join(f"{f * 1000:>6.0f}ms" for f in figures) + f"   {cpu}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
