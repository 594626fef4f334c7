"""The WebSocket client side of one stream: connect with timeout and retry, send without blocking.

The media pump serves every call from one task, so a send must never wait on a slow bot:
`send_nowait` writes to the transport at once, and when a bot stops reading, droppable messages
(media) are dropped and counted while the backlog is over its limit; control messages (start,
dtmf, mark, stop) are always written, they are few and small.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI
from websockets.protocol import State

from bridge import __version__
from bridge.config import BotSettings, Secret, redact_url
from bridge.errors import WS_NORMAL_CLOSURE, BotConnectError
from bridge.ws.fastpath import BotConnection, SocketWriter
from bridge.ws.frames import MaskKeys, masked_text_frame

log = logging.getLogger("bridge.ws")

__all__ = ["BotLink", "BotLinkSettings", "describe_connect_failure", "open_bot_link", "redact_url"]

# Bytes waiting in the socket's send buffer beyond which media is dropped (about 8 s of
# 8 kHz audio as base64 JSON): a bot that stops reading costs bounded memory.
DEFAULT_BACKLOG_LIMIT = 256 * 1024
# The kernel's send buffer of a bot socket is fixed at this (Linux doubles it) instead of growing
# to tcp_wmem's maximum (4 MiB): a bot that stops reading fills it within seconds, so the
# backlog check above sees it, and a stalled call holds well under 1 MiB in all.
SEND_BUFFER_BYTES = 64 * 1024


def describe_connect_failure(exc: BaseException) -> str:
    if isinstance(exc, InvalidStatus):
        return f"HTTP {exc.response.status_code} on the WebSocket upgrade"
    if isinstance(exc, TimeoutError):
        return "the opening handshake timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ssl.SSLError):
        return f"TLS error: {exc.reason or exc}"
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return str(exc) or type(exc).__name__


@dataclass(frozen=True, slots=True)
class BotLinkSettings:
    """How a bot's socket is opened: the connection slice of the profile's bot section
    (`of` derives it; the defaults are the profile's, stated once in bridge/config)."""

    connect_timeout: float  # for TCP, TLS and the handshake, per attempt
    connect_retries: int  # further attempts after the first
    max_message_bytes: int  # larger messages close the socket with 1009
    ping_interval: float  # keepalive; 0: none. An unanswered ping closes the socket
    ping_timeout: float
    headers: Mapping[str, str] = field(default_factory=dict)  # extra handshake headers, revealed
    ssl_context: ssl.SSLContext | None = None  # for wss:// (None: the library's verifying default)

    @classmethod
    def of(cls, bot: BotSettings | None = None, **changes: Any) -> BotLinkSettings:
        """From a profile's bot section (the default one if None); `changes` replace fields."""
        if bot is None:
            bot = BotSettings(url=Secret(""), url_redacted="")
        values: dict[str, Any] = {
            "connect_timeout": bot.connect_timeout,
            "connect_retries": bot.connect_retries,
            "max_message_bytes": bot.max_message_bytes,
            "ping_interval": bot.guard.ping_interval,
            "ping_timeout": bot.guard.ping_timeout,
            "headers": {name: value.reveal() for name, value in bot.headers.items()},
        }
        values.update(changes)
        return cls(**values)


class BotLink:
    """One open WebSocket to a bot."""

    def __init__(self, conn: BotConnection, *, backlog_limit: int = DEFAULT_BACKLOG_LIMIT) -> None:
        self._conn = conn
        self._backlog_limit = backlog_limit
        sock = conn.transport.get_extra_info("socket") if conn.transport is not None else None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)
        self.dropped_messages = 0
        self._sent_messages = 0
        self._sent_bytes = 0
        # Since when media has been dropped without a successful media send in between: the
        # bot stopped reading (the call ends after bot.stall_timeout). None while it reads.
        self.stalled_since: float | None = None
        self._keys = MaskKeys()
        self._writers: list[SocketWriter] = []  # every writer the socket was handed to

    @property
    def backlog_limit(self) -> int:
        return self._backlog_limit

    @property
    def sent_messages(self) -> int:
        return self._sent_messages + sum(writer.sent()[0] for writer in self._writers)

    @property
    def sent_bytes(self) -> int:
        """Text bytes of the messages written (the writers' included)."""
        return self._sent_bytes + sum(writer.sent()[1] for writer in self._writers)

    @property
    def backlog_bytes(self) -> int:
        transport = self._conn.transport
        return 0 if transport is None else transport.get_write_buffer_size()

    def plain_socket_fd(self) -> int | None:
        """The socket's descriptor if another writer could take it over now: open, plain TCP
        (TLS records are not ours to write), nothing queued in the transport. Else None."""
        conn = self._conn
        transport = conn.transport
        if (transport is None or conn.protocol.state is not State.OPEN or conn.writer is not None
                or transport.get_extra_info("sslcontext") is not None
                or transport.get_write_buffer_size() or conn.protocol.writes):
            return None
        sock = transport.get_extra_info("socket")
        return sock.fileno() if sock is not None else None

    def hand_writes_to(self, writer: SocketWriter) -> None:
        """Every frame goes through `writer` from now on (plain_socket_fd() said it may)."""
        self._writers.append(writer)
        self._conn.attach_writer(writer)

    def take_writes_back(self) -> None:
        """Write frames ourselves again; what the writer had not written goes first."""
        self._conn.release_writer()

    @property
    def handed_off(self) -> bool:
        return self._conn.writer is not None

    def abort(self) -> bool:
        """Drop the connection at once (a write failed: it is broken); False if it was already
        closing."""
        transport = self._conn.transport
        if transport is None or transport.is_closing():
            return False
        transport.abort()
        return True

    @property
    def is_open(self) -> bool:
        return self._conn.protocol.state is State.OPEN

    def send_nowait(self, text: str, *, droppable: bool = False) -> bool:
        """Queue one text frame on the socket now; False if dropped or the socket is not open."""
        conn = self._conn
        if conn.protocol.state is not State.OPEN:
            return False
        if droppable and self.backlog_bytes > self._backlog_limit:
            self.dropped_messages += 1
            if self.stalled_since is None:
                self.stalled_since = time.monotonic()
            return False
        if droppable:
            self.stalled_since = None
        writer = conn.writer
        if writer is not None:
            return writer.write_text(text)  # counted by the writer
        data = text.encode()
        # What Connection.send() does, minus its wait for the buffer to drain and with a leaner
        # frame (bridge/ws/frames.py). Frames the protocol queued itself (pongs, a close) go first
        # so the order on the wire is the order of the calls.
        try:
            if conn.protocol.writes:
                conn.send_data()
            conn.transport.write(masked_text_frame(data, self._keys.next()))
        except OSError as exc:
            log.warning("WebSocket write failed: %s", exc)
            conn.transport.abort()
            return False
        self._sent_messages += 1
        self._sent_bytes += len(data)
        return True

    def set_message_handler(self, handler: Callable[[str | bytes], None]) -> None:
        """Deliver the bot's messages to `handler` as they arrive (the socket's fast path); call
        it before iterating `messages()`, which then yields only what the fast path left to
        websockets (fragmented messages), still in order."""
        self._conn.set_message_handler(handler)

    async def messages(self) -> AsyncIterator[str | bytes]:
        """Messages from the bot until it closes (normally or not)."""
        conn = self._conn
        if not conn.has_message_handler:
            # Nobody takes the fast path's messages: websockets reads everything from here on.
            for message in conn.end_fast_path():
                yield message
        try:
            async for message in self._conn:
                yield message
        except ConnectionClosed:
            return

    @property
    def close_code(self) -> int | None:
        return self._conn.close_code

    @property
    def close_reason(self) -> str | None:
        protocol = self._conn.protocol
        if protocol.close_rcvd is None and protocol.close_sent is not None:
            # We failed the connection (e.g. "keepalive ping timeout"); the code is 1006.
            return protocol.close_sent.reason
        return self._conn.close_reason

    async def close(self, code: int = WS_NORMAL_CLOSURE, reason: str = "", timeout: float = 5.0) -> None:
        """Close and wait for the bot's close frame; the library keeps reading meanwhile."""
        try:
            async with asyncio.timeout(timeout):
                await self._conn.close(code, reason)
        except (TimeoutError, ConnectionClosed, OSError):
            self._conn.transport.abort()


