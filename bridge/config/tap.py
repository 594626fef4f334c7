"""Profile keys for agent-assist taps (parsed for `bridge.config`).

mode: bot | tap          every INVITE of the profile is a bot call (default) or a tap
tap:  url, headers, layout, enabled_by_header, correlation_header, track_header, pair_timeout_s,
      agent_match

SIPREC INVITEs are taps whatever `mode` says. `bridge.config` calls these with its own section
readers, so every error names its key the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, Literal, cast

from bridge.config.base import REDACTED, Secret
from bridge.config.boturl import BotUrl, parse_bot_url, parse_headers
from bridge.config.syntax import check_header_name
from bridge.config.values import MISSING, SPACE_OR_CONTROL_RE, Context, Section, clean_text
from bridge.errors import ConfigError

StreamMode = Literal["bot", "tap"]
STREAM_MODES: Final = ("bot", "tap")
TapLayout = Literal["separate", "mixed", "stereo"]
TAP_LAYOUTS: Final = ("separate", "mixed", "stereo")
TAP_KEYS: Final = ("url", "headers", "layout", "enabled_by_header", "correlation_header", "track_header",
                   "pair_timeout_s", "agent_match")

_GLOB_MAX: Final = 200


@dataclass(frozen=True, slots=True)
class TapSettings:
    url: BotUrl | None = None  # the transcription service; None: bot.url (with bot.headers)
    # Handshake headers for tap.url (bot.headers go to the bot only, never to another service).
    headers: Mapping[str, Secret] = field(default_factory=dict)
    layout: TapLayout = "separate"
    enabled_by_header: str | None = "X-Stream-Mode"  # "<header>: tap" makes an INVITE a tap; None: off
    correlation_header: str = "X-Tap-Id"  # forked calls with the same value are one conversation
    track_header: str = "X-Tap-Track"  # customer | agent
    pair_timeout_s: float = 10.0  # how long after a conversation's first call its partner may join
    agent_match: tuple[str, ...] = ()  # globs on a SIPREC participant's AOR or number: the agent side


def _header(ctx: Context, sec: Section, name: str, default: str | None, *, nullable: bool) -> str | None:
    expected = 'a SIP header name such as "X-Tap-Id"'
    if nullable:
        if not sec.has(name):
            return default
        text = sec.nullable_text(name, expected)
        if text is None:
            return None
    else:
        text = sec.text(name, default or "", expected)
        if text is None:
            return default
    value = text.value.strip()
    check_header_name(sec.key(name), value)
    return value


def parse_mode(top: Section) -> StreamMode:
    return cast(StreamMode, top.choice("mode", "bot", STREAM_MODES))


def parse_tap(ctx: Context, sec: Section) -> TapSettings:
    url = None
    url_text = sec.nullable_text("url", 'a ws:// or wss:// URL, e.g. "wss://asr.example.com/stream"')
    if url_text is not None:
        raw = sec.raw("url")
        url = parse_bot_url(url_text.value.strip(), key=sec.key("url"),
                            raw=raw.strip() if isinstance(raw, str) else None)
        ctx.warnings.extend(url.warnings)
    headers = parse_headers(ctx, sec.key("headers"), sec.raw("headers") if sec.has("headers") else None)
    if headers and url is None:
        ctx.warnings.append(f"{sec.key('headers')}: ignored because tap.url is not set (taps use bot.url "
                            "and bot.headers)")
    layout = cast(TapLayout, sec.choice("layout", "separate", TAP_LAYOUTS))
    enabled_by = _header(ctx, sec, "enabled_by_header", "X-Stream-Mode", nullable=True)
    correlation = _header(ctx, sec, "correlation_header", "X-Tap-Id", nullable=False)
    track = _header(ctx, sec, "track_header", "X-Tap-Track", nullable=False)
    assert correlation is not None and track is not None
    names = [h.lower() for h in (enabled_by, correlation, track) if h]
    if len(set(names)) != len(names):
        raise ConfigError(sec.path, "enabled_by_header, correlation_header and track_header must be "
                                    "different headers")
    pair_timeout = sec.number("pair_timeout_s", 10.0, 0.5, 300.0)
    patterns: list[str] = []
    key = sec.key("agent_match")
    value = sec.raw("agent_match")
    if value is not MISSING and value is not None:
        for i, item in enumerate(ctx.items(key, value, 'globs such as "sip:agent-*" or "1???"')):
            item_key = f"{key}[{i}]"
            glob = ctx.text(item_key, item, 'a glob such as "sip:agent-*" or "1???"').value.strip()
            message = f'expected a glob without spaces, such as "sip:agent-*", got {glob!r}'
            if len(glob) > _GLOB_MAX:
                raise ConfigError(item_key, message)
            patterns.append(clean_text(item_key, glob, message, unsafe=SPACE_OR_CONTROL_RE))
    return TapSettings(url=url, headers=headers, layout=layout, enabled_by_header=enabled_by,
                       correlation_header=correlation, track_header=track, pair_timeout_s=pair_timeout,
                       agent_match=tuple(patterns))


def tap_dict(mode: StreamMode, tap: TapSettings) -> dict[str, object]:
    """The `mode` and `tap` keys of a rendered profile (secrets as ***)."""
    return {
        "mode": mode,
        "tap": {
            "url": tap.url.redacted if tap.url is not None else None,
            "headers": dict.fromkeys(tap.headers, REDACTED),
            "layout": tap.layout,
            "enabled_by_header": tap.enabled_by_header,
            "correlation_header": tap.correlation_header,
            "track_header": tap.track_header,
            "pair_timeout_s": tap.pair_timeout_s,
            "agent_match": list(tap.agent_match),
        },
    }
