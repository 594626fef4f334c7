"""One tap socket on the loop: opens, sends what its TapStream makes, ignores what comes back.

The socket opens in the background (`start`); `opened` resolves to whether it did. Media is sent
without waiting (droppable: a service that stops reading loses audio, counted, and is warned about
once); `finish` sends the rest and `stop`, then closes with 1000, also when it is called while the
socket is still opening. The service closing the socket is reported to the owner (`sink_lost`).
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace
from typing import Protocol

from bridge.bot.agentstream.events import ProtocolError, StartInfo, StopReason
from bridge.call.policy import CallPolicy
from bridge.errors import BotConnectError
from bridge.logs import CallLog
from bridge.tap.stream import TapStream
from bridge.ws.client import BotLink, open_bot_link

__all__ = ["SinkOwner", "TapSink"]


class SinkOwner(Protocol):
    """What a socket needs from its conversation."""

    @property
    def policy(self) -> CallPolicy: ...
    @property
    def url(self) -> str: ...
    @property
    def headers(self) -> dict[str, str]: ...
    @property
    def layout(self) -> str: ...
    @property
    def log(self) -> CallLog: ...

    def start_info(self, sink: TapSink) -> StartInfo: ...
    def sink_lost(self, sink: TapSink) -> None: ...


class TapSink:
    """One socket to the service: opens, sends what its TapStream makes, ignores what comes back."""

    def __init__(self, conversation: SinkOwner, stream: TapStream, track: str | None, why: str) -> None:
        self.conversation = conversation
        self.stream = stream
        self.track = track  # the one track of a `separate` socket; None: all of them
        self.why = why  # "start" | "join" | "participant change" | "reopen"
        self.stream_sid = uuid.uuid4().hex
        self.link: BotLink | None = None
        self.opened: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.error = ""
        self.done = False  # stop sent (or never opened): nothing more is sent
        self.stop_reason: StopReason | None = None
        self.closed_by_service = False
        self.media_dropped = 0
        self._stall_warned = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        conv = self.conversation
        policy = conv.policy
        try:
            link = await open_bot_link(conv.url, replace(policy.link, headers=conv.headers), logger=conv.log)
        except BotConnectError as exc:
            self.error = exc.reason
            self.done = True
            self.opened.set_result(False)
            return
        self.link = link
        info = conv.start_info(self)
        for text in self.stream.open(info, policy.bot.chunk_ms):
            link.send_nowait(text)
        conv.log.info("tap stream %s open (%s, %s): %s", self.stream_sid, conv.layout,
                      self.track or "all tracks", self.why, extra={"stream_sid": self.stream_sid})
        self.opened.set_result(True)
        if self.stop_reason:  # ended while opening: what was kept, then stop
            for text in self.stream.close(self.stop_reason):
                link.send_nowait(text)
            await link.close(1000)
            return
        session = self.stream.session
        assert session is not None
        async for message in link.messages():
            try:
                session.receive(message)  # one-way: counted and ignored
            except ProtocolError:
                await link.close(1009, "message too big")
                break
        if not self.done:
            self.closed_by_service = True
            self.done = True
            conv.sink_lost(self)

    def send(self, texts: list[str], *, droppable: bool = True) -> None:
        link = self.link
        if link is None or self.done or not texts:
            return
        for text in texts:
            if not link.send_nowait(text, droppable=droppable):
                self.media_dropped += 1
        if link.stalled_since is not None and not self._stall_warned:
            self._stall_warned = True
            self.conversation.log.warning("the tap service is not reading stream %s: its audio is being "
                                          "dropped", self.stream_sid)

    async def finish(self, reason: StopReason) -> None:
        """`stop` with this reason, then close 1000 (or give up opening)."""
        if self.done:
            if self.link is not None and self.link.is_open:
                await self.link.close(1000)
            return
        self.done = True
        self.stop_reason = reason
        link = self.link
        if link is None:
            return  # still opening (or never started): _run sends the rest and stop once open
        for text in self.stream.close(reason):
            link.send_nowait(text)
        await link.close(1000)

    def summary(self) -> dict[str, object]:
        session = self.stream.session
        return {
            "stream_sid": self.stream_sid,
            "track": self.track or "all",
            "opened_for": self.why,
            "frames": self.stream.frames,
            "padded_frames": self.stream.padded_frames,
            "media_messages": session.chunks_sent if session is not None else 0,
            "media_dropped": self.media_dropped,
            "stop_reason": self.stop_reason or "",
            "closed_by_service": self.closed_by_service,
            "error": self.error,
        }
