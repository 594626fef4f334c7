"""The bot WebSocket: its URL and its handshake headers.

`parse_bot_url` checks ``bot.url`` (and ``tap.url``, and per call a URL chosen by ``bot.url_header``)
and derives its sample rate and query parameters; `parse_headers` reads ``bot.headers`` and
``tap.headers``; `redact_url` hides a URL's password (for logs, the one place that does);
`header_allowed` and `bot_url_host_allowed` are the per-call checks of the service.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final
from urllib.parse import SplitResult, parse_qsl, urlsplit

from bridge.config.base import DEFAULT_SAMPLE_RATE, REDACTED, SAMPLE_RATES, Secret
from bridge.config.syntax import check_header_name, is_host, is_hostname, is_ipv4
from bridge.config.values import CONTROL_RE, SPACE_OR_CONTROL_RE, Context, clean_text, kind, quote, show
from bridge.errors import ConfigError

# Headers the WebSocket client sets itself; overriding them breaks the handshake.
_RESERVED_WS_HEADERS: Final = frozenset(
    {
        "host",
        "upgrade",
        "connection",
        "content-length",
        "transfer-encoding",
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-extensions",
        "sec-websocket-accept",
        "sec-websocket-protocol",
    }
)


@dataclass(frozen=True, slots=True)
class BotUrl:
    """A parsed bot WebSocket URL (see :func:`parse_bot_url`)."""

    url: Secret
    redacted: str
    host: str
    sample_rate: int
    query_parameters: dict[str, str]
    warnings: tuple[str, ...]


def _redact_url_text(text: str) -> str:
    """Hide anything that may be a URL's userinfo, even in a URL that does not parse."""
    scheme_end = text.find("://")
    if scheme_end < 0:
        return text
    start = scheme_end + 3
    at = text.rfind("@")
    if at < start:
        return text
    return text[:start] + REDACTED + text[at:]


def redact_url(url: str) -> str:
    """The URL without the password of its userinfo (``user:***@host``), for logs and errors;
    the rest is kept as written. A URL that does not parse loses its whole userinfo."""
    try:
        parts = urlsplit(url)
        _ = parts.password
    except ValueError:
        return _redact_url_text(url)
    return _redact_password(url, parts)


def _redact_password(url: str, parts: SplitResult) -> str:
    if parts.password is None:
        return url
    start = len(parts.scheme) + 3
    netloc = url[start : start + len(parts.netloc)]
    userinfo, _, hostport = netloc.rpartition("@")
    user = userinfo.split(":", 1)[0]
    return url[:start] + f"{user}:{REDACTED}@{hostport}" + url[start + len(netloc) :]


# --------------------------------------------------------------------------- the bot URL


def _bot_url_parts(key: str, url: str, raw: str) -> tuple[SplitResult, str]:
    """Split and check a ws:// or wss:// URL. Messages show ``raw`` with any userinfo hidden."""
    shown = quote(_redact_url_text(raw))
    expected = f'expected a ws:// or wss:// URL such as "wss://bot.example.com/stream", got {shown}'
    clean_text(key, url, f"{expected} (spaces and control characters must be %-encoded)",
               unsafe=SPACE_OR_CONTROL_RE, strip=False, blank_is_empty=False, empty=expected)
    try:
        parts = urlsplit(url)
        host = parts.hostname
        _ = parts.port
    except ValueError:
        raise ConfigError(key, f"{expected} (the host or port is not valid)") from None
    if parts.scheme.lower() not in ("ws", "wss") or url[len(parts.scheme) : len(parts.scheme) + 3] != "://":
        raise ConfigError(key, expected)
    if not host:
        raise ConfigError(key, f"{expected} (the URL has no host)")
    if parts.port == 0:
        raise ConfigError(key, f"{expected} (the port must be 1-65535)")
    if not (is_ipv4(host) or is_hostname(host) or is_host(f"[{host}]", ipv6=True)):
        raise ConfigError(key, f"{expected} (the host is not valid)")
    if parts.fragment or url.endswith("#"):
        raise ConfigError(key, f"{expected} (a WebSocket URL must not have a #fragment)")
    return parts, host


