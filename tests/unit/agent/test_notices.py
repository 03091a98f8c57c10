"""controller.agent.notices: what users are told, found in the model, and told once."""

from __future__ import annotations

from typing import Any

import pytest

from compiler.cluster import ClusterModel
from compiler.model import NetworkPolicy, Pod
from controller.agent.notices import Noticeboard, notices
from tests.unit.agent.bodies import pod_body, policy_body


def model(pods: list[dict[str, Any]], policies: list[dict[str, Any]]) -> ClusterModel:
    return ClusterModel(
        pods=tuple(Pod.model_validate(p) for p in pods),
        policies=tuple(NetworkPolicy.model_validate(p) for p in policies),
    )


WEB = pod_body("web", labels={"app": "web"}, ports=(("http", 8080),))
NAMED_INGRESS = {"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [{"ports": [{"port": "http"}]}]}
NAMED_EGRESS = {"podSelector": {}, "egress": [{"ports": [{"port": "dns", "protocol": "UDP"}]}]}
REVERSED_RANGE = {"podSelector": {}, "ingress": [{"ports": [{"port": 90, "endPort": 80}]}]}

CASES: dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]], list[tuple[str, str]]]] = {
    "named-ingress-port-resolves": ([WEB], [policy_body("p", spec=NAMED_INGRESS)], []),
    "named-ingress-port-no-selected-pod": (
        [pod_body("other", labels={"app": "other"}, ports=(("http", 80),))],
        [policy_body("p", spec=NAMED_INGRESS)],
        [
            (
                "NamedPortUnresolved",
                "spec.ingress[0]: no pod the policy selects declares a TCP container port named 'http'",
            )
        ],
    ),
    "named-egress-port-no-pod-anywhere": (
        [WEB],
        [policy_body("p", spec=NAMED_EGRESS)],
        [("NamedPortUnresolved", "spec.egress[0]: no pod declares a UDP container port named 'dns'")],
    ),
    "defective-rule": (
        [WEB],
        [policy_body("p", spec=REVERSED_RANGE)],
        [("PolicyDefect", "NetworkPolicy default/p: spec.ingress[0].ports[0].endPort")],
    ),
}


@pytest.mark.parametrize(("pods", "policies", "expected"), CASES.values(), ids=CASES.keys())
def test_notices(
    pods: list[dict[str, Any]], policies: list[dict[str, Any]], expected: list[tuple[str, str]]
) -> None:
    found = notices(model(pods, policies))
    assert len(found) == len(expected)
    for notice, (reason, start) in zip(found, expected, strict=True):
        assert notice.reason == reason
        assert notice.message.startswith(start), notice.message
        assert (notice.ref.kind, notice.ref.namespace, notice.ref.name) == ("NetworkPolicy", "default", "p")
        assert notice.ref.uid == "uid-np-default-p"


def test_a_standing_notice_is_posted_once_and_again_after_it_cleared() -> None:
    board = Noticeboard()
    defect = notices(model([WEB], [policy_body("p", spec=REVERSED_RANGE)]))
    assert board.update(defect) == defect
    assert board.update(defect) == []
    assert board.update([]) == []
    assert board.update(defect) == defect


def test_once() -> None:
    board = Noticeboard()
    (notice,) = notices(model([WEB], [policy_body("p", spec=REVERSED_RANGE)]))
    assert board.once(notice)
    board.update([])
    assert not board.once(notice)
