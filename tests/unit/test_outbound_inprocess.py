"""Outbound calls in one process: an OutboundCall with a fake SIP leg that plays the callee (ring,
answer, busy, no answer, early media, hang-up) and a fake bot link, on the Python MediaChannel. The
statuses reported, the call's record, what the bot is told and what the leg is asked to do."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from bridge.audio.channel import MediaChannel
from bridge.audio.pipe_channel import PipeChannel
from bridge.call.link import CallLink
from bridge.call.outbound import DialSpec, OutboundCall
from bridge.call.record import CallRecord
from bridge.errors import BotConnectError
from bridge.sip import CallEnd, StreamStats
from bridge.ws.client import BotLinkSettings
from tests.unit.test_call_inprocess import FRAME, FakeLink, FakeSip, in_loop, policy


class Callee(FakeSip):
    """The SIP leg of an outbound call: what the test's callee does is scripted per test."""

    def __init__(self) -> None:
        super().__init__()
        self.dialled: tuple[str, str | None, Mapping[str, str], bool] | None = None

    def dial(
        self,
        handle: int,
        uri: str,
        from_uri: str | None,
        headers: Mapping[str, str],
        channel: MediaChannel | PipeChannel,
        early_media: bool,
    ) -> None:
        self.actions.append(("dial", uri))
        self.dialled = (uri, from_uri, headers, early_media)

    def hangup(self, handle: int, code: int = 0, reason: str = "") -> None:
        call = self.call
        assert call is not None
        self.actions.append(("hangup",))
        # Before the answer a hang-up is a CANCEL (the INVITE ends 487); after it, a BYE.
        answered = isinstance(call, OutboundCall) and call.record.answered_at is not None
        self._end(200 if answered else 487, "BYE" if answered else "Request Terminated")

    def callee_ends(self, code: int, reason: str) -> None:
        assert self.call is not None
        self.call.on_sip_end(CallEnd(code, reason, "remote"), StreamStats())


def spec(**changes: Any) -> DialSpec:
    base: dict[str, Any] = {
        "call_sid": "CA1",
        "target_uri": "sip:+918012345678@127.0.0.1:5070",
        "from_user": "+914400000000",
        "to_user": "+918012345678",
        "custom_parameters": {"lead": "7"},
        "ring_timeout": 2.0,
    }
    base.update(changes)
    return DialSpec(**base)


class Outbound:
    def __init__(
        self,
        dial: DialSpec | None = None,
        *,
        unreachable: bool = False,
        slow_bot: float = 0.0,
        **policy_changes: Any,
    ) -> None:
        self.sip = Callee()
        self.link = FakeLink()
        self.events: list[tuple[str, str]] = []
        fake = self.link

        async def open_link(url: str, settings: BotLinkSettings, *, logger: Any = None) -> CallLink:
            if unreachable:
                raise BotConnectError(url, "connection refused")
            await asyncio.sleep(slow_bot)
            return fake

        events = self.events

        def report(record: CallRecord, event: str) -> None:
            events.append((event, record.status))

        self.record = CallRecord(
            call_sid="CA1", direction="outbound", from_="+914400000000", to="+918012345678", created_at=0.0
        )
        self.call = OutboundCall(
            7,
            dial or spec(),
            self.record,
            policy(**policy_changes),
            self.sip,
            lambda: None,
            report,
            open_link=open_link,
        )
        self.sip.call = self.call
        self.task = asyncio.ensure_future(self.call.run())

    async def dialled(self) -> None:
        while self.sip.dialled is None:
            await asyncio.sleep(0)

    async def streaming(self) -> None:
        while not self.link.reads:
            await asyncio.sleep(0)

    async def done(self) -> None:
        await asyncio.wait_for(self.task, 3.0)


@in_loop
async def test_answered_streams_from_the_answer_with_outbound_start() -> None:
    out = Outbound()
    await out.dialled()
    assert out.sip.dialled is not None and out.sip.dialled[0] == "sip:+918012345678@127.0.0.1:5070"
    out.call.on_progress(180, False)
    out.call.on_progress(183, False)
    assert out.link.sent == []  # nothing to the bot before the answer
    # The callee's first audio arrives with the answer, before the bot's socket is open: held.
    channel = out.call.channel
    assert channel is None  # the pump starts with the stream; the channel waits in the dial
    out.call.on_answered()
    await out.streaming()
    start = out.link.of("start")[0]["start"]
    assert start["call_sid"] == "CA1" and start["from"] == "+914400000000" and start["to"] == "+918012345678"
    assert start["custom_parameters"] == {"lead": "7", "direction": "outbound"}
    assert "answer" not in out.sip.names()  # the callee answered; the bridge answers nothing
    out.sip.callee_ends(200, "BYE")
    await out.done()
    assert out.link.events()[-1] == "stop" and out.link.of("stop")[0]["stop"]["reason"] == "callended"
    assert out.events == [
        ("initiated", "initiated"),
        ("ringing", "ringing"),
        ("answered", "in-progress"),
        ("completed", "completed"),
    ]
    assert (out.record.end_reason, out.record.disconnected_by, out.record.sip_status) == (
        "hangup",
        "callee",
        200,
    )


