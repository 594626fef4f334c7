"""AgentStream's events are the dialect-neutral ones (bridge/bot/events.py): its `start` carries
the neutral StartInfo, and what it decodes from a bot is a neutral event. Re-exported here for the
modules that speak AgentStream by name (the tap)."""

from bridge.bot.events import (
    DTMF_DIGITS,
    PROTOCOL_ERROR_KINDS,
    SAMPLE_RATES,
    STOP_REASONS,
    BotClear,
    BotEvent,
    BotIgnored,
    BotMark,
    BotMedia,
    BotMessage,
    ProtocolError,
    ProtocolErrorKind,
    SessionStateError,
    StartInfo,
    StopReason,
)

__all__ = [
    "DTMF_DIGITS",
    "PROTOCOL_ERROR_KINDS",
    "SAMPLE_RATES",
    "STOP_REASONS",
    "BotClear",
    "BotEvent",
    "BotIgnored",
    "BotMark",
    "BotMedia",
    "BotMessage",
    "ProtocolError",
    "ProtocolErrorKind",
    "SessionStateError",
    "StartInfo",
    "StopReason",
]