async def open_bot_link(
    url: str,
    settings: BotLinkSettings,
    *,
    logger: logging.Logger | logging.LoggerAdapter[logging.Logger] = log,
) -> BotLink:
    """Open the bot's WebSocket: each attempt has `settings.connect_timeout` seconds for TCP, TLS
    and the handshake.

    Credentials in the URL (`wss://user:pass@host`) become an `Authorization: Basic` header
    (done by websockets). Raises BotConnectError after `settings.connect_retries` further attempts.
    """
    shown = redact_url(url)
    reason = "not attempted"
    attempts = settings.connect_retries + 1
    for attempt in range(attempts):
        try:
            conn = await connect(
                url,
                additional_headers=dict(settings.headers),
                open_timeout=settings.connect_timeout,
                compression=None,  # audio does not compress; deflate costs CPU per message
                max_size=settings.max_message_bytes,  # larger messages close the socket with 1009
                write_limit=4 * DEFAULT_BACKLOG_LIMIT,
                ping_interval=settings.ping_interval or None,  # no pong within ping_timeout: disconnected
                ping_timeout=settings.ping_timeout,
                close_timeout=5,
                user_agent_header=f"sip-ws-bridge/{__version__}",
                create_connection=BotConnection,
                ssl=settings.ssl_context if url.startswith("wss:") else None,
            )
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
            reason = describe_connect_failure(exc)
            logger.warning("bot %s: attempt %d/%d failed: %s", shown, attempt + 1, attempts, reason)
            continue
        assert isinstance(conn, BotConnection)  # create_connection above
        return BotLink(conn)
    raise BotConnectError(shown, reason)
