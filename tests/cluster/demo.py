"""The demo (`make demo`): a two-node lab (real kubelet and containerd per node), Stockade installed
into it with `helm install` (the chart's image built by tests/images), the shop from
examples/demo/ running as containers, its connectivity measured with real packets from inside the
pods before and after its NetworkPolicies, and `stockade explain` on two pairs.

    python -m tests.cluster.demo [--keep] [--attach NAME]

The lab starts with no CNI of its own: the chart's init containers install stockade-cni on every
node, which makes the nodes Ready and attaches the pods (the agent programs each new pod before
its first packet), and the agents' VXLAN overlay carries pod traffic between the nodes. The
policies are applied with `kubectl apply` and enforced live by the agents; the demo prints the
time from `kubectl apply` to the first blocked probe, then checks the measured matrix against
Stockade's reference semantics; any difference fails the demo. `--attach` to a lab that has the
release already (what `python -m tests.cluster.lab up` makes) uses it and leaves it installed;
to a lab without one (`up --no-release`, or `--cni lab`: then with `cni.install=false`, the agents
enforcing on the lab's own pods) it installs the chart and uninstalls it afterwards.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

from compiler.loader import load_manifests
from compiler.semantics import Peer, evaluate
from tests.support.probe import Family, PodEndpoint, Prober, ProbeRequest, render_comparison, render_matrix

from . import release
from .lab import Lab, LabError
from .lab.underlay import in_netns
from .lab.workloads import apply, endpoints, wait_pods

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "examples" / "demo"
STOCKADE = Path(sys.executable).parent / "stockade"
# Pods per app label, in the order the matrix shows them.
APPS = (("frontend", "web", 2), ("backend", "api", 2), ("data", "db", 1), ("visitors", "visitor", 1))
Pair = tuple[str, str]
# Time the rulesets are in place before readiness is checked: kubelet marks a pod unready after 3
# failed probes, one per second here.
PROBE_WINDOW = 5.0
# The pair whose probe times the policies' arrival in the kernel (the policies block it).
TIMED_PAIR = ("visitor1", "api1")
ENFORCE_WITHIN = 30.0


@dataclass(frozen=True)
class DemoPod:
    alias: str  # web1, api2, ...: short, so the matrix fits a terminal
    namespace: str
    name: str
    node: str
    port: int | None  # the TCP port its server listens on; None for a client-only pod
    ips: tuple[str, ...]
    endpoint: PodEndpoint  # for the prober, named by alias


def say(text: str = "") -> None:
    print(text, flush=True)


def heading(text: str) -> None:
    say(f"\n=== {text} " + "=" * max(0, 90 - len(text)))


def run(argv: list[str], *, show: bool = True) -> str:
    if show:
        say(f"$ {' '.join(shlex.quote(a) for a in argv)}")
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, cwd=REPO)
    if proc.returncode != 0:
        raise LabError(f"{argv[0]} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def demo_pods(lab: Lab) -> list[DemoPod]:
    out = []
    for namespace, app, count in APPS:
        ready = wait_pods(lab, namespace, f"app={app}", count=count)
        for i, (pod, ep) in enumerate(zip(ready, endpoints(lab, ready), strict=True), start=1):
            alias = f"{app}{i}"
            ports = [p["containerPort"] for c in pod["spec"]["containers"] for p in c.get("ports", [])]
            out.append(
                DemoPod(
                    alias=alias,
                    namespace=namespace,
                    name=pod["metadata"]["name"],
                    node=pod["spec"]["nodeName"],
                    port=ports[0] if ports else None,
                    ips=tuple(i["ip"] for i in pod["status"]["podIPs"]),
                    endpoint=replace(ep, name=alias),
                )
            )
    return out


def probes(pods: list[DemoPod]) -> list[tuple[DemoPod, DemoPod, int]]:
    """Every pod to every other pod's serving port."""
    return [(s, d, d.port) for s in pods for d in pods if s is not d and d.port is not None]


def measure(pods: list[DemoPod], family: Family) -> dict[Pair, bool]:
    """The probes with real packets (TCP), from inside each source pod."""
    prober = Prober([p.endpoint for p in pods])
    requests = [
        ProbeRequest(src=s.alias, dst=d.alias, protocol="TCP", port=port, family=family)
        for s, d, port in probes(pods)
    ]
    return {(r.request.src, r.request.dst): r.reachable for r in prober.probe(requests)}


