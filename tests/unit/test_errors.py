"""InputError: every problem, once, in the order a person reads the file."""

from __future__ import annotations

import pytest

from compiler.errors import InputError, InternalError, Problem


def test_problems_sort_numbers_by_value() -> None:
    err = InputError(
        [
            Problem("b.yaml", "document 10", "", "not a mapping"),
            Problem("a.yaml", "NetworkPolicy x/p", "spec.ingress[10].ports[0].port", "bad"),
            Problem("a.yaml", "NetworkPolicy x/p", "spec.ingress[2].ports[0].port", "bad"),
            Problem("b.yaml", "document 2", "", "not a mapping"),
        ]
    )
    assert str(err).splitlines() == [
        "a.yaml: NetworkPolicy x/p: spec.ingress[2].ports[0].port: bad",
        "a.yaml: NetworkPolicy x/p: spec.ingress[10].ports[0].port: bad",
        "b.yaml: document 2: not a mapping",
        "b.yaml: document 10: not a mapping",
    ]


def test_duplicate_problems_are_reported_once() -> None:
    same = Problem("a.yaml", "Pod x/a", "status.podIP", "must be a valid IP address")
    assert InputError([same, same]).problems == (same,)


def test_an_input_error_without_problems_is_our_bug() -> None:
    with pytest.raises(InternalError):
        InputError([])
