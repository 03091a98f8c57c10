"""Text to documents: YAML as kubectl reads it (1.1 scalars), JSON, positions in errors."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from compiler.decode import decode
from compiler.errors import Problem


def documents(text: str, file: str = "f.yaml") -> list[Any]:
    docs, problems = decode(file, text)
    assert problems == []
    return [value for _, value in docs]


@pytest.mark.parametrize(
    ("text", "value"),
    [
        pytest.param("yes", True, id="yes-is-true"),
        pytest.param("on", True, id="on-is-true"),
        pytest.param("Off", False, id="off-is-false"),
        pytest.param("y", True, id="y-is-true-as-in-go-yaml-v2"),
        pytest.param("Y", True, id="Y-is-true"),
        pytest.param("n", False, id="n-is-false"),
        pytest.param("N", False, id="N-is-false"),
        pytest.param("'y'", "y", id="quoted-y-is-text"),
        pytest.param('"n"', "n", id="double-quoted-n-is-text"),
        pytest.param("yn", "yn", id="yn-is-text"),
        pytest.param("'yes'", "yes", id="quoted-yes-is-text"),
        pytest.param('"on"', "on", id="double-quoted-on-is-text"),
        pytest.param("80", 80, id="int"),
        pytest.param("010", 8, id="octal-as-kubectl-reads-it"),
        pytest.param("0x1F", 31, id="hex"),
        pytest.param("1.10", 1.1, id="float"),
        pytest.param("~", None, id="tilde-null"),
        pytest.param("", None, id="empty-null"),
        pytest.param("2024-01-02", datetime.date(2024, 1, 2), id="date"),
        pytest.param("10.0.0.0/8", "10.0.0.0/8", id="cidr-is-text"),
        pytest.param("web", "web", id="text"),
    ],
)
def test_yaml_scalars(text: str, value: Any) -> None:
    # Twice: the tag cache must not make a quoted scalar plain or the reverse.
    assert documents(f"a: {text}\nb: {text}\n") == [{"a": value, "b": value}]


def test_quoted_and_plain_spellings_of_one_value_stay_distinct() -> None:
    assert documents("a: yes\nb: 'yes'\nc: yes\n") == [{"a": True, "b": "yes", "c": True}]


def test_documents_are_numbered_and_empty_ones_kept_as_none() -> None:
    docs, problems = decode("f.yaml", "---\na: 1\n---\n---\nb: 2\n")
    assert problems == []
    assert docs == [("document 1", {"a": 1}), ("document 2", None), ("document 3", {"b": 2})]


def test_merge_keys_and_aliases() -> None:
    text = "base: &b {app: web, tier: x}\nsel:\n  <<: *b\n  tier: db\nsame: *b\n"
    (doc,) = documents(text)
    assert doc["sel"] == {"app": "web", "tier": "db"}
    assert doc["same"] is doc["base"]  # shared, as PyYAML does


def test_an_alias_bomb_costs_only_its_text() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 12)]
    (doc,) = documents("\n".join(lines) + "\n")
    assert doc["a11"][0] is doc["a10"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(
            "a: 1\nb: [1, 2\n",
            "YAML syntax error at line 3, column 1: did not find expected ',' or ']' "
            "(while parsing a flow sequence at line 2)",
            id="unclosed-flow",
        ),
        pytest.param(
            "a: !custom 1\n", "YAML error at line 1, column 4: unsupported tag '!custom'", id="custom-tag"
        ),
        pytest.param(
            "a: !!set {x}\n",
            "YAML error at line 1, column 4: unsupported tag 'tag:yaml.org,2002:set'",
            id="set",
        ),
        pytest.param(
            "a:\n\t- 1\n",
            "YAML syntax error at line 2, column 1: found character that cannot start any token "
            "(while scanning for the next token at line 2)",
            id="tab",
        ),
    ],
)
def test_yaml_errors_give_line_and_column(text: str, message: str) -> None:
    _, problems = decode("f.yaml", text)
    assert problems == [Problem("f.yaml", "document 1", "", message)]


def test_an_error_in_a_later_document_keeps_the_earlier_ones() -> None:
    docs, problems = decode("f.yaml", "a: 1\n---\nb: [\n")
    assert docs == [("document 1", {"a": 1})]
    assert [p.obj for p in problems] == ["document 2"]


def test_duplicate_keys_are_reported_per_document_with_their_file_line() -> None:
    docs, problems = decode("f.yaml", "a: 1\n---\nb: 1\nc:\n  d: 1\n  d: 2\n")
    assert docs[1][1] == {"b": 1, "c": {"d": 2}}
    assert problems == [
        Problem("f.yaml", "document 2", "", 'line 6: duplicate key "d" (only the last would be kept)')
    ]


def test_an_explicit_key_overriding_a_merged_one_is_no_duplicate() -> None:
    assert documents("b: &b {x: 1}\nc: {<<: *b, x: 2}\n")[0]["c"] == {"x": 2}


def test_json_with_tabs_and_a_byte_order_mark() -> None:
    assert documents('\ufeff{\n\t"a": [1, 2]\n}', file="f.json") == [{"a": [1, 2]}]


def test_json_errors_give_line_and_column() -> None:
    docs, problems = decode("f.json", '{"a": 1}\n{"b": [1,\n}')
    assert docs == [("document 1", {"a": 1})]
    assert problems == [
        Problem("f.json", "document 2", "", "JSON syntax error at line 3, column 1: Expecting value")
    ]


def test_json_duplicate_keys() -> None:
    _, problems = decode("f.json", '{"a": 1, "a": 2}')
    assert problems == [
        Problem("f.json", "document 1", "", 'duplicate key "a" (only the last would be kept)')
    ]


def test_a_yaml_flow_mapping_that_is_not_json_is_read_as_yaml() -> None:
    assert documents("{a: 1, b: [x]}\n") == [{"a": 1, "b": ["x"]}]


def test_a_recursive_alias_is_a_problem_not_a_hang() -> None:
    docs, problems = decode("f.yaml", "a: &a [1, *a]\n")
    assert docs == []
    assert problems == [
        Problem(
            "f.yaml",
            "document 1",
            "",
            "YAML error at line 1, column 4: an alias refers to a collection that contains it",
        )
    ]


def test_keys_that_differ_in_type_are_not_duplicates() -> None:
    assert documents("1: a\n'1': b\n") == [{1: "a", "1": "b"}]
