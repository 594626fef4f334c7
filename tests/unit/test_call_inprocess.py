"""Whole calls in one process: a BridgeCall with a fake SIP leg and a fake bot link, on the Python
MediaChannel (no pjsua2, no sockets except where the real connect is the point: an unreachable
bot). The test plays the conference clock itself (caller frames in, bot frames out) and pumps."""

from __future__ import annotations

import asyncio
import base64
import functools
import gc
import json
import logging
import socket
import time
import weakref
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import pytest

from bridge.audio.channel import MediaChannel
from bridge.audio.pipe_channel import PipeChannel
from bridge.call.bridged import BridgeCall
from bridge.call.link import CallLink
from bridge.call.policy import CallPolicy
from bridge.config import demo_profile
from bridge.config.guard import BotGuard
from bridge.config.model import ClosePolicy, UnreachablePolicy
from bridge.errors import BotConnectError
from bridge.sip import CallEnd, EndedBy, IncomingCall, StreamStats
from bridge.ws.client import BotLinkSettings, open_bot_link

FRAME = 320  # 20 ms at 8 kHz
BOT_URL = "ws://bot.invalid/stream"


# ---- the fakes -------------------------------------------------------------------------------


class FakeSip:
    """A SipLeg that records what the call asks and ends the leg as an engine would."""

    def __init__(self) -> None:
        self.actions: list[tuple[Any, ...]] = []
        self.call: BridgeCall | None = None

    def _end(self, code: int, reason: str, by: EndedBy = "local") -> None:
        call = self.call
        if call is not None and call.sip_end is None:
            asyncio.get_running_loop().call_soon(call.on_sip_end, CallEnd(code, reason, by), StreamStats())

    def ringing(self, handle: int) -> None:
        self.actions.append(("ringing",))

    def answer(self, handle: int, channel: MediaChannel | PipeChannel) -> None:
        self.actions.append(("answer",))
        assert self.call is not None
        self.call.on_answered()

    def media_channel(self, handle: int, frame_bytes: int, chunk_frames: int, prebuffer_bytes: int,
                      cap_bytes: int) -> PipeChannel | None:
        return None  # no native pipe: the Python MediaChannel

    def reject(self, handle: int, code: int, reason: str = "", headers: dict[str, str] | None = None) -> None:
        self.actions.append(("reject", code, reason, headers))
        self._end(code, reason)

    def redirect(self, handle: int, target_uri: str) -> None:
        self.actions.append(("redirect", target_uri))
        self._end(302, "Moved Temporarily")

    def hangup(self, handle: int, code: int = 0, reason: str = "") -> None:
        self.actions.append(("hangup",))
        self._end(200, "BYE")

    def transfer(self, handle: int, target_uri: str) -> None:
        self.actions.append(("transfer", target_uri))
        assert self.call is not None
        asyncio.get_running_loop().call_soon(self.call.on_transfer_status, 200, True)

    def names(self) -> list[str]:
        return [action[0] for action in self.actions]


