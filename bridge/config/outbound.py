"""Profile keys for the call API and outbound calls (parsed for `bridge.config`).

api:       listen, auth_token, account_sid, tls {cert_file, key_file}, webhook_secret,
           callback_allowed_hosts, callback_ca_file, webhook_retry_window, status_callback,
           status_callback_events
outbound:  via (registrar | "sip:host[:port]" | {uri, username, password}), caller_id, headers,
           allow_to, max_concurrent, calls_per_second, burst
state_dir: where durable state lives (the webhook queue, idempotency keys)

Deny by default: an empty `outbound.allow_to` refuses every destination, callbacks go to loopback
hosts unless `api.callback_allowed_hosts` names others, and the API needs a token.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal

from bridge.config.base import REDACTED, Secret
from bridge.config.syntax import parse_listen
from bridge.config.values import CONTROL_RE, MISSING, Context, Section
from bridge.errors import ConfigError

API_KEYS: Final = (
    "listen",
    "auth_token",
    "account_sid",
    "tls",
    "webhook_secret",
    "callback_allowed_hosts",
    "callback_ca_file",
    "webhook_retry_window",
    "status_callback",
    "status_callback_events",
)
API_TLS_KEYS: Final = ("cert_file", "key_file")
OUTBOUND_KEYS: Final = (
    "via",
    "caller_id",
    "headers",
    "allow_to",
    "max_concurrent",
    "calls_per_second",
    "burst",
)
VIA_KEYS: Final = ("uri", "username", "password")
STATUS_EVENTS: Final = ("initiated", "ringing", "answered", "completed")

_GLOB_RE: Final = re.compile(r"[^\s\x00-\x1f\x7f]{1,200}")
_SIP_URI_RE: Final = re.compile(r"sips?:[^\s@\x00-\x1f\x7f]+", re.IGNORECASE)
_HEADER_RE: Final = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")


@dataclass(frozen=True, slots=True)
class ApiTls:
    cert_file: str
    key_file: str


@dataclass(frozen=True, slots=True)
class ApiProfile:
    listen_host: str | None = None  # None: no API
    listen_port: int = 0
    auth_token: Secret | None = None
    account_sid: str | None = None  # None: bot.account_sid
    tls: ApiTls | None = None
    webhook_secret: Secret | None = None
    callback_allowed_hosts: tuple[str, ...] | None = None  # None: loopback names and addresses only
    callback_ca_file: str | None = None
    webhook_retry_window: float = 600.0
    status_callback: str | None = None  # webhooks for every call, inbound ones included
    status_callback_events: tuple[str, ...] = STATUS_EVENTS


ViaKind = Literal["registrar", "trunk"]


@dataclass(frozen=True, slots=True)
class OutboundVia:
    kind: ViaKind
    uri: str | None = None  # the trunk: "sip:host[:port]"
    username: str | None = None
    password: Secret | None = None


@dataclass(frozen=True, slots=True)
class OutboundSettings:
    via: OutboundVia | None = None  # None: no outbound calls (the API refuses them)
    caller_id: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    allow_to: tuple[str, ...] = ()  # empty: every destination refused
    max_concurrent: int = 10
    calls_per_second: float = 5.0
    burst: float = 10.0


def default_state_dir(name: str, env: Mapping[str, str]) -> str:
    """systemd's StateDirectory= when set, else ~/.local/state/sip-ws-bridge/<name>."""
    given = env.get("STATE_DIRECTORY", "").split(":")[0]
    if given:
        return given
    home = env.get("HOME") or os.path.expanduser("~")
    return str(Path(home) / ".local" / "state" / "sip-ws-bridge" / name)


def parse_state_dir(ctx: Context, top: Section, name: str) -> str:
    text = top.text("state_dir", "", 'a directory such as "/var/lib/sip-ws-bridge"')
    if text is None:
        return default_state_dir(name, ctx.env)
    value = text.value.strip()
    if not value or CONTROL_RE.search(value):
        raise ConfigError("state_dir", f"expected a directory path, got {text.shown}")
    path = Path(value)
    return str(path if path.is_absolute() or ctx.base_dir is None else ctx.base_dir / path)


def _secret(ctx: Context, sec: Section, name: str, expected: str) -> Secret | None:
    if not sec.has(name) or sec.raw(name) is None:
        return None
    text = ctx.text(sec.key(name), sec.raw(name), expected, secret=True)
    if not text.value or CONTROL_RE.search(text.value):
        raise ConfigError(
            sec.key(name),
            "expected a non-empty secret without control characters (an unset ${VAR} gives an empty one)",
        )
    return Secret(text.value)


