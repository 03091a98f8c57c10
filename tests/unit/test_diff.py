"""Connectivity diffs (pairs and address regions) and ruleset diffs."""

from __future__ import annotations

import textwrap

import pytest

from compiler.cluster import ClusterModel
from compiler.diff import PairChange, Region, connectivity_diff, regions, ruleset_diff
from compiler.loader import load_manifests
from compiler.matrix import Probe


def _model(*fragments: str) -> ClusterModel:
    return load_manifests([("test.yaml", "".join(textwrap.dedent(f) for f in fragments))]).model


def _pod(key: str, labels: str, *ips: str) -> str:
    ns, name = key.split("/")
    return f"""
    ---
    apiVersion: v1
    kind: Pod
    metadata: {{name: {name}, namespace: "{ns}", labels: {labels}}}
    spec: {{nodeName: n1, containers: [{{name: c, ports: [{{containerPort: 80}}]}}]}}
    status: {{podIPs: [{", ".join("{ip: " + repr(ip) + "}" for ip in ips)}]}}
    """


def _policy(key: str, spec: str) -> str:
    ns, name = key.split("/")
    return f"""
    ---
    apiVersion: networking.k8s.io/v1
    kind: NetworkPolicy
    metadata: {{name: {name}, namespace: "{ns}"}}
    spec: {spec}
    """


PODS = (
    _pod("x/a", "{app: a}", "10.244.1.2", "fd00:10:244:1::2"),
    _pod("y/b", "{app: b}", "10.244.1.3", "fd00:10:244:1::3"),
)
DENY_B = _policy("y/deny", "{podSelector: {}, policyTypes: [Ingress]}")
ALLOW_A_TO_B = _policy(
    "y/web",
    "{podSelector: {matchLabels: {app: b}}, ingress: [{from: "
    "[{namespaceSelector: {}, podSelector: {matchLabels: {app: a}}}], ports: [{port: 80}]}]}",
)
TCP80 = [Probe("TCP", 80)]


def _lines(old: tuple[str, ...], new: tuple[str, ...], family: int | list[int] = 4) -> list[str]:
    diff = connectivity_diff(_model(*old), _model(*new), ports=TCP80, family=family)  # type: ignore[arg-type]
    return [c.describe("+") for c in diff.gained] + [c.describe("-") for c in diff.lost]


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        pytest.param(PODS, PODS, [], id="no-change"),
        pytest.param(
            PODS,
            (*PODS, DENY_B),
            [
                "- other IPv4 addresses -> y/b TCP/80"
                " (y/b ingress: was not isolated, now isolated by y/deny)",
                "- x/a -> y/b TCP/80 (y/b ingress: was not isolated, now isolated by y/deny)",
            ],
            id="default-deny-closes",
        ),
        pytest.param(
            (*PODS, DENY_B),
            (*PODS, DENY_B, ALLOW_A_TO_B),
            ["+ x/a -> y/b TCP/80 (allowed by y/web ingress[0])"],
            id="allow-opens",
        ),
        pytest.param(
            (*PODS, DENY_B, ALLOW_A_TO_B),
            (*PODS, ALLOW_A_TO_B),
            [],
            id="removing-a-redundant-deny-changes-nothing",
        ),
        pytest.param(
            (*PODS, DENY_B, ALLOW_A_TO_B),
            (*PODS,),
            ["+ other IPv4 addresses -> y/b TCP/80 (y/b no longer isolated for ingress)"],
            id="removing-both-opens-b-to-the-rest-only",
        ),
        pytest.param(
            (*PODS, DENY_B),
            PODS,
            [
                "+ other IPv4 addresses -> y/b TCP/80 (y/b no longer isolated for ingress)",
                "+ x/a -> y/b TCP/80 (y/b no longer isolated for ingress)",
            ],
            id="removing-the-deny-opens",
        ),
        pytest.param(
            (*PODS, DENY_B, ALLOW_A_TO_B),
            (_pod("x/a", "{app: z}", "10.244.1.2"), PODS[1], DENY_B, ALLOW_A_TO_B),
            [
                "- x/a -> y/b TCP/80 (y/b ingress: was allowed by y/web ingress[0], "
                "now isolated by y/deny, y/web)"
            ],
            id="relabelled-pod-loses-access",
        ),
    ],
)
def test_pod_pairs(old: tuple[str, ...], new: tuple[str, ...], expected: list[str]) -> None:
    assert _lines(old, new) == expected


