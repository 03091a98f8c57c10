"""Syntax of API values: names, label keys and values, port names, IPs and CIDRs."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from compiler.syntax import (
    cidr_errors,
    dns1123_label_errors,
    dns1123_subdomain_errors,
    ip_errors,
    label_key_errors,
    label_value_errors,
    parse_cidr,
    port_name_errors,
    strictly_within,
)

ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
LOWER_ALNUM = "abcdefghijklmnopqrstuvwxyz0123456789"


@st.composite
def label_names(draw: st.DrawFn, max_size: int = 63) -> str:
    """Valid label names (and non-empty label values): alnum ends, [-A-Za-z0-9_.] inside."""
    first = draw(st.sampled_from(ALNUM))
    if max_size == 1 or draw(st.booleans()):
        return first
    middle = draw(st.text(alphabet=ALNUM + "-_.", max_size=max_size - 2))
    return first + middle + draw(st.sampled_from(ALNUM))


@st.composite
def dns_labels(draw: st.DrawFn, max_size: int = 63) -> str:
    first = draw(st.sampled_from(LOWER_ALNUM))
    if draw(st.booleans()):
        return first
    middle = draw(st.text(alphabet=LOWER_ALNUM + "-", max_size=max_size - 2))
    return first + middle + draw(st.sampled_from(LOWER_ALNUM))


@st.composite
def dns_subdomains(draw: st.DrawFn) -> str:
    parts = draw(st.lists(dns_labels(max_size=20), min_size=1, max_size=6))
    return ".".join(parts)


@st.composite
def label_keys(draw: st.DrawFn) -> str:
    name = draw(label_names())
    if draw(st.booleans()):
        return f"{draw(dns_subdomains())}/{name}"
    return name


# --- label keys and values ----------------------------------------------------------------------------------


@given(label_keys())
def test_generated_label_keys_are_valid(key: str) -> None:
    assert label_key_errors(key) == []


@given(st.one_of(st.just(""), label_names()))
def test_generated_label_values_are_valid(value: str) -> None:
    assert label_value_errors(value) == []


BAD_CHARS = " /:@!,*+=~\n\té"


@given(label_names(max_size=60), st.sampled_from(BAD_CHARS.replace("/", "")), st.integers(min_value=0))
def test_a_foreign_character_breaks_a_label_value(value: str, char: str, where: int) -> None:
    at = where % (len(value) + 1)
    assert label_value_errors(value[:at] + char + value[at:]) != []


@given(label_names(max_size=60), st.sampled_from("-_."))
def test_label_values_must_start_and_end_alphanumeric(value: str, char: str) -> None:
    assert label_value_errors(char + value) != []
    assert label_value_errors(value + char) != []
    assert label_key_errors(char + value) != []


@given(
    st.sampled_from(ALNUM), st.text(alphabet=ALNUM + "-_.", min_size=61, max_size=61), st.sampled_from(ALNUM)
)
def test_label_values_are_at_most_63_bytes(first: str, middle: str, extra: str) -> None:
    value = first + middle + extra
    assert label_value_errors(value) == []
    assert label_value_errors(value + extra) == ["must be no more than 63 bytes"]


@given(label_keys(), st.sampled_from(BAD_CHARS.replace("/", "")))
def test_a_foreign_character_in_a_label_key_breaks_it(key: str, char: str) -> None:
    assert label_key_errors(key + char) != []
    assert label_key_errors(char + key) != []


@pytest.mark.parametrize(
    ("key", "fragment"),
    [
        pytest.param("a/b/c", "a valid label key", id="two-slashes"),
        pytest.param("/app", "prefix part must be non-empty", id="empty-prefix"),
        pytest.param("example.com/", "name part must be non-empty", id="empty-name"),
        pytest.param("", "name part must be non-empty", id="empty-key"),
        pytest.param("Example.com/app", "prefix part a lowercase RFC 1123 subdomain", id="uppercase-prefix"),
        pytest.param("x" * 64, "name part must be no more than 63 bytes", id="name-64"),
        pytest.param("a" * 254 + "/x", "prefix part must be no more than 253 bytes", id="prefix-254"),
        pytest.param("app\n", "name part must consist of", id="trailing-newline"),
    ],
)
def test_invalid_label_keys(key: str, fragment: str) -> None:
    assert any(fragment in e for e in label_key_errors(key)), label_key_errors(key)


# --- names -----------------------------------------------------------------------------------------------


@given(dns_subdomains())
def test_generated_subdomains_are_valid(name: str) -> None:
    assert dns1123_subdomain_errors(name) == []


@pytest.mark.parametrize(
    ("name", "label_ok", "subdomain_ok"),
    [
        pytest.param("web", True, True, id="plain"),
        pytest.param("0abc-9", True, True, id="digits-and-hyphen"),
        pytest.param("a.b", False, True, id="dots"),
        pytest.param("Web", False, False, id="uppercase"),
        pytest.param("-web", False, False, id="leading-hyphen"),
        pytest.param("web_1", False, False, id="underscore"),
        pytest.param("", False, False, id="empty"),
        pytest.param("a" * 63, True, True, id="label-63"),
        pytest.param("a" * 64, False, True, id="label-64"),
        pytest.param(".".join(["a" * 63] * 4), False, False, id="subdomain-255"),
    ],
)
def test_dns_names(name: str, label_ok: bool, subdomain_ok: bool) -> None:
    assert (dns1123_label_errors(name) == []) == label_ok
    assert (dns1123_subdomain_errors(name) == []) == subdomain_ok


def test_a_dotted_namespace_name_is_told_about_the_dots() -> None:
    assert dns1123_label_errors("a.b") == ["must not contain dots"]


# --- port names ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "errors"),
    [
        pytest.param("http", [], id="http"),
        pytest.param("h2c-9", [], id="hyphen-digit"),
        pytest.param("a" * 15, [], id="fifteen"),
        pytest.param("a" * 16, ["must be no more than 15 bytes"], id="sixteen"),
        pytest.param("80", ["must contain at least one letter (a-z)"], id="digits-only"),
        pytest.param(
            "HTTP",
            [
                "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)",
                "must contain at least one letter (a-z)",
            ],
            id="uppercase",
        ),
        pytest.param("ht--tp", ["must not contain consecutive hyphens"], id="double-hyphen"),
        pytest.param("-http", ["must not begin or end with a hyphen"], id="leading-hyphen"),
        pytest.param("http-", ["must not begin or end with a hyphen"], id="trailing-hyphen"),
    ],
)
def test_port_names(name: str, errors: list[str]) -> None:
    assert port_name_errors(name) == errors


# --- IPs and CIDRs ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "valid"),
    [
        pytest.param("10.0.0.1", True, id="v4"),
        pytest.param("2001:db8::1", True, id="v6"),
        pytest.param("2001:DB8::1", True, id="v6-uppercase"),
        pytest.param("010.0.0.1", False, id="v4-leading-zero"),
        pytest.param("::ffff:10.0.0.1", False, id="v4-mapped"),
        pytest.param("fe80::1%eth0", False, id="zone"),
        pytest.param("10.0.0.256", False, id="octet-256"),
        pytest.param("10.0.0.1/32", False, id="cidr-is-not-an-ip"),
        pytest.param("", False, id="empty"),
    ],
)
def test_ips(text: str, valid: bool) -> None:
    assert (ip_errors(text) == []) == valid


@pytest.mark.parametrize(
    ("text", "network"),
    [
        pytest.param("10.0.0.0/8", "10.0.0.0/8", id="v4"),
        pytest.param("10.1.2.3/8", "10.0.0.0/8", id="v4-host-bits"),
        pytest.param("0.0.0.0/0", "0.0.0.0/0", id="v4-everything"),
        pytest.param("10.0.0.0/08", "10.0.0.0/8", id="prefix-leading-zero"),
        pytest.param("2001:DB8::1/32", "2001:db8::/32", id="v6-host-bits-uppercase"),
        pytest.param("::/0", "::/0", id="v6-everything"),
    ],
)
def test_valid_cidrs(text: str, network: str) -> None:
    assert str(parse_cidr(text)) == network


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        pytest.param("10.0.0.0", "must be a valid CIDR value", id="no-prefix"),
        pytest.param("10.0.0.0/33", "prefix length 33 is longer than 32", id="prefix-33"),
        pytest.param("::/129", "prefix length 129 is longer than 128", id="prefix-129"),
        pytest.param("10.0.0.0/255.0.0.0", "must be a valid CIDR value", id="netmask"),
        pytest.param("10.0.0.0/-1", "must be a valid CIDR value", id="negative"),
        pytest.param("/8", "must be a valid CIDR value", id="no-address"),
        pytest.param("010.0.0.0/8", "leading zeros", id="leading-zero-octet"),
        pytest.param("::ffff:10.0.0.0/104", "IPv4-mapped", id="v4-mapped"),
        pytest.param("fe80::%eth0/64", "zones", id="zone"),
        pytest.param("bogus", "must be a valid CIDR value", id="garbage"),
    ],
)
def test_invalid_cidrs(text: str, fragment: str) -> None:
    errors = cidr_errors(text)
    assert len(errors) == 1 and fragment in errors[0], errors


v4_networks = st.builds(
    lambda addr, plen: ipaddress.IPv4Network((addr, plen), strict=False),
    st.integers(0, 2**32 - 1),
    st.integers(0, 32),
)
v6_networks = st.builds(
    lambda addr, plen: ipaddress.IPv6Network((addr, plen), strict=False),
    st.integers(0, 2**128 - 1),
    st.integers(0, 128),
).filter(lambda n: n.network_address.ipv4_mapped is None)
networks = st.one_of(v4_networks, v6_networks)


@given(networks)
def test_cidrs_round_trip(network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> None:
    assert parse_cidr(str(network)) == network


@given(networks, networks)
def test_strictly_within_is_proper_containment(
    inner: ipaddress.IPv4Network | ipaddress.IPv6Network, outer: ipaddress.IPv4Network | ipaddress.IPv6Network
) -> None:
    # Oracle: the address sets, compared through the first and last addresses.
    same_family = inner.version == outer.version
    inside = (
        same_family
        and outer.network_address <= inner.network_address  # type: ignore[operator]
        and inner.broadcast_address <= outer.broadcast_address  # type: ignore[operator]
    )
    assert strictly_within(inner, outer) == (inside and inner != outer)
