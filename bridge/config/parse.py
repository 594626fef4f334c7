"""`parse_profile`: already-parsed YAML data to a validated `Profile`, one section at a time.

The ``sip`` section is read by `parse_sip`, the access-control, TLS and timeout keys by `guard`,
``mode`` and ``tap`` by `tap`; the ``bot``, ``media``, ``logging``, ``control`` and ``recording``
sections here.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Final, cast

from bridge.config.boturl import parse_bot_url, parse_headers
from bridge.config.guard import (
    BOT_GUARD_KEYS,
    MEDIA_GUARD_KEYS,
    SIP_GUARD_KEYS,
    parse_bot_guard,
    parse_rtp_timeout,
)
from bridge.config.model import (
    CLOCK_RATES,
    LOG_FORMATS,
    LOG_LEVELS,
    RECORDING_LAYOUTS,
    RTP_LATCHING,
    BotSettings,
    CloseAction,
    ClosePolicy,
    ControlSettings,
    LogFormat,
    LogLevel,
    LogSettings,
    MediaSettings,
    Profile,
    RecordingLayout,
    RecordingSettings,
    UnreachableAction,
    UnreachablePolicy,
)
from bridge.config.outbound import API_KEYS, OUTBOUND_KEYS, parse_api, parse_outbound, parse_state_dir
from bridge.config.parse_sip import parse_sip
from bridge.config.syntax import check_header_name, is_ipv4, parse_listen, sip_uri
from bridge.config.tap import TAP_KEYS, parse_mode, parse_tap
from bridge.config.values import MISSING, Context, Section, clean_text
from bridge.errors import ConfigError

_TOP_KEYS: Final = ("name", "sip", "bot", "media", "logging", "control", "recording", "mode", "tap", "api",
                    "outbound", "state_dir")
_SIP_KEYS: Final = (
    "listen",
    "transports",
    "public_address",
    "rtp_port_start",
    "rtp_port_range",
    "codecs",
    "max_calls",
    "user_agent",
    "forward_headers",
    "register",
    *SIP_GUARD_KEYS,
)
_BOT_KEYS: Final = (
    "url",
    "headers",
    "connect_timeout",
    "stop_grace",
    "connect_retries",
    "chunk_ms",
    "prebuffer_ms",
    "buffer_seconds",
    "max_message_bytes",
    "warn_message_bytes",
    "clear_answers_marks",
    "account_sid",
    "url_header",
    "url_header_allowed_hosts",
    "url_allowed_hosts",
    "on_unreachable",
    "on_close",
    *BOT_GUARD_KEYS,
)
_UNREACHABLE_KEYS: Final = ("action", "sip_status", "transfer_to")
_CLOSE_KEYS: Final = ("action", "transfer_to")
_MEDIA_KEYS: Final = ("clock_rate", "tick_phase_ms", "rtp_latching", *MEDIA_GUARD_KEYS)
_LOGGING_KEYS: Final = ("level", "format")
_CONTROL_KEYS: Final = ("listen",)
_RECORDING_KEYS: Final = ("enabled", "dir", "layout", "retention_days", "max_files")
_HOST_GLOB_RE: Final = re.compile(r"[A-Za-z0-9_.*?\[\]!-]+")


# --------------------------------------------------------------------------- sections


def _parse_unreachable(ctx: Context, sec: Section) -> UnreachablePolicy:
    action = cast(UnreachableAction, sec.choice("action", "reject", ("reject", "transfer")))
    sip_status = sec.integer("sip_status", 503, 400, 699, what="a SIP status 400-699")
    transfer_to = _parse_transfer_to(ctx, sec, action)
    return UnreachablePolicy(action=action, sip_status=sip_status, transfer_to=transfer_to)


def _parse_close(ctx: Context, sec: Section) -> ClosePolicy:
    action = cast(CloseAction, sec.choice("action", "hangup", ("hangup", "transfer")))
    return ClosePolicy(action=action, transfer_to=_parse_transfer_to(ctx, sec, action))


def _parse_transfer_to(ctx: Context, sec: Section, action: str) -> str | None:
    key = sec.key("transfer_to")
    example = "sip:agents@pbx.example.com"
    value = sec.raw("transfer_to")
    if value is MISSING or value is None:
        if action == "transfer":
            raise ConfigError(
                key, f'required when action is transfer; expected a sip: URI such as "{example}"'
            )
        return None
    transfer_to = sip_uri(ctx, key, value, example=example)
    if action != "transfer":
        ctx.warnings.append(f"{key}: ignored because {sec.key('action')} is {action}, not transfer")
    return transfer_to



def _host_globs(ctx: Context, sec: Section, name: str) -> list[str] | None:
    """A list of host names or globs (None when the key is absent)."""
    key = sec.key(name)
    value = sec.raw(name)
    if value is MISSING or value is None:
        return None
    hosts: list[str] = []
    for i, item in enumerate(ctx.items(key, value, 'host names or globs such as "*.bots.example.com"')):
        pattern = ctx.text(f"{key}[{i}]", item, 'a host name or glob such as "*.bots.example.com"')
        host = pattern.value.strip().lower()
        if not _HOST_GLOB_RE.fullmatch(host):
            raise ConfigError(
                f"{key}[{i}]",
                f'expected a host name or glob such as "*.bots.example.com" (no scheme or port), '
                f"got {pattern.shown}",
            )
        if host == "*":
            ctx.warnings.append(f'{key}[{i}]: "*" lets a caller send the call to any host')
        hosts.append(host)
    return hosts

def _parse_bot(ctx: Context, sec: Section) -> BotSettings:
    url_key = sec.key("url")
    url_text = sec.required_text("url", "a ws:// or wss:// URL", secret=True,
                                 missing='a ws:// or wss:// URL, e.g. "wss://bot.example.com/stream"')
    raw_url = cast(str, sec.raw("url"))
    bot_url = parse_bot_url(url_text.value.strip(), key=url_key, raw=raw_url.strip())
    ctx.warnings.extend(bot_url.warnings)

    headers = parse_headers(ctx, sec.key("headers"), sec.raw("headers") if sec.has("headers") else None)

    connect_timeout = sec.number("connect_timeout", 10.0, 0.1, 120.0)
    stop_grace = sec.number("stop_grace", 0.25, 0.0, 5.0)
    connect_retries = sec.integer("connect_retries", 1, 0, 5)
    chunk_ms = sec.integer("chunk_ms", 20, 20, 1000, step=20, what="a multiple of 20 from 20 to 1000")
    prebuffer_ms = sec.integer("prebuffer_ms", 60, 0, 2000, step=20, what="a multiple of 20 from 0 to 2000")
    buffer_seconds = sec.number("buffer_seconds", 30.0, 1.0, 600.0)
    if prebuffer_ms > buffer_seconds * 1000:
        raise ConfigError(
            sec.key("prebuffer_ms"),
            f"expected at most bot.buffer_seconds ({buffer_seconds:g} s), got {prebuffer_ms} ms",
        )
    max_message_bytes = sec.integer("max_message_bytes", 1048576, 1024, 64 * 1024 * 1024)
    warn_message_bytes = sec.integer("warn_message_bytes", 102400, 1, 64 * 1024 * 1024)
    if warn_message_bytes > max_message_bytes:
        raise ConfigError(
            sec.key("warn_message_bytes"),
            f"expected at most bot.max_message_bytes ({max_message_bytes}), got {warn_message_bytes}",
        )
    clear_answers_marks = sec.boolean("clear_answers_marks", True)

    account_sid = sec.plain_text("account_sid", "sip-ws-bridge")

    url_header: str | None = None
    header = sec.nullable_text("url_header", 'a SIP header name such as "X-Bot-Url"')
    if header is not None:
        url_header = header.value.strip()
        check_header_name(sec.key("url_header"), url_header)

    hosts_key = sec.key("url_header_allowed_hosts")
    allowed_hosts = _host_globs(ctx, sec, "url_header_allowed_hosts") or []
    if url_header is not None and not allowed_hosts:
        raise ConfigError(
            hosts_key,
            f"must list at least one host when bot.url_header is set (to {url_header}); "
            'expected host names or globs such as ["bots.example.com", "*.bots.example.com"]',
        )
    if url_header is None and allowed_hosts:
        ctx.warnings.append(f"{hosts_key}: ignored because bot.url_header is not set")

    url_allowed = _host_globs(ctx, sec, "url_allowed_hosts")
    if url_allowed is None:
        url_allowed = [bot_url.host.lower()] if bot_url.host else []

    on_unreachable = _parse_unreachable(ctx, sec.section("on_unreachable", _UNREACHABLE_KEYS))
    on_close = _parse_close(ctx, sec.section("on_close", _CLOSE_KEYS))
    guard = parse_bot_guard(ctx, sec)

    return BotSettings(
        url=bot_url.url,
        url_redacted=bot_url.redacted,
        sample_rate=bot_url.sample_rate,
        query_parameters=bot_url.query_parameters,
        headers=headers,
        connect_timeout=connect_timeout,
        stop_grace_s=stop_grace,
        connect_retries=connect_retries,
        chunk_ms=chunk_ms,
        prebuffer_ms=prebuffer_ms,
        buffer_seconds=buffer_seconds,
        max_message_bytes=max_message_bytes,
        warn_message_bytes=warn_message_bytes,
        clear_answers_marks=clear_answers_marks,
        account_sid=account_sid,
        url_header=url_header,
        url_header_allowed_hosts=tuple(allowed_hosts),
        url_allowed_hosts=tuple(url_allowed),
        on_unreachable=on_unreachable,
        on_close=on_close,
        guard=guard,
    )


def _parse_control(ctx: Context, sec: Section) -> ControlSettings:
    if not sec.has("listen"):
        return ControlSettings()
    text = sec.nullable_text("listen", '"HOST:PORT", e.g. "127.0.0.1:8780"')
    if text is None:
        return ControlSettings(listen_host=None)
    host, port = parse_listen(sec.key("listen"), text)
    if not (host == "localhost" or (is_ipv4(host) and ipaddress.IPv4Address(host).is_loopback)):
        ctx.warnings.append(
            f"{sec.key('listen')}: {host} is not a loopback address: /status shows callers' numbers "
            "and /metrics the call volume to anyone who can reach it; firewall it"
        )
    return ControlSettings(listen_host=host, listen_port=port)


def _parse_recording(ctx: Context, sec: Section) -> RecordingSettings:
    enabled = sec.boolean("enabled", False)
    expected_dir = (
        'a directory such as "/var/lib/sip-ws-bridge/recordings" or "${STATE_DIRECTORY}/recordings"'
    )
    directory: str | None = None
    dir_text = sec.nullable_text("dir", expected_dir)
    if dir_text is not None:
        directory = clean_text(
            sec.key("dir"), dir_text.value, f"expected {expected_dir}, got a path with control characters"
        )
        path = Path(directory)
        if not path.is_absolute() and ctx.base_dir is not None:
            path = ctx.base_dir / path
        directory = str(path)
    if enabled and directory is None:
        raise ConfigError(sec.key("dir"), f"required when recording.enabled is true; expected {expected_dir}")
    layout = cast(RecordingLayout, sec.choice("layout", "stereo", RECORDING_LAYOUTS))
    retention_days = sec.integer(
        "retention_days", 30, 0, 36500, what="an integer 0-36500 (days; 0 = keep recordings)"
    )
    max_files = sec.integer("max_files", 10000, 0, 10_000_000, what="an integer 0-10000000 (0 = no limit)")
    return RecordingSettings(
        enabled=enabled, dir=directory, layout=layout, retention_days=retention_days, max_files=max_files
    )


# --------------------------------------------------------------------------- public API


def parse_profile(
    data: object,
    *,
    name: str = "profile",
    env: Mapping[str, str] | None = None,
    base_dir: str | os.PathLike[str] | None = None,
) -> Profile:
    """Validate already-parsed YAML ``data`` into a Profile.

    ``name`` is used when the data has no ``name`` key; ``env`` replaces os.environ
    for ``${...}`` references; ``base_dir`` is where relative ``${file:...}`` paths start
    (default: the current directory). Raises ConfigError, and only ConfigError.
    """
    ctx = Context(env, Path(base_dir) if base_dir is not None else None)
    if data is None:
        raise ConfigError("", 'the profile is empty; expected a mapping with at least "sip" and "bot"')
    top = Section(ctx, "", data, _TOP_KEYS)

    profile_name = top.plain_text("name", name)

    if top.raw("sip") in (MISSING, None):
        raise ConfigError(
            "sip", 'required section is missing; expected a mapping with at least listen: "HOST:PORT"'
        )
    if top.raw("bot") in (MISSING, None):
        raise ConfigError(
            "bot", "required section is missing; expected a mapping with at least url: wss://..."
        )
    sip = parse_sip(ctx, top.section("sip", _SIP_KEYS))
    bot = _parse_bot(ctx, top.section("bot", _BOT_KEYS))

    media_sec = top.section("media", _MEDIA_KEYS)
    phase = media_sec.raw("tick_phase_ms")
    media = MediaSettings(clock_rate=media_sec.int_choice("clock_rate", 8000, CLOCK_RATES),
                          rtp_timeout=parse_rtp_timeout(media_sec),
                          rtp_latching=media_sec.choice("rtp_latching", "first", RTP_LATCHING),
                          tick_phase_ms=None if phase in (MISSING, None)
                          else ctx.integer(media_sec.key("tick_phase_ms"), phase, 0, 19))

    log_sec = top.section("logging", _LOGGING_KEYS)
    logging = LogSettings(
        level=cast(LogLevel, log_sec.choice("level", "info", LOG_LEVELS)),
        format=cast(LogFormat, log_sec.choice("format", "auto", LOG_FORMATS)),
    )
    control = _parse_control(ctx, top.section("control", _CONTROL_KEYS))
    recording = _parse_recording(ctx, top.section("recording", _RECORDING_KEYS))
    mode = parse_mode(top)
    tap = parse_tap(ctx, top.section("tap", TAP_KEYS))
    api = parse_api(ctx, top.section("api", API_KEYS))
    registered = sip.register is not None
    outbound = parse_outbound(ctx, top.section("outbound", OUTBOUND_KEYS), registered=registered)
    state_dir = parse_state_dir(ctx, top, profile_name)
    return Profile(
        name=profile_name, sip=sip, bot=bot, media=media, logging=logging, warnings=tuple(ctx.warnings),
        control=control, recording=recording, mode=mode, tap=tap, api=api, outbound=outbound,
        state_dir=state_dir,
    )
