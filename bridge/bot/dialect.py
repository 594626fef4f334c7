"""What every bot dialect (a wire protocol a bot speaks over its WebSocket) provides, and the
registry of dialects by name.

A dialect is a factory of sans-I/O sessions, one per stream. The call drives a session with
neutral values (bridge/bot/events.py) and sends the text it returns; the session turns a bot's
frames into neutral events. Nothing here or in a dialect does I/O (scripts/check-layout checks).

What the native sender needs from a session (bridge/bot/template.py): a media template, and the
numbering hand-off: while the sender writes the socket it numbers every message, the session's
events come back as templates with a slot for their number, and when the sender lets go the
session carries on from its counters.

Adding a dialect: docs/bot-protocol.md ("Adding a dialect").
"""

from __future__ import annotations

from collections import Counter
from typing import Final, Protocol

from .agentstream import DIALECT as AGENTSTREAM
from .events import BotEvent, BotIgnored, ProtocolError, StartInfo, StopReason

__all__ = ["DEFAULT_DIALECT", "Dialect", "DialectSession", "dialect_names", "get_dialect", "register",
           "unregister"]

DEFAULT_DIALECT: Final = "agentstream"


class DialectSession(Protocol):
    """One stream (one WebSocket, one call) in some dialect.

    Outbound order: connected, start, then media/dtmf/mark, then stop. After stop every outbound
    method returns None and every inbound frame is dropped (hang-up races are normal). A method
    called out of that order raises events.SessionStateError.
    """

    # Bounded key sets, fit for metric labels: errors by ProtocolError kind (frames dropped as
    # bad), ignored by reason (frames dropped as meaningless here).
    errors: Counter[str]
    ignored: Counter[str]
    large_messages: int  # frames over warn_message_bytes (accepted)
    stream_sid_mismatch: int  # events naming another stream (accepted)
    last_error: ProtocolError | None
    last_ignored: BotIgnored | None

    @property
    def info(self) -> StartInfo: ...
    @property
    def two_way(self) -> bool: ...
    @property
    def state(self) -> str: ...
    @property
    def chunks_sent(self) -> int: ...
    @property
    def audio_ms_sent(self) -> int: ...
    @property
    def chunk_bytes(self) -> int: ...
    @property
    def pending_marks(self) -> tuple[str, ...]: ...

    # -- out: the text to send, or None for nothing
    def connected(self) -> str: ...
    def start(self) -> str: ...
    def media(self, pcm: bytes) -> str | None: ...
    def dtmf(self, digit: str, duration_ms: int) -> str | None: ...
    def mark(self, name: str) -> str | None: ...
    def forget_mark(self, name: str) -> None: ...
    def stop(self, reason: StopReason) -> str | None: ...

    # -- in: one frame from the bot; None when dropped (and counted). Raises ProtocolError only
    # for a frame over max_message_bytes (the caller closes with 1009).
    def receive(self, data: str | bytes) -> BotEvent | None: ...

    # -- the native sender (bridge/bot/template.py)
    def sender_template(self) -> str: ...
    @property
    def handed_off(self) -> bool: ...
    def hand_off_numbering(self) -> tuple[int, int, int]: ...
    def take_back_numbering(self, seq: int, chunks: int, samples: int) -> None: ...


class Dialect(Protocol):
    @property
    def name(self) -> str: ...

    def session(self, info: StartInfo, *, chunk_ms: int = 100, two_way: bool = True,
                max_message_bytes: int = ..., warn_message_bytes: int = ...) -> DialectSession: ...


_DIALECTS: dict[str, Dialect] = {}


def register(dialect: Dialect) -> None:
    """Make `dialect` known by its name; a name is registered once."""
    if dialect.name in _DIALECTS and _DIALECTS[dialect.name] is not dialect:
        raise ValueError(f"a bot dialect named {dialect.name!r} is registered already")
    _DIALECTS[dialect.name] = dialect


def unregister(name: str) -> None:
    """Forget a dialect (tests register their own)."""
    _DIALECTS.pop(name, None)


def get_dialect(name: str) -> Dialect:
    try:
        return _DIALECTS[name]
    except KeyError:
        raise ValueError(f"no bot dialect named {name!r} (known: {', '.join(dialect_names())})") from None


def dialect_names() -> tuple[str, ...]:
    return tuple(sorted(_DIALECTS))


register(AGENTSTREAM)
