"""`make e2e`: the upstream NetworkPolicy e2e specs, unchanged, against a real-node lab.

    python -m tests.cluster.e2e [--attach NAME] [--keep] [--quick] [--enforcer stockade|none]

Runs `e2e.test` (built from k8s.io/kubernetes v1.37.2 by tests/tools/build.sh) with
`--ginkgo.focus` on the sig-network Netpol specs and the skip list below, writes a JUnit report
to tests/e2e-results/junit.xml and prints one summary line. Without `--attach` it starts a real-node
lab named `e2e` (and removes it afterwards unless `--keep`). `--quick` runs only the QUICK subset.
`--enforcer stockade` (the default) runs the suite against Stockade installed with `helm install`
(`release.py`; a lab it starts has no other CNI, so `stockade-cni` attaches every pod and the
agents' VXLAN overlay joins the nodes, as in `python -m tests.cluster.lab up`; an attached lab gets
the release unless it has one); `--enforcer none` runs it against a lab with the lab's plain ptp
CNI and underlay routes (`--cni lab`), the baseline without an enforcer.
Exit status: the suite's.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from tests.cluster import release
from tests.cluster.lab import Lab, LabError
from tests.cluster.lab.config import CniMode, default_images

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "tests" / "e2e-results"
# Every spec of test/e2e/network/netpol: "[sig-network] Netpol [Feature:NetworkPolicy] ...",
# "[sig-network] Netpol [LinuxOnly] ..." and "[sig-network] Netpol API ...".
FOCUS = r"\[sig-network\] Netpol"
# Not NetworkPolicy v1, or not for a shared lab: disruptive/serial specs and the cluster-scoped
# policy APIs (none of the Netpol specs of v1.37.2 carries them; the skip guards a future bump).
# [Feature:SCTPConnectivity] (3 specs) is NetworkPolicy v1, but upstream runs it only on clusters
# whose kernels have SCTP, and this host's has none (socket(..., IPPROTO_SCTP) fails with
# EPROTONOSUPPORT): agnhost's SCTP servers could not listen. Skipped only where the kernel lacks
# it. The two TCP-only specs about `protocol: SCTP` policies run.
SKIP = (
    r"\[Disruptive\]|\[Serial\]|\[Flaky\]"
    r"|\[Feature:(AdminNetworkPolicy|BaselineAdminNetworkPolicy|ClusterNetworkPolicy)\]"
)
SKIP_NO_SCTP = r"|\[Feature:SCTPConnectivity\]"
# A representative subset (`--quick`), for a 2-core machine where the whole suite without an
# enforcer takes about an hour (each probe expected to be blocked polls 10 s before it fails):
# one default-deny spec per protocol, default-deny-all, a named port, allow-all, the API specs.
QUICK = (
    r"\[sig-network\] Netpol.*(default-deny-ingress|default-deny-all|allow-all policy"
    r"|ingress access on one named port|NetworkPolicy API)"
)


def e2e_binary(lab: Lab) -> Path:
    env = os.environ.get("STOCKADE_E2E_BIN")
    candidates = [Path(env)] if env else []
    if lab.bin_dir is not None:
        candidates.append(lab.bin_dir / "e2e.test")
    for c in candidates:
        if c.is_file():
            return c
    raise LabError(f"e2e.test not found in {[str(c) for c in candidates]} (tests/tools/build.sh builds it)")


def kernel_has_sctp() -> bool:
    try:
        socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_SCTP).close()
    except OSError:
        return False
    return True


def summary(junit: Path) -> tuple[int, int, int, int, int]:
    """(run, passed, failed, skipped, not selected) over the specs (`[It]`) of the JUnit report.

    Ginkgo lists every spec of the binary: those the focus/skip filters left out are `skipped`
    with the bare message "skipped"; a spec that skipped itself while running says why.
    """
    root = ET.parse(junit).getroot()
    passed = failed = skipped = filtered = 0
    for case in root.iter("testcase"):
        if not str(case.get("name", "")).startswith("[It]"):
            continue  # suite set-up and report nodes
        skip = case.find("skipped")
        if skip is not None:
            if (skip.get("message") or "skipped") == "skipped":
                filtered += 1
            else:
                skipped += 1
        elif case.find("failure") is not None or case.find("error") is not None:
            failed += 1
        else:
            passed += 1
    return passed + failed, passed, failed, skipped, filtered


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.cluster.e2e")
    parser.add_argument("--attach", help="use this running lab instead of starting one")
    parser.add_argument("--keep", action="store_true", help="leave the lab it started running")
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="only a representative subset (QUICK)")
    parser.add_argument(
        "--enforcer",
        choices=("stockade", "none"),
        default="stockade",
        help="stockade: helm install the chart first (default); none: the lab's CNI alone",
    )
    args = parser.parse_args(argv)
    stockade = args.enforcer == "stockade"
    started = time.monotonic()
    if args.attach:
        lab, own = Lab.load(args.attach), False
        if "agnhost" not in lab.cfg.images:
            lab.import_images(("agnhost",))  # the suite's one image; importing it again is harmless
    else:
        # With Stockade the nodes use stockade-cni and the agents' overlay (the lab's default);
        # without, the lab's own ptp CNI and underlay routes: the suite's baseline.
        cni: CniMode = "stockade" if stockade else "lab"
        lab = Lab.create(name="e2e", nodes=args.nodes, images=(*default_images(cni), "agnhost"), cni=cni)
        own = True
        lab.up()
    try:
        if stockade and not release.installed(lab):
            values = release.write_values(lab, str(lab.cfg.dir / "stockade-values.yaml"))
            print(f"Stockade installed with helm, Ready in {release.install(lab, values):.1f}s", flush=True)
        RESULTS.mkdir(parents=True, exist_ok=True)
        junit = RESULTS / "junit.xml"
        junit.unlink(missing_ok=True)
        argv_e2e = [
            str(e2e_binary(lab)),
            f"--kubeconfig={lab.cfg.kubeconfig}",
            "--provider=local",
            "--ginkgo.no-color",
            f"--ginkgo.focus={QUICK if args.quick else FOCUS}",
            f"--ginkgo.skip={SKIP if kernel_has_sctp() else SKIP + SKIP_NO_SCTP}",
            f"--ginkgo.junit-report={junit}",
            "--ginkgo.timeout=2h",
            f"--report-dir={RESULTS}",
        ]
        print("running:", " ".join(argv_e2e), flush=True)
        with (RESULTS / "e2e.log").open("w") as log:
            env = dict(os.environ, PATH=f"{lab.bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}")
            done = subprocess.run(argv_e2e, stdout=log, stderr=subprocess.STDOUT, env=env, check=False)
            rc = done.returncode
        if not junit.exists():
            print(f"e2e: no JUnit report (exit {rc}); see {RESULTS / 'e2e.log'}", file=sys.stderr)
            return rc or 1
        run, passed, failed, skipped, filtered = summary(junit)
        minutes = (time.monotonic() - started) / 60
        print(
            f"e2e NetworkPolicy: {run} specs run, {passed} passed, {failed} failed, {skipped} skipped "
            f"({filtered} others not selected) in {minutes:.1f} min (JUnit: {junit})"
        )
        return rc
    finally:
        if own and not args.keep:
            lab.down()


if __name__ == "__main__":
    try:
        sys.exit(main())
    except LabError as exc:
        sys.exit(f"error: {exc}")
