"""The ``stockade`` CLI in-process: commands, flags, output formats, exit codes and error reporting."""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from controller.cli import files, offline
from controller.cli import main as cli_main

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
THREE_TIER = str(EXAMPLES / "three-tier")
DEFAULT_DENY = str(EXAMPLES / "default-deny")
WORKLOADS = str(EXAMPLES / "workloads")

Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Run:
    """``run(*argv, stdin=None)`` -> (exit code, stdout, stderr)."""
    # Tables switch to numbered columns when narrower than the terminal; pin the width so the
    # layout asserted below does not depend on who runs the tests (pytest-xdist sets COLUMNS).
    monkeypatch.setenv("COLUMNS", "120")

    def _run(*argv: str, stdin: str | None = None) -> tuple[int, str, str]:
        code = cli_main.main(list(argv), stdin=io.StringIO(stdin) if stdin is not None else None)
        out, err = capsys.readouterr()
        return code, out, err

    return _run


def test_version(run: Run) -> None:
    code, out, _ = run("--version")
    assert code == 0
    assert out.startswith("stockade ")


def test_no_command_is_a_usage_error(run: Run) -> None:
    code, out, err = run()
    assert code == 2
    assert out == ""
    assert "usage: stockade" in err


# --- explain ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "first_line", "mentions"),
    [
        pytest.param(
            ["--from", "web/web-1", "--to", "api/api-2", "--port", "9090"],
            "ALLOWED  web/web-1 -> api/api-2  TCP/9090 (IPv4)",
            ["web/web-egress egress rule 0", "api/api-ingress ingress rule 0"],
            id="allowed",
        ),
        pytest.param(
            ["--from", "web/web-1", "--to", "db/postgres-0", "--port", "5432"],
            "BLOCKED  web/web-1 -> db/postgres-0  TCP/5432 (IPv4)",
            ["isolated for egress by web/default-deny, web/web-egress", "db/db-ingress"],
            id="blocked",
        ),
        pytest.param(
            ["--from", "api/api-1", "--to", "db/postgres-0", "--port", "postgres"],
            "ALLOWED  api/api-1 -> db/postgres-0  TCP/5432 (IPv4)",
            ["db/db-ingress ingress rule 0"],
            id="named-port-resolved-on-destination",
        ),
        pytest.param(
            ["--from", "web/web-1", "--to", "kube-system/coredns-1", "--port", "53", "--protocol", "udp"],
            "ALLOWED  web/web-1 -> kube-system/coredns-1  UDP/53 (IPv4)",
            ["web/web-egress egress rule 1"],
            id="udp-dns",
        ),
        pytest.param(
            ["--from", "203.0.113.7", "--to", "web/web-1", "--port", "8080"],
            "ALLOWED  203.0.113.7 -> web/web-1  TCP/8080 (IPv4)",
            ["web/web-ingress ingress rule 0"],
            id="from-an-outside-address",
        ),
        pytest.param(
            ["--from", "10.244.1.10", "--to", "api/api-1", "--port", "9090"],
            "ALLOWED  web/web-1 (10.244.1.10) -> api/api-1  TCP/9090 (IPv4)",
            [],
            id="a-pod-address-is-the-pod",
        ),
        pytest.param(
            ["--from", "api/api-1", "--to", "2001:db8::1", "--port", "443"],
            "ALLOWED  api/api-1 -> 2001:db8::1  TCP/443 (IPv6)",
            ["api/api-egress egress rule 2"],
            id="ipv6-address-picks-the-family",
        ),
        pytest.param(
            ["--from", "api/api-1", "--to", "169.254.169.254", "--port", "443"],
            "BLOCKED  api/api-1 -> 169.254.169.254  TCP/443 (IPv4)",
            [],
            id="except-keeps-metadata-endpoint-out",
        ),
    ],
)
def test_explain_text(run: Run, argv: list[str], first_line: str, mentions: list[str]) -> None:
    code, out, err = run("explain", THREE_TIER, *argv)
    assert code == 0, err
    assert out.splitlines()[0] == first_line
    for text in mentions:
        assert text in out


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(["explain", THREE_TIER, "--output", "json"], id="flag-after-command"),
        pytest.param(["--output", "json", "explain", THREE_TIER], id="global-flag"),
    ],
)
def test_explain_json(run: Run, argv: list[str]) -> None:
    code, out, _ = run(*argv, "--from", "web/web-1", "--to", "db/postgres-0", "--port", "5432")
    assert code == 0
    data = json.loads(out)
    assert data["allowed"] is False
    assert (data["from"], data["to"], data["protocol"], data["port"], data["family"]) == (
        "web/web-1",
        "db/postgres-0",
        "TCP",
        5432,
        4,
    )
    assert data["ingress"]["isolating"] == ["db/db-ingress", "db/default-deny"]
    assert data["ingress"]["allowed"] is False
    assert data["explanation"].startswith("BLOCKED")


