"""The plugin's start-up stays light: VERSION (and every error before a command runs) loads
neither pyroute2 nor the compiler's models, kopf or kubernetes; ADD's pyroute2 import skips the
package's eager ``__init__``, and ADD's comes after the report to the agent."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("pyroute2", "pydantic", "compiler.model", "kopf", "kubernetes", "nftables")

PROBE = """
import io, json, os, sys
sys.stdin = io.TextIOWrapper(io.BytesIO(sys.argv[1].encode()))
os.environ.clear(); os.environ.update(json.loads(sys.argv[2]))
from controller.cni.plugin import main
code = main([])
print(json.dumps({"code": code, "modules": sorted(sys.modules)}), file=sys.stderr)
"""


def _run(stdin: str, env: dict[str, str]) -> tuple[dict[str, object], dict[str, object]]:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, stdin, json.dumps(env)], capture_output=True, text=True, check=False
    )
    probe = json.loads(proc.stderr.strip().splitlines()[-1])
    return json.loads(proc.stdout), probe


def test_version_imports_nothing_heavy() -> None:
    out, probe = _run('{"cniVersion": "0.4.0"}', {"CNI_COMMAND": "VERSION"})
    assert out == {"cniVersion": "0.4.0", "supportedVersions": ["0.4.0", "1.0.0", "1.1.0"]}
    assert probe["code"] == 0
    modules = probe["modules"]
    assert isinstance(modules, list)
    assert not [m for m in modules if m.startswith(HEAVY)]


EXTRAS = (
    "pyroute2.ndb",
    "pyroute2.conntrack",
    "pyroute2.iproute",
    "pyroute2.netns",
    "asyncio",
    "pydantic",
    "kopf",
)
BAD_CALL = {"CNI_CONTAINERID": "c", "CNI_NETNS": "/x", "CNI_IFNAME": "eth0"}


def test_bad_add_input_fails_before_any_pyroute2_import() -> None:
    # ADD imports pyroute2 only after it reported the pod to the agent (the import overlaps with
    # the agent programming the pod); input it cannot parse never gets that far.
    out, probe = _run("{", {"CNI_COMMAND": "ADD", **BAD_CALL})
    assert out["code"] == 6 and probe["code"] == 1
    modules = probe["modules"]
    assert isinstance(modules, list)
    # ("pyroute2" itself may be there: the light package, an empty module made in place.)
    assert not [m for m in modules if m.startswith(("pyroute2.", "controller.cni.rtnl", *EXTRAS))]


def test_del_loads_only_the_light_netlink_modules() -> None:
    out, probe = _run("{", {"CNI_COMMAND": "DEL", **BAD_CALL})
    assert out["code"] == 6 and probe["code"] == 1
    modules = probe["modules"]
    assert isinstance(modules, list)
    # The light pyroute2 package (RTNL messages only); never its eager extras, nor IPRoute's
    # asyncio core or pyroute2.netns (controller.cni.rtnl replaces them).
    assert "controller.cni.rtnl" in modules
    assert not [m for m in modules if m.startswith(EXTRAS)]
