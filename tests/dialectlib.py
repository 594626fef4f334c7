"""A second bot dialect, for tests only: it proves the dialect seam (bridge/bot/dialect.py).

Its messages are shaped nothing like AgentStream's (a `type` key, numbers unquoted, other names)
and its audio is base64 of G.711 mu-law, not PCM16. It numbers its messages itself (bridge/bot/
numbering.py) and, handed off, writes its events with the sender's slot for the number
(bridge/bot/template.py) rather than cutting finished JSON, as any new dialect may.
"""

from __future__ import annotations

import json
from binascii import a2b_base64, b2a_base64
from collections import Counter, deque
from typing import Final

from bridge.audio.g711 import ulaw_decode, ulaw_encode
from bridge.bot.events import (
    BotClear,
    BotEvent,
    BotHangup,
    BotIgnored,
    BotMark,
    BotMedia,
    ProtocolError,
    SessionStateError,
    StartInfo,
    StopReason,
)
from bridge.bot.numbering import Numbering
from bridge.bot.template import Slot, literal, slot

NAME: Final = "testdialect"


def media_text(seq: int, sid: str, chunk: int, samples: int, rate: int, pcm: bytes) -> str:
    """A media message written out by hand, independently of any template."""
    law = b2a_base64(ulaw_encode(pcm), newline=False).decode()
    return (f'{{"type":"audio","id":{json.dumps(sid)},"seq":{seq},"n":{chunk},'
            f'"at_ms":{samples * 1000 // rate},"samples":{samples},"ulaw":"{law}"}}')


class SeamSession:
    """One stream in the test dialect (the DialectSession protocol)."""

    def __init__(self, info: StartInfo, *, chunk_ms: int = 100, two_way: bool = True,
                 max_message_bytes: int = 1 << 20, warn_message_bytes: int = 100 * 1024) -> None:
        self.info: Final = info
        self.two_way: Final = two_way
        self.chunk_ms = chunk_ms
        self.max_message_bytes = max_message_bytes
        self.warn_message_bytes = warn_message_bytes
        self.state = "new"
        self.numbering = Numbering(first_seq=100)  # not AgentStream's 1: the sender must not assume
        self.errors: Counter[str] = Counter()
        self.ignored: Counter[str] = Counter()
        self.large_messages = 0
        self.stream_sid_mismatch = 0
        self.last_error: ProtocolError | None = None
        self.last_ignored: BotIgnored | None = None
        self._marks: deque[str] = deque()

    @property
    def chunks_sent(self) -> int:
        return self.numbering.chunks

    @property
    def audio_ms_sent(self) -> int:
        return self.numbering.samples * 1000 // self.info.sample_rate

    @property
    def chunk_bytes(self) -> int:
        return self.info.sample_rate * self.chunk_ms // 1000 * 2

    @property
    def pending_marks(self) -> tuple[str, ...]:
        return tuple(self._marks)

    def _seq(self) -> str:
        seq = self.numbering.next_seq()
        return slot(Slot.SEQ) if seq is None else str(seq)

    def connected(self) -> str:
        self.state = "connected"
        return '{"type":"hello"}'

    def start(self) -> str:
        self.state = "started"
        return f'{{"type":"begin","seq":{self._seq()},"id":{json.dumps(self.info.stream_sid)}}}'

    def media(self, pcm: bytes) -> str | None:
        if self.state != "started":
            return None
        if self.numbering.handed_off:
            raise SessionStateError("media() while handed off")
        seq, chunk, samples = self.numbering.media(len(pcm) // 2)
        return media_text(seq, self.info.stream_sid, chunk, samples, self.info.sample_rate, pcm)

    def dtmf(self, digit: str, duration_ms: int) -> str | None:
        if self.state != "started":
            return None
        return f'{{"type":"key","seq":{self._seq()},"key":{json.dumps(digit)},"ms":{duration_ms}}}'

    def mark(self, name: str) -> str | None:
        if self.state != "started" or not self._marks or self._marks[0] != name:
            return None
        self._marks.popleft()
        # A bot's name in a JSON string: json.dumps escapes any NUL, literal() any other one.
        return f'{{"type":"played","seq":{self._seq()},"name":{literal(json.dumps(name))}}}'

    def forget_mark(self, name: str) -> None:
        if self._marks and self._marks[0] == name:
            self._marks.popleft()

    def stop(self, reason: StopReason) -> str | None:
        if self.state != "started":
            self.state = "stopped"
            return None
        self.state = "stopped"
        return f'{{"type":"end","seq":{self._seq()},"why":"{reason}"}}'

    def receive(self, data: str | bytes) -> BotEvent | None:
        if self.state != "started":
            self.ignored["after_stop"] += 1
            return None
        obj = json.loads(data)
        kind = obj.get("type")
        if kind == "say":
            return BotMedia(ulaw_decode(a2b_base64(obj["ulaw"])))
        if kind == "checkpoint":
            self._marks.append(obj["name"])
            return BotMark(obj["name"])
        if kind == "hush":
            return BotClear()
        if kind == "bye":
            return BotHangup(obj.get("why", ""))
        self.ignored["unknown"] += 1
        return None

    # -- the native sender

    def sender_template(self) -> str:
        return (literal('{"type":"audio","id":' + json.dumps(self.info.stream_sid) + ',"seq":')
                + slot(Slot.SEQ) + literal(',"n":') + slot(Slot.CHUNK) + literal(',"at_ms":')
                + slot(Slot.TIMESTAMP_MS) + literal(',"samples":') + slot(Slot.SAMPLES)
                + literal(',"ulaw":"') + slot(Slot.ULAW_BASE64) + literal('"}'))

    @property
    def handed_off(self) -> bool:
        return self.numbering.handed_off

    def hand_off_numbering(self) -> tuple[int, int, int]:
        return self.numbering.hand_off()

    def take_back_numbering(self, seq: int, chunks: int, samples: int) -> None:
        self.numbering.take_back(seq, chunks, samples)


class SeamDialect:
    name: Final = NAME

    def session(self, info: StartInfo, *, chunk_ms: int = 100, two_way: bool = True,
                max_message_bytes: int = 1 << 20, warn_message_bytes: int = 100 * 1024) -> SeamSession:
        return SeamSession(info, chunk_ms=chunk_ms, two_way=two_way, max_message_bytes=max_message_bytes,
                           warn_message_bytes=warn_message_bytes)