def parse_bot_url(url: str, *, key: str = "bot.url", raw: str | None = None) -> BotUrl:
    """Check a bot URL and derive its sample rate and query parameters.

    ``sample_rate`` comes from the first ``sample-rate`` or ``sample_rate`` query
    parameter (8000, 16000 or 24000; anything else gives 8000 and a warning);
    ``query_parameters`` holds every other pair, the first value of a name winning.
    Used for ``bot.url`` and, per call, for a URL chosen by ``bot.url_header``.
    Raises ConfigError(key, ...) when the URL is not valid; the message never shows
    a userinfo password.
    """
    parts, host = _bot_url_parts(key, url, url if raw is None else raw)
    redacted = _redact_password(url, parts)
    sample_rate: int | None = None
    sample_text: str | None = None
    query: dict[str, str] = {}
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name in ("sample-rate", "sample_rate"):
            if sample_text is None:
                sample_text = value
                stripped = value.strip()
                if stripped.isascii() and stripped.isdigit() and int(stripped) in SAMPLE_RATES:
                    sample_rate = int(stripped)
            continue
        query.setdefault(name, value)
    warnings: list[str] = []
    if sample_rate is None:
        sample_rate = DEFAULT_SAMPLE_RATE
        if sample_text is not None:
            warnings.append(
                f"{key}: sample rate {quote(sample_text)} is not one of "
                f"{', '.join(str(r) for r in SAMPLE_RATES)}; using {DEFAULT_SAMPLE_RATE}"
            )
    return BotUrl(Secret(url), redacted, host, sample_rate, query, tuple(warnings))


# --------------------------------------------------------------------------- per-call helpers


def header_allowed(name: str, patterns: Sequence[str]) -> bool:
    """Whether a SIP header name matches one of the case-insensitive glob ``patterns``."""
    lowered = name.strip().lower()
    return bool(lowered) and any(fnmatch.fnmatchcase(lowered, p.lower()) for p in patterns)


def bot_url_host_allowed(url: str, patterns: Sequence[str]) -> bool:
    """Whether ``url`` is a ws:// or wss:// URL whose host matches one of the glob ``patterns``.

    Only the host name is compared (case-insensitively, without port or userinfo);
    a URL that does not parse is never allowed.
    """
    try:
        _, host = _bot_url_parts("", url, url)
    except ConfigError:
        return False
    host = host.lower().rstrip(".")
    return any(fnmatch.fnmatchcase(host, p.lower().rstrip(".")) for p in patterns)


# --------------------------------------------------------------------------- the handshake headers


def parse_headers(ctx: Context, sec_path: str, value: object) -> dict[str, Secret]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(sec_path, f"expected a mapping of header name to value, got {kind(value)}")
    headers: dict[str, Secret] = {}
    seen: set[str] = set()
    for name, header_value in value.items():
        if not isinstance(name, str):
            raise ConfigError(sec_path, f"header names must be strings, got the key {show(name)}")
        key = f"{sec_path}.{name}"
        check_header_name(key, name)
        lowered = name.lower()
        if lowered in _RESERVED_WS_HEADERS:
            raise ConfigError(
                key, "is set by the WebSocket client itself and cannot be overridden; expected another header"
            )
        if lowered in seen:
            raise ConfigError(key, "is listed twice (header names are case-insensitive); expected each once")
        seen.add(lowered)
        text = ctx.text(key, header_value, 'a string (quote it: Name: "value")', secret=True)
        if CONTROL_RE.search(text.value.replace("\t", "")):
            raise ConfigError(key, "expected a header value without control characters (newline, NUL, ...)")
        headers[name] = Secret(text.value)
    return headers
