"""Pure encode/decode of AgentStream messages (the Exotel dialect), text in and text out.

Outbound messages are snake_case with every scalar a string: Pipecat classifies a start carrying
camelCase ids as Twilio, and bot validators reject integer scalars. Inbound decoding is liberal
(either stream id spelling, extra keys, any even payload length) but strict about the things that
would corrupt audio: the payload must be real base64 of whole 16-bit samples.
"""

from __future__ import annotations

import json
from binascii import a2b_base64, b2a_base64
from typing import Final

from bridge.bot.template import Slot, literal, slot

from .events import (
    BotClear,
    BotIgnored,
    BotMark,
    BotMedia,
    ProtocolError,
    StartInfo,
    StopReason,
)

__all__ = [
    "DEFAULT_MAX_MESSAGE_BYTES",
    "UNNUMBERED",
    "MediaEncoder",
    "decode_bot_message",
    "encode_connected",
    "encode_dtmf",
    "encode_mark",
    "encode_media",
    "encode_start",
    "encode_stop",
    "number_slot",
]

DEFAULT_MAX_MESSAGE_BYTES: Final = 1 << 20

_COMPACT: Final = (",", ":")
_CONNECTED: Final = '{"event":"connected"}'

# Events the bridge sends; a bot echoing one back (Exotel's echobot does) must not be mistaken for
# a command.
_BRIDGE_EVENTS: Final = frozenset({"connected", "start", "dtmf", "stop"})

# Bounds what an untrusted event name can put into logs.
_MAX_EVENT_NAME: Final = 64


def _dumps(obj: object) -> str:
    # ensure_ascii stays on (the default) so every encoder, fast path included, emits the same bytes.
    return json.dumps(obj, separators=_COMPACT)


def encode_connected() -> str:
    return _CONNECTED


def encode_start(seq: int, info: StartInfo) -> str:
    media_format = {"encoding": "base64", "sample_rate": str(info.sample_rate), "bit_rate": info.bit_rate}
    if info.channels != 1:
        media_format["channels"] = str(info.channels)  # only stereo taps say it: mono is the contract
    return _dumps(
        {
            "event": "start",
            "sequence_number": str(seq),
            "stream_sid": info.stream_sid,
            "start": {
                "stream_sid": info.stream_sid,
                "call_sid": info.call_sid,
                "account_sid": info.account_sid,
                "from": info.from_,
                "to": info.to,
                "custom_parameters": dict(info.custom_parameters),
                "media_format": media_format,
            },
        }
    )


# The sequence number a message is encoded with when another writer numbers it (a real one starts
# at 1): number_slot() then puts the writer's slot in its place.
UNNUMBERED: Final = 0
_UNNUMBERED_FIELD: Final = '"sequence_number":"0"'


def number_slot(text: str) -> str:
    """An UNNUMBERED message as an event template (bridge/bot/template.py): the sequence number's
    digits replaced by the slot the native sender fills in.

    The first match is the field itself: it is the second key of every message, and a quote
    inside any later string value is escaped, so the pattern cannot occur in one.
    """
    at = text.find(_UNNUMBERED_FIELD)
    if at < 0:
        raise ValueError("not an unnumbered message: " + text[:60])
    cut = at + len(_UNNUMBERED_FIELD) - 2
    # The rest is JSON from json.dumps: no NUL in it (control characters are escaped), so it is
    # template text as it is.
    return text[:cut] + slot(Slot.SEQ) + text[cut + 1 :]


class MediaEncoder:
    """Encodes `media` messages for one stream with the stream id quoted once.

    This runs 10-50 times a second per call, so the JSON is assembled from fixed pieces around the
    base64 payload instead of going through json.dumps (about 3x faster for 1600-byte chunks).
    The result is byte-for-byte what `json.dumps(..., separators=(",", ":"))` gives; tests hold it
    to that.
    """

    __slots__ = ("infix",)

    def __init__(self, stream_sid: str) -> None:
        # Between the sequence number and the chunk number.
        self.infix: Final = '","stream_sid":' + json.dumps(stream_sid) + ',"media":{"chunk":"'

    def template(self) -> str:
        """The same message as the native sender's media template (bridge/bot/template.py)."""
        return (literal('{"event":"media","sequence_number":"') + slot(Slot.SEQ) + literal(self.infix)
                + slot(Slot.CHUNK) + literal('","timestamp":"') + slot(Slot.TIMESTAMP_MS)
                + literal('","payload":"') + slot(Slot.PCM16_BASE64) + literal('"}}'))

    def __call__(self, seq: int, chunk: int, timestamp_ms: int, pcm: bytes) -> str:
        payload = b2a_base64(pcm, newline=False).decode("ascii")
        return (
            f'{{"event":"media","sequence_number":"{seq}{self.infix}{chunk}",'
            f'"timestamp":"{timestamp_ms}","payload":"{payload}"}}}}'
        )