def expected(dump: str, pods: list[DemoPod], family: Family) -> dict[Pair, bool]:
    """What Stockade's reference semantics says the same probes should do."""
    model = load_manifests([("cluster.yaml", dump)]).model
    return {
        (s.alias, d.alias): evaluate(
            model,
            src=Peer(s.namespace, s.name),
            dst=Peer(d.namespace, d.name),
            protocol="TCP",
            port=port,
            family=family,
        ).allowed
        for s, d, port in probes(pods)
    }


def _ready(lab: Lab, pod: DemoPod) -> bool:
    got = lab.kube.get(f"/api/v1/namespaces/{pod.namespace}/pods/{pod.name}")
    return any(c["type"] == "Ready" and c["status"] == "True" for c in got["status"].get("conditions", []))


def legend(pods: list[DemoPod]) -> str:
    rows = [
        f"  {p.alias:<9} {p.namespace + '/' + p.name:<36} {p.node:<7} "
        f"{'TCP/' + str(p.port) if p.port else 'client':<9} {', '.join(p.ips)}"
        for p in pods
    ]
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.cluster.demo", description=__doc__)
    parser.add_argument("--keep", action="store_true", help="leave the lab up (detached) afterwards")
    parser.add_argument("--attach", metavar="NAME", help="use this running lab instead of starting one")
    args = parser.parse_args(argv)
    started = time.monotonic()
    if args.attach:
        lab = Lab.load(args.attach)
    else:
        heading(
            "1. start a two-node lab (etcd, kube-apiserver, controller manager, scheduler; "
            "kubelet, containerd, kube-proxy per node)"
        )
        lab = Lab.create(name="demo", nodes=2, cni="stockade")
        try:
            run(["bash", str(REPO / "tests/images/build.sh"), release.IMAGE], show=False)
            lab.up()
        except LabError as exc:
            say(f"demo failed: {exc}")
            return 1
        say(f"lab up in {time.monotonic() - started:.1f}s")
    had_release = bool(args.attach) and release.installed(lab)
    try:
        return _demo(lab, started, install_release=not had_release)
    except LabError as exc:
        say(f"demo failed: {exc}")
        return 1
    finally:
        if args.attach:
            undo(lab, uninstall=not had_release)
        elif args.keep:
            lab.rec.detached, lab.rec.owner_pid = True, 0
            lab.rec.save(lab.cfg.dir / "state.json")
            lab.lock.release()
            say(
                f'\nthe lab stays up: eval "$(python -m tests.cluster.lab env --name {lab.cfg.name})"; '
                f"stop it with: python -m tests.cluster.lab down --name {lab.cfg.name}"
            )
        else:
            lab.down()
            say(f"\nlab down; demo took {time.monotonic() - started:.1f}s")


def undo(lab: Lab, *, uninstall: bool) -> None:
    """Leave an attached lab as the demo found it: no demo namespaces (the policies go with them),
    and Stockade uninstalled if the demo installed it (its pre-delete hook removes table inet
    stockade from every node)."""
    lab.kubectl("delete", "-f", str(DEMO / "app.yaml"), "--ignore-not-found", "--wait=true", "--timeout=120s")
    if uninstall and release.installed(lab):
        release.uninstall(lab)
        say("demo objects removed and Stockade uninstalled from the lab")
    else:
        say("demo objects removed; the lab's Stockade release stays installed")


def install(lab: Lab) -> None:
    values = release.write_values(lab, str(lab.cfg.dir / "stockade-values.yaml"))
    say(f"$ helm install {release.RELEASE} charts/stockade -n {release.NAMESPACE} -f {values}")
    seconds = release.install(lab, values)
    how = (
        "stockade-cni installed on every node by the chart" if lab.cfg.cni == "stockade" else "the lab's CNI"
    )
    say(f"agents Ready on {lab.cfg.nodes} nodes and nodes Ready ({how}) {seconds:.1f}s after helm install")


