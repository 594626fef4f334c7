"""SIP profiles: the YAML schema, its loader and its validator.

A profile says where the bridge listens for SIP, whether it registers with a PBX
(``sip.register``) or takes INVITEs from a trunk directly, which bot WebSocket each
call is streamed to (``bot``), and how audio and logs are handled.

Validation is hand-written and strict: every error is a :class:`ConfigError` whose
``key`` is the dotted path of the offending value and whose message says what is
wrong and what is expected. Unknown keys are errors (with a did-you-mean), so a typo
can never be silently ignored.

Any string value may contain ``${NAME}`` or ``${NAME:-default}`` (environment
variables), or be exactly ``${file:/path}`` (the file's contents minus one trailing
newline; a relative path is taken from the profile's directory). ``$${`` is a literal
``${``. A number or boolean may also be written as such a string
(``max_calls: ${MAX_CALLS}``). Values whose type is :class:`Secret` (the register
password, every ``bot.headers`` value, the whole bot URL) never appear in a repr,
in :func:`render_profile` output or in an error message.
"""

from __future__ import annotations

import difflib
import fnmatch
import hmac
import ipaddress
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal, NamedTuple, cast
from urllib.parse import SplitResult, parse_qsl, urlsplit

import yaml

from bridge import __version__
from bridge.config_guard import (
    BOT_GUARD_KEYS,
    MEDIA_GUARD_KEYS,
    SIP_GUARD_KEYS,
    BotGuard,
    SipGuard,
    bot_guard_dict,
    parse_bot_guard,
    parse_rtp_timeout,
    parse_sip_guard,
    sip_guard_dict,
)
from bridge.config_tap import TAP_KEYS, StreamMode, TapSettings, parse_mode, parse_tap, tap_dict
from bridge.errors import ConfigError

__all__ = [
    "CODECS",
    "DEFAULT_USER_AGENT",
    "REDACTED",
    "SAMPLE_RATES",
    "BotSettings",
    "BotUrl",
    "ClosePolicy",
    "ControlSettings",
    "LogSettings",
    "MediaSettings",
    "Profile",
    "RecordingSettings",
    "RegisterSettings",
    "Secret",
    "SipSettings",
    "UnreachablePolicy",
    "bot_url_host_allowed",
    "demo_profile",
    "header_allowed",
    "load_profile",
    "parse_bot_url",
    "parse_profile",
    "render_profile",
]

REDACTED: Final = "***"
CODECS: Final = ("PCMU", "PCMA", "G722")
TRANSPORTS: Final = ("udp", "tcp")
SAMPLE_RATES: Final = (8000, 16000, 24000)
CLOCK_RATES: Final = (8000, 16000)
LOG_LEVELS: Final = ("debug", "info", "warning", "error")
LOG_FORMATS: Final = ("auto", "json", "text")
DEFAULT_USER_AGENT: Final = f"sip-ws-bridge/{__version__}"
DEFAULT_SAMPLE_RATE: Final = 8000

LogLevel = Literal["debug", "info", "warning", "error"]
LogFormat = Literal["auto", "json", "text"]
RecordingLayout = Literal["stereo", "mixed"]
RECORDING_LAYOUTS: Final = ("stereo", "mixed")
DEFAULT_CONTROL_LISTEN: Final = ("127.0.0.1", 8780)
UnreachableAction = Literal["reject", "transfer"]
CloseAction = Literal["hangup", "transfer"]


# --------------------------------------------------------------------------- secrets


