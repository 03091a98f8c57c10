"""Syntax of Kubernetes API values: object names, label keys and values, port names and numbers,
IP addresses and CIDRs.

The rules and their messages follow k8s.io/apimachinery (``pkg/api/validate/content``,
``pkg/util/validation``) so a user sees what ``kubectl apply`` would tell them. Each ``*_errors``
function returns the list of what is wrong (empty when the value is valid), never raises.

Two deliberate differences from the API server's default (legacy) IP parsing, both of which
the API server itself enforces under its StrictIPCIDRValidation feature gate: IPv4 octets with
leading zeros (``010.0.0.1``, read as octal by libc and as decimal by Go) and IPv4-mapped IPv6
addresses (``::ffff:10.0.0.1``) are rejected, because different software reads them differently
and a policy must mean one thing. CIDRs with host bits set (``10.0.0.1/8``) are accepted, as the
API server accepts them, and mean their network (``10.0.0.0/8``); see :func:`parse_cidr`.
"""

from __future__ import annotations

import re
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network

# Go's regexp `^...$` anchors at the very end; Python's `$` also matches before a final newline,
# so every pattern here is used with fullmatch.
_LABEL_KEY_FMT = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_LABEL_KEY_RE = re.compile(_LABEL_KEY_FMT)
_DNS1123_LABEL_FMT = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_LABEL_RE = re.compile(_DNS1123_LABEL_FMT)
_DNS1123_SUBDOMAIN_FMT = _DNS1123_LABEL_FMT + r"(\." + _DNS1123_LABEL_FMT + ")*"
_DNS1123_SUBDOMAIN_RE = re.compile(_DNS1123_SUBDOMAIN_FMT)
_PORT_NAME_CHARSET_RE = re.compile("[-a-z0-9]+")
_PORT_NAME_LETTER_RE = re.compile("[a-z]")

LABEL_VALUE_MAX = 63
LABEL_NAME_MAX = 63
DNS1123_LABEL_MAX = 63
DNS1123_SUBDOMAIN_MAX = 253
PORT_NAME_MAX = 15

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network


def _max_len(n: int) -> str:
    return f"must be no more than {n} bytes"


def _regex_error(msg: str, fmt: str, *examples: str) -> str:
    shown = " or ".join(f"'{e}'" for e in examples)
    return f"{msg} (e.g. {shown}, regex used for validation is '{fmt}')"


def _size(value: str) -> int:
    # Upstream limits count bytes of UTF-8; non-ASCII values fail the charset anyway.
    return len(value.encode())


def dns1123_label_errors(value: str) -> list[str]:
    """RFC 1123 label: what Namespace names must be."""
    errs: list[str] = []
    if _size(value) > DNS1123_LABEL_MAX:
        errs.append(_max_len(DNS1123_LABEL_MAX))
    if not _DNS1123_LABEL_RE.fullmatch(value):
        if _DNS1123_SUBDOMAIN_RE.fullmatch(value):
            errs.append("must not contain dots")
        else:
            errs.append(
                _regex_error(
                    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
                    "and must start and end with an alphanumeric character",
                    _DNS1123_LABEL_FMT,
                    "my-name",
                    "123-abc",
                )
            )
    return errs


def dns1123_subdomain_errors(value: str) -> list[str]:
    """RFC 1123 subdomain: what most object names (NetworkPolicy, Pod, Node) must be."""
    errs: list[str] = []
    if _size(value) > DNS1123_SUBDOMAIN_MAX:
        errs.append(_max_len(DNS1123_SUBDOMAIN_MAX))
    if not _DNS1123_SUBDOMAIN_RE.fullmatch(value):
        errs.append(
            _regex_error(
                "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or "
                "'.', and must start and end with an alphanumeric character",
                _DNS1123_SUBDOMAIN_FMT,
                "example.com",
            )
        )
    return errs


_LABEL_KEY_MSG = (
    "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
    "alphanumeric character"
)


def label_key_errors(key: str) -> list[str]:
    """A label key (upstream "qualified name"): ``[prefix/]name``, prefix a DNS subdomain."""
    errs: list[str] = []
    parts = key.split("/")
    if len(parts) == 1:
        name = parts[0]
    elif len(parts) == 2:
        prefix, name = parts
        if not prefix:
            errs.append("prefix part must be non-empty")
        else:
            errs.extend("prefix part " + m for m in dns1123_subdomain_errors(prefix))
    else:
        return [
            "a valid label key "
            + _regex_error(_LABEL_KEY_MSG, _LABEL_KEY_FMT, "MyName", "my.name", "123-abc")
            + " with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
        ]
    if not name:
        errs.append("name part must be non-empty")
    elif _size(name) > LABEL_NAME_MAX:
        errs.append("name part " + _max_len(LABEL_NAME_MAX))
    if not _LABEL_KEY_RE.fullmatch(name):
        errs.append(
            "name part " + _regex_error(_LABEL_KEY_MSG, _LABEL_KEY_FMT, "MyName", "my.name", "123-abc")
        )
    return errs


