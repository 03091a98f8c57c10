"""The reference semantics against Kubernetes NetworkPolicy as upstream documents and tests it."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compiler.cluster import ClusterModel
from compiler.errors import PeerError, UnknownPeerError
from compiler.model import PROTOCOLS, Namespace, NetworkPolicy, Node, Pod, Protocol
from compiler.semantics import Family, Peer, RuleRef, connectivity, evaluate

# --- the world most cases run in -------------------------------------------------------------------
# Namespaces: x (team=a, env=prod), y (team=b), w (env=dev); z is implied (only its name label).
# Nodes n1 (192.168.0.1) and n2 (192.168.0.2); z/host is a host-network pod on n1.


def _pod(
    key: str,
    labels: dict[str, str] | None = None,
    *,
    ips: tuple[str, ...] = (),
    ports: tuple[tuple[str, int, str], ...] = (),
    node: str | None = None,
    host_network: bool = False,
    phase: str | None = "Running",
) -> Pod:
    namespace, name = key.split("/")
    return Pod.model_validate(
        {
            "metadata": {"name": name, "namespace": namespace, "labels": labels or {}},
            "spec": {
                "nodeName": node,
                "hostNetwork": host_network,
                "containers": [
                    {
                        "name": "main",
                        "ports": [{"name": n, "containerPort": p, "protocol": pr} for n, p, pr in ports],
                    }
                ],
            },
            "status": {"phase": phase, "podIPs": [{"ip": ip} for ip in ips]},
        }
    )


def _policy(key: str, spec: dict[str, Any]) -> NetworkPolicy:
    namespace, name = key.split("/")
    return NetworkPolicy.model_validate({"metadata": {"name": name, "namespace": namespace}, "spec": spec})


PODS = (
    _pod(
        "x/web",
        {"app": "web", "tier": "front"},
        ips=("10.0.0.1", "fd00::1"),
        ports=(("http", 8080, "TCP"), ("dns", 53, "UDP")),
        node="n1",
    ),
    _pod("x/db", {"app": "db"}, ips=("10.0.0.2", "fd00::2"), ports=(("pg", 5432, "TCP"),), node="n1"),
    _pod("x/nolabel", {}, ips=("10.0.0.3",), node="n2"),
    _pod("x/client", {"app": "client"}, ips=("10.0.0.4", "fd00::4"), node="n2"),
    _pod("x/template", {"app": "web"}, ports=(("http", 8080, "TCP"),)),
    _pod("y/client", {"app": "client", "tier": "back"}, ips=("10.0.1.1", "fd00:1::1"), node="n2"),
    _pod("y/web", {"app": "web"}, ips=("10.0.1.2",), ports=(("http", 9080, "TCP"),), node="n2"),
    _pod("z/client", {"app": "client"}, ips=("10.0.2.1",), node="n1"),
    _pod(
        "z/host",
        {"app": "agent"},
        ips=("192.168.0.1",),
        ports=(("metrics", 9100, "TCP"),),
        node="n1",
        host_network=True,
    ),
    _pod("w/old", {"app": "client"}, ips=("10.0.1.1",), node="n2", phase="Succeeded"),
)
NAMESPACES = tuple(
    Namespace.model_validate({"metadata": {"name": name, "labels": labels}})
    for name, labels in {"x": {"team": "a", "env": "prod"}, "y": {"team": "b"}, "w": {"env": "dev"}}.items()
)
NODES = tuple(
    Node.model_validate(
        {"metadata": {"name": name}, "status": {"addresses": [{"type": "InternalIP", "address": ip}]}}
    )
    for name, ip in (("n1", "192.168.0.1"), ("n2", "192.168.0.2"))
)


def _world(*policies: NetworkPolicy) -> ClusterModel:
    return ClusterModel(namespaces=NAMESPACES, pods=PODS, policies=policies, nodes=NODES)


def _peer(text: str) -> Peer:
    if "/" in text:
        namespace, name = text.split("/")
        return Peer(namespace=namespace, pod=name)
    return Peer(ip=text)


_PROTOCOL: dict[str, Protocol] = {p: p for p in PROTOCOLS}


def _probe(line: str) -> tuple[Peer, Peer, Protocol, int, Family, bool]:
    """``src -> dst PROTO/port [v6] allow|block``."""
    words = line.split()
    src, arrow, dst, target, *rest = words
    assert arrow == "->" and rest[-1] in ("allow", "block"), line
    name, port = target.split("/")
    family: Family = 6 if rest[:-1] == ["v6"] else 4
    return _peer(src), _peer(dst), _PROTOCOL[name], int(port), family, rest[-1] == "allow"


# Policies several cases use.
DENY_INGRESS_X = _policy("x/deny-ingress", {"podSelector": {}, "policyTypes": ["Ingress"]})
DENY_EGRESS_X = _policy("x/deny-egress", {"podSelector": {}, "policyTypes": ["Egress"]})
DENY_ALL_Z = _policy("z/deny-all", {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]})
WEB_EGRESS_53 = _policy(
    "x/out", {"podSelector": {"matchLabels": {"app": "web"}}, "egress": [{"ports": [{"port": 53}]}]}
)


def _to_web(*rules: dict[str, Any], name: str = "web") -> NetworkPolicy:
    """A policy isolating x's app=web pods for ingress (policyTypes defaulted) with ``rules``."""
    return _policy(f"x/{name}", {"podSelector": {"matchLabels": {"app": "web"}}, "ingress": list(rules)})


