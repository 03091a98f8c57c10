"""compiler.naming: stable, collision-resistant object names; safe, bounded comments."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from compiler import naming
from compiler.model import Direction

# What nft's scanner accepts as an identifier (letters, digits, and / \ _ . - after a letter).
NFT_IDENTIFIER = re.compile(r"[A-Za-z][A-Za-z0-9/\\_.\-]*")

HOSTILE = [
    pytest.param('x" accept; #', id="quote-and-statement"),
    pytest.param("a\\", id="trailing-backslash"),
    pytest.param("line\nbreak } {", id="newline-and-braces"),
    pytest.param("tab\there\rcr", id="tab-and-cr"),
    pytest.param("café ☃ 雪", id="unicode"),
    pytest.param("sep\u2028arator\u0085", id="unicode-line-separators"),
    pytest.param("$var @set ;", id="nft-sigils"),
    pytest.param("n" * 300, id="300-chars"),
    pytest.param("é" * 200, id="multibyte-over-limit"),
]


@pytest.mark.parametrize(
    ("make", "pattern"),
    [
        pytest.param(lambda k: naming.pod_set(k, 4), r"pods-[0-9a-f]{16}-v4", id="pod-set"),
        pytest.param(lambda k: naming.pod_set(k, 6), r"pods-[0-9a-f]{16}-v6", id="pod-set-v6"),
        pytest.param(lambda k: naming.cidr_set(k, 4), r"cidrs-[0-9a-f]{16}-v4", id="cidr-set"),
        pytest.param(lambda k: naming.named_port_set(k, 6), r"named-[0-9a-f]{16}-v6", id="named-port-set"),
        pytest.param(lambda k: naming.pod_chain("ingress", k), r"ingress-[0-9a-f]{16}", id="ingress-chain"),
        pytest.param(lambda k: naming.pod_chain("egress", k), r"egress-[0-9a-f]{16}", id="egress-chain"),
    ],
)
@pytest.mark.parametrize("key", [pytest.param("ns:x|pod:app=web", id="plain"), *HOSTILE])
def test_hashed_names_carry_no_api_text(make: Callable[[str], str], pattern: str, key: str) -> None:
    name = make(key)
    assert re.fullmatch(pattern, name)
    assert NFT_IDENTIFIER.fullmatch(name)
    assert make(key) == name  # stable


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(naming.tier_chain("admin", "ingress"), id="admin-ingress"),
        pytest.param(naming.tier_chain("baseline", "egress"), id="baseline-egress"),
        pytest.param(naming.dispatch_map("ingress", 4), id="dispatch-map"),
        pytest.param(naming.local_set(6), id="local-set"),
        pytest.param(naming.podcidr_set(4), id="podcidr-set"),
        pytest.param(naming.CHAIN_FORWARD, id="forward"),
    ],
)
def test_fixed_names_are_identifiers(name: str) -> None:
    assert NFT_IDENTIFIER.fullmatch(name)
    assert len(name) < 64


def test_names_are_pinned() -> None:
    # A changed hash renames every object on every node at the next upgrade: change it on purpose.
    assert naming.pod_set("ns:x|pod:app=web", 4) == "pods-5a85208c9d7313d8-v4"
    assert naming.digest("a") == "3b196fd4907bedf5"


@pytest.mark.parametrize(
    ("left", "right"),
    [
        pytest.param(("ab", "c"), ("a", "bc"), id="part-boundaries"),
        pytest.param(("a",), ("a", ""), id="empty-part"),
        pytest.param(("x",), ("X",), id="case"),
    ],
)
def test_digest_separates_parts(left: tuple[str, ...], right: tuple[str, ...]) -> None:
    assert naming.digest(*left) != naming.digest(*right)


def test_kinds_do_not_share_names_for_one_key() -> None:
    key = "ns:x|pod:app=web"
    names = {naming.pod_set(key, 4), naming.cidr_set(key, 4), naming.named_port_set(key, 4)}
    assert len({n.split("-")[1] for n in names}) == 3


def test_no_collisions_among_many_keys() -> None:
    names = {naming.pod_set(f"ns:team-{i}|pod:app={i % 97}", 4) for i in range(20000)}
    assert len(names) == 20000


@pytest.mark.parametrize("text", HOSTILE)
def test_comment_is_safe_and_bounded(text: str) -> None:
    out = naming.comment(text)
    assert '"' not in out
    assert all(ch.isprintable() for ch in out)
    assert len(out.encode()) <= naming.COMMENT_MAX_BYTES
    assert out.encode().decode() == out  # never a broken UTF-8 sequence


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("x/allow-web ingress[0]", "x/allow-web ingress[0]", id="unchanged"),
        pytest.param('say "hi"', "say 'hi'", id="double-quotes"),
        pytest.param("a\nb", "a?b", id="newline"),
        pytest.param("a" * 128, "a" * 128, id="exactly-128"),
        pytest.param("a" * 129, "a" * 125 + "...", id="129-cut"),
        pytest.param("é" * 70, "é" * 62 + "...", id="multibyte-cut-on-boundary"),
    ],
)
def test_comment_examples(text: str, expected: str) -> None:
    assert naming.comment(text) == expected


@pytest.mark.parametrize(
    ("policy", "direction", "index", "expected"),
    [
        pytest.param("x/allow-web", "ingress", 0, "x/allow-web ingress[0]", id="short"),
        pytest.param("y/deny", "egress", 12, "y/deny egress[12]", id="egress"),
        pytest.param("n" * 63 + "/" + "p" * 253, "egress", 3, None, id="longest-k8s-names"),
        pytest.param('x/"; drop', "ingress", 1, "x/'; drop ingress[1]", id="hostile"),
    ],
)
def test_rule_comment_keeps_direction_and_index(
    policy: str, direction: Direction, index: int, expected: str | None
) -> None:
    out = naming.rule_comment(policy, direction, index=index)
    assert len(out.encode()) <= naming.COMMENT_MAX_BYTES
    assert out.endswith(f" {direction}[{index}]")
    if expected is not None:
        assert out == expected
    else:
        assert out.startswith("n" * 63 + "/ppp") and "..." in out


@pytest.mark.parametrize("text", HOSTILE)
def test_note_is_one_safe_line(text: str) -> None:
    out = naming.note(text)
    assert "\n" not in out and "\r" not in out
    assert all(ch.isprintable() for ch in out)
    assert len(out) <= naming.NOTE_MAX_CHARS