def time_enforcement(lab: Lab, pods: list[DemoPod], manifest: str) -> float:
    """`kubectl apply`, then seconds until the first probe of TIMED_PAIR that is blocked (sent after
    the agents put the policies into the kernel: an upper bound of apply-to-enforced)."""
    by_alias = {p.alias: p for p in pods}
    src, dst = (by_alias[a] for a in TIMED_PAIR)
    assert dst.port is not None
    fast = Prober([src.endpoint, dst.endpoint], timeout=0.2, confirm_timeout=0.3)
    request = ProbeRequest(src=src.alias, dst=dst.alias, protocol="TCP", port=dst.port)
    started = time.monotonic()
    say(apply(lab, manifest).rstrip())
    while True:
        sent = time.monotonic()
        if not fast.probe([request])[0].reachable:
            return sent - started
        if sent - started > ENFORCE_WITHIN:
            raise LabError(
                f"{src.alias} -> {dst.alias} still reachable {ENFORCE_WITHIN:.0f}s after kubectl apply"
            )


def _demo(lab: Lab, started: float, *, install_release: bool) -> int:
    for line in lab.status():
        if line.startswith(("  node ", "lab ")):
            say(line)

    heading("2. install Stockade with helm")
    if install_release:
        install(lab)
    else:
        say(f"already installed in lab {lab.cfg.name}: release {release.RELEASE} in {release.NAMESPACE}")

    heading("3. deploy the shop: examples/demo/app.yaml")
    say(apply(lab, (DEMO / "app.yaml").read_text()).rstrip())
    pods = demo_pods(lab)
    say(legend(pods))

    heading("4. measured connectivity without policies (TCP to each pod's port; . reached, X blocked)")
    names = [p.alias for p in pods]
    before = measure(pods, 4)
    say(render_matrix(before, names=names, title="IPv4"))

    heading("5. apply the NetworkPolicies with kubectl: examples/demo/policies.yaml")
    say(f"$ kubectl apply -f {DEMO.relative_to(REPO) / 'policies.yaml'}")
    enforced = time_enforcement(lab, pods, (DEMO / "policies.yaml").read_text())
    loaded_at = time.monotonic()
    say(
        f"enforced by the agents {enforced * 1000:.0f} ms after kubectl apply "
        f"(first blocked probe {TIMED_PAIR[0]} -> {TIMED_PAIR[1]})"
    )
    for node in lab.cfg.all_nodes:
        rules = run(in_netns(node.netns, ["nft", "list", "table", "inet", "stockade"]), show=False)
        say(f"  {node.name}: table inet stockade programmed by its agent, {rules.count(' counter ')} rules")
    work = lab.cfg.dir / "demo"
    work.mkdir(exist_ok=True)
    dump = lab.kubectl("get", "namespaces,pods,networkpolicies,nodes", "-A", "-o", "yaml").stdout
    (work / "cluster.yaml").write_text(dump)

    heading("6. measured connectivity with the policies, against Stockade's reference semantics")
    failed = False
    families: tuple[Family, ...] = (4, 6)
    for family in families:
        after = measure(pods, family)
        want = expected(dump, pods, family)
        if after == want:
            say(render_matrix(after, names=names, title=f"IPv{family}: measured = expected"))
        else:
            failed = True
            say(render_comparison(want, after, names=names, title=f"IPv{family}"))
        say()

    # kubelet probes every serving pod each second from its node; the rulesets must let them
    # through (node-to-pod traffic is allowed), or pods under default-deny would turn unready.
    time.sleep(max(0.0, PROBE_WINDOW - (time.monotonic() - loaded_at)))
    unready = [p.alias for p in pods if p.port is not None and not _ready(lab, p)]
    if unready:
        failed = True
        say(f"kubelet readiness probes failed under the policies: {', '.join(unready)} not Ready")
    else:
        say("kubelet readiness probes from the nodes pass under the policies: every serving pod is Ready")

    say(f"$ kubectl get namespaces,pods,networkpolicies,nodes -A -o yaml > {work / 'cluster.yaml'}")
    heading("7. stockade explain: why one pair is blocked and another allowed")
    by_alias = {p.alias: p for p in pods}
    for src, dst in (("visitor1", "api1"), ("web1", "api2")):
        s, d = by_alias[src], by_alias[dst]
        say(
            run(
                [
                    str(STOCKADE),
                    "explain",
                    str(work / "cluster.yaml"),
                    "--from",
                    f"{s.namespace}/{s.name}",
                    "--to",
                    f"{d.namespace}/{d.name}",
                    "--port",
                    str(d.port),
                ]
            ).rstrip()
        )
        say()

    say(
        f"demo {'FAILED: measured differs from expected' if failed else 'done'} "
        f"in {time.monotonic() - started:.1f}s"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
