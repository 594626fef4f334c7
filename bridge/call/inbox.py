"""What one call does with its bot's messages: audio, marks and clears go to the media pump;
bad, ignored and oversized messages are counted and logged (rate-limited, once per kind).
"""

from __future__ import annotations

import asyncio
import logging

from bridge.bot.dialect import DialectSession
from bridge.bot.events import BotClear, BotMark, BotMedia, ProtocolError
from bridge.call.link import CallLink
from bridge.call.pump import MediaPump
from bridge.errors import BotMessageTooBig
from bridge.logs import CallLog

__all__ = ["BotInbox"]


class BotInbox:
    """Reads one bot link into one session and pump (loop thread only)."""

    def __init__(self, session: DialectSession, link: CallLink, pump: MediaPump, stream_sid: str,
                 warn_message_bytes: int, log: CallLog) -> None:
        self.session = session
        self.link = link
        self.pump = pump
        self.stream_sid = stream_sid
        self.warn_message_bytes = warn_message_bytes
        self.log = log
        self.media_messages = 0
        self.bytes_in = 0
        self.protocol_errors = 0
        self.large_messages = 0
        # Bot messages the contract says to log and ignore (events out of place, a streamSid
        # that is not this stream's): counted; logged once per call and kind.
        self.ignored: dict[str, int] = {}
        self.stream_sid_mismatches = 0
        self._closing: asyncio.Future[None] | None = None  # our 1009 close of the bot's socket

    async def read(self) -> None:
        """Bot messages, in order, until the socket closes: most arrive through the socket's fast
        path straight into `on_message`; the rest (fragmented ones) come through websockets here."""
        link = self.link
        link.set_message_handler(self.on_message)
        async for message in link.messages():
            self.on_message(message)
        if self._closing is not None:
            await self._closing

    def on_message(self, message: str | bytes) -> None:
        if self._closing is not None:
            return
        session = self.session
        try:
            event = session.receive(message)
        except ProtocolError as exc:
            self.protocol_errors += 1
            error = BotMessageTooBig(exc.kind)
            self.log.warning("%s; closing with %d", error, error.ws_close_code)
            self._closing = asyncio.ensure_future(
                self.link.close(error.ws_close_code, error.ws_close_reason))
            return
        if session.stream_sid_mismatch != self.stream_sid_mismatches:
            self._note_stream_sid()
        if event is None:
            self._note_rejects()
            self._note_ignored()
        elif isinstance(event, BotMedia):
            if session.large_messages > self.large_messages:
                self.large_messages = session.large_messages
                if self.large_messages <= 5 or self.large_messages % 100 == 0:
                    self.log.warning(
                        "bot message of %d bytes of audio is over %d bytes (accepted; %d so far)",
                        len(event.payload), self.warn_message_bytes, self.large_messages)
            self.media_messages += 1
            self.bytes_in += len(event.payload)
            self.pump.play(event.payload)
        elif isinstance(event, BotMark):
            self.pump.mark(event.name)
        elif isinstance(event, BotClear):
            self.pump.clear()

    def _note_stream_sid(self) -> None:
        if not self.stream_sid_mismatches:
            self.log.warning("bot message names a streamSid that is not this stream's (%s); accepted, "
                             "counted in the call summary (logged once per call)", self.stream_sid)
        self.stream_sid_mismatches = self.session.stream_sid_mismatch

    def _note_ignored(self) -> None:
        session = self.session
        for kind, count in session.ignored.items():
            if self.ignored.get(kind, 0) == count:
                continue
            if kind not in self.ignored:
                last = session.last_ignored
                # What a bot sends after `stop` (during the grace) is normal: debug only.
                self.log.log(logging.DEBUG if kind == "after_stop" else logging.INFO,
                             "bot message ignored (%s%s): it has no meaning here; counted in the call "
                             "summary (logged once per call and kind)", kind,
                             f", event {last.event[:40]!r}" if kind == "unknown" and last else "")
            self.ignored[kind] = count

    def _note_rejects(self) -> None:
        session = self.session
        total = sum(session.errors.values())
        if total > self.protocol_errors:
            self.protocol_errors = total
            # Rate-limited: the first few, then every hundredth.
            if total <= 5 or total % 100 == 0:
                self.log.warning("dropped a bad bot message (total %d: %s)", total, dict(session.errors))
