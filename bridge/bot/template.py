"""Messages with holes for another writer to fill: how a dialect tells the native sender what to write.

While the native sender (native/media_pipe_send.hpp) writes a call's socket, it numbers every
message and turns caller audio into media messages itself, without Python. It knows no dialect:
the dialect gives it templates, text with slots where the sender puts a counter or the payload.

A template is a str: literal text, except that NUL (`MARK`) starts a slot and the character after
it names the slot (`Slot`). A literal NUL is written `MARK + "0"` (`literal()` escapes any text).
The sender's C++ reads the same format (native/media_template.hpp); `render()` here is its
executable specification, which tests hold the C++ to.

- The media template (one per stream, `DialectSession.sender_template()`) has exactly one payload
  slot; the sender renders it for every chunk.
- An event the call sends while the sender writes (dtmf, mark, stop) is a template without a
  payload slot; the sender fills in its sequence number as it queues it, so the numbers are in
  wire order with the media.

The sender counts every message it queues as one sequence number, media and events alike, printed
or not, and hands the counters back (`DialectSession.take_back_numbering`) when it lets go.
"""

from __future__ import annotations

from binascii import b2a_base64
from enum import StrEnum
from typing import Final

from bridge.audio.g711 import ulaw_encode

__all__ = ["MARK", "Slot", "check", "literal", "render", "slot"]

MARK: Final = "\x00"


class Slot(StrEnum):
    """What the sender puts in a slot; numbers are decimal ASCII."""

    SEQ = "s"  # the message's sequence number
    CHUNK = "c"  # media messages of the stream so far, this one included (from 1)
    TIMESTAMP_MS = "t"  # milliseconds of caller audio up to the end of this chunk
    SAMPLES = "n"  # samples of caller audio up to the end of this chunk
    PCM16_BASE64 = "p"  # the chunk, base64 of PCM16LE
    ULAW_BASE64 = "u"  # the chunk, base64 of G.711 mu-law (bit-exact with bridge/audio/g711.py)


_CODES: Final = frozenset(s.value for s in Slot)
_PAYLOADS: Final = frozenset({Slot.PCM16_BASE64.value, Slot.ULAW_BASE64.value})
_LITERAL_NUL: Final = "0"


def slot(which: Slot) -> str:
    return MARK + which.value


def literal(text: str) -> str:
    """`text` as template text: itself, unless it holds a NUL (escaped)."""
    return text.replace(MARK, MARK + _LITERAL_NUL) if MARK in text else text


def _pieces(template: str) -> list[tuple[str, str]]:
    """(literal text, slot code or "") in order; ValueError for an unknown slot."""
    out: list[tuple[str, str]] = []
    parts = template.split(MARK)
    text = parts[0]
    for part in parts[1:]:
        code, rest = part[:1], part[1:]
        if code == _LITERAL_NUL:
            text += MARK + rest
            continue
        if code not in _CODES:
            raise ValueError(f"unknown template slot {code!r}")
        out.append((text, code))
        text = rest
    out.append((text, ""))
    return out


def check(template: str, *, media: bool) -> None:
    """ValueError unless the sender would take it: known slots, and one payload slot for media,
    none for an event (what the C++ checks too)."""
    payloads = sum(1 for _, code in _pieces(template) if code in _PAYLOADS)
    if payloads != (1 if media else 0):
        raise ValueError(f"a {'media' if media else 'event'} template needs {1 if media else 0} "
                         f"payload slot(s), this one has {payloads}")


def render(template: str, *, seq: int, chunk: int = 0, samples: int = 0, rate: int = 8000,
           pcm: bytes = b"") -> str:
    """The message the sender writes from `template` with these counters (after this chunk, for
    media) and this PCM16LE payload."""
    out = []
    for text, code in _pieces(template):
        out.append(text)
        if code == Slot.SEQ:
            out.append(str(seq))
        elif code == Slot.CHUNK:
            out.append(str(chunk))
        elif code == Slot.TIMESTAMP_MS:
            out.append(str(samples * 1000 // rate if rate else 0))
        elif code == Slot.SAMPLES:
            out.append(str(samples))
        elif code == Slot.PCM16_BASE64:
            out.append(b2a_base64(pcm, newline=False).decode("ascii"))
        elif code == Slot.ULAW_BASE64:
            out.append(b2a_base64(ulaw_encode(pcm), newline=False).decode("ascii"))
    return "".join(out)