def test_pods_on_one_side_only_are_listed_not_compared() -> None:
    c = _pod("y/c", "{app: c}", "10.244.1.4")
    diff = connectivity_diff(_model(*PODS, DENY_B), _model(PODS[0], c), ports=TCP80)
    assert diff.added_pods == ("y/c",)
    assert diff.removed_pods == ("y/b",)
    assert diff.gained == diff.lost == ()
    assert diff.changed and not diff.widened


def test_a_workload_to_itself_is_replica_to_replica() -> None:
    web = """
    ---
    apiVersion: apps/v1
    kind: Deployment
    metadata: {name: web, namespace: x}
    spec: {template: {metadata: {labels: {app: web}}, spec: {containers: [{name: c}]}}}
    """
    deny = _policy("x/deny", "{podSelector: {}, policyTypes: [Ingress]}")
    diff = connectivity_diff(_model(web), _model(web, deny), ports=TCP80)
    assert [c.describe("-") for c in diff.lost] == [
        "- other IPv4 addresses -> x/web TCP/80 (x/web ingress: was not isolated, now isolated by x/deny)",
        "- x/web -> x/web (another replica) TCP/80"
        " (x/web (another replica) ingress: was not isolated, now isolated by x/deny)",
    ]


EGRESS_WORLD = _policy(
    "x/out",
    "{podSelector: {}, policyTypes: [Egress], egress: [{to: [{ipBlock: {cidr: 0.0.0.0/0, "
    "except: [10.0.0.0/8]}}], ports: [{port: 443}]}]}",
)
EGRESS_WORLD_V6 = _policy(
    "x/out",
    "{podSelector: {}, policyTypes: [Egress], egress: [{to: [{ipBlock: {cidr: 0.0.0.0/0, "
    "except: [10.0.0.0/8]}}, {ipBlock: {cidr: '::/0'}}], ports: [{port: 443}]}]}",
)
DENY_EGRESS = _policy("x/deny-out", "{podSelector: {}, policyTypes: [Egress]}")


def test_opening_egress_to_the_internet_is_a_gained_pair() -> None:
    diff = connectivity_diff(
        _model(PODS[0], DENY_EGRESS), _model(PODS[0], DENY_EGRESS, EGRESS_WORLD), ports=[Probe("TCP", 443)]
    )
    assert [c.describe("+") for c in diff.gained] == [
        "+ x/a -> 0.0.0.0/0 except 10.0.0.0/8 TCP/443 (allowed by x/out egress[0])"
    ]
    assert diff.gained[0].address == "0.0.0.0"
    assert diff.widened


def test_alike_pods_are_each_reported_under_their_own_name() -> None:
    twin = _pod("x/c", "{app: a}", "10.244.1.4")
    diff = connectivity_diff(_model(PODS[0], twin), _model(PODS[0], twin, DENY_EGRESS), ports=TCP80)
    assert [c.describe("-") for c in diff.lost] == [
        "- x/a -> other IPv4 addresses TCP/80 (x/a egress: was not isolated, now isolated by x/deny-out)",
        "- x/a -> x/c TCP/80 (x/a egress: was not isolated, now isolated by x/deny-out)",
        "- x/c -> other IPv4 addresses TCP/80 (x/c egress: was not isolated, now isolated by x/deny-out)",
        "- x/c -> x/a TCP/80 (x/c egress: was not isolated, now isolated by x/deny-out)",
    ]


def test_a_change_in_one_family_is_tagged_with_it() -> None:
    old = _model(PODS[0], DENY_EGRESS, EGRESS_WORLD)
    new = _model(PODS[0], DENY_EGRESS, EGRESS_WORLD_V6)
    both = connectivity_diff(old, new, ports=[Probe("TCP", 443)], family=[4, 6])
    assert both.gained == (
        PairChange("x/a", "::/0", "TCP", 443, 6, "allowed by x/out egress[0]", address="::"),
    )
    assert both.gained[0].describe("+") == "+ x/a -> ::/0 TCP/443 (allowed by x/out egress[0])"
    assert connectivity_diff(old, new, ports=[Probe("TCP", 443)], family=4).gained == ()


