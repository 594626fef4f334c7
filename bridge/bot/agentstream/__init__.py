"""AgentStream protocol core (sans-I/O): typed events, a pure JSON codec and the per-stream session."""

from .codec import (
    MediaEncoder,
    decode_bot_message,
    encode_connected,
    encode_dtmf,
    encode_mark,
    encode_media,
    encode_start,
    encode_stop,
)
from .events import (
    BotClear,
    BotIgnored,
    BotMark,
    BotMedia,
    ProtocolError,
    StartInfo,
    StopReason,
)
from .session import SessionState, SessionStateError, StreamSession

__all__ = [
    "BotClear",
    "BotIgnored",
    "BotMark",
    "BotMedia",
    "MediaEncoder",
    "ProtocolError",
    "SessionState",
    "SessionStateError",
    "StartInfo",
    "StopReason",
    "StreamSession",
    "decode_bot_message",
    "encode_connected",
    "encode_dtmf",
    "encode_mark",
    "encode_media",
    "encode_start",
    "encode_stop",
]
