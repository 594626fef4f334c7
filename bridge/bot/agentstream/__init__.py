"""The AgentStream dialect (Exotel's): a pure JSON codec and the per-stream session, sans-I/O.

`DIALECT` is what the registry (bridge/bot/dialect.py) knows as "agentstream".
"""

from __future__ import annotations

from typing import Final

from bridge.bot.events import StartInfo

from .codec import (
    DEFAULT_MAX_MESSAGE_BYTES,
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
    StopReason,
)
from .session import SessionState, SessionStateError, StreamSession

__all__ = [
    "DIALECT",
    "AgentStream",
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


class AgentStream:
    """The dialect: one StreamSession per stream."""

    name: Final = "agentstream"

    def session(self, info: StartInfo, *, chunk_ms: int = 100, two_way: bool = True,
                max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
                warn_message_bytes: int = 100 * 1024) -> StreamSession:
        return StreamSession(info, chunk_ms=chunk_ms, two_way=two_way, max_message_bytes=max_message_bytes,
                             warn_message_bytes=warn_message_bytes)


DIALECT: Final = AgentStream()
