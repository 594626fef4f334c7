"""Per-stream AgentStream state machine, sans-I/O: methods return the text to send, never send it.

The I/O layer owns the socket and the clock; this class owns what the contract says about order,
counters and marks, so both can be tested without a network.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable
from typing import Final, Literal

from bridge.bot.numbering import Numbering

from .codec import (
    DEFAULT_MAX_MESSAGE_BYTES,
    UNNUMBERED,
    MediaEncoder,
    decode_bot_message,
    encode_connected,
    encode_dtmf,
    encode_mark,
    encode_start,
    encode_stop,
    number_slot,
)
from .events import (
    DTMF_DIGITS,
    STOP_REASONS,
    BotClear,
    BotIgnored,
    BotMark,
    BotMedia,
    ProtocolError,
    SessionStateError,
    StartInfo,
    StopReason,
)

__all__ = ["SessionState", "SessionStateError", "StreamSession"]

SessionState = Literal["new", "connected", "started", "stopped"]

# Keys of `StreamSession.ignored` are bounded so they can be metric labels: a bot inventing event
# names must not grow the counter without limit.
_IGNORED_EVENT_KEYS: Final = frozenset({"connected", "start", "dtmf", "stop"})


class StreamSession:
    """One AgentStream stream (one WebSocket, one call).

    Outbound order is enforced: connected, start, then media/dtmf/mark, then stop. After stop every
    outbound method returns None and every inbound message is dropped, because hang-up races
    (a frame callback or a bot message arriving just after the call ended) are normal, not bugs.
    """

    # A bot answered by a playout queue could send marks faster than they are answered; past this
    # many unanswered marks new ones are dropped (counted in `ignored["mark_overflow"]`) so a
    # misbehaving bot cannot grow per-call memory without bound.
    MAX_PENDING_MARKS: Final = 4096

    __slots__ = (
        "_media",
        "_numbering",
        "_pending_marks",
        "_rate",
        "_state",
        "chunk_ms",
        "errors",
        "ignored",
        "info",
        "large_messages",
        "last_error",
        "last_ignored",
        "max_message_bytes",
        "stop_reason",
        "stream_sid_mismatch",
        "two_way",
        "warn_message_bytes",
    )

    def __init__(
        self,
        info: StartInfo,
        *,
        chunk_ms: int = 100,
        two_way: bool = True,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        warn_message_bytes: int = 100 * 1024,
    ) -> None:
        if not 20 <= chunk_ms <= 1000:
            raise ValueError(f"chunk_ms must be between 20 and 1000, not {chunk_ms}")
        if max_message_bytes <= 0 or not 0 < warn_message_bytes <= max_message_bytes:
            raise ValueError("need 0 < warn_message_bytes <= max_message_bytes")
        self.info: Final = info
        self.chunk_ms: Final = chunk_ms
        self.two_way: Final = two_way
        self.max_message_bytes: Final = max_message_bytes
        self.warn_message_bytes: Final = warn_message_bytes

        self._state: SessionState = "new"
        self._numbering = Numbering(first_seq=1)
        self._rate = info.sample_rate
        self._media = MediaEncoder(info.stream_sid)
        self._pending_marks: deque[str] = deque()

        # Bounded key sets, fit for metric labels. errors: ProtocolError kinds except "too_large".
        # ignored: "connected" | "start" | "dtmf" | "stop" (bridge events echoed back), "unknown",
        # "one_way" (any message to a tap), "after_stop", "mark_overflow".
        self.errors: Counter[str] = Counter()
        self.ignored: Counter[str] = Counter()
        self.large_messages = 0
        self.stream_sid_mismatch = 0
        # The most recent dropped message, for the caller's (rate-limited) log line.
        self.last_error: ProtocolError | None = None
        self.last_ignored: BotIgnored | None = None
        self.stop_reason: StopReason | None = None

    # -- read-only views ---------------------------------------------------------------------

    @property
    def state(self) -> SessionState:
        return self._state

    @property
    def next_seq(self) -> int:
        """The sequence_number the next message after `connected` will carry."""
        return self._numbering.seq

    @property
    def chunks_sent(self) -> int:
        return self._numbering.chunks

    @property
    def audio_ms_sent(self) -> int:
        return self._numbering.samples * 1000 // self._rate

    @property
    def chunk_bytes(self) -> int:
        """Bytes of PCM16 in one chunk of `chunk_ms` at the stream's rate (1600 for 100 ms at 8 kHz mono)."""
        return self._rate * self.chunk_ms // 1000 * 2 * self.info.channels

    @property
    def pending_marks(self) -> tuple[str, ...]:
        """Mark names the bot sent that have not been answered yet, oldest first."""
        return tuple(self._pending_marks)

    # -- outbound ----------------------------------------------------------------------------

    def connected(self) -> str:
        if self._state != "new":
            raise SessionStateError(f"connected() in state {self._state}; it must be the first message")
        self._state = "connected"
        return encode_connected()

    def start(self) -> str:
        if self._state != "connected":
            raise SessionStateError(f"start() in state {self._state}; it must follow connected() once")
        self._state = "started"
        return self._numbered(lambda seq: encode_start(seq, self.info))

    def media(self, pcm: bytes) -> str | None:
        """One chunk of PCM16LE at the stream's rate; any non-empty even length."""
        if self._state != "started":
            self._raise_unless_stopped("media")
            return None
        if self._numbering.handed_off:
            raise SessionStateError("media() while another writer numbers the messages; "
                                    "take_back_numbering() first")
        n = len(pcm)
        frame = 2 * self.info.channels  # bytes per sample of every channel
        if n == 0 or n % frame:
            raise ValueError(f"media needs whole 16-bit samples of {self.info.channels} channel(s), "
                             f"got {n} bytes")
        seq, chunk, samples = self._numbering.media(n // frame)
        return self._media(seq, chunk, samples * 1000 // self._rate, pcm)

    def dtmf(self, digit: str, duration_ms: int) -> str | None:
        if self._state != "started":
            self._raise_unless_stopped("dtmf")
            return None
        if digit not in DTMF_DIGITS:
            raise ValueError(f"DTMF digit must be one of 0-9 * # A-D, not {digit!r}")
        if duration_ms < 0:
            raise ValueError(f"DTMF duration must be >= 0 ms, not {duration_ms}")
        if not self.two_way:
            return None
        sid = self.info.stream_sid
        return self._numbered(lambda seq: encode_dtmf(seq, sid, digit, duration_ms))

    def mark(self, name: str) -> str | None:
        """Answer the oldest mark the bot sent; the name must be that mark's name.

        Never an unprompted mark: echo bots answer every mark with a mark, so one the bot did not
        ask for would ping-pong for the rest of the call.
        """
        if self._state != "started":
            self._raise_unless_stopped("mark")
            return None
        if not self._pending_marks:
            raise ValueError(f"mark {name!r}: the bot has no unanswered mark")
        if self._pending_marks[0] != name:
            raise ValueError(f"mark {name!r}: the oldest unanswered mark is {self._pending_marks[0]!r}")
        self._pending_marks.popleft()
        sid = self.info.stream_sid
        return self._numbered(lambda seq: encode_mark(seq, sid, name))

    def forget_mark(self, name: str) -> None:
        """Drop the oldest unanswered mark without answering it (a `clear` when the profile says
        cleared marks are not answered). Same ordering rule as `mark`."""
        if self._pending_marks and self._pending_marks[0] == name:
            self._pending_marks.popleft()
        elif name in self._pending_marks:
            raise ValueError(f"mark {name!r}: the oldest unanswered mark is {self._pending_marks[0]!r}")

    def stop(self, reason: StopReason) -> str | None:
        """End the stream. Returns the `stop` message once; None if already stopped.

        Before start() nothing is sent (the contract has no stop without a start) but the session
        still moves to "stopped", so a hang-up racing the handshake needs no special case.
        """
        if reason not in STOP_REASONS:
            raise ValueError(f"stop reason must be one of {sorted(STOP_REASONS)}, not {reason!r}")
        previous = self._state
        if previous == "stopped":
            return None
        self._state = "stopped"
        self.stop_reason = reason
        self._pending_marks.clear()
        if previous != "started":
            return None
        info = self.info
        return self._numbered(lambda seq: encode_stop(seq, info.stream_sid, info.call_sid, info.account_sid,
                                                      reason))

    # -- another writer (the native sender: bridge/bot/template.py) ---------------------------

    def sender_template(self) -> str:
        """The `media` message as the native sender's media template."""
        return self._media.template()

    @property
    def handed_off(self) -> bool:
        return self._numbering.handed_off

    def hand_off_numbering(self) -> tuple[int, int, int]:
        """Let another writer send the media and number every message (the native sender):
        returns (next sequence number, chunks sent, samples sent) for it to carry on from.
        Until take_back_numbering(), messages from here are event templates whose sequence
        number is the writer's slot, and media() refuses."""
        if self._state != "started" or self._numbering.handed_off:
            raise SessionStateError(f"hand_off_numbering() in state {self._state}"
                                    + (" (already handed off)" if self._numbering.handed_off else ""))
        return self._numbering.hand_off()

    def take_back_numbering(self, seq: int, chunks: int, samples: int) -> None:
        """The writer is done: carry on from its counters."""
        self._numbering.take_back(seq, chunks, samples)

    # -- inbound -----------------------------------------------------------------------------

    def receive(self, data: str | bytes) -> BotMedia | BotMark | BotClear | None:
        """Decode one frame from the bot; None when it is to be dropped (and counted).

        Raises ProtocolError only for "too_large": the caller must then close with 1009. Every
        other protocol error is counted in `errors` and the call goes on.
        """
        if self._state != "started":
            if self._state == "stopped":
                self.ignored["after_stop"] += 1
                return None
            raise SessionStateError(f"receive() in state {self._state}; send start() first")
        # A tap decodes too, only so that an oversized frame still closes it with 1009.
        try:
            msg = decode_bot_message(data, max_bytes=self.max_message_bytes)
        except ProtocolError as exc:
            if exc.kind == "too_large":
                raise
            self._count_large(data)
            if not self.two_way:
                self.ignored["one_way"] += 1
                return None
            self.errors[exc.kind] += 1
            self.last_error = exc
            return None
        self._count_large(data)
        if not self.two_way:
            self.ignored["one_way"] += 1
            return None
        if isinstance(msg, BotIgnored):
            self.ignored[msg.event if msg.event in _IGNORED_EVENT_KEYS else "unknown"] += 1
            self.last_ignored = msg
            return None
        if msg.stream_sid is not None and msg.stream_sid != self.info.stream_sid:
            self.stream_sid_mismatch += 1
        if isinstance(msg, BotMark):
            if len(self._pending_marks) >= self.MAX_PENDING_MARKS:
                self.ignored["mark_overflow"] += 1
                return None
            self._pending_marks.append(msg.name)
        return msg

    # -- internals ---------------------------------------------------------------------------

    def _numbered(self, encode: Callable[[int], str]) -> str:
        """A message with the next sequence number, or, while another writer numbers them, as a
        template with the writer's slot for it."""
        seq = self._numbering.next_seq()
        return encode(seq) if seq is not None else number_slot(encode(UNNUMBERED))

    def _raise_unless_stopped(self, what: str) -> None:
        if self._state != "stopped":
            raise SessionStateError(f"{what}() in state {self._state}; send start() first")

    def _count_large(self, data: str | bytes) -> None:
        if isinstance(data, str | bytes) and len(data) > self.warn_message_bytes:
            self.large_messages += 1
