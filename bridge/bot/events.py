"""What a call and a bot say to each other, whatever the dialect on the wire: the stream's start
information, the events a bot sends (audio, marks, clear, and the call-control commands to come),
the stop reasons and protocol errors.

Nothing here does I/O and nothing here is any dialect's format: a dialect (bridge/bot/dialect.py)
turns these into its own messages and back, and the call consumes only these.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final, Literal, get_args

StopReason = Literal["callended", "stopped"]
STOP_REASONS: Final[frozenset[str]] = frozenset(get_args(StopReason))

SAMPLE_RATES: Final[tuple[int, ...]] = (8000, 16000, 24000)

# A-D are only ever forwarded, never generated: they exist on the SIP side (RFC 4733 events 12-15).
DTMF_DIGITS: Final[frozenset[str]] = frozenset("0123456789*#ABCD")

ProtocolErrorKind = Literal[
    "not_text",
    "invalid_json",
    "not_object",
    "missing_event",
    "bad_media",
    "bad_base64",
    "odd_length",
    "bad_mark",
    "too_large",
]
PROTOCOL_ERROR_KINDS: Final[frozenset[str]] = frozenset(get_args(ProtocolErrorKind))


@dataclass(frozen=True, slots=True)
class StartInfo:
    """What the bridge tells the bot when the stream starts; fixed for the life of the stream."""

    stream_sid: str
    call_sid: str
    account_sid: str
    from_: str
    to: str
    custom_parameters: Mapping[str, str] = field(default_factory=dict)
    sample_rate: int = 8000
    # 2 only for a stereo tap (PCM16LE interleaved, `media_format.channels` "2"); bots get mono.
    channels: int = 1

    def __post_init__(self) -> None:
        if self.sample_rate not in SAMPLE_RATES:
            raise ValueError(f"sample_rate must be one of {SAMPLE_RATES}, not {self.sample_rate!r}")
        if self.channels not in (1, 2):
            raise ValueError(f"channels must be 1 or 2, not {self.channels!r}")
        # Every scalar on the wire is a string; a stray int here would silently change the JSON type.
        for name in ("stream_sid", "call_sid", "account_sid", "from_", "to"):
            if not isinstance(getattr(self, name), str):
                raise TypeError(f"StartInfo.{name} must be a str")
        params = dict(self.custom_parameters)
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in params.items()):
            raise TypeError("StartInfo.custom_parameters must map str to str")
        # Snapshot it: a caller mutating its dict later must not change what a frozen value says.
        object.__setattr__(self, "custom_parameters", MappingProxyType(params))

    @property
    def bit_rate(self) -> str:
        """`128kbps`/`256kbps`/`384kbps`: 16-bit PCM at the socket's rate (twice that in stereo)."""
        return f"{self.sample_rate * 16 * self.channels // 1000}kbps"


@dataclass(frozen=True, slots=True)
class BotMedia:
    """Audio from the bot: PCM16LE mono at the socket's rate, any even length (empty included)."""

    payload: bytes
    stream_sid: str | None = None


@dataclass(frozen=True, slots=True)
class BotMark:
    """The bot asks to be told (with a `mark` of the same name) when the audio before it has played."""

    name: str
    stream_sid: str | None = None


@dataclass(frozen=True, slots=True)
class BotClear:
    """The bot asks to drop every queued, unplayed frame (barge-in)."""

    stream_sid: str | None = None


@dataclass(frozen=True, slots=True)
class BotIgnored:
    """Well-formed JSON that the contract says to log at debug and drop (unknown or out-of-place)."""

    event: str
    reason: str


# Call control a bot may ask for. Dialects may decode these; no call acts on them yet (each will
# come with its profile key), so today a call logs nothing and drops them.


@dataclass(frozen=True, slots=True)
class BotHangup:
    """The bot asks to end the call (a BYE, or a final answer before the call is answered)."""

    reason: str = ""
    stream_sid: str | None = None


@dataclass(frozen=True, slots=True)
class BotTransfer:
    """The bot asks to transfer the caller (a REFER to `target`, a SIP or tel URI)."""

    target: str
    stream_sid: str | None = None


@dataclass(frozen=True, slots=True)
class BotDtmf:
    """The bot asks to send DTMF digits to the caller (0-9 * # A-D)."""

    digits: str
    duration_ms: int = 100
    stream_sid: str | None = None


# What a session's receive() hands the call: the events it acts on, then the commands to come.
BotEvent = BotMedia | BotMark | BotClear | BotHangup | BotTransfer | BotDtmf
BotMessage = BotEvent | BotIgnored


class ProtocolError(ValueError):
    """A bot message that breaks the contract. `kind` is a short, bounded label fit for a metric."""

    def __init__(self, kind: ProtocolErrorKind, detail: str = "") -> None:
        self.kind: ProtocolErrorKind = kind
        self.detail = detail
        super().__init__(f"{kind}: {detail}" if detail else kind)


class SessionStateError(RuntimeError):
    """A session method was called out of the contract's order: a bug in the caller, not the bot."""