def test_explain_workload_by_name(run: Run) -> None:
    code, out, err = run("explain", WORKLOADS, "--from", "shop/cart", "--to", "shop/redis", "--port", "redis")
    assert code == 0
    assert out.startswith("ALLOWED  shop/cart -> shop/redis  TCP/6379")
    assert "skipped 1 Service object" in err


@pytest.mark.parametrize(
    ("workload", "port", "first_line"),
    [
        pytest.param(
            "shop/cart",
            "8081",
            "BLOCKED  shop/cart -> shop/cart (another replica)  TCP/8081 (IPv4)",
            id="cart-replicas-isolated",
        ),
        pytest.param(
            "shop/redis",
            "cluster-bus",
            "ALLOWED  shop/redis -> shop/redis (another replica)  TCP/16379 (IPv4)",
            id="redis-replicas-allowed",
        ),
    ],
)
def test_explain_workload_to_itself_is_replica_to_replica(
    run: Run, workload: str, port: str, first_line: str
) -> None:
    """As in the matrix's diagonal: a workload stands for every replica, so this is two pods."""
    code, out, _ = run("explain", WORKLOADS, "--from", workload, "--to", workload, "--port", port)
    assert code == 0
    assert out.splitlines()[0] == first_line


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        pytest.param(
            ["--from", "web-1", "--to", "api/api-1", "--port", "80"], "--from 'web-1': expected", id="no-ns"
        ),
        pytest.param(
            ["--from", "web/web-1", "--to", "a/b/c", "--port", "80"], "--to 'a/b/c'", id="two-slashes"
        ),
        pytest.param(
            ["--from", "web/web1", "--to", "api/api-1", "--port", "80"],
            "source pod web/web1 is not in the model; did you mean web/web-1?",
            id="unknown-pod",
        ),
        pytest.param(
            ["--from", "web/web-1", "--to", "api/api-1", "--port", "http"],
            "--port 'http': api/api-1 has no single TCP port of that name (api-http=TCP/9090)",
            id="unknown-named-port",
        ),
        pytest.param(
            ["--from", "web/web-1", "--to", "api/ap-1", "--port", "http"],
            "destination pod api/ap-1 is not in the model; did you mean api/api-1",
            id="named-port-on-an-unknown-pod",
        ),
        pytest.param(
            ["--from", "web/web-1", "--to", "10.1.2.3", "--port", "http"],
            "a named port needs a pod as --to",
            id="named-port-to-an-address",
        ),
        pytest.param(
            ["--from", "web/web-1", "--to", "api/api-1", "--port", "0"], "from 1 to 65535", id="port-0"
        ),
        pytest.param(
            ["--from", "10.0.0.1", "--to", "fd00::1", "--port", "80"],
            "different families",
            id="mixed-families",
        ),
        pytest.param(
            ["--from", "10.0.0.1", "--to", "api/api-1", "--port", "80", "--family", "6"],
            "is an IPv4 address, but IPv6 was asked for",
            id="family-mismatch",
        ),
        pytest.param(
            ["--from", "web/web-1", "--to", "api/api-1", "--port", "80", "--protocol", "icmp"],
            "'icmp' is not tcp, udp or sctp",
            id="bad-protocol",
        ),
    ],
)
def test_explain_usage_errors(run: Run, argv: list[str], message: str) -> None:
    code, out, err = run("explain", THREE_TIER, *argv)
    assert code == 2
    assert out == ""
    assert message in err
    assert "Traceback" not in err


# --- matrix -------------------------------------------------------------------------------------------


def test_matrix_text(run: Run) -> None:
    code, out, _ = run("matrix", THREE_TIER, "--ports", "tcp/9090,udp/53")
    assert code == 0
    lines = out.splitlines()
    assert "TCP/9090 UDP/53" in lines[1]
    web = next(line for line in lines if line.startswith("web/web-1"))
    # to api-1, api-2 (9090 only), db (nothing), coredns (DNS only), itself
    assert web.split() == ["web/web-1", "+-", "+-", "--", "-+", ".."]


def test_matrix_json(run: Run) -> None:
    code, out, _ = run("matrix", WORKLOADS, "--output", "json")
    assert code == 0
    data = json.loads(out)
    assert data["ports"] == ["TCP/6379", "TCP/8080", "TCP/8081", "TCP/16379"]
    assert [p["name"] for p in data["pods"]] == [
        "shop/cart",
        "shop/frontend",
        "shop/nightly-report",
        "shop/redis",
    ]
    assert data["allowed"]["shop/redis"]["shop/redis"] == {
        "TCP/6379": True,
        "TCP/8080": False,
        "TCP/8081": False,
        "TCP/16379": True,
    }
    assert data["allowed"]["shop/frontend"]["shop/redis"]["TCP/6379"] is False