class Secret:
    """A string that never shows itself: ``repr`` is ``'***'`` and ``str`` is ``***``.

    Call :meth:`reveal` at the one place the real value is needed.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"'{REDACTED}'"

    def __str__(self) -> str:
        return REDACTED

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Secret):
            return hmac.compare_digest(self._value.encode(), other._value.encode())
        return NotImplemented

    def __hash__(self) -> int:
        return hash((Secret, self._value))

    def __bool__(self) -> bool:
        return bool(self._value)


# --------------------------------------------------------------------------- the schema


@dataclass(frozen=True, slots=True)
class RegisterSettings:
    registrar: str
    username: str
    password: Secret
    realm: str = "*"
    expires: int = 300
    identity: str = ""
    outbound_proxy: str | None = None
    # Contact to register instead of this instance's own address: the front (load balancer)
    # address when several instances share one SIP identity (deploy/kamailio/front.cfg).
    contact: str | None = None


@dataclass(frozen=True, slots=True)
class SipSettings:
    listen_host: str
    listen_port: int
    transports: tuple[str, ...] = TRANSPORTS
    public_address: str | None = None
    rtp_port_start: int = 20000
    rtp_port_range: int = 10000
    codecs: tuple[str, ...] = CODECS
    max_calls: int = 100
    user_agent: str = DEFAULT_USER_AGENT
    forward_headers: tuple[str, ...] = ("X-*",)
    register: RegisterSettings | None = None
    # allow_from, rate_limit, inbound_auth, tls, srtp (bridge/config_guard.py)
    guard: SipGuard = field(default_factory=SipGuard)

    @property
    def listen(self) -> str:
        return f"{self.listen_host}:{self.listen_port}"

    @property
    def trunk_mode(self) -> bool:
        """True when the bridge does not register and accepts INVITEs directly."""
        return self.register is None


@dataclass(frozen=True, slots=True)
class UnreachablePolicy:
    """What to do when the bot cannot be reached at call start (after the retries)."""

    action: UnreachableAction = "reject"
    sip_status: int = 503
    transfer_to: str | None = None


@dataclass(frozen=True, slots=True)
class ClosePolicy:
    """What to do when the bot closes its socket in the middle of a call."""

    action: CloseAction = "hangup"
    transfer_to: str | None = None


@dataclass(frozen=True, slots=True)
class BotUrl:
    """A parsed bot WebSocket URL (see :func:`parse_bot_url`)."""

    url: Secret
    redacted: str
    host: str
    sample_rate: int
    query_parameters: dict[str, str]
    warnings: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class BotSettings:
    url: Secret  # the full URL, userinfo and query included: reveal() it to connect
    url_redacted: str  # the same URL with a userinfo password shown as ***: for logs
    sample_rate: int = DEFAULT_SAMPLE_RATE  # derived from ?sample-rate= / ?sample_rate=
    query_parameters: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, Secret] = field(default_factory=dict)  # extra handshake headers
    connect_timeout: float = 10.0
    # After `stop`, how long the bot may finish what it is sending or close first (then 1000).
    stop_grace_s: float = 0.25
    connect_retries: int = 1
    chunk_ms: int = 20  # what Exotel's bots expect: 20 ms frames (320 bytes at 8 kHz)
    prebuffer_ms: int = 60
    buffer_seconds: float = 30.0
    max_message_bytes: int = 1048576
    warn_message_bytes: int = 102400
    clear_answers_marks: bool = True
    account_sid: str = "sip-ws-bridge"
    url_header: str | None = None
    url_header_allowed_hosts: tuple[str, ...] = ()
    on_unreachable: UnreachablePolicy = UnreachablePolicy()
    on_close: ClosePolicy = ClosePolicy()
    # stall_timeout, ping_interval, ping_timeout, tls (bridge/config_guard.py)
    guard: BotGuard = field(default_factory=BotGuard)


@dataclass(frozen=True, slots=True)
class MediaSettings:
    clock_rate: int = 8000
    rtp_timeout: float = 30.0  # seconds without RTP from the caller before hanging up; 0 = never
    # Where in every 20 ms this instance's media clock ticks (ms past a multiple of 20 ms of the
    # monotonic clock); None: wherever start-up put it. Instances on one host with different
    # phases (0 and 10 for two) do their per-tick media work at different moments.
    tick_phase_ms: int | None = None
    # Where the bridge sends a call's RTP when packets come from another address than the SDP's:
    # "first" moves there only until the SDP address has been heard (callers behind NAT), never
    # after; "follow" is PJSIP's rule (10 packets in a row from a new source move it, any time).
    rtp_latching: str = "first"


RTP_LATCHING: Final = ("first", "follow")


@dataclass(frozen=True, slots=True)
class LogSettings:
    level: LogLevel = "info"
    format: LogFormat = "auto"


@dataclass(frozen=True, slots=True)
class ControlSettings:
    """The control HTTP listener (/healthz, /readyz, /metrics, /status); listen_host None = off."""

    listen_host: str | None = DEFAULT_CONTROL_LISTEN[0]
    listen_port: int = DEFAULT_CONTROL_LISTEN[1]

    @property
    def listen(self) -> str | None:
        return None if self.listen_host is None else f"{self.listen_host}:{self.listen_port}"


@dataclass(frozen=True, slots=True)
class RecordingSettings:
    """Per-call WAV recordings: caller left / bot right (stereo) or both mixed (mono)."""

    enabled: bool = False
    dir: str | None = None  # required when enabled
    layout: RecordingLayout = "stereo"
    retention_days: int = 30  # recordings older than this are deleted; 0 = keep them
    max_files: int = 10000  # the oldest beyond this many are deleted; 0 = no limit


@dataclass(frozen=True, slots=True)
class Profile:
    name: str
    sip: SipSettings
    bot: BotSettings
    media: MediaSettings = MediaSettings()
    logging: LogSettings = LogSettings()
    warnings: tuple[str, ...] = ()
    control: ControlSettings = ControlSettings()
    recording: RecordingSettings = RecordingSettings()
    mode: StreamMode = "bot"  # tap: every INVITE is an agent-assist tap (config_tap.py)
    tap: TapSettings = field(default_factory=TapSettings)


_TOP_KEYS: Final = ("name", "sip", "bot", "media", "logging", "control", "recording", "mode", "tap")
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
_REGISTER_KEYS: Final = (
    "registrar",
    "username",
    "password",
    "realm",
    "expires",
    "identity",
    "outbound_proxy",
    "contact",
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

_DERIVED_HINTS: Final = {
    "sample_rate": "sample_rate is not a key: it is read from the bot.url query, e.g. ?sample-rate=16000",
    "sample-rate": "sample-rate is not a key: it is read from the bot.url query, e.g. ?sample-rate=16000",
    "query_parameters": "query_parameters is not a key: it is read from the bot.url query string",
}

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

_VAR_RE: Final = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?::-(.*))?", re.DOTALL)
_TOKEN_RE: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_HEADER_GLOB_RE: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z?\[\]-]+")
_HOST_GLOB_RE: Final = re.compile(r"[A-Za-z0-9_.*?\[\]!-]+")
_LABEL_RE: Final = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")
_CONTROL_RE: Final = re.compile(r"[\x00-\x1f\x7f]")
_SPACE_OR_CONTROL_RE: Final = re.compile(r"[\s\x00-\x1f\x7f]")
_SIP_URI_RE: Final = re.compile(
    r"(?P<scheme>sips?):"
    r"(?:(?P<user>[^@;?\s<>\":]+)@)?"
    r"(?P<host>\[[0-9A-Fa-f:.]+\]|[^:;?\s<>\"@\[\]]+)"
    r"(?::(?P<port>[0-9]+))?"
    r"(?P<params>;[^?\s<>\"]*)?"
    r"(?P<headers>\?[^\s<>\"]*)?",
    re.IGNORECASE,
)
_NAME_ADDR_RE: Final = re.compile(r"\s*(?:\"(?:[^\"\\]|\\.)*\"|[^\"<>]*)\s*<([^<>]*)>\s*")
_NUMERIC_HOST_RE: Final = re.compile(r"[0-9.]+")
_INT_TEXT_RE: Final = re.compile(r"[+-]?[0-9]+")

_SHOW_MAX: Final = 80


# --------------------------------------------------------------------------- helpers: messages


def _quote(text: str) -> str:
    if len(text) > _SHOW_MAX:
        text = text[: _SHOW_MAX - 3] + "..."
    return json.dumps(text, ensure_ascii=False)


def _kind(value: object) -> str:
    """A value's type, for messages that must not show the value itself."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, Mapping):
        return "a mapping"
    return f"a {type(value).__name__}"