def encode_media(seq: int, stream_sid: str, chunk: int, timestamp_ms: int, pcm: bytes) -> str:
    return MediaEncoder(stream_sid)(seq, chunk, timestamp_ms, pcm)


def encode_dtmf(seq: int, stream_sid: str, digit: str, duration_ms: int) -> str:
    return _dumps(
        {
            "event": "dtmf",
            "sequence_number": str(seq),
            "stream_sid": stream_sid,
            "dtmf": {"digit": digit, "duration": str(duration_ms)},
        }
    )


def encode_mark(seq: int, stream_sid: str, name: str) -> str:
    return _dumps(
        {
            "event": "mark",
            "sequence_number": str(seq),
            "stream_sid": stream_sid,
            "mark": {"name": name},
        }
    )


def encode_stop(seq: int, stream_sid: str, call_sid: str, account_sid: str, reason: StopReason) -> str:
    return _dumps(
        {
            "event": "stop",
            "sequence_number": str(seq),
            "stream_sid": stream_sid,
            "stop": {"call_sid": call_sid, "account_sid": account_sid, "reason": reason},
        }
    )


def _utf8_len(text: str) -> int:
    if text.isascii():
        return len(text)
    # surrogatepass: a str built in-process may hold lone surrogates; sizing it must not raise.
    return len(text.encode("utf-8", "surrogatepass"))


def decode_bot_message(
    data: str | bytes, *, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
) -> BotMedia | BotMark | BotClear | BotIgnored:
    """Decode one WebSocket frame from the bot.

    Raises only ProtocolError. The size check comes first, whatever the frame type, because an
    oversized frame must close the socket (1009) rather than be dropped and counted.
    """
    if not isinstance(data, str):
        if isinstance(data, memoryview):
            size = data.nbytes
        elif isinstance(data, bytes | bytearray):
            size = len(data)
        else:
            size = 0
        if size > max_bytes:
            raise ProtocolError("too_large", f"{size} bytes > {max_bytes}")
        raise ProtocolError("not_text", "binary frame; bots must send JSON text frames")
    if len(data) > max_bytes or _utf8_len(data) > max_bytes:
        raise ProtocolError("too_large", f"{_utf8_len(data)} bytes > {max_bytes}")

    try:
        obj = json.loads(data)
    except (ValueError, RecursionError) as exc:
        # ValueError covers JSONDecodeError and int-too-long; RecursionError is deeply nested arrays.
        raise ProtocolError("invalid_json", str(exc)[:200]) from exc
    if not isinstance(obj, dict):
        raise ProtocolError("not_object", f"JSON {type(obj).__name__}, expected an object")

    event = obj.get("event")
    if not isinstance(event, str):
        raise ProtocolError("missing_event", "no event" if event is None else "event is not a string")

    sid = obj.get("stream_sid")
    if sid is None:
        # Pipecat up to 1.7.0 and Exotel's own samples send camelCase.
        sid = obj.get("streamSid")
    if not isinstance(sid, str):
        sid = None

    if event == "media":
        return BotMedia(_decode_payload(obj.get("media")), sid)
    if event == "mark":
        mark = obj.get("mark")
        name = mark.get("name") if isinstance(mark, dict) else None
        if not isinstance(name, str):
            raise ProtocolError("bad_mark", "mark without a string mark.name")
        return BotMark(name, sid)
    if event == "clear":
        # The bridge never sends `clear`, so a clear from the bot is always a command, never an echo.
        return BotClear(sid)
    short = event[:_MAX_EVENT_NAME]
    if event in _BRIDGE_EVENTS:
        return BotIgnored(short, "bridge-to-bot event sent by the bot")
    return BotIgnored(short, "unknown event")


def _decode_payload(media: object) -> bytes:
    if not isinstance(media, dict):
        raise ProtocolError("bad_media", "media without a media object")
    payload = media.get("payload")
    if not isinstance(payload, str):
        raise ProtocolError("bad_media", "media.payload missing or not a string")
    # Some encoders strip the padding; restoring it is unambiguous. A length of 4n+1 stays invalid.
    pad = -len(payload) & 3
    if pad:
        payload += "=" * pad
    try:
        # strict_mode rejects what the default silently skips (non-alphabet characters, data after
        # padding), which would otherwise turn garbage into plausible-looking PCM.
        pcm = a2b_base64(payload, strict_mode=True)
    except ValueError as exc:
        # binascii.Error is a ValueError; so is a non-ASCII str.
        raise ProtocolError("bad_base64", str(exc)[:200]) from exc
    if len(pcm) & 1:
        raise ProtocolError("odd_length", f"{len(pcm)} bytes is not whole 16-bit samples")
    return pcm