def test_matrix_ipv6(run: Run) -> None:
    code, out, _ = run("matrix", THREE_TIER, "--family", "6", "--ports", "9090")
    assert code == 0
    assert out.startswith("Connectivity (IPv6)")


# Two IPv6-only pods; b admits its /64 only. An IPv4 answer would be BLOCKED, and no packet sees it.
IPV6_ONLY = """\
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: x}
spec: {nodeName: n1}
status: {podIPs: [{ip: "fd00::a"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: b, namespace: x, labels: {app: b}}
spec: {nodeName: n1}
status: {podIPs: [{ip: "fd00::b"}]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: b, namespace: x}
spec:
  podSelector: {matchLabels: {app: b}}
  ingress: [{from: [{ipBlock: {cidr: "fd00::/64"}}]}]
"""


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        pytest.param(
            ["explain", "--from", "x/a", "--to", "x/b", "--port", "80"],
            "ALLOWED  x/a -> x/b  TCP/80 (IPv6)",
            id="explain",
        ),
        pytest.param(["matrix"], "Connectivity (IPv6): rows are sources, columns destinations.", id="matrix"),
        pytest.param(["diff", "-"], "Connectivity (IPv6; ports TCP/80):", id="diff"),
    ],
)
def test_ipv6_only_pods_are_answered_in_ipv6(
    run: Run, tmp_path: Path, argv: list[str], expected: str
) -> None:
    manifests = tmp_path / "v6.yaml"
    manifests.write_text(IPV6_ONLY)
    command, *rest = argv
    code, out, _ = run(
        command, str(manifests), *rest, *(["--ports", "80"] if command != "explain" else []), stdin=IPV6_ONLY
    )
    assert code == 0
    assert out.splitlines()[0] == expected


@pytest.mark.parametrize(
    ("ports", "message"),
    [
        pytest.param("tcp/http", "--ports: 'tcp/http': the port must be a number", id="named"),
        pytest.param("icmp/8", "unknown protocol 'icmp'", id="protocol"),
        pytest.param(",", "--ports: no ports given", id="empty"),
    ],
)
def test_matrix_bad_ports(run: Run, ports: str, message: str) -> None:
    code, out, err = run("matrix", THREE_TIER, "--ports", ports)
    assert (code, out) == (2, "")
    assert message in err


# --- compile ------------------------------------------------------------------------------------------


def test_compile_defaults_to_the_only_node(run: Run) -> None:
    code, out, _ = run("compile", DEFAULT_DENY)
    assert code == 0
    assert "table inet stockade" in out
    code_named, out_named, _ = run("compile", DEFAULT_DENY, "--node", "node-1")
    assert (code_named, out_named) == (0, out)


def test_compile_json(run: Run) -> None:
    code, out, _ = run("compile", DEFAULT_DENY, "-o", "json")
    assert code == 0
    assert "nftables" in json.loads(out)
    assert run("--output", "json", "compile", DEFAULT_DENY)[1] == out


@pytest.mark.parametrize(
    ("node", "note"),
    [
        pytest.param(
            "spec: {}", "node 'n1' has no podCIDRs: compiled without fail-closed rules", id="no-podcidrs"
        ),
        pytest.param(
            "", "node 'n1' is not in the model: compiled without fail-closed rules", id="no-node-object"
        ),
    ],
)
def test_compile_says_on_stderr_when_it_cannot_fail_closed(
    run: Run, tmp_path: Path, node: str, note: str
) -> None:
    """Not only as a comment in the nft text: JSON and ``--output-file`` would hide it."""
    manifests = tmp_path / "cluster.yaml"
    pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {nodeName: n1}\nstatus: {podIP: 10.0.0.1}\n"
    manifests.write_text(
        pod + (f"---\napiVersion: v1\nkind: Node\nmetadata: {{name: n1}}\n{node}\n" if node else "")
    )
    code, out, err = run("compile", str(manifests), "-o", "json")
    assert code == 0 and "nftables" in json.loads(out)
    assert f"stockade: {note}\n" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        pytest.param(
            [], "the manifests have 2 nodes; pick one with --node (node-a, node-b)", id="node-required"
        ),
        pytest.param(
            ["--node", "node-c"], "unknown node 'node-c'; known nodes: node-a, node-b", id="unknown-node"
        ),
    ],
)
def test_compile_node_errors(run: Run, argv: list[str], message: str) -> None:
    code, out, err = run("compile", THREE_TIER, *argv)
    assert (code, out) == (2, "")
    assert message in err


def test_compile_to_a_file(run: Run, tmp_path: Path) -> None:
    target = tmp_path / "node-a.nft"
    code, out, err = run("compile", THREE_TIER, "--node", "node-a", "--output-file", str(target))
    assert (code, out) == (0, "")
    assert f"wrote {target}" in err
    assert target.read_text() == run("compile", THREE_TIER, "--node", "node-a")[1]
    assert [p.name for p in tmp_path.iterdir()] == ["node-a.nft"], "no temporary file is left behind"