def _show(value: object) -> str:
    """A non-secret value as it should appear after "got" in a message."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value) if abs(value) < 10**30 else "a very large integer"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return _quote(value)
    return _kind(value)


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


def _unknown_key(key: str, name: str, allowed: Sequence[str]) -> ConfigError:
    if name in _DERIVED_HINTS:
        return ConfigError(key, f"unknown key: {_DERIVED_HINTS[name]}")
    lowered = {a.lower(): a for a in allowed}
    match = lowered.get(name.lower().replace("-", "_"))
    if match is None:
        close = difflib.get_close_matches(name, list(allowed), n=1, cutoff=0.6)
        if not close:
            close = difflib.get_close_matches(name.lower(), list(allowed), n=1, cutoff=0.6)
        match = close[0] if close else None
    hint = f'did you mean "{match}"? ' if match else ""
    return ConfigError(key, f"unknown key; {hint}expected one of: {', '.join(allowed)}")


# --------------------------------------------------------------------------- helpers: values


class _Text(NamedTuple):
    value: str  # after ${...} substitution
    shown: str  # how to show it in a message: the text as written if a substitution happened


_MISSING: Final = object()


class _Context:
    def __init__(self, env: Mapping[str, str] | None, base_dir: Path | None) -> None:
        self.env: Mapping[str, str] = os.environ if env is None else env
        self.base_dir = base_dir
        self.warnings: list[str] = []

    # ----------------------------------------------------------- substitution

    def substitute(self, key: str, raw: str, *, secret: bool) -> tuple[str, bool]:
        """Resolve ``${...}`` references in ``raw``. Returns the text and whether anything was replaced."""
        if "${" not in raw:
            return raw, False
        out: list[str] = []
        pos = 0
        replaced = False
        while True:
            start = raw.find("${", pos)
            if start < 0:
                out.append(raw[pos:])
                break
            if start > 0 and raw[start - 1] == "$":  # "$${" is a literal "${"
                out.append(raw[pos : start - 1] + "${")
                pos = start + 2
                continue
            out.append(raw[pos:start])
            end = raw.find("}", start + 2)
            if end < 0:
                raise ConfigError(
                    key,
                    "unterminated ${ reference; expected ${NAME}, ${NAME:-default} or ${file:/path} "
                    "(write $${ for a literal ${)",
                )
            body = raw[start + 2 : end]
            replaced = True
            if body.startswith("file:"):
                if start != 0 or end != len(raw) - 1:
                    raise ConfigError(key, "a ${file:/path} reference must be the whole value")
                return self._read_file(key, body[5:]), True
            match = _VAR_RE.fullmatch(body)
            if match is None:
                what = "reference" if secret else f"reference {_quote('${' + body + '}')}"
                raise ConfigError(
                    key,
                    f"invalid {what}; expected ${{NAME}}, ${{NAME:-default}} or ${{file:/path}} "
                    "(write $${ for a literal ${)",
                )
            var, default = match.group(1), match.group(2)
            value = self.env.get(var)
            if value is None or (default is not None and value == ""):
                if default is None:
                    raise ConfigError(
                        key,
                        f"environment variable {var} is not set (referenced as ${{{var}}}); "
                        f"set it, or give a default with ${{{var}:-default}}",
                    )
                value = default
            out.append(value)
            pos = end + 1
        return "".join(out), replaced

    def _read_file(self, key: str, name: str) -> str:
        if not name.strip():
            raise ConfigError(key, "${file:} names no file; expected ${file:/path/to/file}")
        path = Path(name)
        if not path.is_absolute() and self.base_dir is not None:
            path = self.base_dir / path
        try:
            data = path.read_bytes()
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise ConfigError(key, f"cannot read secret file {path}: {reason}") from None
        except ValueError:  # an embedded NUL or an unencodable character in the path
            raise ConfigError(key, f"cannot read secret file {_quote(name)}: invalid path") from None
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise ConfigError(key, f"secret file {path} is not valid UTF-8 text") from None
        if text.endswith("\n"):
            text = text[:-1]
            if text.endswith("\r"):
                text = text[:-1]
        return text

    # ----------------------------------------------------------- typed readers

    def text(self, key: str, value: object, expected: str, *, secret: bool = False) -> _Text:
        if not isinstance(value, str):
            got = _kind(value) if secret else _show(value)
            raise ConfigError(key, f"expected {expected}, got {got}")
        resolved, replaced = self.substitute(key, value, secret=secret)
        return _Text(resolved, _quote(value) if replaced else _quote(resolved))

    def scalar_text(self, key: str, value: object) -> str | None:
        """The text of a number/boolean written as a ``${...}`` string, else None."""
        if isinstance(value, str) and "${" in value:
            resolved, replaced = self.substitute(key, value, secret=False)
            if replaced:
                return resolved.strip()
        return None

    def integer(
        self, key: str, value: object, lo: int, hi: int, *, step: int = 1, what: str | None = None
    ) -> int:
        expected = what or f"an integer {lo}-{hi}"
        number: int | None = None
        shown = _show(value)
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        else:
            text = self.scalar_text(key, value)
            if text is not None:
                shown = _quote(cast(str, value))
                if _INT_TEXT_RE.fullmatch(text) and len(text) < 30:
                    number = int(text)
        if number is None or not lo <= number <= hi or number % step:
            raise ConfigError(key, f"expected {expected}, got {shown}")
        return number

    def number(self, key: str, value: object, lo: float, hi: float) -> float:
        expected = f"a number {lo:g}-{hi:g}"
        shown = _show(value)
        number: float | None = None
        if isinstance(value, int) and not isinstance(value, bool):
            number = float(value) if lo <= value <= hi else None
        elif isinstance(value, float):
            number = value
        else:
            text = self.scalar_text(key, value)
            if text is not None:
                shown = _quote(cast(str, value))
                try:
                    number = float(text) if len(text) < 40 else None
                except ValueError:
                    number = None
        if number is None or math.isnan(number) or not lo <= number <= hi:
            raise ConfigError(key, f"expected {expected}, got {shown}")
        return number

    def boolean(self, key: str, value: object) -> bool:
        if isinstance(value, bool):
            return value
        text = self.scalar_text(key, value)
        if text is not None:
            lowered = text.lower()
            if lowered in ("true", "yes", "on", "1"):
                return True
            if lowered in ("false", "no", "off", "0"):
                return False
            raise ConfigError(key, f"expected true or false, got {_quote(cast(str, value))}")
        raise ConfigError(key, f"expected true or false, got {_show(value)}")

    def choice(self, key: str, value: object, choices: Sequence[str]) -> str:
        expected = "one of " + ", ".join(choices)
        text = self.text(key, value, expected)
        for option in choices:
            if text.value.strip().lower() == option.lower():
                return option
        raise ConfigError(key, f"expected {expected}, got {text.shown}")

    def int_choice(self, key: str, value: object, choices: Sequence[int]) -> int:
        expected = " or ".join(str(c) for c in choices)
        number = self.integer(key, value, min(choices), max(choices), what=expected)
        if number not in choices:
            raise ConfigError(key, f"expected {expected}, got {number}")
        return number

    def items(self, key: str, value: object, expected: str) -> list[object]:
        if isinstance(value, list | tuple):
            return list(value)
        raise ConfigError(key, f"expected a list of {expected}, got {_show(value)}")


class _Section:
    """One mapping of the profile: unknown keys are rejected as soon as it is opened."""

    def __init__(self, ctx: _Context, path: str, value: object, allowed: Sequence[str]) -> None:
        if value is None:
            value = {}
        if not isinstance(value, Mapping):
            what = f"the {path} section" if path else "the profile"
            raise ConfigError(
                path, f"expected {what} to be a mapping of keys ({', '.join(allowed)}), got {_show(value)}"
            )
        for name in value:
            if not isinstance(name, str):
                raise ConfigError(path, f"keys must be strings, got the key {_show(name)}")
            if name not in allowed:
                raise _unknown_key(self._join(path, name), name, allowed)
        self.ctx = ctx
        self.path = path
        self.data: Mapping[str, object] = value

    @staticmethod
    def _join(path: str, name: str) -> str:
        return f"{path}.{name}" if path else name

    def key(self, name: str) -> str:
        return self._join(self.path, name)

    def has(self, name: str) -> bool:
        return name in self.data

    def raw(self, name: str) -> object:
        return self.data.get(name, _MISSING)

    def section(self, name: str, allowed: Sequence[str]) -> _Section:
        return _Section(self.ctx, self.key(name), self.data.get(name), allowed)

    def required(self, name: str, expected: str) -> object:
        value = self.data.get(name, _MISSING)
        if value is _MISSING or value is None:
            raise ConfigError(self.key(name), f"required key is missing; expected {expected}")
        return value

    def optional(self, name: str, expected: str, default: object) -> object:
        """The value, or _MISSING when absent; an explicit null for a non-nullable key is an error."""
        value = self.data.get(name, _MISSING)
        if value is None:
            shown = "[" + ", ".join(map(str, default)) + "]" if isinstance(default, list) else _show(default)
            raise ConfigError(
                self.key(name),
                f"expected {expected}, got null (remove the key to use the default {shown})",
            )
        return value

    def integer(
        self, name: str, default: int, lo: int, hi: int, *, step: int = 1, what: str | None = None
    ) -> int:
        expected = what or f"an integer {lo}-{hi}"
        value = self.optional(name, expected, default)
        if value is _MISSING:
            return default
        return self.ctx.integer(self.key(name), value, lo, hi, step=step, what=what)

    def number(self, name: str, default: float, lo: float, hi: float) -> float:
        value = self.optional(name, f"a number {lo:g}-{hi:g}", default)
        if value is _MISSING:
            return default
        return self.ctx.number(self.key(name), value, lo, hi)

    def boolean(self, name: str, default: bool) -> bool:
        value = self.optional(name, "true or false", default)
        if value is _MISSING:
            return default
        return self.ctx.boolean(self.key(name), value)

    def choice(self, name: str, default: str, choices: Sequence[str]) -> str:
        value = self.optional(name, "one of " + ", ".join(choices), default)
        if value is _MISSING:
            return default
        return self.ctx.choice(self.key(name), value, choices)

    def int_choice(self, name: str, default: int, choices: Sequence[int]) -> int:
        value = self.optional(name, " or ".join(str(c) for c in choices), default)
        if value is _MISSING:
            return default
        return self.ctx.int_choice(self.key(name), value, choices)

    def text(self, name: str, default: str, expected: str) -> _Text | None:
        """A non-nullable string with a default: None when absent."""
        value = self.optional(name, expected, default)
        if value is _MISSING:
            return None
        return self.ctx.text(self.key(name), value, expected)

    def nullable_text(self, name: str, expected: str) -> _Text | None:
        """A string that may be null; an empty string (e.g. from ``${X:-}``) also means null."""
        value = self.data.get(name)
        if value is None:
            return None
        text = self.ctx.text(self.key(name), value, expected + " or null")
        return text if text.value.strip() else None


# --------------------------------------------------------------------------- helpers: syntax


def _is_ipv4(host: str) -> bool:
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        return False
    return True


def _is_hostname(host: str) -> bool:
    if not host or len(host) > 253 or _NUMERIC_HOST_RE.fullmatch(host):
        return False
    return all(_LABEL_RE.fullmatch(label) for label in host.split("."))


def _is_host(host: str, *, ipv6: bool = False) -> bool:
    if ipv6 and host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return False
        return True
    return _is_ipv4(host) or _is_hostname(host)


def _parse_listen(key: str, text: _Text) -> tuple[str, int]:
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
    if not _is_host(host):
        raise ConfigError(
            key, f'expected "HOST:PORT" where HOST is an IPv4 address or a host name, got {text.shown}'
        )
    return host, port


class _SipUri(NamedTuple):
    scheme: str
    user: str | None
    host: str
    port: int | None


def _parse_sip_uri(text: str) -> _SipUri | None:
    match = _SIP_URI_RE.fullmatch(text)
    if match is None:
        return None
    host = match.group("host")
    if not _is_host(host, ipv6=True):
        return None
    port: int | None = None
    if match.group("port") is not None:
        if len(match.group("port")) > 5:
            return None
        port = int(match.group("port"))
        if not 1 <= port <= 65535:
            return None
    return _SipUri(match.group("scheme").lower(), match.group("user"), host, port)


def _sip_uri(ctx: _Context, key: str, value: object, *, example: str, user: bool | None = None) -> str:
    """Validate a sip:/sips: URI. ``user``: True = a user part is required, False = forbidden."""
    expected = f'a sip: or sips: URI such as "{example}"'
    text = ctx.text(key, value, expected)
    uri = _parse_sip_uri(text.value.strip())
    if uri is None:
        raise ConfigError(key, f"expected {expected}, got {text.shown}")
    if user is True and uri.user is None:
        raise ConfigError(key, f'expected a sip: URI with a user part, such as "{example}", got {text.shown}')
    if user is False and uri.user is not None:
        raise ConfigError(
            key, f'expected a sip: URI without a user part, such as "{example}", got {text.shown}'
        )
    return text.value.strip()


def _check_header_name(key: str, name: str) -> None:
    if not _TOKEN_RE.fullmatch(name):
        raise ConfigError(key, f"expected an HTTP header name (letters, digits and -), got {_quote(name)}")


# --------------------------------------------------------------------------- the bot URL


def _bot_url_parts(key: str, url: str, raw: str) -> tuple[SplitResult, str]:
    """Split and check a ws:// or wss:// URL. Messages show ``raw`` with any userinfo hidden."""
    shown = _quote(_redact_url_text(raw))
    expected = f'expected a ws:// or wss:// URL such as "wss://bot.example.com/stream", got {shown}'
    if not url or _SPACE_OR_CONTROL_RE.search(url):
        raise ConfigError(
            key, f"{expected} (spaces and control characters must be %-encoded)" if url else expected
        )
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
    if not (_is_ipv4(host) or _is_hostname(host) or _is_host(f"[{host}]", ipv6=True)):
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
    start = len(parts.scheme) + 3
    netloc = url[start : start + len(parts.netloc)]
    if parts.password is not None:
        userinfo, _, hostport = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        redacted = url[:start] + f"{user}:{REDACTED}@{hostport}" + url[start + len(netloc) :]
    else:
        redacted = url
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
                f"{key}: sample rate {_quote(sample_text)} is not one of "
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


