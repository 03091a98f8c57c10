"""The connectivity matrix: probes, pair tables (with workload replicas), and its text and JSON forms."""

from __future__ import annotations

import textwrap

import pytest

from compiler.cluster import ClusterModel
from compiler.loader import load_manifests
from compiler.matrix import (
    Probe,
    build_matrix,
    container_probes,
    default_probes,
    parse_probe,
    parse_probes,
    policy_probes,
    unnamed_port_probes,
)
from compiler.semantics import Peer, evaluate
from controller.cli.output import matrix_json, matrix_text


def _model(*fragments: str) -> ClusterModel:
    """A model from YAML fragments, each indented as it likes."""
    text = "".join(textwrap.dedent(f) for f in fragments)
    return load_manifests([("test.yaml", text)]).model


def _pod(ns: str, name: str, labels: str, ip: str, ports: str = "[]") -> str:
    return f"""
    ---
    apiVersion: v1
    kind: Pod
    metadata: {{name: {name}, namespace: "{ns}", labels: {labels}}}
    spec:
      nodeName: n1
      containers: [{{name: c, ports: {ports}}}]
    status: {{podIP: {ip}}}
    """


def _policy(ns: str, name: str, spec: str) -> str:
    return f"""
    ---
    apiVersion: networking.k8s.io/v1
    kind: NetworkPolicy
    metadata: {{name: {name}, namespace: "{ns}"}}
    spec: {spec}
    """


WORLD = (
    _pod("x", "a", "{app: a}", "10.244.1.2", "[{containerPort: 80}]"),
    _pod("x", "b", "{app: b}", "10.244.1.3", "[{containerPort: 53, protocol: UDP}]"),
    _pod("y", "c", "{app: c}", "10.244.1.4"),
    _policy("x", "only-a", "{podSelector: {matchLabels: {app: b}}, ingress: [{from: [{podSelector: {}}]}]}"),
    """
        ---
        apiVersion: apps/v1
        kind: Deployment
        metadata: {name: web, namespace: "y"}
        spec:
          selector: {matchLabels: {app: web}}
          template:
            metadata: {labels: {app: web}}
            spec: {containers: [{name: web, ports: [{containerPort: 8080, name: http}]}]}
        """,
    _policy(
        "y", "web-peers", "{podSelector: {matchLabels: {app: web}}, ingress: [{from: [{podSelector: {}}]}]}"
    ),
)


@pytest.mark.parametrize(
    ("text", "probe"),
    [
        pytest.param("80", Probe("TCP", 80), id="bare-port-is-tcp"),
        pytest.param("tcp/443", Probe("TCP", 443), id="lower-case-protocol"),
        pytest.param("UDP/53", Probe("UDP", 53), id="udp"),
        pytest.param(" sctp/9000 ", Probe("SCTP", 9000), id="sctp-with-spaces"),
        pytest.param("65535", Probe("TCP", 65535), id="highest-port"),
    ],
)
def test_parse_probe(text: str, probe: Probe) -> None:
    assert parse_probe(text) == probe


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("icmp/1", "unknown protocol", id="unknown-protocol"),
        pytest.param("tcp/0", "from 1 to 65535", id="port-zero"),
        pytest.param("70000", "from 1 to 65535", id="port-too-high"),
        pytest.param("tcp/http", "from 1 to 65535", id="named-port"),
        pytest.param("", "from 1 to 65535", id="empty"),
    ],
)
def test_parse_probe_rejects(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_probe(text)


def test_parse_probes_keeps_order_and_drops_duplicates() -> None:
    assert parse_probes("udp/53,80,tcp/80,sctp/9000") == (
        Probe("UDP", 53),
        Probe("TCP", 80),
        Probe("SCTP", 9000),
    )
    with pytest.raises(ValueError, match="no ports"):
        parse_probes(" , ")


def test_default_probes_are_container_ports_else_80() -> None:
    model = _model(*WORLD)
    assert container_probes([model]) == (Probe("UDP", 53), Probe("TCP", 80), Probe("TCP", 8080))
    assert default_probes([model]) == container_probes([model])
    assert default_probes([_model(_pod("x", "a", "{}", "10.244.1.2"))]) == (Probe("TCP", 80),)


def test_policy_probes_take_single_ports_and_range_ends() -> None:
    model = _model(
        _policy(
            "x",
            "p",
            "{podSelector: {}, ingress: [{ports: [{port: 8000, endPort: 8080}, {port: http}, "
            "{protocol: UDP, port: 53}, {protocol: SCTP}]}]}",
        )
    )
    assert policy_probes([model]) == (Probe("UDP", 53), Probe("TCP", 8000), Probe("TCP", 8080))


@pytest.mark.parametrize(
    ("ports", "pod_ports", "expected"),
    [
        pytest.param("[{port: 80}, {protocol: UDP, port: 53}]", "[]", (), id="every-port-named"),
        pytest.param(
            "[]",
            "[]",
            (Probe("SCTP", 1), Probe("TCP", 1), Probe("UDP", 1)),
            id="no-ports-opens-every-protocol",
        ),
        pytest.param(
            "[{protocol: TCP}, {port: 1, endPort: 3}]",
            "[{containerPort: 4}]",
            (Probe("TCP", 5),),
            id="skips-ranges-and-container-ports",
        ),
        pytest.param(
            "[{protocol: TCP}, {port: 5, endPort: 9}, {port: 1, endPort: 3}]",
            "[{containerPort: 4}]",
            (Probe("TCP", 10),),
            id="ranges-out-of-order",
        ),
        pytest.param("[{protocol: TCP}, {port: 2, endPort: 5}]", "[]", (Probe("TCP", 1),), id="gap-below"),
        pytest.param("[{protocol: UDP, port: 1, endPort: 65535}, {protocol: UDP}]", "[]", (), id="none-free"),
    ],
)
def test_unnamed_port_probes(ports: str, pod_ports: str, expected: tuple[Probe, ...]) -> None:
    model = _model(
        _pod("x", "a", "{}", "10.244.1.2", pod_ports),
        _policy("x", "p", f"{{podSelector: {{}}, ingress: [{{ports: {ports}}}]}}"),
    )
    assert unnamed_port_probes([model]) == expected


def test_matrix_agrees_with_evaluate_for_every_pair() -> None:
    model = _model(*WORLD)
    matrix = build_matrix(model)
    assert matrix.names() == ("x/a", "x/b", "y/c", "y/web")
    for src in matrix.names():
        for dst in matrix.names():
            cell = matrix.cell(src, dst)
            if src == dst and src != "y/web":
                assert cell is None, "a plain pod's traffic to itself is not part of the matrix"
                continue
            assert cell is not None
            for probe, allowed in zip(matrix.probes, cell, strict=True):
                if src == dst:
                    continue  # replica to replica: checked below
                s_ns, s_name = src.split("/")
                d_ns, d_name = dst.split("/")
                verdict = evaluate(
                    model,
                    src=Peer(s_ns, s_name),
                    dst=Peer(d_ns, d_name),
                    protocol=probe.protocol,
                    port=probe.port,
                )
                assert allowed == verdict.allowed, (src, dst, probe)


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        pytest.param("{podSelector: {}, ingress: [{from: [{podSelector: {}}]}]}", True, id="peers-allowed"),
        pytest.param("{podSelector: {}, policyTypes: [Ingress]}", False, id="default-deny"),
        pytest.param(
            "{podSelector: {}, ingress: [{from: [{podSelector: {matchLabels: {app: other}}}]}]}",
            False,
            id="only-other-pods",
        ),
    ],
)
def test_workload_diagonal_is_replica_to_replica(policy: str, expected: bool) -> None:
    deployment = """
    ---
    apiVersion: apps/v1
    kind: StatefulSet
    metadata: {name: redis, namespace: db}
    spec:
      serviceName: redis
      selector: {matchLabels: {app: redis}}
      template:
        metadata: {labels: {app: redis}}
        spec: {containers: [{name: redis, ports: [{containerPort: 6379}]}]}
    """
    model = _model(deployment, _policy("db", "p", policy))
    matrix = build_matrix(model, probes=[Probe("TCP", 6379)])
    assert matrix.cell("db/redis", "db/redis") == (expected,)
    # The one template pod stands for its replicas: its diagonal is the only (pair, probe).
    assert matrix.counts() == (int(expected), 1)