def test_compile_with_bad_input_writes_nothing(run: Run, tmp_path: Path) -> None:
    target = tmp_path / "out.nft"
    target.write_text("previous ruleset\n")
    code, out, err = run("compile", str(EXAMPLES / "bad" / "port-range.yaml"), "--output-file", str(target))
    assert (code, out) == (2, "")
    assert "spec.ingress[0].ports[0].endPort" in err
    assert target.read_text() == "previous ruleset\n"


def test_compile_into_a_missing_directory(run: Run, tmp_path: Path) -> None:
    code, _, err = run("compile", DEFAULT_DENY, "--output-file", str(tmp_path / "no" / "such.nft"))
    assert code == 2
    assert "cannot write" in err


# --- reading input ------------------------------------------------------------------------------------

NAMESPACE = "apiVersion: v1\nkind: Namespace\nmetadata: {name: %s}\n"


def test_input_errors_are_all_reported_and_stdout_stays_empty(run: Run) -> None:
    code, out, err = run("matrix", str(EXAMPLES / "bad"))
    assert (code, out) == (2, "")
    lines = err.splitlines()
    assert lines[-1].startswith("stockade: 10 problem(s) in the input")
    assert sorted({line.split(":")[0] for line in lines[:-1]}) == sorted(
        str(p) for p in (EXAMPLES / "bad").glob("*.yaml")
    )


def test_missing_paths_are_all_named(run: Run, tmp_path: Path) -> None:
    code, out, err = run("matrix", str(tmp_path / "a.yaml"), DEFAULT_DENY, str(tmp_path / "b"))
    assert (code, out) == (2, "")
    assert err.splitlines() == [
        f"stockade matrix: {tmp_path / 'a.yaml'}: no such file or directory",
        f"stockade matrix: {tmp_path / 'b'}: no such file or directory",
    ]


def test_directories_are_read_recursively_in_sorted_order(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / "a.yml").write_text(NAMESPACE % "a")
    (tmp_path / "b" / "c.json").write_text(
        '{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "c"}}'
    )
    (tmp_path / "b" / "notes.txt").write_text("not: [a manifest")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "config.yaml").write_text("not: [yaml")
    (tmp_path / "B.YAML").write_text(NAMESPACE % "upper")
    sources, notes = files.read_sources([str(tmp_path)], io.StringIO())
    assert [name for name, _ in sources] == [str(tmp_path / n) for n in ("B.YAML", "a.yml", "b/c.json")]
    assert notes == []


def test_a_file_given_twice_is_read_once(run: Run) -> None:
    """Its objects are not duplicates of themselves (a directory and a file in it, say)."""
    pods = str(EXAMPLES / "default-deny" / "pods.yaml")
    code, out, err = run("matrix", DEFAULT_DENY, pods)
    assert code == 0
    assert f"stockade: {pods}: already read as {pods}; read once\n" in err
    assert out == run("matrix", DEFAULT_DENY)[1]


def test_an_empty_directory_is_a_note(tmp_path: Path) -> None:
    sources, notes = files.read_sources([str(tmp_path)], io.StringIO())
    assert sources == []
    assert notes == [f"{tmp_path}: no manifests (*.yaml, *.yml, *.json) in this directory"]


def test_stdin(run: Run) -> None:
    manifests = (EXAMPLES / "default-deny" / "pods.yaml").read_text()
    code, out, _ = run("matrix", "-", "--ports", "9090", stdin=manifests)
    assert code == 0
    assert "shop/backend" in out


def test_stdin_errors_name_stdin(run: Run) -> None:
    code, _, err = run("matrix", "-", stdin="kind: Pod\napiVersion: v1\nmetadata: {name: Bad_Name}\n")
    assert code == 2
    assert err.startswith("<stdin>: Pod default/Bad_Name: metadata.name:")


