"""The TLS context for `wss://` bots: certificate and host name checked unless told otherwise.

Built once at start (reading a CA file blocks), shared by every call.
"""

from __future__ import annotations

import logging
import ssl

from bridge.errors import ConfigError

log = logging.getLogger("bridge.ws")


def bot_ssl_context(verify: bool = True, ca_file: str | None = None) -> ssl.SSLContext:
    """Verification on: the system's CAs, or only `ca_file`'s when given (a private CA).

    Off (`bot.tls.verify: false`): encryption without any check of who the bot is; warned
    about at start, because anyone on the path could then pose as the bot.
    """
    if not verify:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        log.warning("bot.tls.verify is false: wss:// bots are not authenticated (their certificate "
                    "is not checked); use bot.tls.ca_file for a private CA instead")
        return context
    try:
        context = ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or str(exc)
        raise ConfigError("bot.tls.ca_file", f"cannot load CA certificates from {ca_file}: {reason}; "
                                             "expected a readable PEM file") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context
