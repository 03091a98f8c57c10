"""python -m tests.cluster.lab up|down|status|env [--name NAME] ...

up      start a lab and stay in the foreground; Ctrl-C (or `down` elsewhere) stops it and
        removes everything it made. --detach returns once the lab is up instead. By default
        the nodes use stockade-cni and the agents' VXLAN overlay: `up` installs the Stockade
        release (charts/stockade) and returns once every node is Ready through it.
down    stop a lab (foreground or detached, or the leftovers of a crashed one).
status  what the lab is made of and what runs in it.
env     shell exports for kubectl against the lab: eval "$(python -m tests.cluster.lab env)"
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time

from tests.cluster.release import install_default

from .config import DEFAULT_ROOT, default_images
from .lab import Lab
from .preflight import LabError
from .state import alive


def _up(args: argparse.Namespace) -> int:
    # With --cni stockade the nodes need the chart's image, not the lab's CNI installer.
    base = default_images(args.cni)
    images = (*base, *(i for i in args.image if i not in base))
    lab = Lab.create(
        name=args.name,
        nodes=args.nodes,
        proxy_mode=args.proxy_mode,
        root=DEFAULT_ROOT,
        images=images,
        cni=args.cni,
    )
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    started = time.monotonic()
    try:
        lab.up()
    except LabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.cni == "stockade" and not args.no_release:
        try:
            seconds = install_default(lab)
        except LabError as exc:
            lab.down()
            print(f"error: lab {lab.cfg.name}: the Stockade release is not Ready: {exc}", file=sys.stderr)
            return 1
        print(f"Stockade installed with helm; DaemonSet and nodes Ready in {seconds:.1f}s", flush=True)
    if args.detach:  # recorded first: whatever happens to our stdout, the lab is detached
        lab.rec.detached = True
        lab.rec.owner_pid = 0
        lab.rec.save(lab.cfg.dir / "state.json")
        lab.lock.release()
    print(f"lab {lab.cfg.name} up in {time.monotonic() - started:.1f}s")
    for line in lab.status():
        print(line)
    print(f'\nkubectl:  eval "$(python -m tests.cluster.lab env --name {lab.cfg.name})"')
    if args.detach:
        print(f"detached; stop it with: python -m tests.cluster.lab down --name {lab.cfg.name}")
        return 0
    print("running in the foreground; Ctrl-C stops the lab and removes everything it made")
    signal.signal(signal.SIGINT, on_signal)
    reported: set[str] = set()
    while not stop.wait(5.0):
        for p in lab.rec.processes:
            if p.role not in reported and not alive(p):
                reported.add(p.role)
                print(f"warning: {p.role} (pid {p.pid}) exited; see {lab.log_path(p.role)}", file=sys.stderr)
    print("stopping...")
    removed = lab.down()
    print(f"lab {lab.cfg.name} down ({len(removed)} things removed)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.cluster.lab",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("up", "down", "status", "env"):
        p = sub.add_parser(name)
        p.add_argument("--name", default="lab", help="lab name (1-8 of [a-z0-9]), default lab")
        if name == "up":
            p.add_argument("--nodes", type=int, default=2)
            p.add_argument("--proxy-mode", choices=("nftables", "iptables"), default="nftables")
            p.add_argument("--detach", action="store_true", help="return once the lab is up")
            p.add_argument(
                "--cni",
                choices=("lab", "stockade"),
                default="stockade",
                help="stockade (default): stockade-cni and the agents' VXLAN overlay, from the Stockade "
                "release that `up` installs; lab: the lab's ptp CNI DaemonSet and underlay routes between "
                "the nodes' podCIDRs, no Stockade (e.g. the e2e suite's baseline)",
            )
            p.add_argument(
                "--no-release",
                action="store_true",
                help="with --cni stockade: do not install the release (the nodes stay NotReady until "
                "you `helm install` charts/stockade)",
            )
            p.add_argument(
                "--image",
                action="append",
                default=[],
                help="also import this tests/images archive into the nodes (e.g. agnhost for make e2e)",
            )
    args = parser.parse_args(argv)
    if args.command == "up":
        return _up(args)
    try:
        lab = Lab.load(args.name, root=DEFAULT_ROOT)
    except LabError as exc:
        if args.command == "down":
            print(f"lab {args.name}: nothing recorded, nothing to do")
            return 0
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.command == "status":
        for line in lab.status():
            print(line)
    elif args.command == "env":
        print(f"export KUBECONFIG={lab.cfg.kubeconfig}")
        print(f"export PATH={lab.bin_dir}:$PATH")
    else:
        lab.down()
        print(f"lab {args.name} down")
    return 0


if __name__ == "__main__":
    sys.exit(main())
