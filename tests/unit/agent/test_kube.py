"""controller.agent.kube: the IPVS evidence of this node's device, before any API call."""

from __future__ import annotations

from pathlib import Path

import kopf

from controller.agent.apiclient import ApiClient, Credentials
from controller.agent.kube import ipvs_evidence, ipvs_notice


def test_the_ipvs_device_is_evidence_without_asking_the_api(tmp_path: Path) -> None:
    device = tmp_path / "kube-ipvs0"
    device.mkdir()
    # Nothing listens on port 1: asking the API would fail, so the device alone must answer.
    nowhere = ApiClient(Credentials(kopf.ConnectionInfo(server="http://127.0.0.1:1")), timeout=1)
    assert ipvs_evidence(nowhere, device=device) == (
        "the kube-ipvs0 device exists on this node (kube-proxy creates it in IPVS mode)"
    )


def test_the_notice_names_the_node_and_says_what_is_not_enforced() -> None:
    notice = ipvs_notice("n1", "uid-1", "some evidence")
    assert (notice.ref.kind, notice.ref.name, notice.ref.uid, notice.ref.namespace) == (
        "Node",
        "n1",
        "uid-1",
        None,
    )
    assert notice.reason == "KubeProxyIPVS"
    assert "(some evidence)" in notice.message
    assert "NOT enforced" in notice.message
