"""The plugin's start-up stays light: VERSION (and every error before a command runs) loads
neither pyroute2 nor the compiler's models, kopf or kubernetes; ADD's pyroute2 import skips the
package's eager ``__init__``, and ADD's comes after the report to the agent."""

from __future__ import annotations

import ipaddress
import json
import subprocess
import sys
from pathlib import Path

HEAVY = ("pyroute2", "pydantic", "compiler.model", "kopf", "kubernetes", "nftables")

# {module}: plugin (the commands) or entry (what the process starts with); {ready}: imports done
# before counting. "collections": how often the cyclic garbage collector ran from then to the
# command's end.
PROBE = """
import gc, io, json, os, sys
sys.stdin = io.TextIOWrapper(io.BytesIO(sys.argv[1].encode()))
os.environ.clear(); os.environ.update(json.loads(sys.argv[2]))
{ready}
before = sum(s["collections"] for s in gc.get_stats())
from controller.cni.{module} import main
code = main([])
collections = sum(s["collections"] for s in gc.get_stats()) - before
report = {{"code": code, "modules": sorted(sys.modules), "collections": collections}}
print(json.dumps(report), file=sys.stderr)
"""


def _run(
    stdin: str, env: dict[str, str], *, module: str = "plugin", ready: str = ""
) -> tuple[dict[str, object], dict[str, object]]:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE.format(module=module, ready=ready), stdin, json.dumps(env)],
        capture_output=True,
        text=True,
        check=False,
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


ADD_PROBE = """
import io, json, os, sys
sys.stdin = io.TextIOWrapper(io.BytesIO(sys.argv[1].encode()))
os.environ.clear(); os.environ.update(json.loads(sys.argv[2]))
import controller.cni.netns as netns
netns.verify_netns = lambda path: None  # no sandbox here: the unit tier runs without root
import controller.cni.plugin as plugin
seen = {}

def report(env, conf, addresses):
    loaded = ("pyroute2.", "controller.cni.rtnl")
    seen["netlink_at_report"] = sorted(m for m in sys.modules if m.startswith(loaded))
    seen["reported"] = addresses
    return None

plugin._report = report
load = plugin._load_netlink

def load_then_break():
    load()
    import controller.cni.rtnl as rtnl

    class Broken:
        def __init__(self):
            raise OSError(105, "No buffer space available")

    rtnl.Rtnl = Broken  # the netlink socket cannot be opened

plugin._load_netlink = load_then_break
code = plugin.main([])
print(json.dumps({"code": code, "seen": seen}), file=sys.stderr)
"""


def test_add_reports_before_loading_netlink_and_frees_its_addresses_when_netlink_fails(
    tmp_path: Path,
) -> None:
    conf = {
        "cniVersion": "1.1.0",
        "name": "stk",
        "type": "stockade-cni",
        "podCIDRs": ["10.244.1.0/24", "fd00:10:244:1::/64"],
        "ipamDir": str(tmp_path),
        "quarantineSeconds": 0,
    }
    env = {
        "CNI_COMMAND": "ADD",
        "CNI_CONTAINERID": "c1",
        "CNI_NETNS": "/run/netns/p",
        "CNI_IFNAME": "eth0",
        "CNI_PATH": "/opt/cni/bin",
        "CNI_ARGS": "K8S_POD_NAMESPACE=default;K8S_POD_NAME=p;K8S_POD_UID=u1",
    }
    proc = subprocess.run(
        [sys.executable, "-c", ADD_PROBE, json.dumps(conf), json.dumps(env)],
        capture_output=True,
        text=True,
        check=False,
    )
    probe = json.loads(proc.stderr.strip().splitlines()[-1])
    out = json.loads(proc.stdout)
    assert probe["code"] == 1 and "No buffer space available" in out["msg"]
    # The pod was reported with its addresses before any of pyroute2 was loaded ...
    assert probe["seen"]["reported"] == ["10.244.1.1", "fd00:10:244:1::1"]
    assert probe["seen"]["netlink_at_report"] == []
    # ... and the failure afterwards released them: no allocation file is left.
    left = [p.name for p in (tmp_path / "stk").iterdir() if _is_address(p.name)]
    assert left == []


def _is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _collections(module: str, env: dict[str, str], *, ready: str = "") -> int:
    conf = {"cniVersion": "1.1.0", "name": "n", "type": "stockade-cni", "podCIDRs": ["10.9.0.0/24"]}
    _, probe = _run(json.dumps(conf), env, module=module, ready=ready)
    assert probe["code"] == 0, probe
    collections = probe["collections"]
    assert isinstance(collections, int)
    return collections


def test_the_plugin_process_runs_without_the_cyclic_collector() -> None:
    # One command (VERSION: the config, protocol and error modules are imported) in a fresh
    # process: from the plugin's module the collector runs during the imports; from the process's
    # entry (what the console script, the installed launcher and `python -m` call) it never runs.
    # The entry module itself is imported before counting: without bytecode on disk
    # (PYTHONDONTWRITEBYTECODE, a changed source) compiling it may run the collector once, before
    # its main can turn it off.
    env = {"CNI_COMMAND": "VERSION"}
    assert _collections("plugin", env) > 0
    assert _collections("entry", env, ready="import controller.cni.entry") == 0


def test_importing_the_plugin_leaves_the_importers_collector_alone() -> None:
    import gc  # noqa: PLC0415

    import controller.cni.entry  # noqa: PLC0415
    import controller.cni.plugin  # noqa: F401, PLC0415

    assert gc.isenabled()