# --------------------------------------------------------------------------- sections


def _parse_register(ctx: _Context, sec: _Section) -> RegisterSettings:
    registrar = _sip_uri(
        ctx,
        sec.key("registrar"),
        sec.required("registrar", '"sip:host[:port]"'),
        example="sip:pbx.example.com",
        user=False,
    )
    registrar_uri = _parse_sip_uri(registrar)
    assert registrar_uri is not None

    username_key = sec.key("username")
    username = ctx.text(
        username_key,
        sec.required("username", "a non-empty string"),
        'a non-empty string (quote numbers: username: "1001")',
    )
    if not username.value.strip():
        raise ConfigError(username_key, "expected a non-empty string, got an empty one")
    if _SPACE_OR_CONTROL_RE.search(username.value):
        raise ConfigError(username_key, f"expected a user name without spaces, got {username.shown}")

    password_key = sec.key("password")
    password = ctx.text(
        password_key,
        sec.required("password", "a string (the SIP password)"),
        'a string (quote it: password: "...")',
        secret=True,
    )
    if not password.value:
        raise ConfigError(password_key, "expected a non-empty password, got an empty one")
    if _CONTROL_RE.search(password.value):
        raise ConfigError(password_key, "expected a password without control characters (newline, tab, ...)")

    realm_text = sec.text("realm", "*", 'a realm, or "*" for any')
    realm = "*" if realm_text is None else realm_text.value.strip()
    if not realm:
        raise ConfigError(sec.key("realm"), 'expected a realm, or "*" for any, got an empty string')

    expires = sec.integer("expires", 300, 60, 86400, what="an integer 60-86400 (seconds)")

    identity_key = sec.key("identity")
    identity_value = sec.optional("identity", '"sip:user@domain"', "sip:{username}@{registrar host}")
    if identity_value is _MISSING:
        if re.search(r"[@:;<>\"?\s]", username.value):
            raise ConfigError(
                identity_key,
                "is required: it cannot be derived from sip.register.username, which has characters not "
                'allowed in a SIP URI user part; expected a SIP address such as "sip:1001@pbx.example.com"',
            )
        identity = f"sip:{username.value}@{registrar_uri.host}"
    else:
        expected = 'a SIP address such as "sip:1001@pbx.example.com" or "Bot <sip:1001@pbx.example.com>"'
        text = ctx.text(identity_key, identity_value, expected)
        inner = text.value.strip()
        match = _NAME_ADDR_RE.fullmatch(inner)
        if match is not None:
            inner = match.group(1).strip()
        uri = _parse_sip_uri(inner)
        if uri is None or uri.user is None:
            raise ConfigError(identity_key, f"expected {expected}, got {text.shown}")
        identity = text.value.strip()

    outbound = sec.nullable_text("outbound_proxy", "a sip: URI")
    outbound_proxy: str | None = None
    if outbound is not None:
        outbound_proxy = _sip_uri(
            ctx, sec.key("outbound_proxy"), outbound.value, example="sip:proxy.example.com;lr"
        )

    contact_text = sec.nullable_text("contact", "a sip: URI")
    contact: str | None = None
    if contact_text is not None:
        contact = _sip_uri(ctx, sec.key("contact"), contact_text.value, example="sip:bridge@192.0.2.10:5060")

    return RegisterSettings(
        registrar=registrar,
        username=username.value,
        password=Secret(password.value),
        realm=realm,
        expires=expires,
        identity=identity,
        outbound_proxy=outbound_proxy,
        contact=contact,
    )