def test_internal_errors_exit_70_without_traceback(run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise ZeroDivisionError("oops")

    monkeypatch.setattr(offline, "build_matrix", broken)
    code, out, err = run("matrix", DEFAULT_DENY)
    assert (code, out) == (70, "")
    assert "internal error: ZeroDivisionError: oops" in err
    assert "bug in Stockade" in err
    assert "Traceback" not in err


# --- diff ---------------------------------------------------------------------------------------------


def _variant(tmp_path: Path, name: str, replacements: list[tuple[str, str]]) -> str:
    target = tmp_path / name
    shutil.copytree(THREE_TIER, target)
    policies = target / "policies.yaml"
    text = policies.read_text()
    for old, new in replacements:
        assert old in text
        text = text.replace(old, new)
    policies.write_text(text)
    return str(target)


# Variants of examples/three-tier/policies.yaml: (old text, new text) replacements.
# Drop the cloud metadata endpoint from the api's egress `except` list: widens egress.
OPEN_METADATA = [(", 169.254.169.254/32]", "]")]
# Let the web tier reach the database directly (egress on web, ingress on db): widens.
DB_FROM_WEB = [
    (
        """            matchLabels: {team: api}
          podSelector:
            matchLabels: {app: api}
      ports:
        - {protocol: TCP, port: postgres}""",
        """            matchLabels: {team: api}
          podSelector:
            matchLabels: {app: api}
        - namespaceSelector:
            matchLabels: {team: web}
      ports:
        - {protocol: TCP, port: postgres}""",
    ),
    (
        """      ports:
        - {protocol: TCP, port: api-http}
    - to:""",
        """      ports:
        - {protocol: TCP, port: api-http}
    - to:
        - namespaceSelector: {}
          podSelector:
            matchLabels: {app: postgres}
      ports:
        - {protocol: TCP, port: 5432}
    - to:""",
    ),
]
# Take UDP DNS away from the web tier: narrows only.
NO_DNS_FOR_WEB = [
    (
        "        - {protocol: UDP, port: 53}\n        - {protocol: TCP, port: 53}\n---\n# The api accepts",
        "        - {protocol: TCP, port: 53}\n---\n# The api accepts",
    )
]


def test_diff_without_changes(run: Run) -> None:
    code, out, _ = run("diff", THREE_TIER, THREE_TIER, "--fail-on", "any")
    assert code == 0
    assert "no pair gained or lost access" in out
    assert "Ruleset: not compared (2 nodes; pick one with --node)" in out


def test_diff_widened_fails_when_asked(run: Run, tmp_path: Path) -> None:
    new = _variant(tmp_path, "new", DB_FROM_WEB)
    code, out, err = run("diff", THREE_TIER, new, "--node", "node-b", "--fail-on", "widened")
    assert code == 1
    assert (
        "  + web/web-1 -> db/postgres-0 TCP/5432"
        " (allowed by web/web-egress egress[1]; allowed by db/db-ingress ingress[0])\n"
    ) in out
    assert "Ruleset of node node-b:" in out
    assert "failing as asked by --fail-on widened: 1 pair(s) gained access" in err
    assert run("diff", THREE_TIER, new, "--node", "node-b")[0] == 0, "without --fail-on a diff succeeds"


def test_diff_dropping_a_port_list_is_widened(run: Run, tmp_path: Path) -> None:
    """``ports: [http]`` to every port opens ports that no policy or container names."""
    new = _variant(tmp_path, "new", [("    - ports:\n        - {protocol: TCP, port: http}", "    - {}")])
    code, out, err = run("diff", THREE_TIER, new, "--fail-on", "widened")
    assert code == 1
    assert "  + kube-system/coredns-1 -> web/web-1 TCP/1 (allowed by web/web-ingress ingress[0])\n" in out
    assert "probed SCTP/1 TCP/1 UDP/1 for every port of its protocol" in err


def test_diff_lost_only_is_not_widened(run: Run, tmp_path: Path) -> None:
    new = _variant(tmp_path, "new", NO_DNS_FOR_WEB)
    code, out, _ = run("diff", THREE_TIER, new, "--fail-on", "widened")
    assert code == 0
    assert (
        "  - web/web-1 -> kube-system/coredns-1 UDP/53 (web/web-1 egress: was allowed by web/web-egress"
        " egress[1], now isolated by web/default-deny, web/web-egress)\n"
    ) in out
    assert "Summary: 0 gained, 1 lost, 0 pods added, 0 removed." in out
    assert run("diff", THREE_TIER, new, "--fail-on", "any")[0] == 1


def test_diff_metadata_endpoint(run: Run, tmp_path: Path) -> None:
    new = _variant(tmp_path, "new", OPEN_METADATA)
    code, out, _ = run("--output", "json", "diff", THREE_TIER, new, "--node", "node-a")
    assert code == 0
    data = json.loads(out)
    assert [(c["from"], c["to"], c["port"], c["address"]) for c in data["connectivity"]["gained"]] == [
        ("api/api-1", "169.254.169.254/32", 443, "169.254.169.254"),
        ("api/api-2", "169.254.169.254/32", 443, "169.254.169.254"),
    ]
    assert data["widened"] is True
    assert data["ruleset"]["node"] == "node-a"
    assert data["ruleset"]["changed"] is True
    assert "169.254.169.254" in data["ruleset"]["diff"]


def test_diff_reports_problems_of_both_sides(run: Run, tmp_path: Path) -> None:
    old = tmp_path / "old.yaml"
    new = tmp_path / "new.yaml"
    old.write_text(NAMESPACE % "Bad_Old")
    new.write_text(NAMESPACE % "Bad_New")
    code, out, err = run("diff", str(old), str(new))
    assert (code, out) == (2, "")
    assert f"{old}: Namespace Bad_Old: metadata.name" in err
    assert f"{new}: Namespace Bad_New: metadata.name" in err


def test_diff_reads_stdin_for_one_side_only(run: Run) -> None:
    manifests = (EXAMPLES / "default-deny" / "pods.yaml").read_text()
    code, out, _ = run("diff", "-", DEFAULT_DENY, "--fail-on", "widened", stdin=manifests)
    assert code == 0, "adding policies to bare pods only narrows access"
    assert "  - shop/toolbox -> shop/backend TCP/9090" in out
    code, out, err = run("diff", "-", "-", stdin=manifests)
    assert (code, out) == (2, "")
    assert "only one of OLD and NEW can be - (stdin)" in err


def test_diff_unknown_node(run: Run) -> None:
    code, _, err = run("diff", THREE_TIER, DEFAULT_DENY, "--node", "nope")
    assert code == 2
    assert "unknown node 'nope'; known nodes: node-1, node-a, node-b" in err


# --- kubectl's conventions: -o/--output, --output-file, -f, explain --exit-code ---------------------

# One invocation of every command, on the examples.
COMPILE = ["compile", DEFAULT_DENY]
EXPLAIN = ["explain", THREE_TIER, "--from", "web/web-1", "--to", "api/api-2", "--port", "9090"]
MATRIX = ["matrix", THREE_TIER, "--ports", "tcp/9090,udp/53"]
DIFF = ["diff", THREE_TIER, str(EXAMPLES / "three-tier-change"), "--node", "node-a"]
COMMANDS = [pytest.param(argv, id=argv[0]) for argv in (COMPILE, EXPLAIN, MATRIX, DIFF)]


@pytest.mark.parametrize("argv", COMMANDS)
def test_output_yaml_is_the_json_document(run: Run, argv: list[str]) -> None:
    json_code, json_out, _ = run(*argv, "-o", "json")
    yaml_code, yaml_out, _ = run(*argv, "-o", "yaml")
    assert (json_code, yaml_code) == (0, 0)
    assert yaml.safe_load(yaml_out) == json.loads(json_out)
    assert not yaml_out.lstrip().startswith("{"), "block style, not JSON (which is also YAML)"


@pytest.mark.parametrize("argv", COMMANDS)
def test_output_text_is_the_default(run: Run, argv: list[str]) -> None:
    code, out, _ = run(*argv)
    assert code == 0
    assert run(*argv, "-o", "text")[1] == out
    with pytest.raises(json.JSONDecodeError):
        json.loads(out)


@pytest.mark.parametrize(
    "spelling",
    [
        pytest.param(["-o", "json"], id="-o json"),
        pytest.param(["-ojson"], id="-ojson"),
        pytest.param(["--output", "json"], id="--output json"),
        pytest.param(["--output=json"], id="--output=json"),
    ],
)
@pytest.mark.parametrize("argv", COMMANDS)
def test_output_flag_spellings(run: Run, argv: list[str], spelling: list[str]) -> None:
    """As kubectl parses ``-o``; ``--output`` before the command is accepted too."""
    code, out, _ = run(*argv, *spelling)
    assert code == 0
    json.loads(out)
    assert run("--output", "json", *argv)[1] == out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        pytest.param(
            ["compile", DEFAULT_DENY, "-o", "/tmp/node-1.nft"],
            "stockade compile: error: argument -o/--output: '/tmp/node-1.nft' is not an output format"
            " (text, json, yaml); to write to a file, use --output-file /tmp/node-1.nft",
            id="compile -o FILE (the old meaning)",
        ),
        pytest.param(
            ["compile", DEFAULT_DENY, "--format", "json"],
            "stockade compile: error: --format: replaced by -o/--output text|json|yaml",
            id="compile --format (replaced)",
        ),
        pytest.param(
            ["matrix", DEFAULT_DENY, "-o", "wide"],
            "stockade matrix: error: argument -o/--output: 'wide' is not an output format",
            id="unknown format",
        ),
        pytest.param(
            ["--output", "json", "matrix", DEFAULT_DENY, "-o", "yaml"],
            "stockade matrix: --output json (before the command) and -o/--output yaml disagree",
            id="two formats",
        ),
        pytest.param(
            ["diff", DEFAULT_DENY, "-f", DEFAULT_DENY],
            "stockade diff: error: -f: diff takes its two sides as positional paths: OLD NEW",
            id="diff -f",
        ),
        pytest.param(
            ["matrix"],
            "stockade matrix: no manifests given: name files or directories as PATH or -f FILE (- for stdin)",
            id="no manifests",
        ),
        pytest.param(
            ["matrix", "-", "-f", "-"],
            "stockade matrix: -: stdin is given more than once; it can be read only once",
            id="stdin twice",
        ),
    ],
)
def test_flag_usage_errors(run: Run, argv: list[str], message: str) -> None:
    code, out, err = run(*argv, stdin="")
    assert (code, out) == (2, "")
    assert message in err.splitlines()[-1]


