"""One outbound call: the bridge dials the customer and the bot streams from the answer.

The INVITE leaves with the call's audio channel already attached, so the callee's audio from the
first RTP packet after the answer is held until the bot's socket is open (a few ms on loopback) and
then delivered: nothing the customer says is lost. The bot's socket opens when the callee answers
(`connected` and `start` never go out before the 200 OK) or, with early media, at a 183 with SDP.

Statuses follow the call: queued -> initiated (INVITE sent) -> ringing (the first 180/183) ->
in-progress (2xx) -> completed, busy, no-answer, failed or canceled, each reported through the
`report` callback (the status webhooks). After the answer the call is a bridged call like an
inbound one (bridged.py): the same stream, pump, marks, stop and summary.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from bridge.audio.channel import MediaChannel
from bridge.audio.pipe_channel import PipeChannel
from bridge.bot.events import StartInfo
from bridge.call.bridged import BridgeCall, SipLeg
from bridge.call.link import LinkOpener
from bridge.call.policy import CallPolicy
from bridge.call.pump import LatencyProbes
from bridge.call.record import CallRecord, EndReason, status_after_final_response
from bridge.call.state import EndCause, Ending
from bridge.config import parse_bot_url
from bridge.errors import ConfigError
from bridge.sip import CallEnd, IncomingCall, StreamStats
from bridge.ws.client import open_bot_link

__all__ = ["DialSpec", "OutboundCall", "OutboundLeg"]

StatusEvent = Literal["initiated", "ringing", "answered", "completed"]
_ANSWER_GIVE_UP_S = 35.0  # after our CANCEL, how long the far end has to end the INVITE


class OutboundLeg(SipLeg, Protocol):
    def dial(
        self,
        handle: int,
        uri: str,
        from_uri: str | None,
        headers: Mapping[str, str],
        channel: MediaChannel | PipeChannel,
        early_media: bool,
    ) -> None: ...


@dataclass(frozen=True, slots=True)
class DialSpec:
    """What to dial and how, already checked against the profile."""

    call_sid: str
    target_uri: str  # sip:<number>@<registrar or trunk> or the URI as given
    from_user: str  # the caller id shown to the callee (start.from)
    to_user: str  # the number as given (start.to)
    from_uri: str | None = None  # the INVITE's From (None: the account's)
    headers: Mapping[str, str] = field(default_factory=dict)
    bot_url: str | None = None  # None: the profile's
    custom_parameters: Mapping[str, str] = field(default_factory=dict)
    ring_timeout: float = 30.0
    time_limit: float = 3600.0
    early_media: bool = False


class OutboundCall(BridgeCall):
    def __init__(
        self,
        handle: int,
        spec: DialSpec,
        record: CallRecord,
        policy: CallPolicy,
        sip: OutboundLeg,
        notify_media: Callable[[], None],
        report: Callable[[CallRecord, StatusEvent], None],
        *,
        probes: LatencyProbes | None = None,
        open_link: LinkOpener = open_bot_link,
    ) -> None:
        parties = IncomingCall(
            handle=handle,
            call_id=spec.call_sid,
            from_uri=spec.from_uri or "",
            to_uri=spec.target_uri,
            from_user=spec.from_user,
            to_user=spec.to_user,
            source="",
        )
        super().__init__(parties, policy, sip, notify_media, probes=probes, open_link=open_link)
        self.spec = spec
        self.record = record
        self.outbound_sip = sip
        self._report = report
        self._progress = asyncio.Event()
        self._answer_seen = asyncio.Event()  # 2xx, or a 183 with SDP when early media is asked for
        self._early_stream = False
        self._interrupted = False  # answered, then ended before the bot's socket opened
        self._ended_wall: float | None = None
        self._time_limit: asyncio.TimerHandle | None = None
        # Why the bridge ended it (a DELETE, the time limit, a drain, a stall, no RTP); a box, not
        # an attribute of the call, so the pump's stop callback holds no reference to the call.
        self._kind: list[EndReason | None] = [None]
        base_stop = self._stop

        def stop(reason: str, _kind: list[EndReason | None] = self._kind) -> None:
            if _kind[0] is None:
                _kind[0] = "stall"  # only the pump stops a call without saying why: its bot stalled
            base_stop(reason)

        self._stop = stop

    # ---- events (loop thread) -----------------------------------------------------------

    def on_progress(self, code: int, with_sdp: bool) -> None:
        """A provisional answer: 180/183 is ringing; a 183 with SDP starts early media if asked."""
        if code in (180, 183) and self.record.status in ("queued", "initiated"):
            self._set("ringing")
            self._progress.set()
        if with_sdp and self.spec.early_media and not self._answer_seen.is_set():
            self._early_stream = True
            self._answer_seen.set()

    def on_answered(self) -> None:
        super().on_answered()
        record = self.record
        record.answered_at = time.time()
        record.sip_status = 200
        self._set("in-progress", "answered")
        self._answer_seen.set()
        self._time_limit = asyncio.get_running_loop().call_later(
            self.spec.time_limit, self.request_stop, f"time limit of {self.spec.time_limit:g} s", "time_limit"
        )

    def on_sip_end(self, end: CallEnd, stats: StreamStats) -> None:
        self._ended_wall = time.time()
        super().on_sip_end(end, stats)

    def request_stop(self, reason: str = "shutdown", kind: EndReason = "drain") -> None:
        if self._kind[0] is None:
            self._kind[0] = kind
        super().request_stop(reason)

    def end_by_api(self) -> None:
        """DELETE: cancel a call not answered yet, or `stop` and BYE a live one."""
        self.request_stop("ended through the API", "api_hangup")

    # ---- the call's task ----------------------------------------------------------------

    async def run(self) -> None:
        try:
            await super().run()
        finally:
            if self._time_limit is not None:
                self._time_limit.cancel()
            self._complete()

    async def _run(self) -> None:
        spec = self.spec
        url, rate, params = self._choose_url()
        self.bot_url, self.socket_rate = url, rate
        channel = self._make_channel()
        self.outbound_sip.dial(
            self.handle, spec.target_uri, spec.from_uri, spec.headers, channel, spec.early_media
        )
        self._set("initiated")
        self.log.info("dialling %s (ring timeout %g s)", spec.target_uri, spec.ring_timeout)
        if not await self._until_answered():
            await self._not_answered()
            return
        link = await self._connect_bot(url, self._abandon_answered, self.state.answered_bot_unreachable)
        if link is not None:
            self._start_stream(link, rate, params, channel)
            await self._converse(link)

    async def _until_answered(self) -> bool:
        """Wait for the answer (or early media); False when the call ended, was cancelled or
        rang out first."""
        waiting: set[asyncio.Future[Any]] = {
            asyncio.ensure_future(self._answer_seen.wait()),
            asyncio.ensure_future(self._sip_ended.wait()),
            asyncio.ensure_future(self._stop_requested.wait()),
        }
        try:
            await asyncio.wait(waiting, timeout=self.spec.ring_timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for future in waiting:
                future.cancel()
        return (
            self._answer_seen.is_set() and not self._sip_ended.is_set() and not self._stop_requested.is_set()
        )

    async def _not_answered(self) -> None:
        """Cancel what is still ringing (a timeout, a DELETE, a drain) and wait for its end."""
        if not self._sip_ended.is_set():
            if not self._stop_requested.is_set():
                self._kind[0] = "no_answer"
                self.log.info("no answer within %g s; cancelling", self.spec.ring_timeout)
            self.sip.hangup(self.handle)
            if not await self._wait_sip_end(_ANSWER_GIVE_UP_S):
                self.log.warning("the INVITE did not end after CANCEL; giving up on it")
        end = self.sip_end
        self.state.not_answered(f"not answered ({end.code} {end.reason})" if end else "not answered")

    def _abandon_answered(self) -> Ending:
        """The callee hung up, or the bridge stopped the call, while the bot was connecting."""
        # BYE (a leg that already ended drops it: the engine ignores commands for calls gone).
        self._interrupted = True
        return self.state.answered_bot_unreachable("the call ended while the bot was connecting")

    def _choose_url(self) -> tuple[str, int, dict[str, str]]:
        url = self.spec.bot_url
        if url is None:
            return self.policy.bot_url, self.policy.socket_rate, dict(self.policy.url_params)
        try:
            parsed = parse_bot_url(url, key="bot_url")
        except ConfigError as exc:
            self.log.warning("%s; using the profile's bot URL", exc)
            return self.policy.bot_url, self.policy.socket_rate, dict(self.policy.url_params)
        return url, parsed.sample_rate, dict(parsed.query_parameters)

    def _start_info(self, rate: int, url_params: dict[str, str]) -> StartInfo:
        params = {**url_params, **self.spec.custom_parameters, "direction": "outbound"}
        if self._early_stream:
            params["early_media"] = "true"
        self.record.stream_sid = self.stream_sid
        return StartInfo(stream_sid=self.stream_sid, call_sid=self.spec.call_sid,
                         account_sid=self.policy.bot.account_sid, from_=self.spec.from_user,
                         to=self.spec.to_user, custom_parameters=params, sample_rate=rate)

    # ---- the record -----------------------------------------------------------------------

    def _set(self, status: Any, event: StatusEvent | None = None) -> None:
        self.record.status = status
        self.record.updated_at = time.time()
        self._report(self.record, event or status)

    def _complete(self) -> None:
        """The call's final status, end reason and who ended it; then `completed`."""
        record = self.record
        if record.ended:
            return
        end = self.sip_end
        kind = self._kind[0]
        record.ended_at = self._ended_wall or time.time()
        if record.answered_at is None:
            record.sip_status = end.code if end else None
            if kind in ("api_hangup", "drain") and (end is None or end.code == 487):
                record.status, record.end_reason = "canceled", "canceled" if kind == "api_hangup" else "drain"
                record.disconnected_by = "api" if kind == "api_hangup" else "bridge"
            elif kind == "no_answer":
                record.status, record.end_reason, record.disconnected_by = "no-answer", "no_answer", "bridge"
            else:
                record.status, record.end_reason = status_after_final_response(end.code if end else 0)
                record.disconnected_by = "callee"
        else:
            cause = self.state.final_cause()
            record.status = "completed"
            if self._interrupted:
                record.end_reason = kind or "hangup"
                record.disconnected_by = "api" if kind == "api_hangup" else "bridge" if kind else "callee"
            elif cause is EndCause.ANSWERED_BOT_UNREACHABLE:
                record.status, record.end_reason, record.disconnected_by = (
                    "failed",
                    "bot_unreachable",
                    "bridge",
                )
            elif cause in (EndCause.CALLER_HANGUP, EndCause.NO_ACK):
                record.end_reason, record.disconnected_by = "hangup", "callee"
            elif cause in (EndCause.BOT_HANGUP, EndCause.BOT_TRANSFER):
                record.end_reason, record.disconnected_by = "bot_hangup", "bot"
            else:
                record.end_reason = kind or "hangup"
                record.disconnected_by = "api" if kind == "api_hangup" else "bridge"
        self.log.info(
            "outbound call %s: %s (%s, SIP %s)",
            record.call_sid,
            record.status,
            record.end_reason,
            record.sip_status,
        )
        self._set(record.status, "completed")