def _globs(ctx: Context, sec: Section, name: str, example: str) -> tuple[str, ...] | None:
    value = sec.raw(name)
    if value is MISSING or value is None:
        return None
    key = sec.key(name)
    out = []
    for i, item in enumerate(ctx.items(key, value, f'globs such as "{example}"')):
        text = ctx.text(f"{key}[{i}]", item, f'a glob such as "{example}"').value.strip()
        if not _GLOB_RE.fullmatch(text):
            raise ConfigError(
                f"{key}[{i}]", f'expected a glob without spaces, such as "{example}", got {text!r}'
            )
        out.append(text)
    return tuple(out)


def _file(ctx: Context, sec: Section, name: str) -> str | None:
    text = sec.nullable_text(name, 'a file path such as "/etc/sip-ws-bridge/api.pem"')
    if text is None:
        return None
    path = Path(text.value.strip())
    if not path.is_absolute() and ctx.base_dir is not None:
        path = ctx.base_dir / path
    if not path.is_file():
        raise ConfigError(sec.key(name), f"{path} is not a readable file")
    return str(path)


def _http_url(sec: Section, name: str) -> str | None:
    text = sec.nullable_text(name, 'an http:// or https:// URL, e.g. "https://hooks.example.com/calls"')
    if text is None:
        return None
    value = text.value.strip()
    if not re.fullmatch(r"https?://[^\s\x00-\x1f\x7f/]+(/\S*)?", value, re.IGNORECASE):
        raise ConfigError(sec.key(name), f"expected an http:// or https:// URL, got {text.shown}")
    return value


def parse_api(ctx: Context, sec: Section) -> ApiProfile:
    listen = sec.nullable_text("listen", '"HOST:PORT", e.g. "127.0.0.1:8790"')
    token = _secret(ctx, sec, "auth_token", "a string (the API's bearer token)")
    tls_sec = sec.section("tls", API_TLS_KEYS)
    tls = None
    if sec.has("tls") and sec.raw("tls") is not None:
        cert, key = _file(ctx, tls_sec, "cert_file"), _file(ctx, tls_sec, "key_file")
        if cert is None or key is None:
            raise ConfigError(sec.key("tls"), "expected both cert_file and key_file")
        tls = ApiTls(cert, key)
    host, port = (None, 0)
    if listen is not None:
        host, port = parse_listen(sec.key("listen"), listen)
        if token is None:
            raise ConfigError(
                sec.key("auth_token"),
                "required with api.listen: every API request is "
                'authenticated (auth_token: "${SIP_WS_BRIDGE_API_TOKEN}")',
            )
        loopback = host == "localhost" or _is_loopback(host)
        if not loopback and tls is None:
            ctx.warnings.append(
                f"{sec.key('listen')}: {host} is not a loopback address and api.tls is not set: "
                "the API token and call data cross the network in clear text"
            )
    account = sec.nullable_text("account_sid", 'a string such as "AC0123"')
    account_sid = account.value.strip() if account is not None else None
    if account_sid is not None and (not account_sid or not _HEADER_RE.fullmatch(account_sid)):
        raise ConfigError(sec.key("account_sid"), "expected letters, digits and -_. only")
    events_raw = sec.raw("status_callback_events")
    events: tuple[str, ...] = STATUS_EVENTS
    if events_raw is not MISSING and events_raw is not None:
        key = sec.key("status_callback_events")
        chosen = [
            ctx.choice(f"{key}[{i}]", item, STATUS_EVENTS)
            for i, item in enumerate(ctx.items(key, events_raw, "a list of status events"))
        ]
        events = tuple(e for e in STATUS_EVENTS if e in chosen)
    return ApiProfile(
        listen_host=host,
        listen_port=port,
        auth_token=token,
        account_sid=account_sid,
        tls=tls,
        webhook_secret=_secret(ctx, sec, "webhook_secret", "a string (the webhooks' signing key)"),
        callback_allowed_hosts=_globs(ctx, sec, "callback_allowed_hosts", "*.example.com"),
        callback_ca_file=_file(ctx, sec, "callback_ca_file"),
        webhook_retry_window=sec.number("webhook_retry_window", 600.0, 10.0, 7 * 86400.0),
        status_callback=_http_url(sec, "status_callback"),
        status_callback_events=events,
    )


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _via(ctx: Context, sec: Section, registered: bool) -> OutboundVia | None:
    value = sec.raw("via")
    key = sec.key("via")
    if value is MISSING or value is None:
        return OutboundVia("registrar") if registered else None
    if isinstance(value, str) and value.strip() == "registrar":
        if not registered:
            raise ConfigError(key, "registrar needs sip.register (the registrar and its credentials)")
        return OutboundVia("registrar")
    if isinstance(value, Mapping):
        via = Section(ctx, key, value, VIA_KEYS)
        uri = _trunk_uri(ctx, key + ".uri", via.required("uri", '"sip:host[:port]"'))
        user = via.nullable_text("username", "a user name")
        password = _secret(ctx, via, "password", "a string (the trunk's password)")
        if (user is None) != (password is None):
            raise ConfigError(key, "expected both username and password, or neither")
        return OutboundVia("trunk", uri, user.value.strip() if user is not None else None, password)
    return OutboundVia("trunk", _trunk_uri(ctx, key, value))