def _distinct_choices(
    ctx: _Context, sec: _Section, name: str, choices: tuple[str, ...], item_name: str
) -> tuple[str, ...]:
    """A non-empty list of distinct values from `choices`, in the order given (default: all)."""
    options = ", ".join(choices)
    value = sec.optional(name, f"a list of {options}", list(choices))
    if value is _MISSING:
        return choices
    key = sec.key(name)
    listed: list[str] = []
    for i, item in enumerate(ctx.items(key, value, options)):
        choice = ctx.choice(f"{key}[{i}]", item, choices)
        if choice in listed:
            raise ConfigError(f"{key}[{i}]", f"{choice} is listed twice; expected each {item_name} once")
        listed.append(choice)
    if not listed:
        raise ConfigError(key, f"expected at least one of {options}, got an empty list")
    return tuple(listed)


def _parse_sip(ctx: _Context, sec: _Section) -> SipSettings:
    listen_key = sec.key("listen")
    listen = ctx.text(
        listen_key,
        sec.required("listen", '"HOST:PORT", e.g. "0.0.0.0:5060"'),
        '"HOST:PORT", e.g. "0.0.0.0:5060"',
    )
    listen_host, listen_port = _parse_listen(listen_key, listen)

    transports = _distinct_choices(ctx, sec, "transports", TRANSPORTS, "transport")

    public_address: str | None = None
    public = sec.nullable_text("public_address", "an IPv4 address or a host name")
    if public is not None:
        public_address = public.value.strip()
        if not _is_host(public_address):
            raise ConfigError(
                sec.key("public_address"),
                f"expected an IPv4 address or a host name (no port), or null, got {public.shown}",
            )

    rtp_port_start = sec.integer("rtp_port_start", 20000, 1024, 65000)
    rtp_port_range = sec.integer("rtp_port_range", 10000, 0, 60000, what="an integer 0-60000 (0 = unlimited)")
    if rtp_port_range and rtp_port_start + rtp_port_range > 65536:
        raise ConfigError(
            sec.key("rtp_port_range"),
            f"rtp_port_start {rtp_port_start} + rtp_port_range {rtp_port_range} goes past port 65535; "
            f"expected at most {65536 - rtp_port_start} (or 0 for unlimited)",
        )

    codecs = _distinct_choices(ctx, sec, "codecs", CODECS, "codec")

    max_calls = sec.integer("max_calls", 100, 1, 1024)

    user_agent = DEFAULT_USER_AGENT
    agent = sec.text("user_agent", DEFAULT_USER_AGENT, "a non-empty string")
    if agent is not None:
        user_agent = agent.value.strip()
        if not user_agent or _CONTROL_RE.search(user_agent):
            raise ConfigError(
                sec.key("user_agent"),
                f"expected a non-empty string without control characters, got {agent.shown}",
            )

    forward_headers: tuple[str, ...] = ("X-*",)
    value = sec.optional("forward_headers", "a list of header name patterns", ["X-*"])
    if value is not _MISSING:
        key = sec.key("forward_headers")
        patterns: list[str] = []
        for i, item in enumerate(ctx.items(key, value, 'header name patterns such as "X-*"')):
            pattern = ctx.text(f"{key}[{i}]", item, 'a header name pattern such as "X-*"')
            if not _HEADER_GLOB_RE.fullmatch(pattern.value.strip()):
                raise ConfigError(
                    f"{key}[{i}]", f'expected a header name or glob such as "X-*", got {pattern.shown}'
                )
            patterns.append(pattern.value.strip())
        forward_headers = tuple(patterns)

    register: RegisterSettings | None = None
    if sec.raw("register") not in (_MISSING, None):
        register = _parse_register(ctx, sec.section("register", _REGISTER_KEYS))
    guard = parse_sip_guard(ctx, sec, register, (listen_host, listen_port), transports)

    return SipSettings(
        listen_host=listen_host,
        listen_port=listen_port,
        transports=transports,
        public_address=public_address,
        rtp_port_start=rtp_port_start,
        rtp_port_range=rtp_port_range,
        codecs=codecs,
        max_calls=max_calls,
        user_agent=user_agent,
        forward_headers=forward_headers,
        register=register,
        guard=guard,
    )


