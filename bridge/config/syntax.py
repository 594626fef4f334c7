"""Syntax checks the section parsers share: IPv4 addresses and host names, "HOST:PORT", sip: URIs,
and header names.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Final, NamedTuple

from bridge.config.values import Context, Text, quote
from bridge.errors import ConfigError

_TOKEN_RE: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_LABEL_RE: Final = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")
_SIP_URI_RE: Final = re.compile(
    r"(?P<scheme>sips?):"
    r"(?:(?P<user>[^@;?\s<>\":]+)@)?"
    r"(?P<host>\[[0-9A-Fa-f:.]+\]|[^:;?\s<>\"@\[\]]+)"
    r"(?::(?P<port>[0-9]+))?"
    r"(?P<params>;[^?\s<>\"]*)?"
    r"(?P<headers>\?[^\s<>\"]*)?",
    re.IGNORECASE,
)
_NUMERIC_HOST_RE: Final = re.compile(r"[0-9.]+")


# --------------------------------------------------------------------------- helpers: syntax


def is_ipv4(host: str) -> bool:
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        return False
    return True


def is_hostname(host: str) -> bool:
    if not host or len(host) > 253 or _NUMERIC_HOST_RE.fullmatch(host):
        return False
    return all(_LABEL_RE.fullmatch(label) for label in host.split("."))


def is_host(host: str, *, ipv6: bool = False) -> bool:
    if ipv6 and host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return False
        return True
    return is_ipv4(host) or is_hostname(host)


def parse_listen(key: str, text: Text) -> tuple[str, int]:
    value = text.value.strip()
    expected_port = f'expected "HOST:PORT" with a port 1-65535, got {text.shown}'
    if value.startswith("["):
        raise ConfigError(
            key,
            f'IPv6 is not supported; expected "HOST:PORT" with an IPv4 address or a host '
            f"name, got {text.shown}",
        )
    host, sep, port_text = value.rpartition(":")
    if not sep:
        raise ConfigError(key, expected_port)
    if not port_text.isascii() or not port_text.isdigit() or len(port_text) > 5:
        raise ConfigError(key, expected_port)
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise ConfigError(key, expected_port)
    if not is_host(host):
        raise ConfigError(
            key, f'expected "HOST:PORT" where HOST is an IPv4 address or a host name, got {text.shown}'
        )
    return host, port


class _SipUri(NamedTuple):
    scheme: str
    user: str | None
    host: str
    port: int | None


def parse_sip_uri(text: str) -> _SipUri | None:
    match = _SIP_URI_RE.fullmatch(text)
    if match is None:
        return None
    host = match.group("host")
    if not is_host(host, ipv6=True):
        return None
    port: int | None = None
    if match.group("port") is not None:
        if len(match.group("port")) > 5:
            return None
        port = int(match.group("port"))
        if not 1 <= port <= 65535:
            return None
    return _SipUri(match.group("scheme").lower(), match.group("user"), host, port)


def sip_uri(ctx: Context, key: str, value: object, *, example: str, user: bool | None = None) -> str:
    """Validate a sip:/sips: URI. ``user``: True = a user part is required, False = forbidden."""
    expected = f'a sip: or sips: URI such as "{example}"'
    text = ctx.text(key, value, expected)
    uri = parse_sip_uri(text.value.strip())
    if uri is None:
        raise ConfigError(key, f"expected {expected}, got {text.shown}")
    if user is True and uri.user is None:
        raise ConfigError(key, f'expected a sip: URI with a user part, such as "{example}", got {text.shown}')
    if user is False and uri.user is not None:
        raise ConfigError(
            key, f'expected a sip: URI without a user part, such as "{example}", got {text.shown}'
        )
    return text.value.strip()


def check_header_name(key: str, name: str) -> None:
    if not _TOKEN_RE.fullmatch(name):
        raise ConfigError(key, f"expected an HTTP header name (letters, digits and -), got {quote(name)}")
