"""controller.agent.http: the listen address."""

from __future__ import annotations

import io

import pytest

from controller.agent.http import parse_listen
from controller.cli.main import main


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0.0.0.0:9542", ("0.0.0.0", 9542)),
        ("127.0.0.1:0", ("127.0.0.1", 0)),
        ("[::1]:9542", ("::1", 9542)),
        (":9542", ("0.0.0.0", 9542)),
    ],
    ids=["any-v4", "port-zero", "v6", "no-host"],
)
def test_parse_listen(text: str, expected: tuple[str, int]) -> None:
    assert parse_listen(text) == expected


@pytest.mark.parametrize(
    "text", ["9542", "host:", "host:http", "host:70000"], ids=["no-colon", "no-port", "named", "too-big"]
)
def test_bad_listen(text: str) -> None:
    with pytest.raises(ValueError, match="expected ADDR:PORT"):
        parse_listen(text)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--listen", "nowhere"], "--listen 'nowhere': expected ADDR:PORT"),
        (["--debounce-ms", "-1"], "--debounce-ms must be >= 0"),
        (["--check-interval", "0"], "--check-interval > 0"),
    ],
    ids=["listen", "debounce", "check-interval"],
)
def test_bad_agent_flags_are_usage_errors(argv: list[str], message: str) -> None:
    err = io.StringIO()
    assert main(["agent", "--node", "n1", *argv], stdout=io.StringIO(), stderr=err) == 2
    assert err.getvalue().startswith("stockade agent: ")
    assert message in err.getvalue()
