"""Every example under examples/ compiles, for each of its nodes, into a ruleset the kernel loads,
as nft text (``nft -f``) and as libnftables JSON (``nft -j -f``), and so does the installed
console script's output. The unit tier checks the rest of the examples without root
(tests/unit/test_examples.py).

Each ruleset loads into a fresh network namespace made by ``unshare --net`` for one ``sh``: the
namespace goes away with the process, so nothing is left to clean up.
"""

from __future__ import annotations

import io
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from controller.cli import files, offline
from controller.cli.main import main

pytestmark = pytest.mark.kernel

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
# examples/demo/ is the cluster lab's demo, tested by tests/cluster; examples/bad/ never compiles.
GOOD = sorted(p.name for p in EXAMPLES.iterdir() if p.is_dir() and p.name not in {"demo", "bad"})


def _compile(argv: list[str]) -> str:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(["compile", *argv], stdin=io.StringIO(""))
    assert code == 0, err.getvalue()
    return out.getvalue()


def _load_into_empty_netns(ruleset: str, *, json_input: bool) -> None:
    flag = "-j " if json_input else ""
    result = subprocess.run(
        ["unshare", "--net", "sh", "-c", f"nft {flag}-f - && nft list table inet stockade >/dev/null"],
        input=ruleset,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("example", GOOD)
@pytest.mark.parametrize("fmt", ["text", "json"])
def test_compiles_for_every_node_and_loads(example: str, fmt: str) -> None:
    loaded = files.load([str(EXAMPLES / example)], io.StringIO(""))
    nodes = offline.known_nodes(loaded.model)
    assert nodes, f"examples/{example} names no node"
    for node in nodes:
        ruleset = _compile([str(EXAMPLES / example), "--node", node, "-o", fmt])
        _load_into_empty_netns(ruleset, json_input=fmt == "json")


def test_compiled_example_via_the_console_script() -> None:
    script = Path(sys.executable).parent / "stockade"
    result = subprocess.run(
        [str(script), "compile", str(EXAMPLES / "three-tier"), "--node", "node-b"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert (result.returncode, result.stderr) == (0, "")
    _load_into_empty_netns(result.stdout, json_input=False)