@pytest.mark.parametrize(
    ("argv", "exit_code"),
    [
        pytest.param(COMPILE, 0, id="compile"),
        pytest.param(EXPLAIN, 0, id="explain"),
        pytest.param(
            [
                "explain",
                THREE_TIER,
                "--from",
                "web/web-1",
                "--to",
                "db/postgres-0",
                "--port",
                "5432",
                "--exit-code",
            ],
            1,
            id="explain --exit-code, blocked",
        ),
        pytest.param(MATRIX, 0, id="matrix"),
        pytest.param(DIFF, 0, id="diff"),
        pytest.param([*DIFF, "--fail-on", "widened"], 1, id="diff --fail-on widened, failing"),
    ],
)
@pytest.mark.parametrize("fmt", ["text", "json", "yaml"])
def test_output_file_holds_what_stdout_would(
    run: Run, tmp_path: Path, argv: list[str], exit_code: int, fmt: str
) -> None:
    """Written also when the exit status is 1: the answer is complete, it is only a verdict."""
    target = tmp_path / "out"
    expected_code, expected, _ = run(*argv, "-o", fmt)
    code, out, err = run(*argv, "-o", fmt, "--output-file", str(target))
    assert (code, out) == (exit_code, "") and expected_code == exit_code
    assert err.splitlines()[-1] == f"stockade: wrote {target}"
    assert target.read_text() == expected
    assert [p.name for p in tmp_path.iterdir()] == ["out"], "no temporary file is left behind"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        pytest.param(["compile", str(EXAMPLES / "bad")], "problem(s) in the input", id="bad input"),
        pytest.param(["compile", THREE_TIER], "pick one with --node", id="usage error"),
        pytest.param(["matrix", "no/such/dir"], "no such file or directory", id="missing path"),
        pytest.param(
            ["explain", THREE_TIER, "--from", "web/nope", "--to", "api/api-1", "--port", "80"],
            "not in the model",
            id="unknown pod",
        ),
        pytest.param(
            ["diff", DEFAULT_DENY, "no/such/dir"], "no such file or directory", id="diff, missing side"
        ),
    ],
)
def test_output_file_is_untouched_when_the_command_fails(
    run: Run, tmp_path: Path, argv: list[str], message: str
) -> None:
    target = tmp_path / "out"
    target.write_text("the last good output\n")
    code, out, err = run(*argv, "--output-file", str(target))
    assert (code, out) == (2, "")
    assert message in err
    assert "wrote" not in err
    assert target.read_text() == "the last good output\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


