"""Every example under examples/ runs: it compiles for each node (that the kernel loads the
rulesets is tests/kernel/test_examples.py), ``explain`` and ``matrix`` answer on it, the bad
examples fail naming file, object and field, and every command shown in an example's README gives
exactly the output shown there.

README blocks are ```console blocks: ``$ stockade ...`` lines, each followed by what it prints
(stderr, then stdout, as a terminal shows them; a command with nothing under it is only run).
A command line may end in ``# exit status N`` (default 0). After changing an example or the CLI,
``STOCKADE_UPDATE_EXAMPLES=1 .venv/bin/pytest tests/unit/test_examples.py`` rewrites the outputs;
review the change like any other.
"""

from __future__ import annotations

import io
import json
import os
import re
import shlex
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import pytest

from controller.cli import files, offline
from controller.cli.main import main

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
# examples/demo/ is the cluster lab's demo, tested by tests/cluster.
NOT_CLI_EXAMPLES = {"demo", "bad"}
GOOD = sorted(p.name for p in EXAMPLES.iterdir() if p.is_dir() and p.name not in NOT_CLI_EXAMPLES)
UPDATE = os.environ.get("STOCKADE_UPDATE_EXAMPLES") == "1"


def _run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(argv, stdin=io.StringIO(""))
    return code, out.getvalue(), err.getvalue()


def _nodes(example: str) -> tuple[str, ...]:
    loaded = files.load([str(EXAMPLES / example)], io.StringIO(""))
    return offline.known_nodes(loaded.model)


def test_the_examples_are_there() -> None:
    assert {"default-deny", "three-tier", "workloads"} <= set(GOOD)
    for name in [*GOOD, "bad"]:
        assert (EXAMPLES / name / "README.md").is_file(), f"examples/{name} needs a README.md"


@pytest.mark.parametrize("example", GOOD)
@pytest.mark.parametrize("fmt", ["text", "json"])
def test_compiles_for_every_node(example: str, fmt: str) -> None:
    """That the kernel loads these rulesets is tests/kernel/test_examples.py (it needs root)."""
    nodes = _nodes(example)
    assert nodes, f"examples/{example} names no node"
    for node in nodes:
        code, out, err = _run(["compile", str(EXAMPLES / example), "--node", node, "-o", fmt])
        assert code == 0, err
        if fmt == "json":
            assert json.loads(out)["nftables"][0] == {"metainfo": {"json_schema_version": 1}}
        else:
            assert out.startswith(f"# Stockade ruleset for node {node!r}: generated, do not edit.\n")


@pytest.mark.parametrize("example", GOOD)
def test_matrix_and_explain_answer(example: str) -> None:
    code, out, err = _run(["--output", "json", "matrix", str(EXAMPLES / example)])
    assert code == 0, err
    data = json.loads(out)
    names = [p["name"] for p in data["pods"]]
    assert len(names) >= 2
    port = data["ports"][0]
    for src in names:
        for dst in names:
            if dst not in data["allowed"][src]:
                continue  # a plain pod to itself; a workload to itself is replica to replica
            protocol, number = port.split("/")
            code, text, err = _run(
                [
                    "explain",
                    str(EXAMPLES / example),
                    "--from",
                    src,
                    "--to",
                    dst,
                    "--port",
                    number,
                    "--protocol",
                    protocol,
                ]
            )
            assert code == 0, err
            word = "ALLOWED" if data["allowed"][src][dst][port] else "BLOCKED"
            shown = f"{dst} (another replica)" if src == dst else dst
            assert text.startswith(f"{word}  {src} -> {shown}  {port}"), "explain agrees with matrix"