def _from(*peers: dict[str, Any], ports: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    rule: dict[str, Any] = {"from": list(peers)}
    if ports is not None:
        rule["ports"] = ports
    return rule


def _from_web(*peers: dict[str, Any]) -> NetworkPolicy:
    return _to_web(_from(*peers))


def _ports_of_web(*ports: dict[str, Any]) -> NetworkPolicy:
    return _to_web({"ports": list(ports)})


def _from_client_y(*rules: dict[str, Any]) -> NetworkPolicy:
    """A policy isolating y's app=client pods for egress with ``rules``."""
    spec = {
        "podSelector": {"matchLabels": {"app": "client"}},
        "policyTypes": ["Egress"],
        "egress": list(rules),
    }
    return _policy("y/client-out", spec)


def _expr(key: str, operator: str, *values: str) -> dict[str, Any]:
    return {"matchExpressions": [{"key": key, "operator": operator, "values": list(values)}]}


TEAM_B = {"matchLabels": {"team": "b"}}
CLIENT = {"matchLabels": {"app": "client"}}


def _case(policies: list[NetworkPolicy], *probes: str, id: str) -> Any:
    return pytest.param(policies, probes, id=id)


# Each case: the policies in force, then probes ``src -> dst PROTO/port [v6] allow|block``.
CASES = [
    # isolation and policyTypes
    _case([], "y/client -> x/web TCP/80 allow", id="no-policy-allows-all"),
    _case(
        [DENY_INGRESS_X],
        "y/client -> x/web TCP/80 block",
        "x/db -> x/web UDP/53 block",
        "x/web -> y/client TCP/80 allow",
        "y/client -> y/web TCP/80 allow",
        id="default-deny-ingress",
    ),
    _case(
        [DENY_EGRESS_X],
        "x/web -> y/client TCP/80 block",
        "x/web -> 203.0.113.7 TCP/443 block",
        "y/client -> x/web TCP/80 allow",
        id="default-deny-egress",
    ),
    _case(
        [_from_web({"podSelector": {}})],
        "x/web -> y/client UDP/53 allow",
        id="policytypes-default-ingress-only",
    ),
    _case(
        [WEB_EGRESS_53],
        "x/web -> y/client TCP/80 block",
        "x/web -> y/client TCP/53 allow",
        "y/client -> x/web TCP/80 block",
        id="policytypes-default-both-with-egress-rules",
    ),
    _case(
        [_policy("x/p", {"podSelector": {}, "policyTypes": ["Egress"], "ingress": [{}]})],
        "y/client -> x/web TCP/80 allow",
        "x/web -> y/client TCP/80 block",
        id="policytypes-egress-ignores-ingress-rules",
    ),
    _case(
        [
            _policy(
                "x/p", {"podSelector": {}, "policyTypes": ["Ingress"], "egress": [{"ports": [{"port": 1}]}]}
            )
        ],
        "x/web -> y/client TCP/80 allow",
        id="policytypes-ingress-ignores-egress-rules",
    ),
    _case(
        [_policy("x/p", {"podSelector": {"matchLabels": {"app": "db"}}, "ingress": []})],
        "y/client -> x/web TCP/80 allow",
        "y/client -> x/db TCP/80 block",
        id="only-selected-pods-isolated",
    ),
    # empty versus missing from / ports
    _case([_to_web()], "x/client -> x/web TCP/80 block", id="empty-ingress-list-allows-nothing"),
    _case(
        [_to_web({})],
        "z/client -> x/web SCTP/9 allow",
        "203.0.113.7 -> x/web TCP/1 allow",
        "z/host -> x/web TCP/1 allow",
        id="empty-rule-allows-everything",
    ),
    _case(
        [_ports_of_web({"port": 80})],
        "z/client -> x/web TCP/80 allow",
        "203.0.113.7 -> x/web TCP/80 allow",
        "z/client -> x/web TCP/81 block",
        id="missing-from-any-source",
    ),
    _case(
        [_from_web({"podSelector": CLIENT})], "x/client -> x/web UDP/5353 allow", id="missing-ports-any-port"
    ),
    # peers
    _case(
        [_from_web({"podSelector": CLIENT})],
        "x/client -> x/web TCP/80 allow",
        "y/client -> x/web TCP/80 block",
        id="podselector-only-own-namespace",
    ),
    _case(
        [_from_web({"podSelector": {}})],
        "x/nolabel -> x/web TCP/80 allow",
        "y/client -> x/web TCP/80 block",
        id="podselector-empty-whole-namespace",
    ),
    _case(
        [_from_web({"namespaceSelector": TEAM_B})],
        "y/web -> x/web TCP/80 allow",
        "y/client -> x/web TCP/80 allow",
        "x/client -> x/web TCP/80 block",
        id="namespaceselector-only-all-pods",
    ),
    _case(
        [_from_web({"namespaceSelector": {}})],
        "z/client -> x/web TCP/80 allow",
        "x/client -> x/web TCP/80 allow",
        id="namespaceselector-empty-every-namespace",
    ),
    _case(
        [_from_web({"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "z"}}})],
        "z/client -> x/web TCP/80 allow",
        "y/client -> x/web TCP/80 block",
        id="namespaceselector-name-label-of-implied-namespace",
    ),
    _case(
        [_from_web({"namespaceSelector": TEAM_B, "podSelector": CLIENT})],
        "y/client -> x/web TCP/80 allow",
        "y/web -> x/web TCP/80 block",
        "x/client -> x/web TCP/80 block",
        id="both-selectors-in-one-peer-and",
    ),
    _case(
        [_from_web({"namespaceSelector": TEAM_B}, {"podSelector": CLIENT})],
        "y/web -> x/web TCP/80 allow",
        "x/client -> x/web TCP/80 allow",
        "z/client -> x/web TCP/80 block",
        id="two-peers-or",
    ),
    # matchExpressions
    _case(
        [_from_web({"podSelector": _expr("tier", "NotIn", "front")})],
        "x/nolabel -> x/web TCP/80 allow",
        id="notin-matches-pod-lacking-key",
    ),
    _case(
        [
            _policy(
                "x/db-in",
                {
                    "podSelector": {"matchLabels": {"app": "db"}},
                    "ingress": [_from({"podSelector": _expr("tier", "NotIn", "front")})],
                },
            )
        ],
        "x/web -> x/db TCP/5432 block",
        "x/client -> x/db TCP/5432 allow",
        id="notin-excludes-listed-value",
    ),
    _case(
        [_from_web({"namespaceSelector": _expr("env", "NotIn", "prod")})],
        "y/client -> x/web TCP/80 allow",
        "z/client -> x/web TCP/80 allow",
        "x/client -> x/web TCP/80 block",
        id="notin-namespaces",
    ),
    _case(
        [_from_web({"namespaceSelector": _expr("team", "In", "b", "c")})],
        "y/client -> x/web TCP/80 allow",
        "x/client -> x/web TCP/80 block",
        "z/client -> x/web TCP/80 block",
        id="in-operator",
    ),
    _case(
        [_from_web({"namespaceSelector": {}, "podSelector": _expr("tier", "Exists")})],
        "y/client -> x/web TCP/80 allow",
        "z/client -> x/web TCP/80 block",
        id="exists-operator",
    ),
    _case(
        [_from_web({"namespaceSelector": {}, "podSelector": _expr("tier", "DoesNotExist")})],
        "y/client -> x/web TCP/80 block",
        "z/client -> x/web TCP/80 allow",
        id="doesnotexist-operator",
    ),
    # ipBlock
    _case(
        [_from_web({"ipBlock": {"cidr": "203.0.113.0/24", "except": ["203.0.113.0/28"]}})],
        "203.0.113.20 -> x/web TCP/80 allow",
        "203.0.113.5 -> x/web TCP/80 block",
        "198.51.100.1 -> x/web TCP/80 block",
        id="ipblock-with-except",
    ),
    _case(
        [_from_web({"ipBlock": {"cidr": "203.0.113.9/24"}})],
        "203.0.113.200 -> x/web TCP/80 allow",
        id="ipblock-cidr-with-host-bits",
    ),
    _case(
        [_from_web({"ipBlock": {"cidr": "10.0.0.0/16", "except": ["10.0.1.1/32"]}})],
        "x/client -> x/web TCP/80 allow",
        "y/web -> x/web TCP/80 allow",
        "y/client -> x/web TCP/80 block",
        "z/client -> x/web TCP/80 allow",
        id="ipblock-matches-pod-addresses",
    ),
    _case(
        [_from_web({"ipBlock": {"cidr": "0.0.0.0/0"}})],
        "x/template -> x/web TCP/80 block",
        id="ipblock-never-matches-pod-without-address",
    ),
    _case(
        [_from_web({"namespaceSelector": {}})],
        "203.0.113.7 -> x/web TCP/80 block",
        id="selectors-never-match-outside-address",
    ),
    _case(
        [_from_web({"namespaceSelector": TEAM_B})],
        "10.0.1.1 -> x/web TCP/80 allow",
        "10.0.1.2 -> x/web TCP/80 allow",
        id="address-of-pod-is-that-pod",
    ),
    _case(
        [_from_client_y({"to": [{"ipBlock": {"cidr": "203.0.113.0/24"}}]})],
        "y/client -> 203.0.113.7 TCP/443 allow",
        "y/client -> x/web TCP/443 block",
        id="egress-ipblock",
    ),
    # ports
    _case(
        [_ports_of_web({"port": 80})], "y/client -> x/web UDP/80 block", id="port-protocol-defaults-to-tcp"
    ),
    _case(
        [_ports_of_web({"port": 8000, "endPort": 8100})],
        "y/client -> x/web TCP/8000 allow",
        "y/client -> x/web TCP/8100 allow",
        "y/client -> x/web TCP/8101 block",
        "y/client -> x/web TCP/7999 block",
        "y/client -> x/web UDP/8050 block",
        id="endport-range-inclusive",
    ),
    _case(
        [_ports_of_web({"protocol": "UDP"})],
        "y/client -> x/web UDP/12345 allow",
        "y/client -> x/web TCP/12345 block",
        id="protocol-without-port-all-ports",
    ),
    _case(
        [_ports_of_web({"protocol": "SCTP", "port": 9000})],
        "y/client -> x/web SCTP/9000 allow",
        "y/client -> x/web TCP/9000 block",
        "y/client -> x/web UDP/9000 block",
        id="sctp-is-not-tcp",
    ),
    _case(
        [_ports_of_web({"port": 80}, {"protocol": "UDP", "port": 53})],
        "y/client -> x/web UDP/53 allow",
        "y/client -> x/web TCP/80 allow",
        "y/client -> x/web TCP/53 block",
        id="any-port-of-the-list",
    ),
    # named ports
    _case(
        [_ports_of_web({"port": "http"})],
        "y/client -> x/web TCP/8080 allow",
        "y/client -> x/web TCP/80 block",
        id="named-port-ingress",
    ),
    _case(
        [_ports_of_web({"protocol": "UDP", "port": "http"}, {"port": "dns"})],
        "y/client -> x/web UDP/8080 block",
        "y/client -> x/web TCP/53 block",
        id="named-port-ingress-protocol-mismatch",
    ),
    _case(
        [_ports_of_web({"protocol": "UDP", "port": "dns"})],
        "y/client -> x/web UDP/53 allow",
        id="named-port-udp",
    ),
    _case(
        [_ports_of_web({"port": "nope"})], "y/client -> x/web TCP/8080 block", id="named-port-missing-name"
    ),
    _case(
        [_from_client_y({"ports": [{"port": "http"}]})],
        "y/client -> x/web TCP/8080 allow",
        "y/client -> y/web TCP/9080 allow",
        "y/client -> y/web TCP/8080 block",
        "y/client -> x/db TCP/8080 block",
        "y/client -> 203.0.113.7 TCP/8080 block",
        id="named-port-egress-resolves-on-destination",
    ),
    _case(
        [_from_client_y({"ports": [{"port": "metrics"}]})],
        "y/client -> z/host TCP/9100 block",
        id="named-port-egress-host-network-never",
    ),
    # several policies, both sides
    _case(
        [
            _to_web(_from({"podSelector": CLIENT}, ports=[{"port": 80}])),
            _to_web(_from({"namespaceSelector": TEAM_B}, ports=[{"port": 443}]), name="web-tls"),
        ],
        "y/client -> x/web TCP/443 allow",
        "x/client -> x/web TCP/80 allow",
        "y/client -> x/web TCP/80 block",
        "x/client -> x/web TCP/443 block",
        id="policies-union-rule-by-rule",
    ),
    _case([DENY_INGRESS_X, _to_web({})], "y/client -> x/web TCP/80 allow", id="deny-all-plus-allow-is-allow"),
    _case(
        [_from_client_y(), _to_web({})],
        "y/client -> x/web TCP/80 block",
        id="egress-block-wins-over-ingress-allow",
    ),
    # IPv6
    _case(
        [_from_web({"ipBlock": {"cidr": "fd00:1::/64"}})],
        "y/client -> x/web TCP/80 v6 allow",
        "y/client -> x/web TCP/80 block",
        "fd00:1::9 -> x/web TCP/80 v6 allow",
        id="ipblock-ipv6",
    ),
    _case(
        [_from_web({"ipBlock": {"cidr": "10.0.0.0/8"}})],
        "y/client -> x/web TCP/80 allow",
        "y/client -> x/web TCP/80 v6 block",
        id="ipblock-ipv4-not-for-ipv6",
    ),
    _case(
        [_from_web({"ipBlock": {"cidr": "::/0"}}, {"podSelector": CLIENT})],
        "x/nolabel -> x/web TCP/80 v6 block",
        "x/client -> x/web TCP/80 v6 allow",
        id="ipv6-pod-without-ipv6-address",
    ),
    # host network, own node, self, template pods
    _case(
        [DENY_ALL_Z],
        "x/client -> z/host TCP/80 allow",
        "z/host -> y/client TCP/80 allow",
        id="host-network-not-policed",
    ),
    _case(
        [_policy("x/all-ns", {"podSelector": {}, "ingress": [_from({"namespaceSelector": {}})]})],
        "z/host -> x/nolabel TCP/80 block",
        id="host-network-ignored-by-selectors",
    ),
    _case(
        [
            _policy(
                "x/nodes", {"podSelector": {}, "ingress": [_from({"ipBlock": {"cidr": "192.168.0.0/24"}})]}
            )
        ],
        "z/host -> x/nolabel TCP/80 allow",
        id="host-network-matched-by-ipblock",
    ),
    _case(
        [DENY_INGRESS_X],
        "z/host -> x/web TCP/80 allow",
        "z/host -> x/nolabel TCP/80 block",
        "192.168.0.1 -> x/web TCP/80 allow",
        "192.168.0.2 -> x/web TCP/80 block",
        id="own-node-always-allowed",
    ),
    _case([DENY_EGRESS_X], "x/web -> 192.168.0.1 TCP/10250 block", id="egress-to-own-node-policed"),
    _case([DENY_INGRESS_X, DENY_EGRESS_X], "x/web -> x/web TCP/80 allow", id="pod-to-itself-always-allowed"),
    _case(
        [
            DENY_INGRESS_X,
            _policy(
                "x/db-in",
                {
                    "podSelector": {"matchLabels": {"app": "db"}},
                    "ingress": [_from({"podSelector": {"matchLabels": {"app": "web"}}})],
                },
            ),
        ],
        "y/client -> x/template TCP/80 block",
        "x/template -> x/db TCP/5432 allow",
        id="template-pods-by-labels",
    ),
]


@pytest.mark.parametrize(("policies", "probes"), CASES)
def test_evaluate(policies: list[NetworkPolicy], probes: tuple[str, ...]) -> None:
    model = _world(*policies)
    for line in probes:
        src, dst, protocol, port, family, expected = _probe(line)
        verdict = evaluate(model, src=src, dst=dst, protocol=protocol, port=port, family=family)
        assert verdict.allowed is expected, f"{line}\n{verdict.explain()}"
        # The matrix agrees wherever both ends are distinct pods.
        if src.pod is not None and dst.pod is not None and src != dst:
            matrix = connectivity(model, ports=[(protocol, port)], family=family)
            assert (
                matrix[(f"{src.namespace}/{src.pod}", f"{dst.namespace}/{dst.pod}", protocol, port)]
                is expected
            )


# --- what the verdict records ----------------------------------------------------------------------

ALLOW_WEB = _to_web(
    _from({"podSelector": {"matchLabels": {"app": "client"}}}),
    _from({"ipBlock": {"cidr": "10.0.0.0/8"}}, ports=[{"port": 80}]),
    _from({"podSelector": {}}, ports=[{"port": "http"}]),
    _from({"namespaceSelector": {}}, ports=[{"port": 80}]),
    name="allow-web",
)


def test_sides_record_isolating_policies_and_every_allowing_rule() -> None:
    model = _world(DENY_INGRESS_X, ALLOW_WEB, DENY_EGRESS_X)
    verdict = evaluate(model, src=Peer("x", "client"), dst=Peer("x", "web"), protocol="TCP", port=80)
    assert not verdict.allowed
    assert verdict.ingress.allowed and verdict.ingress.isolated
    assert verdict.ingress.isolating == ("x/allow-web", "x/deny-ingress")
    assert verdict.ingress.allowed_by == tuple(RuleRef("x/allow-web", "ingress", i) for i in (0, 1, 3))
    assert verdict.egress.isolating == ("x/deny-egress",)
    assert verdict.egress.allowed_by == ()
    assert not verdict.egress.allowed


def test_unisolated_side_has_no_policies() -> None:
    verdict = evaluate(_world(), src=Peer("x", "client"), dst=Peer("y", "web"), protocol="UDP", port=53)
    for side in (verdict.egress, verdict.ingress):
        assert (side.isolated, side.isolating, side.allowed_by, side.allowed) == (False, (), (), True)


def test_explain_allowed_names_first_rule_and_count() -> None:
    model = _world(DENY_INGRESS_X, ALLOW_WEB)
    text = evaluate(model, src=Peer("x", "client"), dst=Peer("x", "web"), protocol="TCP", port=80).explain()
    assert text == (
        "ALLOWED  x/client -> x/web  TCP/80 (IPv4)\n"
        "  egress  x/client: allowed: not isolated (no policy selects it for egress)\n"
        "  ingress x/web: allowed by x/allow-web ingress rule 0 (and 2 more)\n"
        "    also allowed by x/allow-web ingress rule 1, x/allow-web ingress rule 3"
    )


def test_explain_blocked_names_isolating_policies_and_near_misses() -> None:
    model = _world(DENY_INGRESS_X, ALLOW_WEB)
    text = evaluate(model, src=Peer("z", "client"), dst=Peer("x", "web"), protocol="TCP", port=8081).explain()
    assert text == (
        "BLOCKED  z/client -> x/web  TCP/8081 (IPv4)\n"
        "  egress  z/client: allowed: not isolated (no policy selects it for egress)\n"
        "  ingress x/web: blocked: x/web is isolated for ingress by x/allow-web, x/deny-ingress"
        " and no rule allows TCP/8081 from z/client\n"
        "    nearly: x/allow-web ingress rule 0 covers TCP/8081,"
        " but only from pods app=client in namespace x\n"
        "    nearly: x/allow-web ingress rule 1 covers z/client, but only on TCP/80\n"
        "    nearly: x/allow-web ingress rule 3 covers z/client, but only on TCP/80"
    )


def test_explain_near_miss_on_peer_and_named_port() -> None:
    model = _world(ALLOW_WEB)
    text = evaluate(
        model, src=Peer(ip="203.0.113.7"), dst=Peer("x", "web"), protocol="TCP", port=80
    ).explain()
    assert (
        "blocked: x/web is isolated for ingress by x/allow-web and no rule allows TCP/80 from 203.0.113.7"
        in text
    )
    assert "nearly: x/allow-web ingress rule 1 covers TCP/80, but only from 10.0.0.0/8" in text
    assert (
        "nearly: x/allow-web ingress rule 3 covers TCP/80, but only from all pods in all namespaces" in text
    )
    text = evaluate(model, src=Peer("x", "db"), dst=Peer("x", "web"), protocol="TCP", port=9999).explain()
    assert "rule 2 covers x/db, but only on TCP/http (http is TCP/8080 on x/web)" in text
    text = evaluate(
        _world(_from_client_y({"ports": [{"port": "http"}]})),
        src=Peer("y", "client"),
        dst=Peer("x", "db"),
        protocol="TCP",
        port=8080,
    ).explain()
    assert (
        "y/client-out egress rule 0 covers x/db, but only on TCP/http"
        " (x/db has no TCP container port named http)" in text
    )


@pytest.mark.parametrize(
    ("policies", "probe", "phrase"),
    [
        pytest.param(
            [DENY_ALL_Z],
            "x/client -> z/host",
            "ingress z/host: allowed: host-network pod; policies do not apply",
            id="host-network",
        ),
        pytest.param(
            [], "203.0.113.7 -> x/web", "egress  203.0.113.7: allowed: not a pod", id="outside-address"
        ),
        pytest.param(
            [DENY_INGRESS_X],
            "z/host -> x/web",
            "traffic from the pod's own node is always allowed",
            id="own-node",
        ),
        pytest.param(
            [DENY_INGRESS_X], "x/web -> x/web", "a pod's traffic to itself never leaves it", id="self"
        ),
        pytest.param([], "10.0.1.1 -> x/web", "ALLOWED  y/client (10.0.1.1) -> x/web", id="address-of-pod"),
    ],
)
def test_explain_exemptions(policies: list[NetworkPolicy], probe: str, phrase: str) -> None:
    src, _, dst = probe.split()
    text = evaluate(_world(*policies), src=_peer(src), dst=_peer(dst), protocol="TCP", port=80).explain()
    assert phrase in text


@pytest.mark.parametrize("phase", ["Failed", "Succeeded"])
def test_address_of_a_finished_pod_is_nobodys(phase: str) -> None:
    model = ClusterModel(pods=(_pod("w/old", {"app": "client"}, ips=("10.9.9.9",), phase=phase),))
    verdict = evaluate(model, src=Peer(ip="10.9.9.9"), dst=Peer(ip="10.9.9.8"), protocol="TCP", port=1)
    assert verdict.src == "10.9.9.9" and verdict.egress.exempt.startswith("not a pod")


# --- bad peers -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("src", "family", "error", "message"),
    [
        pytest.param(
            Peer("x", "wbe"),
            4,
            UnknownPeerError,
            "source pod x/wbe is not in the model; did you mean x/web?",
            id="unknown-pod-near-match",
        ),
        pytest.param(
            Peer("q", "client"), 4, UnknownPeerError, "x/client, y/client, z/client", id="same-name-elsewhere"
        ),
        pytest.param(Peer(pod="web"), 4, UnknownPeerError, "source pod default/web", id="namespace-defaults"),
        pytest.param(Peer("x", "web", "10.0.0.1"), 4, PeerError, "not both", id="pod-and-ip"),
        pytest.param(Peer(), 4, PeerError, "give a pod", id="nothing"),
        pytest.param(Peer(ip="10.0.0.300"), 4, PeerError, "is not an IP address", id="bad-ip"),
        pytest.param(Peer(ip="fd00::1"), 4, PeerError, "is an IPv6 address, but IPv4", id="wrong-family"),
    ],
)
def test_bad_peers(src: Peer, family: Family, error: type[PeerError], message: str) -> None:
    with pytest.raises(error) as raised:
        evaluate(_world(), src=src, dst=Peer("x", "web"), protocol="TCP", port=80, family=family)
    assert type(raised.value) is error
    assert message in str(raised.value)


# --- connectivity ----------------------------------------------------------------------------------


def test_connectivity_covers_ordered_pairs_of_distinct_pods() -> None:
    model = _world(DENY_INGRESS_X, ALLOW_WEB)
    pods = [p for p in PODS if p.metadata.namespace == "x"]
    matrix = connectivity(model, ports=[("TCP", 80), ("UDP", 53), ("TCP", 80)], pods=pods)
    keys = [p.key for p in pods]
    expected = {(s, d, pr, po) for s in keys for d in keys if s != d for pr, po in (("TCP", 80), ("UDP", 53))}
    assert set(matrix) == expected
    assert matrix[("x/client", "x/web", "TCP", 80)] and not matrix[("x/client", "x/db", "TCP", 80)]


def test_connectivity_hundred_pods() -> None:
    pods = tuple(
        _pod(
            f"n{i % 5}/p{i}",
            {"app": f"a{i % 7}", "tier": f"t{i % 3}"},
            ips=(f"10.1.{i // 250}.{i % 250 + 1}",),
        )
        for i in range(100)
    )
    policies = tuple(
        _policy(
            f"n{i}/p",
            {
                "podSelector": {"matchLabels": {"tier": f"t{i % 3}"}},
                "policyTypes": ["Ingress", "Egress"],
                "ingress": [
                    _from(
                        {"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": "a1"}}},
                        ports=[{"port": 80}],
                    )
                ],
                "egress": [{"to": [{"ipBlock": {"cidr": "10.1.0.0/25"}}]}],
            },
        )
        for i in range(5)
    )
    model = ClusterModel(pods=pods, policies=policies)
    matrix = connectivity(model, ports=[("TCP", 80), ("TCP", 443), ("UDP", 53)])
    assert len(matrix) == 100 * 99 * 3
    for line in [
        "n1/p1 -> n2/p2 TCP/80",
        "n1/p1 -> n0/p5 TCP/80",
        "n0/p0 -> n4/p99 UDP/53",
        "n4/p99 -> n2/p7 TCP/443",
    ]:
        src, dst, protocol, port, _, _ = _probe(f"{line} allow")
        verdict = evaluate(model, src=src, dst=dst, protocol=protocol, port=port)
        assert (
            matrix[(f"{src.namespace}/{src.pod}", f"{dst.namespace}/{dst.pod}", protocol, port)]
            is verdict.allowed
        )
    assert any(matrix.values()) and not all(matrix.values())


@pytest.mark.parametrize("direction", ["ingress", "egress"])
def test_connectivity_resolves_named_ports_per_destination(direction: str) -> None:
    pods = (
        _pod("x/a", {"role": "server"}, ips=("10.0.0.1",), ports=(("http", 8080, "TCP"),)),
        _pod("x/b", {"role": "server"}, ips=("10.0.0.2",), ports=(("http", 9090, "TCP"),)),
        _pod("x/c", {"role": "client"}, ips=("10.0.0.3",)),
    )
    rule = {"ports": [{"port": "http"}]}
    if direction == "ingress":
        spec = {"podSelector": {"matchLabels": {"role": "server"}}, "ingress": [rule]}
    else:
        spec = {
            "podSelector": {"matchLabels": {"role": "client"}},
            "policyTypes": ["Egress"],
            "egress": [rule],
        }
    model = ClusterModel(pods=pods, policies=(_policy("x/named", spec),))
    matrix = connectivity(model, ports=[("TCP", 8080), ("TCP", 9090)])
    assert [matrix[("x/c", dst, "TCP", port)] for dst in ("x/a", "x/b") for port in (8080, 9090)] == [
        True,
        False,
        False,
        True,
    ]


# --- connectivity() is evaluate(), pair by pair ----------------------------------------------------

_KEYS = ("app", "tier")
_VALUES = ("a", "b")
_PROTOCOLS = st.sampled_from(["TCP", "UDP"])
_labels = st.dictionaries(st.sampled_from(_KEYS), st.sampled_from(_VALUES), max_size=2)
_requirement = st.one_of(
    st.fixed_dictionaries(
        {
            "key": st.sampled_from(_KEYS),
            "operator": st.sampled_from(["In", "NotIn"]),
            "values": st.lists(st.sampled_from(_VALUES), min_size=1, max_size=2),
        }
    ),
    st.fixed_dictionaries(
        {"key": st.sampled_from(_KEYS), "operator": st.sampled_from(["Exists", "DoesNotExist"])}
    ),
)
_selector = st.fixed_dictionaries(
    {}, optional={"matchLabels": _labels, "matchExpressions": st.lists(_requirement, max_size=2)}
)
_cidr = st.sampled_from(
    [
        "10.0.0.0/30",
        "10.0.0.0/29",
        "10.0.0.4/31",
        "10.0.0.2/32",
        "0.0.0.0/0",
        "192.168.0.0/31",
        "fd00::/126",
        "fd00::2/128",
        "::/0",
    ]
)
_peer_entry = st.one_of(
    st.fixed_dictionaries({"podSelector": _selector}),
    st.fixed_dictionaries({"namespaceSelector": _selector}),
    st.fixed_dictionaries({"podSelector": _selector, "namespaceSelector": _selector}),
    st.fixed_dictionaries(
        {"ipBlock": st.fixed_dictionaries({"cidr": _cidr}, optional={"except": st.lists(_cidr, max_size=2)})}
    ),
)
_port = st.one_of(
    st.fixed_dictionaries({"protocol": _PROTOCOLS}),
    st.fixed_dictionaries({"port": st.sampled_from([80, 81])}, optional={"protocol": _PROTOCOLS}),
    st.fixed_dictionaries({"port": st.just(80), "endPort": st.just(81)}, optional={"protocol": _PROTOCOLS}),
    st.fixed_dictionaries({"port": st.sampled_from(["http", "dns"])}, optional={"protocol": _PROTOCOLS}),
)


def _rule(peers_key: str) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {}, optional={peers_key: st.lists(_peer_entry, max_size=2), "ports": st.lists(_port, max_size=2)}
    )