DD_PODS = str(EXAMPLES / "default-deny" / "pods.yaml")
DD_POLICIES = str(EXAMPLES / "default-deny" / "policies.yaml")
DD_CLUSTER = str(EXAMPLES / "default-deny" / "cluster.yaml")


@pytest.mark.parametrize(
    ("sources", "stdin"),
    [
        pytest.param(["-f", DEFAULT_DENY], None, id="-f DIR"),
        pytest.param(["--filename", DEFAULT_DENY], None, id="--filename DIR"),
        pytest.param(["-f", DD_PODS, "-f", DD_POLICIES, "-f", DD_CLUSTER], None, id="-f FILE repeated"),
        pytest.param([DD_PODS, "-f", DD_POLICIES, DD_CLUSTER], None, id="-f next to positional paths"),
        pytest.param(["-f", "-", DD_POLICIES, DD_CLUSTER], DD_PODS, id="-f - (stdin)"),
    ],
)
@pytest.mark.parametrize("command", ["compile", "matrix"])
def test_filename_flag_reads_what_paths_read(
    run: Run, command: str, sources: list[str], stdin: str | None
) -> None:
    code, out, err = run(command, *sources, stdin=Path(stdin).read_text() if stdin else None)
    assert code == 0, err
    assert out == run(command, DEFAULT_DENY)[1]


def test_filename_flag_on_explain(run: Run) -> None:
    argv = ["--from", "shop/frontend", "--to", "shop/backend", "--port", "9090"]
    code, out, _ = run("explain", "-f", DD_PODS, "-f", DD_POLICIES, *argv)
    assert code == 0
    assert out == run("explain", DEFAULT_DENY, *argv)[1]
    assert out.startswith("ALLOWED")