@in_loop
async def test_busy_and_refused_never_reach_the_bot() -> None:
    for code, status, reason in (
        (486, "busy", "busy"),
        (503, "failed", "sip_error"),
        (480, "no-answer", "no_answer"),
    ):
        out = Outbound()
        await out.dialled()
        out.call.on_progress(180, False)
        out.sip.callee_ends(code, "x")
        await out.done()
        assert out.link.sent == [] and out.events[-1] == ("completed", status)
        assert (out.record.end_reason, out.record.sip_status, out.record.disconnected_by) == (
            reason,
            code,
            "callee",
        )
        assert out.call.summary["outcome"] == "unanswered" and out.call.summary["end_cause"] == "not_answered"


@in_loop
async def test_ring_timeout_cancels_no_answer() -> None:
    out = Outbound(spec(ring_timeout=0.1))
    await out.done()
    assert out.sip.names() == ["dial", "hangup"]
    assert (out.record.status, out.record.end_reason, out.record.sip_status) == (
        "no-answer",
        "no_answer",
        487,
    )


@in_loop
async def test_api_delete_while_ringing_cancels_and_while_talking_stops() -> None:
    out = Outbound()
    await out.dialled()
    out.call.on_progress(180, False)
    out.call.end_by_api()
    await out.done()
    assert (out.record.status, out.record.end_reason, out.record.disconnected_by) == (
        "canceled",
        "canceled",
        "api",
    )
    out = Outbound()
    await out.dialled()
    out.call.on_answered()
    await out.streaming()
    out.call.end_by_api()
    await out.done()
    assert out.link.of("stop")[0]["stop"]["reason"] == "stopped" and ("hangup",) in out.sip.actions
    assert (out.record.status, out.record.end_reason, out.record.disconnected_by) == (
        "completed",
        "api_hangup",
        "api",
    )


@in_loop
async def test_drain_cancels_a_ringing_call() -> None:
    out = Outbound()
    await out.dialled()
    out.call.request_stop("bridge shutting down")
    await out.done()
    assert (out.record.status, out.record.end_reason, out.record.disconnected_by) == (
        "canceled",
        "drain",
        "bridge",
    )


@in_loop
async def test_time_limit_counts_from_the_answer() -> None:
    out = Outbound(spec(time_limit=0.1))
    await out.dialled()
    await asyncio.sleep(0.2)  # ringing longer than the limit does not count
    out.call.on_answered()
    await out.streaming()
    await out.done()
    assert (out.record.status, out.record.end_reason, out.record.disconnected_by) == (
        "completed",
        "time_limit",
        "bridge",
    )
    assert out.link.of("stop")[0]["stop"]["reason"] == "stopped"


@in_loop
async def test_an_unreachable_bot_hangs_up_at_once() -> None:
    out = Outbound(unreachable=True)
    await out.dialled()
    out.call.on_answered()
    await out.done()
    assert out.sip.names() == ["dial", "hangup"] and out.link.sent == []
    assert (out.record.status, out.record.end_reason) == ("failed", "bot_unreachable")


@in_loop
async def test_the_bot_hangs_up() -> None:
    out = Outbound()
    await out.dialled()
    out.call.on_answered()
    await out.streaming()
    out.link.bot_closes(1000)
    await out.done()
    assert (out.record.status, out.record.end_reason, out.record.disconnected_by) == (
        "completed",
        "bot_hangup",
        "bot",
    )


@in_loop
async def test_early_media_starts_the_stream_at_183_with_sdp() -> None:
    out = Outbound(spec(early_media=True))
    await out.dialled()
    out.call.on_progress(183, True)
    await out.streaming()
    start = out.link.of("start")[0]["start"]
    assert start["custom_parameters"]["early_media"] == "true"
    assert out.record.status == "ringing"
    channel = out.call.channel
    assert isinstance(channel, MediaChannel)
    channel.rx_slot()[:] = b"\x01\x00" * (FRAME // 2)
    channel.rx_commit()
    out.call.on_answered()
    assert out.record.status == "in-progress"
    out.sip.callee_ends(200, "BYE")
    await out.done()
    assert out.record.status == "completed" and out.link.of("media")


@in_loop
async def test_the_callee_hangs_up_while_the_bot_connects() -> None:
    out = Outbound(slow_bot=0.5)
    await out.dialled()
    out.call.on_answered()
    await asyncio.sleep(0.05)
    out.sip.callee_ends(200, "BYE")
    await out.done()
    assert out.link.sent == []
    assert (out.record.status, out.record.end_reason, out.record.disconnected_by) == (
        "completed",
        "hangup",
        "callee",
    )