_spec = st.fixed_dictionaries(
    {"podSelector": _selector},
    optional={
        "policyTypes": st.sampled_from([["Ingress"], ["Egress"], ["Ingress", "Egress"]]),
        "ingress": st.lists(_rule("from"), max_size=2),
        "egress": st.lists(_rule("to"), max_size=2),
    },
)
_container_ports = st.lists(
    st.sampled_from([("http", 80, "TCP"), ("http", 81, "UDP"), ("dns", 81, "TCP")]), max_size=2, unique=True
)


@st.composite
def _models(draw: st.DrawFn) -> ClusterModel:
    pods = []
    for i in range(draw(st.integers(2, 5))):
        node = draw(st.sampled_from(["n1", "n2", None]))
        host_network = node is not None and draw(st.integers(0, 4)) == 0
        if node is not None and host_network:
            ips: tuple[str, ...] = (f"192.168.0.{node[1]}",)
        elif draw(st.integers(0, 5)) == 0:
            ips = ()  # a workload template
        else:
            ips = (f"10.0.0.{i + 1}", f"fd00::{i + 1}")[: draw(st.integers(1, 2))]
        pods.append(
            _pod(
                f"{draw(st.sampled_from('xy'))}/p{i}",
                draw(_labels),
                ips=ips,
                ports=tuple(draw(_container_ports)),
                node=node,
                host_network=host_network,
            )
        )
    policies = [
        _policy(f"{draw(st.sampled_from('xy'))}/np{i}", draw(_spec)) for i in range(draw(st.integers(0, 3)))
    ]
    namespaces = [
        Namespace.model_validate({"metadata": {"name": ns, "labels": draw(_labels)}}) for ns in "xy"
    ]
    return ClusterModel(namespaces=tuple(namespaces), pods=tuple(pods), policies=tuple(policies), nodes=NODES)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(model=_models(), family=st.sampled_from([4, 6]))
def test_connectivity_equals_evaluate(model: ClusterModel, family: Family) -> None:
    probes: list[tuple[Protocol, int]] = [("TCP", 80), ("TCP", 81), ("UDP", 81)]
    matrix = connectivity(model, ports=probes, family=family)
    for src in model.pods:
        for dst in model.pods:
            if src is dst:
                continue
            for protocol, port in probes:
                verdict = evaluate(
                    model,
                    src=Peer(src.metadata.namespace, src.metadata.name),
                    dst=Peer(dst.metadata.namespace, dst.metadata.name),
                    protocol=protocol,
                    port=port,
                    family=family,
                )
                assert matrix[(src.key, dst.key, protocol, port)] is verdict.allowed, verdict.explain()