@pytest.mark.parametrize(
    ("pair", "flags", "exit_code", "first_line"),
    [
        pytest.param(("web/web-1", "api/api-2", "9090"), [], 0, "ALLOWED", id="allowed"),
        pytest.param(
            ("web/web-1", "api/api-2", "9090"), ["--exit-code"], 0, "ALLOWED", id="allowed, --exit-code"
        ),
        pytest.param(("web/web-1", "db/postgres-0", "5432"), [], 0, "BLOCKED", id="blocked"),
        pytest.param(
            ("web/web-1", "db/postgres-0", "5432"), ["--exit-code"], 1, "BLOCKED", id="blocked, --exit-code"
        ),
        pytest.param(
            ("web/web-1", "db/postgres-0", "5432"), ["--exit-code", "-o", "json"], 1, "{", id="blocked, json"
        ),
        pytest.param(("web/web-1", "api/nope", "80"), ["--exit-code"], 2, "", id="unknown pod, --exit-code"),
    ],
)
def test_explain_exit_code(
    run: Run, pair: tuple[str, str, str], flags: list[str], exit_code: int, first_line: str
) -> None:
    """Like ``kubectl auth can-i``: a script can branch on the status; the answer is still printed."""
    src, dst, port = pair
    code, out, _ = run("explain", THREE_TIER, "--from", src, "--to", dst, "--port", port, *flags)
    assert code == exit_code
    assert out.startswith(first_line) if first_line else out == ""


# "stockade compile: compile: ...", "stockade: stockade matrix: ...": a prefix said twice.
_DOUBLED = re.compile(r"stockade( \w+)?: (error: )?(stockade|compile|explain|matrix|diff)\b")


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(["compile", THREE_TIER], id="usage error"),
        pytest.param(["compile", DEFAULT_DENY, "-o", "x.nft"], id="argparse error"),
        pytest.param(["compile", DEFAULT_DENY, "--format", "json"], id="replaced flag"),
        pytest.param(["matrix", "a.yaml", "b.yaml"], id="two missing paths"),
        pytest.param(["matrix", THREE_TIER, "--ports", "icmp/8"], id="bad --ports"),
        pytest.param(["explain", THREE_TIER, "--from", "x", "--to", "y", "--port", "1"], id="bad --from"),
        pytest.param(["diff", "-", "-"], id="diff stdin twice"),
        pytest.param(["compile", str(EXAMPLES / "bad" / "port-range.yaml")], id="bad input"),
    ],
)
def test_errors_are_printed_once_with_one_prefix(run: Run, argv: list[str]) -> None:
    code, out, err = run(*argv, stdin="")
    assert (code, out) == (2, "")
    problems = [line for line in err.splitlines() if not line.startswith(("usage:", " "))]
    assert problems
    assert len(problems) == len(set(problems)), f"a problem printed twice:\n{err}"
    for line in problems:
        assert not _DOUBLED.match(line), line


# --- the installed console script ---------------------------------------------------------------------


def test_console_script() -> None:
    script = Path(sys.executable).parent / "stockade"
    ok = subprocess.run(
        [str(script), "explain", THREE_TIER, "--from", "web/web-1", "--to", "api/api-1", "--port", "9090"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert (ok.returncode, ok.stderr) == (0, "")
    assert ok.stdout.startswith("ALLOWED")
    bad = subprocess.run(
        [str(script), "compile", str(EXAMPLES / "bad")], capture_output=True, text=True, check=False
    )
    assert (bad.returncode, bad.stdout) == (2, "")
    assert "Traceback" not in bad.stderr


@pytest.mark.parametrize("argv", COMMANDS)
def test_offline_commands_import_no_node_side_packages(argv: list[str]) -> None:
    """So `pip install .` (without the node extra) is all the offline CLI needs."""
    code = (
        "import sys, controller.cli.main as m\n"
        f"assert m.main({[*argv, '-o', 'yaml']!r}) == 0\n"
        "node_side = ('kopf', 'pyroute2', 'nftables', 'kubernetes', 'prometheus_client')\n"
        "bad = sorted(n for n in sys.modules if n.split('.')[0] in node_side)\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("argv", "stdin", "exit_code", "stdout_start"),
    [
        pytest.param(
            ["matrix", "-f", "-", "--ports", "9090"],
            (EXAMPLES / "default-deny" / "pods.yaml").read_text(),
            0,
            "Connectivity (IPv4)",
            id="matrix -f - (a pipe)",
        ),
        pytest.param(
            [
                "explain",
                THREE_TIER,
                "--from",
                "web/web-1",
                "--to",
                "db/postgres-0",
                "--port",
                "5432",
                "--exit-code",
            ],
            "",
            1,
            "BLOCKED",
            id="explain --exit-code, blocked",
        ),
        pytest.param(["compile", DEFAULT_DENY, "-o", "yaml"], "", 0, "nftables:\n", id="compile -o yaml"),
    ],
)
def test_console_script_as_a_user_runs_it(
    argv: list[str], stdin: str, exit_code: int, stdout_start: str
) -> None:
    script = Path(sys.executable).parent / "stockade"
    result = subprocess.run([str(script), *argv], input=stdin, capture_output=True, text=True, check=False)
    assert (result.returncode, result.stderr) == (exit_code, "")
    assert result.stdout.startswith(stdout_start)
