"""`make demo` on the session's lab (stockade-cni, the Stockade release installed, pods across nodes
over the agents' overlay): the policies of examples/demo/ applied with `kubectl apply` and
enforced by the agents give exactly the connectivity Stockade's reference semantics predicts
(IPv4 and IPv6, measured with real packets from inside the pods), kubelet's readiness probes still
pass, examples/demo/README.md shows what the demo prints, and the demo leaves the lab as it found
it: its namespaces gone, the lab's release still installed and enforcing on every node."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.cluster import demo, release
from tests.cluster.lab import Lab
from tests.cluster.lab.underlay import in_netns
from tests.cluster.lab.workloads import pods

pytestmark = pytest.mark.cluster

README = Path(demo.DEMO / "README.md")


def test_demo_matches_the_reference_semantics(lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    rc = demo.main(["--attach", lab.cfg.name])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "IPv4: measured = expected" in out and "IPv6: measured = expected" in out, out
    # kubelet's readiness probes (node to pod) pass Stockade's rules, default-deny included.
    assert "every serving pod is Ready" in out, out
    assert re.search(r"^enforced by the agents \d+ ms after kubectl apply", out, re.M), out
    assert re.search(r"^BLOCKED  visitors/visitor-\S+ -> backend/api-\S+  TCP/9090", out, re.M), out
    assert re.search(r"^ALLOWED  frontend/web-\S+ -> backend/api-\S+  TCP/9090", out, re.M), out
    # The README's matrix is the demo's real output.
    shown = README.read_text().split("```\nIPv4: measured = expected\n", 1)[1].split("```", 1)[0]
    assert "IPv4: measured = expected\n" + shown in out + "\n"
    # --attach leaves the lab as it found it: the release it had stays (the session shares it).
    assert "the lab's Stockade release stays installed" in out, out
    assert not any(pods(lab, ns) for ns in ("frontend", "backend", "data", "visitors"))
    assert release.installed(lab)
    for node in lab.cfg.all_nodes:
        listed = subprocess.run(
            in_netns(node.netns, ["nft", "list", "table", "inet", "stockade"]),
            capture_output=True,
            check=False,
        )
        assert listed.returncode == 0, f"{node.name}: table inet stockade is gone after the demo"