def label_value_errors(value: str) -> list[str]:
    """A label value: empty, or up to 63 of ``[A-Za-z0-9._-]`` starting and ending alphanumeric."""
    errs: list[str] = []
    if _size(value) > LABEL_VALUE_MAX:
        errs.append(_max_len(LABEL_VALUE_MAX))
    if value and not _LABEL_KEY_RE.fullmatch(value):
        errs.append(
            _regex_error(
                "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or "
                "'.', and must start and end with an alphanumeric character",
                f"({_LABEL_KEY_FMT})?",
                "MyValue",
                "my_value",
                "12345",
            )
        )
    return errs


def port_number_errors(port: int) -> list[str]:
    return [] if 1 <= port <= 65535 else ["must be between 1 and 65535, inclusive"]


def port_name_errors(name: str) -> list[str]:
    """An IANA_SVC_NAME: at most 15 of ``[-a-z0-9]``, a letter somewhere, no edge or double hyphens."""
    errs: list[str] = []
    if _size(name) > PORT_NAME_MAX:
        errs.append(_max_len(PORT_NAME_MAX))
    if not _PORT_NAME_CHARSET_RE.fullmatch(name):
        errs.append("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)")
    if not _PORT_NAME_LETTER_RE.search(name):
        errs.append("must contain at least one letter (a-z)")
    if "--" in name:
        errs.append("must not contain consecutive hyphens")
    if name.startswith("-") or name.endswith("-"):
        errs.append("must not begin or end with a hyphen")
    return errs


_IP_EXAMPLE = "(e.g. 10.9.8.7 or 2001:db8::ffff)"
_CIDR_EXAMPLE = "(e.g. 10.9.8.0/24 or 2001:db8::/64)"


def parse_ip(text: str) -> IPAddress:
    """An IPv4 or IPv6 address; raises ``ValueError`` with a message for people."""
    if "%" in text:
        raise ValueError(f"must be a valid IP address {_IP_EXAMPLE}; zones ('%') are not allowed")
    try:
        ip = ip_address(text)
    except ValueError:
        hint = "; IPv4 octets must not have leading zeros" if _has_leading_zero_octet(text) else ""
        raise ValueError(f"must be a valid IP address {_IP_EXAMPLE}{hint}") from None
    if isinstance(ip, IPv6Address) and ip.ipv4_mapped is not None:
        raise ValueError("must not be an IPv4-mapped IPv6 address; write the IPv4 address itself")
    return ip


def _has_leading_zero_octet(text: str) -> bool:
    parts = text.split("/", maxsplit=1)[0].split(".")
    return len(parts) == 4 and any(len(p) > 1 and p.startswith("0") and p.isdigit() for p in parts)


def parse_cidr(text: str) -> IPNetwork:
    """``address/prefix`` as the API server reads it: host bits are allowed and masked off
    (``10.0.0.1/8`` is ``10.0.0.0/8``). Raises ``ValueError`` with a message for people.

    Python's ``ip_network`` also takes a bare address or a dotted netmask; Go's ``ParseCIDR``
    takes neither, so neither is accepted here.
    """
    addr, sep, prefix = text.partition("/")
    if not sep or not (prefix.isascii() and prefix.isdigit()) or not addr:
        raise ValueError(f"must be a valid CIDR value {_CIDR_EXAMPLE}")
    try:
        ip = parse_ip(addr)
    except ValueError as exc:
        raise ValueError(f"must be a valid CIDR value {_CIDR_EXAMPLE}: the address {exc}") from None
    length = int(prefix)
    if length > ip.max_prefixlen:
        raise ValueError(
            f"must be a valid CIDR value {_CIDR_EXAMPLE}: prefix length {length} is longer than "
            f"{ip.max_prefixlen}"
        )
    return ip_network((ip, length), strict=False)


def strictly_within(inner: IPNetwork, outer: IPNetwork) -> bool:
    """``inner`` is a proper part of ``outer``: same family, longer prefix, inside it (what an
    ipBlock ``except`` entry must be relative to its ``cidr``)."""
    return (
        inner.version == outer.version
        and inner.prefixlen > outer.prefixlen
        and int(inner.network_address) & int(outer.netmask) == int(outer.network_address)
    )


def ip_errors(text: str) -> list[str]:
    try:
        parse_ip(text)
    except ValueError as exc:
        return [str(exc)]
    return []


def cidr_errors(text: str) -> list[str]:
    try:
        parse_cidr(text)
    except ValueError as exc:
        return [str(exc)]
    return []