def _parse_unreachable(ctx: _Context, sec: _Section) -> UnreachablePolicy:
    action = cast(UnreachableAction, sec.choice("action", "reject", ("reject", "transfer")))
    sip_status = sec.integer("sip_status", 503, 400, 699, what="a SIP status 400-699")
    transfer_to = _parse_transfer_to(ctx, sec, action)
    return UnreachablePolicy(action=action, sip_status=sip_status, transfer_to=transfer_to)


def _parse_close(ctx: _Context, sec: _Section) -> ClosePolicy:
    action = cast(CloseAction, sec.choice("action", "hangup", ("hangup", "transfer")))
    return ClosePolicy(action=action, transfer_to=_parse_transfer_to(ctx, sec, action))


def _parse_transfer_to(ctx: _Context, sec: _Section, action: str) -> str | None:
    key = sec.key("transfer_to")
    example = "sip:agents@pbx.example.com"
    value = sec.raw("transfer_to")
    if value is _MISSING or value is None:
        if action == "transfer":
            raise ConfigError(
                key, f'required when action is transfer; expected a sip: URI such as "{example}"'
            )
        return None
    transfer_to = _sip_uri(ctx, key, value, example=example)
    if action != "transfer":
        ctx.warnings.append(f"{key}: ignored because {sec.key('action')} is {action}, not transfer")
    return transfer_to


def _parse_headers(ctx: _Context, sec_path: str, value: object) -> dict[str, Secret]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(sec_path, f"expected a mapping of header name to value, got {_kind(value)}")
    headers: dict[str, Secret] = {}
    seen: set[str] = set()
    for name, header_value in value.items():
        if not isinstance(name, str):
            raise ConfigError(sec_path, f"header names must be strings, got the key {_show(name)}")
        key = f"{sec_path}.{name}"
        _check_header_name(key, name)
        lowered = name.lower()
        if lowered in _RESERVED_WS_HEADERS:
            raise ConfigError(
                key, "is set by the WebSocket client itself and cannot be overridden; expected another header"
            )
        if lowered in seen:
            raise ConfigError(key, "is listed twice (header names are case-insensitive); expected each once")
        seen.add(lowered)
        text = ctx.text(key, header_value, 'a string (quote it: Name: "value")', secret=True)
        if _CONTROL_RE.search(text.value.replace("\t", "")):
            raise ConfigError(key, "expected a header value without control characters (newline, NUL, ...)")
        headers[name] = Secret(text.value)
    return headers


