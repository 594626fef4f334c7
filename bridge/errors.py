"""Error types that classify themselves: each knows, as applicable, the command line's exit code,
the SIP status a call answers or ends with, the WebSocket close code sent to the bot and the
`stop` reason the bot is told. Code that meets one uses these, not literals of its own."""

from __future__ import annotations

from typing import ClassVar, Literal

# Exit codes of the command line (a contract: scripts and systemd rely on the values). 78
# (EX_CONFIG) is listed in the systemd unit's RestartPreventExitStatus so a bad profile does not
# restart-loop.
EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_CONFIG = 78
EXIT_UNAVAILABLE = 69  # a dependency (pjsua2, a port) is not available

# The WebSocket close code of an ordinary end (RFC 6455 7.4.1): every stream the bridge ends.
WS_NORMAL_CLOSURE = 1000


class BridgeError(Exception):
    """Base of every error the bridge raises on purpose."""

    exit_code: ClassVar[int] = EXIT_FAILURE
    sip_status: ClassVar[int | None] = None  # the SIP final response it makes a call send
    sip_reason: ClassVar[str] = ""
    ws_close_code: ClassVar[int | None] = None  # how the bot's socket is closed because of it
    ws_close_reason: ClassVar[str] = ""
    stop_reason: ClassVar[Literal["callended", "stopped"] | None] = None  # the `stop` the bot is sent


class ConfigError(BridgeError):
    """A profile value is missing or wrong. `key` is the dotted path, e.g. ``sip.register.username``."""

    exit_code = EXIT_CONFIG

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        self.message = message
        super().__init__(f"{key}: {message}" if key else message)


class SipStackError(BridgeError):
    """The SIP stack could not start or do what was asked (port in use, bad URI...)."""

    exit_code = EXIT_UNAVAILABLE


class BotConnectError(BridgeError):
    """The bot's WebSocket could not be opened (refused, handshake timeout, HTTP error). The call
    is rejected with `sip_status` unless the profile says another (bot.on_unreachable)."""

    sip_status = 503
    sip_reason = "Bot Unavailable"

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        self.reason = reason
        super().__init__(f"bot {url}: {reason}")


class BotMessageTooBig(BridgeError):
    """A bot message over bot.max_message_bytes: the bridge closes the socket with 1009."""

    ws_close_code: ClassVar[int] = 1009
    ws_close_reason = "message too big"

    def __init__(self, kind: str) -> None:
        self.kind = kind
        super().__init__(f"bot message over the hard limit ({kind})")


class BridgeStopping(BridgeError):
    """The bridge is stopping: a call not yet answered is turned away (503, come back in a few
    seconds); an answered one is told `stop` stopped and hung up."""

    sip_status = 503
    sip_reason = "Service Unavailable"
    retry_after_s = 5
    stop_reason = "stopped"

    @classmethod
    def sip_headers(cls) -> dict[str, str]:
        return {"Retry-After": str(cls.retry_after_s)}


class CallerHungUp(BridgeError):
    """The caller's leg ended while the stream was up: the bot is told `stop` callended."""

    stop_reason = "callended"


class CallFailed(BridgeError):
    """A bug in the bridge ended a call: the caller is hung up on with 500 rather than left hanging."""

    sip_status = 500
    sip_reason = "Internal Error"