class FakeLink:
    """A bot link: records what the bridge sends; the test injects what the bot says and does."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.is_open = True
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self.closed_by_bridge: tuple[int, str] | None = None
        self.stalled_since: float | None = None
        self.reading = True  # False: the bot stopped reading (media is dropped, as on a full socket)
        self._sent_bytes = 0
        self._handler: Callable[[str | bytes], None] | None = None
        self._inbox: asyncio.Queue[str | bytes | None] = asyncio.Queue()

    @property
    def sent_bytes(self) -> int:
        return self._sent_bytes

    @property
    def reads(self) -> bool:
        return self._handler is not None

    def send_nowait(self, text: str, *, droppable: bool = False) -> bool:
        if not self.is_open:
            return False
        if droppable and not self.reading:
            self.stalled_since = self.stalled_since or time.monotonic()
            return False
        if droppable:
            self.stalled_since = None
        self.sent.append(json.loads(text))
        self._sent_bytes += len(text)
        return True

    def set_message_handler(self, handler: Callable[[str | bytes], None]) -> None:
        self._handler = handler

    async def messages(self) -> AsyncIterator[str | bytes]:
        while (message := await self._inbox.get()) is not None:
            yield message

    async def close(self, code: int = 1000, reason: str = "", timeout: float = 5.0) -> None:
        if self.is_open:
            self.closed_by_bridge = (code, reason)
            self._closed(code, reason)

    def abort(self) -> bool:
        return False

    def take_writes_back(self) -> None:
        pass

    # ---- the bot's side ----

    def bot_says(self, event: dict[str, Any]) -> None:
        if self._handler is None and not self.is_open:
            return
        assert self._handler is not None, "the call reads its link through the fast path"
        self._handler(json.dumps(event))

    def bot_closes(self, code: int = 1000, reason: str = "") -> None:
        self._closed(code, reason)

    def _closed(self, code: int, reason: str) -> None:
        self._handler = None  # as the real connection drops it when the socket is gone
        self.is_open = False
        self.close_code, self.close_reason = code, reason
        self._inbox.put_nowait(None)

    def events(self) -> list[str]:
        return [message["event"] for message in self.sent]

    def of(self, event: str) -> list[dict[str, Any]]:
        return [message for message in self.sent if message["event"] == event]


def incoming(handle: int = 1, **headers: str) -> IncomingCall:
    return IncomingCall(handle, f"call-{handle}@test", "sip:alice@test", "sip:bot@test", "alice", "bot",
                        "127.0.0.1:5060", headers=tuple(headers.items()))


def policy(**changes: Any) -> CallPolicy:
    """Short timeouts: every test here ends in well under a second."""
    base: dict[str, Any] = {"stop_grace_s": 0.01, "prebuffer_ms": 20}
    base.update(changes)
    return CallPolicy.for_url(BOT_URL, **base)


class Harness:
    """One call, its fakes, and the conference clock played by hand."""

    def __init__(self, call_policy: CallPolicy, *, link: FakeLink | None = None,
                 connect: Callable[[], Coroutine[Any, Any, CallLink]] | None = None,
                 headers: dict[str, str] | None = None, handle: int = 1) -> None:
        self.sip = FakeSip()
        self.link = link or FakeLink()

        fake = self.link  # not `self`: the call would hold its harness (a cycle the test would see)

        async def open_link(url: str, settings: BotLinkSettings, *, logger: Any = None) -> CallLink:
            return await connect() if connect is not None else fake

        self.call = BridgeCall(incoming(handle, **(headers or {})), call_policy, self.sip, lambda: None,
                               open_link=open_link)
        self.sip.call = self.call
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.task = asyncio.ensure_future(self.call.run())
        await self.answered()

    async def answered(self) -> None:
        """Until the call answered and reads its bot's messages."""
        for _ in range(100):
            if "answer" in self.sip.names() and self.link.reads:
                return
            await asyncio.sleep(0)
        raise AssertionError(f"not answered: {self.sip.actions}")

    async def done(self, timeout: float = 2.0) -> dict[str, object]:
        assert self.task is not None
        await asyncio.wait_for(self.task, timeout)
        return self.call.summary

    @property
    def channel(self) -> MediaChannel:
        channel = self.call.channel
        assert isinstance(channel, MediaChannel)
        return channel

    def caller_speaks(self, frames: int, value: int = 1000) -> None:
        """Caller frames in, as the clock thread delivers them, then one pump."""
        pcm = value.to_bytes(2, "little", signed=True) * (FRAME // 2)
        for _ in range(frames):
            self.channel.rx_slot()[:] = pcm
            self.channel.rx_commit()
        self.call.pump()

    def ticks(self, frames: int) -> list[bytes]:
        """Bot audio out, as the clock thread takes it, then one pump."""
        out = [bytes(self.channel.tx_frame()) for _ in range(frames)]
        self.call.pump()
        return out

    def bot_plays(self, ms: int, value: int = 2000) -> None:
        pcm = value.to_bytes(2, "little", signed=True) * (8 * ms)
        self.link.bot_says({"event": "media", "media": {"payload": base64.b64encode(pcm).decode()}})


def in_loop(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test in a fresh event loop, bounded (a hung call fails, not hangs)."""
    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(asyncio.wait_for(test(*args, **kwargs), 5.0))
    return run


# ---- the tests -------------------------------------------------------------------------------


@in_loop
async def test_answer_rings_then_connected_and_start_then_200() -> None:
    h = Harness(policy(), headers={"X-Customer": "42", "Other": "no"})
    await h.start()
    assert h.sip.names() == ["ringing", "answer"]
    assert h.link.events() == ["connected", "start"]
    start = h.link.of("start")[0]["start"]
    assert start["custom_parameters"] == {"X-Customer": "42"}  # sip.forward_headers: X-*
    assert h.call.outcome == "answered" and h.call.state.phase.value == "streaming"
    h.call.on_sip_end(CallEnd(200, "BYE", "remote"), StreamStats())
    await h.done()


@in_loop
async def test_caller_hangs_up_stop_callended_close_1000() -> None:
    h = Harness(policy())
    await h.start()
    h.caller_speaks(3)
    h.call.on_sip_end(CallEnd(200, "BYE", "remote"), StreamStats())
    summary = await h.done()
    assert h.link.events()[-1] == "stop" and h.link.of("stop")[0]["stop"]["reason"] == "callended"
    assert len(h.link.of("media")) == 3  # what was taken went before `stop`
    assert h.link.closed_by_bridge == (1000, "")
    assert "hangup" not in h.sip.names()
    assert summary["end_cause"] == "caller_hangup" and summary["end_reason"] == "caller hung up"
    assert summary["stop_reason"] == "callended" and summary["hung_up_by"] == "caller"
    assert summary["outcome"] == "answered" and summary["ended_by"] == "remote"


@in_loop
async def test_no_ack_is_its_own_cause() -> None:
    h = Harness(policy())
    await h.start()
    h.call.on_sip_end(CallEnd(408, "no ACK", "local"), StreamStats())
    summary = await h.done()
    assert summary["end_cause"] == "no_ack" and summary["stop_reason"] == "callended"
    assert summary["end_reason"] == "the caller never confirmed the answer (no ACK)"


@in_loop
async def test_bot_closes_bye() -> None:
    h = Harness(policy())
    await h.start()
    h.link.bot_closes(1000)
    summary = await h.done()
    assert h.sip.names() == ["ringing", "answer", "hangup"]
    assert "stop" not in h.link.events()
    assert summary["end_reason"] == "bot closed (1000)" and summary["end_cause"] == "bot_hangup"
    assert summary["hung_up_by"] == "bot" and summary["stop_reason"] == ""


@in_loop
async def test_bot_closes_then_transfer() -> None:
    h = Harness(policy(on_close=ClosePolicy("transfer", "sip:agents@pbx")))
    await h.start()
    h.link.bot_closes(1000)
    summary = await h.done()
    # The transfer's final NOTIFY (faked at once) ends the leg with a BYE.
    assert h.sip.actions[2:] == [("transfer", "sip:agents@pbx"), ("hangup",)]
    assert summary["end_reason"] == "bot closed (1000); transferred to sip:agents@pbx"
    assert summary["end_cause"] == "bot_transfer"


@in_loop
async def test_bridge_stop_sends_stop_stopped_then_bye() -> None:
    h = Harness(policy())
    await h.start()
    h.call.request_stop("no RTP from the caller for 3 s")
    summary = await h.done()
    assert h.link.of("stop")[0]["stop"]["reason"] == "stopped"
    assert h.sip.names()[-1] == "hangup"
    assert summary["end_reason"] == "no RTP from the caller for 3 s"
    assert summary["end_cause"] == "bridge_stop" and summary["stop_reason"] == "stopped"


def refused_url() -> str:
    """A local port nobody listens on: every connect is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"ws://127.0.0.1:{port}/stream"


async def unreachable_call(caplog: pytest.LogCaptureFixture, on_unreachable: UnreachablePolicy,
                           ) -> tuple[Harness, dict[str, object]]:
    url = refused_url()
    call_policy = CallPolicy.for_url(url, connect_retries=2, connect_timeout=1.0,
                                     on_unreachable=on_unreachable)
    async def connect() -> CallLink:
        return await open_bot_link(url, call_policy.link)

    h = Harness(call_policy, connect=connect)
    h.task = asyncio.ensure_future(h.call.run())
    with caplog.at_level(logging.WARNING, "bridge"):
        summary = await h.done()
    return h, summary


@in_loop
async def test_bot_unreachable_retries_then_rejects(caplog: pytest.LogCaptureFixture) -> None:
    h, summary = await unreachable_call(caplog, UnreachablePolicy("reject", 480))
    attempts = [r for r in caplog.records if "attempt" in r.getMessage()]
    assert [a.getMessage().split("attempt ")[1][:3] for a in attempts] == ["1/3", "2/3", "3/3"]
    assert h.sip.actions == [("ringing",), ("reject", 480, "Bot Unavailable", None)]
    assert summary["outcome"] == "rejected" and summary["end_cause"] == "bot_unreachable"
    assert str(summary["end_reason"]).endswith("rejected with 480")


@in_loop
async def test_bot_unreachable_redirects_to_fallback(caplog: pytest.LogCaptureFixture) -> None:
    h, summary = await unreachable_call(caplog, UnreachablePolicy("transfer", 503, "sip:fallback@pbx"))
    assert h.sip.actions == [("ringing",), ("redirect", "sip:fallback@pbx")]
    assert summary["outcome"] == "redirected" and summary["hung_up_by"] == "bridge"
    assert str(summary["end_reason"]).endswith("redirected to sip:fallback@pbx")


@in_loop
async def test_caller_hangs_up_while_connecting_is_abandoned() -> None:
    link = FakeLink()
    release = asyncio.Event()

    async def connect() -> CallLink:
        await release.wait()
        return link

    h = Harness(policy(), link=link, connect=connect)
    h.task = asyncio.ensure_future(h.call.run())
    await asyncio.sleep(0.01)
    h.call.on_sip_end(CallEnd(487, "Request Terminated", "remote"), StreamStats())
    summary = await h.done()
    assert h.sip.names() == ["ringing"] and link.sent == []
    assert summary["outcome"] == "abandoned" and summary["end_cause"] == "caller_abandoned"
    assert summary["end_reason"] == "caller hung up while the bot was connecting"


@in_loop
async def test_bridge_stop_while_connecting_is_503_retry_after() -> None:
    never = asyncio.Event()

    async def connect() -> CallLink:
        await never.wait()
        raise BotConnectError(BOT_URL, "unreachable")

    h = Harness(policy(), connect=connect)
    h.task = asyncio.ensure_future(h.call.run())
    await asyncio.sleep(0.01)
    h.call.request_stop("bridge shutting down")
    summary = await h.done()
    assert h.sip.actions[1] == ("reject", 503, "Service Unavailable", {"Retry-After": "5"})
    assert summary["outcome"] == "abandoned"  # as reported before the state machine


@in_loop
async def test_stall_ends_the_call_after_stall_timeout() -> None:
    h = Harness(policy(guard=BotGuard(stall_timeout=0.1)))
    await h.start()
    h.link.reading = False
    started = time.monotonic()
    while h.call.state.stop_wanted is False and time.monotonic() - started < 1.0:
        h.caller_speaks(1)
        await asyncio.sleep(0.01)
    summary = await h.done()
    assert time.monotonic() - started < 1.0
    assert summary["stop_reason"] == "stopped" and summary["end_reason"] == "bot stopped reading for 0.1 s"
    assert int(str(summary["media_drops"])) > 0 and h.sip.names()[-1] == "hangup"


@in_loop
async def test_marks_answered_when_their_audio_played() -> None:
    h = Harness(policy())
    await h.start()
    h.bot_plays(60)
    h.link.bot_says({"event": "mark", "mark": {"name": "m1"}})
    assert h.link.of("mark") == []
    frames = h.ticks(2)
    assert h.link.of("mark") == []  # 20 ms still queued
    frames += h.ticks(2)
    assert [m["mark"]["name"] for m in h.link.of("mark")] == ["m1"]
    assert sum(1 for frame in frames if any(frame)) == 3
    h.call.on_sip_end(CallEnd(200, "BYE", "remote"), StreamStats())
    summary = await h.done()
    assert summary["bot_media_messages"] == 1 and summary["frames_to_caller"] == 3


@in_loop
async def test_clear_drops_queued_audio_and_answers_its_marks() -> None:
    h = Harness(policy())
    await h.start()
    h.bot_plays(1000)
    h.link.bot_says({"event": "mark", "mark": {"name": "m1"}})
    h.ticks(2)
    h.link.bot_says({"event": "clear"})
    assert [m["mark"]["name"] for m in h.link.of("mark")] == ["m1"]  # on clear
    assert h.channel.playout.buffered_bytes == 0
    assert not any(any(frame) for frame in h.ticks(3))
    h.call.on_sip_end(CallEnd(200, "BYE", "remote"), StreamStats())
    await h.done()


@in_loop
async def test_clear_forgets_marks_when_told_to() -> None:
    h = Harness(policy(clear_answers_marks=False))
    await h.start()
    h.bot_plays(200)
    h.link.bot_says({"event": "mark", "mark": {"name": "m1"}})
    h.link.bot_says({"event": "clear"})
    assert h.link.of("mark") == []
    h.call.on_sip_end(CallEnd(200, "BYE", "remote"), StreamStats())
    await h.done()


@in_loop
async def test_dtmf_goes_to_the_bot_after_the_audio_before_it() -> None:
    h = Harness(policy())
    await h.start()
    for _ in range(2):
        h.channel.rx_slot()[:] = bytes(FRAME)
        h.channel.rx_commit()
    h.call.on_dtmf("5", 0, "rfc4733")
    assert h.link.events()[2:] == ["media", "media", "dtmf"]
    assert h.link.of("dtmf")[0]["dtmf"] == {"digit": "5", "duration": "100"}
    h.call.on_sip_end(CallEnd(200, "BYE", "remote"), StreamStats())
    summary = await h.done()
    assert summary["dtmf"] == "5"


@in_loop
async def test_oversized_bot_message_closes_with_1009() -> None:
    h = Harness(policy(max_message_bytes=1000, warn_message_bytes=500))
    await h.start()
    h.link.bot_says({"event": "media", "media": {"payload": "A" * 2000}})
    summary = await h.done()
    assert h.link.closed_by_bridge == (1009, "message too big")
    assert summary["protocol_errors"] == 1 and summary["end_cause"] == "bot_hangup"


@in_loop
async def test_drain_stops_every_call() -> None:
    """The service's drain (shutdown): `stop` stopped and BYE on every call in progress."""
    # Imported here: the service imports the SIP engine (pjsua2); the other tests here need neither.
    from bridge.service import Bridge

    calls = [Harness(policy(), handle=handle) for handle in (1, 2, 3)]
    bridge = Bridge(demo_profile(5060, BOT_URL))
    for h in calls:
        await h.start()
        assert h.task is not None
        bridge.calls[h.call.handle] = h.call
        bridge.tasks[h.call.handle] = h.task
    await bridge._drain(2.0)
    summaries = [h.call.summary for h in calls]
    assert [s["end_cause"] for s in summaries] == ["bridge_stop"] * 3
    assert [s["end_reason"] for s in summaries] == ["bridge shutting down"] * 3
    assert all(h.link.of("stop")[0]["stop"]["reason"] == "stopped" for h in calls)
    assert all(h.sip.names()[-1] == "hangup" for h in calls)


@in_loop
async def test_a_finished_call_is_freed_without_the_collector() -> None:
    """No reference cycle through the call: its buffers go as soon as the service lets go."""
    gc.disable()
    try:
        for end in ("caller", "bot", "stall"):
            h = Harness(policy(guard=BotGuard(stall_timeout=0.05)))
            await h.start()
            h.bot_plays(100)
            h.caller_speaks(2)
            if end == "caller":
                h.call.on_sip_end(CallEnd(200, "BYE", "remote"), StreamStats())
            elif end == "bot":
                h.link.bot_closes(1000)
            else:
                h.link.reading = False
                while not h.call.state.stop_wanted:
                    h.caller_speaks(1)
                    await asyncio.sleep(0.01)
            await h.done()
            call = weakref.ref(h.call)
            h.sip.call = None
            del h
            await asyncio.sleep(0)
            assert call() is None, f"{end}: {gc.get_referrers(call())}"
    finally:
        gc.enable()