def _parse_bot(ctx: _Context, sec: _Section) -> BotSettings:
    url_key = sec.key("url")
    url_text = ctx.text(
        url_key,
        sec.required("url", 'a ws:// or wss:// URL, e.g. "wss://bot.example.com/stream"'),
        "a ws:// or wss:// URL",
        secret=True,
    )
    raw_url = cast(str, sec.raw("url"))
    bot_url = parse_bot_url(url_text.value.strip(), key=url_key, raw=raw_url.strip())
    ctx.warnings.extend(bot_url.warnings)

    headers = _parse_headers(ctx, sec.key("headers"), sec.raw("headers") if sec.has("headers") else None)

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

    account_sid = "sip-ws-bridge"
    sid = sec.text("account_sid", account_sid, "a non-empty string")
    if sid is not None:
        account_sid = sid.value.strip()
        if not account_sid or _CONTROL_RE.search(account_sid):
            raise ConfigError(
                sec.key("account_sid"),
                f"expected a non-empty string without control characters, got {sid.shown}",
            )

    url_header: str | None = None
    header = sec.nullable_text("url_header", 'a SIP header name such as "X-Bot-Url"')
    if header is not None:
        url_header = header.value.strip()
        _check_header_name(sec.key("url_header"), url_header)

    hosts_key = sec.key("url_header_allowed_hosts")
    allowed_hosts: list[str] = []
    value = sec.raw("url_header_allowed_hosts")
    if value is not _MISSING and value is not None:
        for i, item in enumerate(
            ctx.items(hosts_key, value, 'host names or globs such as "*.bots.example.com"')
        ):
            pattern = ctx.text(f"{hosts_key}[{i}]", item, 'a host name or glob such as "*.bots.example.com"')
            host = pattern.value.strip().lower()
            if not _HOST_GLOB_RE.fullmatch(host):
                raise ConfigError(
                    f"{hosts_key}[{i}]",
                    f'expected a host name or glob such as "*.bots.example.com" (no scheme or port), '
                    f"got {pattern.shown}",
                )
            if host == "*":
                ctx.warnings.append(f'{hosts_key}[{i}]: "*" lets a caller send the call to any host')
            allowed_hosts.append(host)
    if url_header is not None and not allowed_hosts:
        raise ConfigError(
            hosts_key,
            f"must list at least one host when bot.url_header is set (to {url_header}); "
            'expected host names or globs such as ["bots.example.com", "*.bots.example.com"]',
        )
    if url_header is None and allowed_hosts:
        ctx.warnings.append(f"{hosts_key}: ignored because bot.url_header is not set")

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
        on_unreachable=on_unreachable,
        on_close=on_close,
        guard=guard,
    )


def _parse_control(ctx: _Context, sec: _Section) -> ControlSettings:
    if not sec.has("listen"):
        return ControlSettings()
    text = sec.nullable_text("listen", '"HOST:PORT", e.g. "127.0.0.1:8780"')
    if text is None:
        return ControlSettings(listen_host=None)
    host, port = _parse_listen(sec.key("listen"), text)
    if not (host == "localhost" or (_is_ipv4(host) and ipaddress.IPv4Address(host).is_loopback)):
        ctx.warnings.append(
            f"{sec.key('listen')}: {host} is not a loopback address: /status shows callers' numbers "
            "and /metrics the call volume to anyone who can reach it; firewall it"
        )
    return ControlSettings(listen_host=host, listen_port=port)


