"""The plugin's input checks: CNI_* variables and CNI_ARGS, table-driven."""

from __future__ import annotations

import pytest

from controller.cni.config import parse_args, parse_env, parse_netconf, version_of
from controller.cni.errors import CniError

BASE = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "abc", "CNI_NETNS": "/run/netns/x", "CNI_IFNAME": "eth0"}

ENV_ERRORS = [
    ("no-command", {"CNI_COMMAND": ""}, "CNI_COMMAND"),
    ("lowercase-command", {"CNI_COMMAND": "add"}, "CNI_COMMAND"),
    ("container-id-with-slash", {"CNI_CONTAINERID": "a/b"}, "CNI_CONTAINERID"),
    ("container-id-leading-dash", {"CNI_CONTAINERID": "-a"}, "CNI_CONTAINERID"),
    ("ifname-16-bytes", {"CNI_IFNAME": "a" * 16}, "CNI_IFNAME"),
    ("ifname-dot", {"CNI_IFNAME": "."}, "CNI_IFNAME"),
    ("ifname-space", {"CNI_IFNAME": "eth 0"}, "CNI_IFNAME"),
    ("check-without-netns", {"CNI_COMMAND": "CHECK", "CNI_NETNS": ""}, "CNI_NETNS"),
    ("args-without-equals", {"CNI_ARGS": "K8S_POD_NAME"}, "CNI_ARGS"),
    ("args-empty-key", {"CNI_ARGS": "=v"}, "CNI_ARGS"),
    ("args-two-equals", {"CNI_ARGS": "a=b=c"}, "CNI_ARGS"),
]


@pytest.mark.parametrize(("change", "word"), [e[1:] for e in ENV_ERRORS], ids=[e[0] for e in ENV_ERRORS])
def test_bad_environment_is_code_4(change: dict[str, str], word: str) -> None:
    with pytest.raises(CniError) as caught:
        parse_env({**BASE, **change})
    assert caught.value.code == 4
    assert word in caught.value.msg


def test_del_needs_no_netns_and_gc_needs_no_container() -> None:
    assert parse_env({**BASE, "CNI_COMMAND": "DEL", "CNI_NETNS": ""}).netns == ""
    assert parse_env({"CNI_COMMAND": "GC"}).container_id == ""


def test_args_pairs() -> None:
    assert parse_args("") == ()
    assert parse_args("IgnoreUnknown=1;K8S_POD_NAME=a") == (("IgnoreUnknown", "1"), ("K8S_POD_NAME", "a"))
    env = parse_env({**BASE, "CNI_ARGS": "K8S_POD_NAMESPACE=ns;K8S_POD_UID="})
    assert (env.arg("K8S_POD_NAMESPACE"), env.arg("K8S_POD_UID"), env.arg("missing")) == ("ns", "", "")


def test_version_of_unreadable_input_is_the_latest() -> None:
    assert version_of(b"{") == "1.1.0"
    assert version_of(b'{"cniVersion": "0.4.0"}') == "0.4.0"
    assert version_of(b'{"cniVersion": "9.9.9"}') == "1.1.0"


def test_defaults() -> None:
    conf = parse_netconf(b'{"cniVersion": "1.0.0", "name": "n", "podCIDRs": ["10.1.0.0/24"]}', command="ADD")
    assert conf.ipam_dir == "/var/lib/stockade/ipam"
    assert conf.agent_socket == "/run/stockade/cni.sock"
    assert conf.wait_for_agent is True and conf.quarantine_seconds == 60 and conf.mtu is None