# Every bad example, and what its error names: (file, object, field).
BAD = {
    "bad-cidr.yaml": [
        ("NetworkPolicy shop/bad-cidr", "spec.egress[0].to[0].ipBlock.cidr"),
        ("NetworkPolicy shop/bad-cidr", "spec.egress[0].to[1].ipBlock.except[0]"),
    ],
    "bad-pod.yaml": [
        ("Pod shop/web-1", "spec.containers[0].ports[0].containerPort"),
        ("Pod shop/web-1", "status.podIP"),
    ],
    "bad-selector.yaml": [
        ("NetworkPolicy shop/bad-selector", "spec.ingress[0].from[0].podSelector.matchExpressions[0].values"),
        ("NetworkPolicy shop/bad-selector", "spec.podSelector.matchExpressions[0].operator"),
    ],
    "bad-yaml.yaml": [("document 1", "YAML syntax error at line 9")],
    "misspelt-field.yaml": [
        ("NetworkPolicy shop/typo", "spec.podSelecter"),
        ("NetworkPolicy shop/typo", "spec.podSelector"),
    ],
    "port-range.yaml": [("NetworkPolicy shop/backwards-range", "spec.ingress[0].ports[0].endPort")],
}


def test_every_bad_example_has_expectations() -> None:
    assert sorted(p.name for p in (EXAMPLES / "bad").glob("*.yaml")) == sorted(BAD)


@pytest.mark.parametrize("command", ["compile", "matrix"])
@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_examples_fail_naming_file_object_and_field(name: str, command: str) -> None:
    path = f"examples/bad/{name}"
    code, out, err = _run([command, str(REPO / path)])
    assert (code, out) == (2, ""), "bad input: exit 2 and nothing on stdout"
    problems = err.splitlines()[:-1]
    assert len(problems) == len(BAD[name])
    for line, (obj, field) in zip(problems, BAD[name], strict=True):
        assert line.startswith(f"{REPO / path}: {obj}: {field}"), line
    assert err.splitlines()[-1] == f"stockade: {len(BAD[name])} problem(s) in the input; nothing was written"


# --- the READMEs say what the commands print -----------------------------------------------------------

_BLOCK = re.compile(r"```console\n(.*?)```", re.S)
_EXIT = re.compile(r"\s+#\s*exit status (\d+)\s*$")


@dataclass(frozen=True)
class Shown:
    command: str  # without the leading "$ "
    output: str  # what the README shows under it
    start: int  # offsets of the output in the README text
    end: int


def _shown(text: str) -> list[Shown]:
    found: list[Shown] = []
    for block in _BLOCK.finditer(text):
        body, base = block.group(1), block.start(1)
        starts = [m.start() for m in re.finditer(r"^\$ ", body, re.M)]
        for i, at in enumerate(starts):
            line_end = body.index("\n", at) + 1
            stop = starts[i + 1] if i + 1 < len(starts) else len(body)
            found.append(
                Shown(body[at + 2 : line_end - 1], body[line_end:stop], base + line_end, base + stop)
            )
    return found


READMES = sorted(
    p.relative_to(REPO).as_posix() for p in EXAMPLES.glob("*/README.md") if p.parent.name != "demo"
)


@pytest.mark.parametrize("readme", READMES)
def test_readme_commands_print_what_the_readme_shows(
    readme: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(REPO)  # the READMEs use paths relative to the repository
    # Files the READMEs write under /tmp/ go to this test's own directory: a /tmp/node-1.nft left by
    # another user (or a parallel run) must not decide the outcome.
    scratch = f"{tmp_path}/"
    monkeypatch.delenv("COLUMNS", raising=False)
    text = (REPO / readme).read_text()
    shown = _shown(text)
    assert shown, f"{readme} shows no commands"
    updated, last = [], 0
    for item in shown:
        exit_match = _EXIT.search(item.command)
        expected_code = int(exit_match.group(1)) if exit_match else 0
        argv = [a.replace("/tmp/", scratch) for a in shlex.split(_EXIT.sub("", item.command))]
        assert argv[0] == "stockade", item.command
        code, out, err = _run(argv[1:])
        assert code == expected_code, f"{item.command}\n{err}"
        actual = (err + out).replace(scratch, "/tmp/")
        if UPDATE:
            keep = actual if item.output else ""
            updated.append(text[last : item.start] + keep)
            last = item.end
        elif item.output:
            assert actual == item.output, (
                f"{readme}: `{item.command}` prints something else; if the change is intended,"
                " refresh the README with STOCKADE_UPDATE_EXAMPLES=1 and review its diff"
            )
    if UPDATE:
        (REPO / readme).write_text("".join(updated) + text[last:])
