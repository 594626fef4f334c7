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

Where things live (each module imports only the ones above it in this list):

- ``values``: the typed-scalar machinery: ``${...}`` substitution (`Context`), one mapping of the
  profile (`Section`), how values appear in messages (`quote`, `show`, `kind`);
- ``syntax``: host names, "HOST:PORT", sip: URIs, header names;
- ``base``: `Secret`, `RegisterSettings`, ``REDACTED`` and the bot sample rates;
- ``boturl``: the bot WebSocket URL (`parse_bot_url`, `BotUrl`, `redact_url`), its handshake
  headers and the per-call checks (`header_allowed`, `bot_url_host_allowed`);
- ``guard``: the access-control, TLS, SRTP and timeout keys (`SipGuard`, `BotGuard`);
- ``tap``: the ``mode`` and ``tap`` keys (`TapSettings`);
- ``model``: the other constants and the frozen dataclasses (`Profile`, `SipSettings`, `BotSettings`, ...);
- ``parse_sip``: the ``sip`` section; ``parse``: the other sections and `parse_profile`;
- ``reader``: the strict YAML loader, `load_profile` and `demo_profile`;
- ``render``: `render_profile`.

This package re-exports the public names; import the modules above only for what it does not offer.
"""

from __future__ import annotations

from bridge.config.base import DEFAULT_SAMPLE_RATE as DEFAULT_SAMPLE_RATE
from bridge.config.base import REDACTED, SAMPLE_RATES, RegisterSettings, Secret
from bridge.config.boturl import BotUrl, bot_url_host_allowed, header_allowed, parse_bot_url, redact_url
from bridge.config.model import CLOCK_RATES as CLOCK_RATES
from bridge.config.model import (
    CODECS,
    DEFAULT_USER_AGENT,
    BotSettings,
    ClosePolicy,
    ControlSettings,
    LogSettings,
    MediaSettings,
    Profile,
    RecordingSettings,
    SipSettings,
    UnreachablePolicy,
)
from bridge.config.model import DEFAULT_CONTROL_LISTEN as DEFAULT_CONTROL_LISTEN
from bridge.config.model import LOG_FORMATS as LOG_FORMATS
from bridge.config.model import LOG_LEVELS as LOG_LEVELS
from bridge.config.model import RECORDING_LAYOUTS as RECORDING_LAYOUTS
from bridge.config.model import RTP_LATCHING as RTP_LATCHING
from bridge.config.model import TRANSPORTS as TRANSPORTS
from bridge.config.model import CloseAction as CloseAction
from bridge.config.model import LogFormat as LogFormat
from bridge.config.model import LogLevel as LogLevel
from bridge.config.model import RecordingLayout as RecordingLayout
from bridge.config.model import UnreachableAction as UnreachableAction
from bridge.config.parse import parse_profile
from bridge.config.reader import demo_profile, load_profile
from bridge.config.render import render_profile

# The names of __all__ as before; the ``X as X`` imports above are the other public names the
# module had (importable as before, not part of a star import).
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
    "redact_url",
    "render_profile",
]