def test_matrix_leaves_out_a_plain_pod_with_itself() -> None:
    matrix = build_matrix(_model(*WORLD), probes=[Probe("TCP", 80)])
    assert matrix.cell("x/a", "x/a") is None
    assert matrix.cell("x/a", "x/b") is not None
    # 4 pods: 12 ordered pairs of distinct pods, plus y/web's replica-to-replica diagonal.
    assert len(matrix.names()) == 4
    assert matrix.counts()[1] == 4 * 3 + 1


def test_matrix_text_full_names_when_it_fits() -> None:
    matrix = build_matrix(_model(*WORLD), probes=[Probe("TCP", 80), Probe("UDP", 53)])
    text = matrix_text(matrix, width=200)
    lines = text.splitlines()
    assert "TCP/80 UDP/53" in lines[1]
    header = next(line for line in lines if line.lstrip().startswith("x/a"))
    assert header.split() == ["x/a", "x/b", "y/c", "y/web"]
    row = next(line for line in lines if line.startswith("x/a "))
    # x/a: itself; x/b (isolated, but allows pods of x); y/c (not isolated); y/web (only pods of y)
    assert row.split() == ["x/a", "..", "++", "++", "--"]
    assert any(line.startswith("y/web [Deployment]") for line in lines)
    # 12 pairs of distinct pods and y/web's replica pair, 2 ports each; blocked: x/a, x/b -> y/web
    # and y/c, y/web -> x/b.
    assert lines[-1] == "18 of 26 (pair, port) combinations allowed."


def test_matrix_text_numbers_columns_when_wide() -> None:
    matrix = build_matrix(_model(*WORLD), probes=[Probe("TCP", 80)])
    lines = matrix_text(matrix, width=30).splitlines()
    assert "  Columns are numbered as the rows." in lines
    header = next(line for line in lines if line.split()[:2] == ["1", "2"])
    assert header.split() == ["1", "2", "3", "4"]
    assert any(line.split()[:2] == ["3", "y/c"] for line in lines)


def test_matrix_json_is_nested_by_source_and_destination() -> None:
    matrix = build_matrix(_model(*WORLD), probes=[Probe("TCP", 80)])
    data = matrix_json(matrix)
    assert data["ports"] == ["TCP/80"]
    assert data["pods"][0] == {"name": "x/a", "workload": None, "ips": ["10.244.1.2"], "node": "n1"}
    assert data["pods"][3]["workload"] == "Deployment/web"
    assert "x/a" not in data["allowed"]["x/a"]
    assert data["allowed"]["y/web"]["y/web"] == {"TCP/80": True}
    assert data["allowed"]["x/a"]["x/b"] == {"TCP/80": True}


def test_empty_model_has_an_empty_matrix() -> None:
    matrix = build_matrix(ClusterModel())
    assert matrix.names() == ()
    assert "(no pods)" in matrix_text(matrix, width=80)