def _trunk_uri(ctx: Context, key: str, value: object) -> str:
    expected = '"registrar", a trunk URI such as "sip:sbc.example.com:5060", or {uri, username, password}'
    text = ctx.text(key, value, expected).value.strip()
    if not _SIP_URI_RE.fullmatch(text):
        raise ConfigError(key, f"expected {expected}, got {text!r}")
    return text


def parse_outbound(ctx: Context, sec: Section, *, registered: bool) -> OutboundSettings:
    caller = sec.nullable_text("caller_id", 'a number or user such as "+914412345678"')
    caller_id = caller.value.strip() if caller is not None else None
    if caller is not None and (not caller_id or re.search(r"[\s<>\"]", caller.value.strip())):
        raise ConfigError(
            sec.key("caller_id"), f"expected a number or SIP user without spaces, got {caller.shown}"
        )
    headers: dict[str, str] = {}
    raw = sec.raw("headers")
    if raw is not MISSING and raw is not None:
        if not isinstance(raw, Mapping):
            raise ConfigError(sec.key("headers"), "expected a mapping of header names to values")
        for name, item in raw.items():
            hkey = f"{sec.key('headers')}.{name}"
            if not isinstance(name, str) or not _HEADER_RE.fullmatch(name):
                raise ConfigError(hkey, "expected a SIP header name")
            text = ctx.text(hkey, item, "a string").value
            if CONTROL_RE.search(text.replace("\t", " ")):
                raise ConfigError(hkey, "expected a value without control characters")
            headers[name] = text
    rate = sec.number("calls_per_second", 5.0, 0.01, 1000.0)
    burst = sec.number("burst", 2 * rate, 1.0, 10_000.0)
    return OutboundSettings(
        via=_via(ctx, sec, registered),
        caller_id=caller_id,
        headers=headers,
        allow_to=_globs(ctx, sec, "allow_to", "+9180*") or (),
        max_concurrent=sec.integer("max_concurrent", 10, 1, 100_000),
        calls_per_second=rate,
        burst=burst,
    )


def outbound_dict(api: ApiProfile, outbound: OutboundSettings, state_dir: str) -> dict[str, object]:
    """The `api`, `outbound` and `state_dir` keys of a rendered profile (secrets as ***)."""
    via = outbound.via
    return {
        "api": {
            "listen": f"{api.listen_host}:{api.listen_port}" if api.listen_host else None,
            "auth_token": REDACTED if api.auth_token else None,
            "account_sid": api.account_sid,
            "tls": {"cert_file": api.tls.cert_file, "key_file": api.tls.key_file} if api.tls else None,
            "webhook_secret": REDACTED if api.webhook_secret else None,
            "callback_allowed_hosts": list(api.callback_allowed_hosts)
            if api.callback_allowed_hosts is not None
            else None,
            "callback_ca_file": api.callback_ca_file,
            "webhook_retry_window": api.webhook_retry_window,
            "status_callback": api.status_callback,
            "status_callback_events": list(api.status_callback_events),
        },
        "outbound": {
            "via": None
            if via is None
            else "registrar"
            if via.kind == "registrar"
            else {"uri": via.uri, "username": via.username, "password": REDACTED if via.password else None},
            "caller_id": outbound.caller_id,
            "headers": dict(outbound.headers),
            "allow_to": list(outbound.allow_to),
            "max_concurrent": outbound.max_concurrent,
            "calls_per_second": outbound.calls_per_second,
            "burst": outbound.burst,
        },
        "state_dir": state_dir,
    }
