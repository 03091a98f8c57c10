"""The agent's own cost per change, in-process: CPU time and wall time from a watch event (or a
CNI report) handed to the agent's loop to the plan applied in the kernel. Prints figures.

    sudo .venv/bin/python tests/bench/agentcpu.py [--samples 30] [--gap 0.05] [--notice-delay 1.0]

No API server and no kopf: the agent's loop (:class:`controller.agent.loop.Agent`, with its real
:class:`controller.applier.Applier` on libnftables) runs in this process, in a scratch network
namespace, seeded with tests/bench/agent.py's cluster (the compile benchmark's synthetic cluster:
10,000 pods, 1,000 policies, this node ``node-03``). What tests/bench/agent.py measures beyond
this is the API server's watch delivery and kopf's per-event work. Changes, ``--samples`` each,
one at a time (each waits for the previous one's plan):

- policy: a new policy selecting one local pod;
- relabel (local): a local pod relabelled into a policy's selection;
- relabel (peer): a pod on another node relabelled into a peer selector;
- new pod: a pod on this node gets its address;
- CNI report: a scheduled pod (no address yet) reported by the CNI plugin; the figure is until
  ``program_pod`` returns, as the plugin's wait sees it.

CPU is the process's (``time.process_time``: every thread, the loop's and the worker's), and the
worker thread's per stage (compile, plan snapshot, the applier's conversion, diff and nft
transaction), from ``time.thread_time`` around each.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from compiler.model import NetworkPolicy, Pod
from tests.bench.compile import synthetic_cluster

NODE = "node-03"
STAGES: dict[str, float] = defaultdict(float)


def _timed(owner: Any, attr: str, stage: str) -> None:
    """Wrap ``owner.attr`` so the calling thread's CPU inside it adds to ``STAGES[stage]``."""
    inner = getattr(owner, attr)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.thread_time()
        try:
            return inner(*args, **kwargs)
        finally:
            STAGES[stage] += time.thread_time() - started

    setattr(owner, attr, wrapper)


def _gc_timer() -> None:
    """Time the garbage collector's full (generation 2) collections as a stage of their own."""
    started = [0.0]

    def callback(phase: str, info: dict[str, int]) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            started[0] = time.thread_time()
        else:
            STAGES["gc (full collections)"] += time.thread_time() - started[0]

    gc.callbacks.append(callback)


def _instrument() -> None:
    _gc_timer()
    import compiler.nodestate  # noqa: PLC0415
    import controller.agent.engine  # noqa: PLC0415
    import controller.applier  # noqa: PLC0415
    import controller.nft  # noqa: PLC0415

    _timed(controller.agent.engine.Engine, "compile", "compile (incl. snapshot)")
    _timed(compiler.nodestate, "node_plan", "plan snapshot")
    _timed(controller.applier, "plan_state", "applier: convert")
    _timed(controller.applier, "diff_states", "applier: diff")
    _timed(controller.nft.Nft, "run", "applier: nft")


def _with_uid(obj: Any, uid: str) -> Any:
    return obj.model_copy(update={"metadata": obj.metadata.model_copy(update={"uid": uid})})


def _labelled(pod: Pod, **labels: str) -> Pod:
    meta = pod.metadata.model_copy(update={"labels": {**pod.metadata.labels, **labels}})
    return pod.model_copy(update={"metadata": meta})


def _policy(namespace: str, name: str, spec: dict[str, Any]) -> NetworkPolicy:
    return NetworkPolicy.model_validate(
        {"metadata": {"name": name, "namespace": namespace, "uid": f"uid-{namespace}-{name}"}, "spec": spec}
    )