def _parse_recording(ctx: _Context, sec: _Section) -> RecordingSettings:
    enabled = sec.boolean("enabled", False)
    expected_dir = (
        'a directory such as "/var/lib/sip-ws-bridge/recordings" or "${STATE_DIRECTORY}/recordings"'
    )
    directory: str | None = None
    dir_text = sec.nullable_text("dir", expected_dir)
    if dir_text is not None:
        directory = dir_text.value.strip()
        if _CONTROL_RE.search(directory):
            raise ConfigError(sec.key("dir"), f"expected {expected_dir}, got a path with control characters")
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
    ctx = _Context(env, Path(base_dir) if base_dir is not None else None)
    if data is None:
        raise ConfigError("", 'the profile is empty; expected a mapping with at least "sip" and "bot"')
    top = _Section(ctx, "", data, _TOP_KEYS)

    profile_name = name
    named = top.text("name", name, "a non-empty string")
    if named is not None:
        profile_name = named.value.strip()
        if not profile_name or _CONTROL_RE.search(profile_name):
            raise ConfigError(
                "name", f"expected a non-empty string without control characters, got {named.shown}"
            )

    if top.raw("sip") in (_MISSING, None):
        raise ConfigError(
            "sip", 'required section is missing; expected a mapping with at least listen: "HOST:PORT"'
        )
    if top.raw("bot") in (_MISSING, None):
        raise ConfigError(
            "bot", "required section is missing; expected a mapping with at least url: wss://..."
        )
    sip = _parse_sip(ctx, top.section("sip", _SIP_KEYS))
    bot = _parse_bot(ctx, top.section("bot", _BOT_KEYS))

    media_sec = top.section("media", _MEDIA_KEYS)
    phase = media_sec.raw("tick_phase_ms")
    media = MediaSettings(clock_rate=media_sec.int_choice("clock_rate", 8000, CLOCK_RATES),
                          rtp_timeout=parse_rtp_timeout(media_sec),
                          rtp_latching=media_sec.choice("rtp_latching", "first", RTP_LATCHING),
                          tick_phase_ms=None if phase in (_MISSING, None)
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
    return Profile(
        name=profile_name, sip=sip, bot=bot, media=media, logging=logging, warnings=tuple(ctx.warnings),
        control=control, recording=recording, mode=mode, tap=tap,
    )


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects a key written twice in one mapping (PyYAML keeps the last silently)."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[object, object]:
    seen: dict[object, yaml.Node] = {}
    for key_node, _ in node.value:
        if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node)
        try:
            duplicate = key in seen
        except TypeError:
            continue
        if duplicate:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping",
                node.start_mark,
                f"found duplicate key {key_node.value!r}",
                key_node.start_mark,
            )
        seen[key] = key_node
    return loader.construct_mapping(node)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_profile(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> Profile:
    """Read, parse and validate the profile file at ``path``. Raises ConfigError."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("", f"profile file {file} not found") from None
    except UnicodeDecodeError:
        raise ConfigError("", f"profile file {file} is not valid UTF-8 text") from None
    except OSError as exc:
        raise ConfigError(
            "", f"cannot read profile file {file}: {exc.strerror or type(exc).__name__}"
        ) from None
    try:
        data = yaml.load(text, Loader=_StrictLoader)
    except yaml.MarkedYAMLError as exc:
        # Only the problem and its position: PyYAML's str() quotes the source line,
        # which may hold a secret.
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = exc.problem or exc.context or "syntax error"
        context = f" ({exc.context})" if exc.context and exc.problem else ""
        raise ConfigError("", f"profile file {file} is not valid YAML{where}: {problem}{context}") from None
    except yaml.YAMLError as exc:
        raise ConfigError("", f"profile file {file} is not valid YAML: {type(exc).__name__}") from None
    if data is None:
        raise ConfigError(
            "", f'profile file {file} is empty; expected a mapping with at least "sip" and "bot"'
        )
    if not isinstance(data, Mapping):
        raise ConfigError(
            "", f'profile file {file} holds {_kind(data)}; expected a mapping with at least "sip" and "bot"'
        )
    return parse_profile(data, name=file.stem, env=env, base_dir=file.parent)


def demo_profile(sip_port: int, bot_url: str) -> Profile:
    """The built-in profile of the ``demo`` command: trunk mode on 127.0.0.1:sip_port."""
    return parse_profile(
        {
            "name": "demo",
            "sip": {"listen": f"127.0.0.1:{sip_port}"},
            "bot": {"url": bot_url.replace("${", "$${")},
        },
        name="demo",
        env={},
    )


def _profile_to_dict(profile: Profile) -> dict[str, object]:
    sip = profile.sip
    bot = profile.bot
    register: dict[str, object] | None = None
    if sip.register is not None:
        reg = sip.register
        register = {
            "registrar": reg.registrar,
            "username": reg.username,
            "password": REDACTED,
            "realm": reg.realm,
            "expires": reg.expires,
            "identity": reg.identity,
            "outbound_proxy": reg.outbound_proxy,
            "contact": reg.contact,
        }
    on_unreachable: dict[str, object] = {
        "action": bot.on_unreachable.action,
        "sip_status": bot.on_unreachable.sip_status,
    }
    if bot.on_unreachable.transfer_to is not None:
        on_unreachable["transfer_to"] = bot.on_unreachable.transfer_to
    on_close: dict[str, object] = {"action": bot.on_close.action}
    if bot.on_close.transfer_to is not None:
        on_close["transfer_to"] = bot.on_close.transfer_to
    return {
        "name": profile.name,
        "sip": {
            "listen": sip.listen,
            "transports": list(sip.transports),
            "public_address": sip.public_address,
            "rtp_port_start": sip.rtp_port_start,
            "rtp_port_range": sip.rtp_port_range,
            "codecs": list(sip.codecs),
            "max_calls": sip.max_calls,
            "user_agent": sip.user_agent,
            "forward_headers": list(sip.forward_headers),
            "register": register,
            **sip_guard_dict(sip.guard),
        },
        "bot": {
            "url": bot.url_redacted,
            "headers": dict.fromkeys(bot.headers, REDACTED),
            "connect_timeout": bot.connect_timeout,
            "stop_grace": bot.stop_grace_s,
            "connect_retries": bot.connect_retries,
            "chunk_ms": bot.chunk_ms,
            "prebuffer_ms": bot.prebuffer_ms,
            "buffer_seconds": bot.buffer_seconds,
            "max_message_bytes": bot.max_message_bytes,
            "warn_message_bytes": bot.warn_message_bytes,
            "clear_answers_marks": bot.clear_answers_marks,
            "account_sid": bot.account_sid,
            "url_header": bot.url_header,
            "url_header_allowed_hosts": list(bot.url_header_allowed_hosts),
            "on_unreachable": on_unreachable,
            "on_close": on_close,
            **bot_guard_dict(bot.guard),
        },
        "media": {"clock_rate": profile.media.clock_rate, "rtp_timeout": profile.media.rtp_timeout,
                  "tick_phase_ms": profile.media.tick_phase_ms, "rtp_latching": profile.media.rtp_latching},
        "logging": {"level": profile.logging.level, "format": profile.logging.format},
        "control": {"listen": profile.control.listen},
        "recording": {
            "enabled": profile.recording.enabled,
            "dir": profile.recording.dir,
            "layout": profile.recording.layout,
            "retention_days": profile.recording.retention_days,
            "max_files": profile.recording.max_files,
        },
        **tap_dict(profile.mode, profile.tap),
    }


def render_profile(profile: Profile) -> str:
    """The resolved profile as YAML: every default filled in, every secret shown as ``***``.

    Derived values (the bot's sample rate and query parameters) and warnings are
    given as comments, so the body is itself a valid profile.
    """
    lines = [
        f"# profile {json.dumps(profile.name, ensure_ascii=False)}: resolved, defaults filled in, "
        f"secrets shown as {REDACTED}",
        f"# from bot.url: sample_rate={profile.bot.sample_rate}, "
        f"query_parameters={json.dumps(dict(profile.bot.query_parameters), ensure_ascii=False)}",
    ]
    lines.extend(f"# warning: {_CONTROL_RE.sub(' ', w)}" for w in profile.warnings)
    body = yaml.safe_dump(
        _profile_to_dict(profile), sort_keys=False, default_flow_style=False, allow_unicode=True
    )
    return "\n".join(lines) + "\n" + body