def test_a_pod_pair_change_in_every_family_is_reported_once() -> None:
    diff = connectivity_diff(
        _model(*PODS), _model(*PODS, DENY_B), ports=[("TCP", 80)], family=[4, 6]
    )  # tuples work too
    assert [(c.src, c.family) for c in diff.lost] == [
        ("other IPv4 addresses", 4),
        ("other IPv6 addresses", 6),
        ("x/a", None),
    ]


def test_a_pod_pair_change_in_one_family_names_it() -> None:
    # An ipBlock that holds x/a's IPv6 address but not its IPv4 one.
    allow_v6 = _policy(
        "y/v6", "{podSelector: {}, ingress: [{from: [{ipBlock: {cidr: 'fd00:10:244:1::/64'}}]}]}"
    )
    diff = connectivity_diff(
        _model(*PODS, DENY_B), _model(*PODS, DENY_B, allow_v6), ports=TCP80, family=[4, 6]
    )
    pairs = [c.describe("+") for c in diff.gained if c.src == "x/a"]
    assert pairs == ["+ x/a -> y/b TCP/80 [IPv6] (allowed by y/v6 ingress[0])"]


@pytest.mark.parametrize(
    ("blocks", "expected"),
    [
        pytest.param([], [Region("other IPv4 addresses", "0.0.0.0")], id="no-ipblocks"),
        pytest.param(
            [("0.0.0.0/0", ["10.0.0.0/8"])],
            [Region("0.0.0.0/0 except 10.0.0.0/8", "0.0.0.0"), Region("10.0.0.0/8", "10.0.0.0")],
            id="world-except-private",
        ),
        pytest.param(
            [("10.0.0.0/8", []), ("10.244.1.2/32", [])],
            [
                Region("other IPv4 addresses", "0.0.0.0"),
                Region("10.0.0.0/8 except 10.244.1.2/32", "10.0.0.0"),
            ],
            id="a-block-that-is-a-pod-address-is-the-pod",
        ),
        pytest.param(
            [("10.244.1.2/31", [])],
            [Region("other IPv4 addresses", "0.0.0.0"), Region("10.244.1.2/31", "10.244.1.3")],
            id="representative-skips-pod-addresses",
        ),
        pytest.param(
            [("10.0.0.0/8", ["10.0.0.0/9", "10.128.0.0/9"])],
            [
                Region("other IPv4 addresses", "0.0.0.0"),
                Region("10.0.0.0/9", "10.0.0.0"),
                Region("10.128.0.0/9", "10.128.0.0"),
            ],
            id="a-block-covered-by-its-excepts-has-no-region",
        ),
    ],
)
def test_regions(blocks: list[tuple[str, list[str]]], expected: list[Region]) -> None:
    peers = ", ".join(f"{{ipBlock: {{cidr: '{c}', except: {e}}}}}" for c, e in blocks)
    policy = _policy("x/p", f"{{podSelector: {{}}, ingress: [{{from: [{peers}]}}]}}") if blocks else ""
    model = _model(_pod("x/a", "{}", "10.244.1.2"), policy)
    assert list(regions(model, ClusterModel(), family=4)) == expected


def test_diff_is_deterministic() -> None:
    old, new = _model(*PODS), _model(*PODS, DENY_B, DENY_EGRESS, EGRESS_WORLD_V6)
    first = connectivity_diff(old, new, ports=[Probe("TCP", 80), Probe("TCP", 443)], family=[4, 6])
    second = connectivity_diff(old, new, ports=[Probe("TCP", 443), Probe("TCP", 80)], family=[6, 4])
    assert first == second
    assert first.lost, "the new side denies x/a's egress and y/b's ingress"
    order = [(c.src, c.dst, c.port) for c in first.lost]
    assert order == sorted(order)


def test_ruleset_diff_is_unified_and_empty_when_equal() -> None:
    old = "table inet stockade {\n\tchain a {\n\t\taccept\n\t}\n}\n"
    new = old.replace("accept", "drop")
    assert ruleset_diff(old, old) == ""
    text = ruleset_diff(old, new, old_label="a/n1", new_label="b/n1")
    assert text.splitlines() == [
        "--- a/n1",
        "+++ b/n1",
        "@@ -1,5 +1,5 @@",
        " table inet stockade {",
        " \tchain a {",
        "-\t\taccept",
        "+\t\tdrop",
        " \t}",
        " }",
    ]


def test_ruleset_diff_of_text_without_final_newline_still_ends_lines() -> None:
    assert ruleset_diff("a", "b").endswith("+b\n")