def _pod(name: str, address: str | None) -> Pod:
    status: dict[str, Any] = {"phase": "Pending"}
    if address is not None:
        status = {"phase": "Running", "podIP": address, "podIPs": [{"ip": address}]}
    return Pod.model_validate(
        {
            "metadata": {
                "name": name,
                "namespace": "ns-000",
                "uid": f"uid-{name}",
                "labels": {"app": "web", "tier": "frontend"},
            },
            "spec": {"nodeName": NODE, "containers": [{"ports": [{"containerPort": 8080}]}]},
            "status": status,
        }
    )


@contextlib.contextmanager
def _scratch_namespace() -> Iterator[None]:
    from pyroute2 import netns  # noqa: PLC0415

    name = f"stkcpu{os.getpid()}"
    netns.create(name)
    try:
        netns.setns(name, flags=0)  # this thread and every thread it starts from now on
        yield
    finally:
        netns.remove(name)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def _bench(args: argparse.Namespace) -> None:
    from controller.agent.loop import Agent  # noqa: PLC0415
    from controller.applier import Applier  # noqa: PLC0415
    from controller.cniproto import PodReport  # noqa: PLC0415
    from controller.nft import Nft  # noqa: PLC0415

    model = synthetic_cluster(pods=10_000, namespaces=500, policies=1_000, nodes=20)
    objects: list[tuple[Any, Any]] = []
    for kind, items in (
        ("Node", model.nodes),
        ("Namespace", model.namespaces),
        ("NetworkPolicy", model.policies),
        ("Pod", model.pods),
    ):
        objects += [(kind, _with_uid(o, f"uid-{kind.lower()}-{n}")) for n, o in enumerate(items)]
    pods = [o for k, o in objects if k == "Pod" and o.metadata.namespace != "kube-system"]
    local = [p for p in pods if p.spec.node_name == NODE]
    remote = [p for p in pods if p.spec.node_name != NODE]

    agent = Agent(node=NODE, applier=Applier(nft=Nft()), notice_delay=args.notice_delay)
    steps = [0]
    stepped = asyncio.Event()
    step = agent.step

    async def counted(batch: Any) -> None:
        await step(batch)
        steps[0] += 1
        stepped.set()

    agent.step = counted  # type: ignore[method-assign]
    task = asyncio.create_task(agent.run())
    started = time.monotonic()
    agent.seed(objects)
    while not agent.ready:
        await asyncio.sleep(0.05)
    print(f"ready in {time.monotonic() - started:.1f} s", flush=True)
    await asyncio.sleep(2)
    n = args.samples

    async def settle() -> None:
        while agent.coalescer.pending:
            await asyncio.sleep(0.005)
        await asyncio.sleep(args.gap)

    async def sample(change: Callable[[], None]) -> tuple[float, float]:
        """Wall and CPU seconds from the change to the end of the step that applied it."""
        await settle()
        cpu, wall, before = time.process_time(), time.monotonic(), steps[0]
        change()
        while steps[0] == before or agent.coalescer.pending:
            stepped.clear()
            await stepped.wait()
        return time.monotonic() - wall, time.process_time() - cpu

    async def cni(report: Any) -> tuple[float, float]:
        await settle()
        cpu, wall = time.process_time(), time.monotonic()
        await agent.program_pod(report)
        return time.monotonic() - wall, time.process_time() - cpu

    results: dict[str, list[tuple[float, float]]] = {}
    stages: dict[str, dict[str, float]] = {}

    async def run(name: str, samples: list[Callable[[], Any]], *, coroutine: bool = False) -> None:
        STAGES.clear()
        out = []
        for s in samples:
            out.append(await s() if coroutine else await sample(s))
        results[name] = out
        stages[name] = dict(STAGES)

    used = local[: 2 * n]

    def new_policy(i: int, pod: Pod) -> Callable[[], None]:
        spec = {
            "podSelector": {"matchLabels": {"pod-template-hash": pod.metadata.labels["pod-template-hash"]}},
            "ingress": [
                {"from": [{"podSelector": {"matchLabels": {"app": "web"}}}], "ports": [{"port": 7000 + i}]}
            ],
        }
        policy = _policy(pod.metadata.namespace or "", f"bench-{i}", spec)
        return lambda: agent.observe("NetworkPolicy", policy, uid=policy.metadata.uid or "", deleted=False)

    await run("policy change", [new_policy(i, p) for i, p in enumerate(used[:n])])

    for namespace in sorted({p.metadata.namespace or "" for p in used[n:]}):
        spec = {
            "podSelector": {"matchLabels": {"bench-relabel": "on"}},
            "ingress": [{"ports": [{"port": 6999}]}],
        }
        policy = _policy(namespace, "bench-relabel", spec)
        agent.observe("NetworkPolicy", policy, uid=policy.metadata.uid or "", deleted=False)
    await asyncio.sleep(args.notice_delay + 1)

    def relabel(pod: Pod, key: str) -> Callable[[], None]:
        new = _labelled(pod, **{key: "on"})
        return lambda: agent.observe("Pod", new, uid=pod.metadata.uid or "", deleted=False)

    await run("relabel (local)", [relabel(p, "bench-relabel") for p in used[n:]])

    target = local[2 * n]
    peer = {"namespaceSelector": {}, "podSelector": {"matchLabels": {"bench-peer": "on"}}}
    spec = {
        "podSelector": {"matchLabels": {"pod-template-hash": target.metadata.labels["pod-template-hash"]}},
        "ingress": [{"from": [peer]}],
    }
    policy = _policy(target.metadata.namespace or "", "bench-peer", spec)
    agent.observe("NetworkPolicy", policy, uid=policy.metadata.uid or "", deleted=False)
    await asyncio.sleep(args.notice_delay + 1)
    await run("relabel (peer)", [relabel(p, "bench-peer") for p in remote[:n]])

    def new_pod(i: int) -> Callable[[], None]:
        pod = _pod(f"bench-new-{i}", f"10.3.200.{i + 1}")
        return lambda: agent.observe("Pod", pod, uid=pod.metadata.uid or "", deleted=False)

    await run("new pod", [new_pod(i) for i in range(n)])

    for i in range(n):
        pod = _pod(f"bench-cni-{i}", None)
        agent.observe("Pod", pod, uid=pod.metadata.uid or "", deleted=False)

    def report(i: int) -> Callable[[], Any]:
        r = PodReport(
            namespace="ns-000",
            name=f"bench-cni-{i}",
            uid=f"uid-bench-cni-{i}",
            container_id=f"c{i}",
            addresses=(f"10.3.201.{i + 1}",),
        )
        return lambda: cni(r)

    await run("CNI report", [report(i) for i in range(n)], coroutine=True)

    head = f"{'change':<18} {'wall p50':>9} {'wall p99':>9} {'CPU p50':>8} {'CPU p99':>8}"
    print(f"\n{head}   worker CPU per change, mean (ms)")
    for name, values in results.items():
        walls = [w * 1000 for w, _ in values]
        cpus = [c * 1000 for _, c in values]
        per = ", ".join(f"{k} {v / len(values) * 1000:.1f}" for k, v in sorted(stages[name].items()))
        print(
            f"{name:<18} {statistics.median(walls):>7.1f}ms {_percentile(walls, 0.99):>7.1f}ms"
            f" {statistics.median(cpus):>6.1f}ms {_percentile(cpus, 0.99):>6.1f}ms   {per}"
        )
    load = os.getloadavg()
    print(f"\nload average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=30)
    parser.add_argument("--gap", type=float, default=0.05, help="seconds of rest between two changes")
    parser.add_argument("--notice-delay", type=float, default=1.0)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root (a network namespace)")
    logging.basicConfig(level=logging.ERROR)
    logging.getLogger("controller").setLevel(logging.ERROR)
    load = os.getloadavg()
    print(f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}", flush=True)
    _instrument()
    with _scratch_namespace():
        asyncio.run(_bench(args))


if __name__ == "__main__":
    main()
