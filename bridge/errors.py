"""Error types that classify themselves: exit code, SIP status, WebSocket close code."""

from __future__ import annotations

# Exit codes of the command line. 78 (EX_CONFIG) is listed in the systemd unit's
# RestartPreventExitStatus so a bad profile does not restart-loop.
EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_CONFIG = 78
EXIT_UNAVAILABLE = 69  # a dependency (pjsua2, a port) is not available


class BridgeError(Exception):
    """Base of every error the bridge raises on purpose."""

    exit_code = EXIT_FAILURE


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
    """The bot's WebSocket could not be opened (refused, handshake timeout, HTTP error)."""

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        self.reason = reason
        super().__init__(f"bot {url}: {reason}")
