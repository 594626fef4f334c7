"""One bridged call: SIP leg <-> audio <-> AgentStream session <-> the bot's WebSocket.

Lifecycle (decided by the pure state machine in state.py; this module carries it out): the
INVITE rings (180) while the bot's socket opens; when it is open the bridge sends `connected` and
`start` and answers (200); caller audio is pumped to the bot in chunks and the bot's audio plays
out in 20 ms frames (pump.py; the bot's messages are read by inbox.py); it ends when the caller
hangs up (`stop` callended, close 1000), when the bot closes (BYE or transfer, per profile) or
when the bridge stops the stream (`stop` stopped, then BYE). If the bot cannot be reached the
INVITE is rejected with the profile's status or redirected (302) to the fallback URI: the caller
is never left in dead air.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from bridge.audio.channel import MediaChannel
from bridge.audio.framing import FRAME_MS, frame_bytes
from bridge.audio.pipe_channel import PipeChannel
from bridge.audio.playout import PlayoutBuffer
from bridge.bot.dialect import DEFAULT_DIALECT, DialectSession, get_dialect
from bridge.bot.events import StartInfo
from bridge.call.inbox import BotInbox
from bridge.call.link import CallLink, LinkOpener
from bridge.call.native_send import hand_off
from bridge.call.policy import CallPolicy
from bridge.call.pump import LatencyProbes, MediaPump
from bridge.call.record import EndReason
from bridge.call.recording import CallRecorder, open_channel
from bridge.call.state import CallState, Ending, SipAction
from bridge.call.summary import call_summary
from bridge.config import RecordingSettings, bot_url_host_allowed, header_allowed, parse_bot_url
from bridge.errors import BotConnectError, ConfigError
from bridge.logs import CallLog, record
from bridge.sip import CallEnd, DtmfMethod, IncomingCall, MediaInfo, StreamStats
from bridge.ws.client import BotLink, open_bot_link, redact_url

__all__ = ["FRAME_MS", "BridgeCall", "CallHooks", "CallPolicy", "SipLeg"]

log = logging.getLogger("bridge.call")

# How long a call waits for its SIP leg to end after the stream ended (a transfer's NOTIFY,
# the far end's answer to our BYE) before it hangs up itself.
_LEG_END_WAIT_S = 15.0


class SipLeg(Protocol):
    """What a call needs from the SIP engine (the engine implements it; tests may fake it)."""

    def ringing(self, handle: int) -> None: ...
    def answer(self, handle: int, channel: MediaChannel | PipeChannel) -> None: ...
    def media_channel(self, handle: int, frame_bytes: int, chunk_frames: int, prebuffer_bytes: int,
                      cap_bytes: int) -> PipeChannel | None: ...
    def reject(
        self, handle: int, code: int, reason: str = "", headers: dict[str, str] | None = None
    ) -> None: ...
    def redirect(self, handle: int, target_uri: str) -> None: ...
    def hangup(self, handle: int, code: int = 0, reason: str = "") -> None: ...
    def transfer(self, handle: int, target_uri: str) -> None: ...


class CallHooks(Protocol):
    """What a call asks of the service for its recording (the service implements it)."""

    def new_recorder(self, settings: RecordingSettings, call: BridgeCall,
                     frame_bytes: int) -> CallRecorder | None: ...


def _stopper(state: CallState, requested: asyncio.Event) -> Callable[[str], None]:
    def stop(reason: str) -> None:
        state.stop_requested(reason)
        requested.set()
    return stop


class BridgeCall:
    def __init__(self, incoming: IncomingCall, policy: CallPolicy, sip: SipLeg,
                 notify_media: Callable[[], None], *, probes: LatencyProbes | None = None,
                 open_link: LinkOpener = open_bot_link) -> None:
        self.incoming = incoming
        self.handle = incoming.handle
        self.policy = policy
        self.sip = sip
        self._notify_media = notify_media
        self._open_link = open_link
        self.probes = probes or LatencyProbes()
        self.stream_sid = uuid.uuid4().hex
        self.log = CallLog(log, call_sid=incoming.call_id, stream_sid=self.stream_sid)
        self.state = CallState(policy.bot.on_unreachable, policy.bot.on_close)
        self.created = time.monotonic()
        self.started_wall = time.time()
        self.answered_at: float | None = None
        self.sip_ended_at: float | None = None  # when the SIP leg ended (the call's duration ends there)
        self.bot_connect_s: float | None = None  # how long the bot's socket took to open
        self.hooks: CallHooks | None = None  # metrics and recordings (set by the service)
        self.recorder: CallRecorder | None = None
        self.summary: dict[str, object] = {}
        self.sip_end: CallEnd | None = None
        self.sip_stats = StreamStats()
        self.media: MediaInfo | None = None
        self.dtmf_digits = ""
        self.bot_url = policy.bot_url
        self.socket_rate = policy.socket_rate
        self._sip_ended = asyncio.Event()
        self._stop_requested = asyncio.Event()
        # The pump ends a stalled call through this; it holds no reference to the call, so a
        # finished call is freed at once rather than by the cycle collector.
        self._stop = _stopper(self.state, self._stop_requested)
        self.link: CallLink | None = None
        self.session: DialectSession | None = None
        self._pump: MediaPump | None = None
        self._inbox: BotInbox | None = None

    # ---- what the service, /status, metrics and the summary read ----------------------------

    @property
    def outcome(self) -> str:
        """pending | answered | rejected | redirected | abandoned"""
        return self.state.outcome

    @property
    def end_reason(self) -> str:
        return self.state.end_reason

    @property
    def stop_reason(self) -> str | None:
        return self.state.stop_reason

    @property
    def channel(self) -> MediaChannel | PipeChannel | None:
        return self._pump.channel if self._pump is not None else None

    @property
    def pumping(self) -> bool:
        return self._pump is not None and self._pump.running

    @property
    def media_to_bot(self) -> int:
        """Media messages sent to the bot so far (the native sender's count while it sends)."""
        channel = self.channel
        if isinstance(channel, PipeChannel) and channel.sending:
            return channel.send_status().chunks
        return self.session.chunks_sent if self.session is not None else 0

    @property
    def bytes_to_bot(self) -> int:
        return self.link.sent_bytes if self.link is not None else 0

    @property
    def media_drops(self) -> int:
        return self._pump.media_drops if self._pump is not None else 0

    @property
    def bot_media_messages(self) -> int:
        return self._inbox.media_messages if self._inbox is not None else 0

    @property
    def bot_bytes_in(self) -> int:
        return self._inbox.bytes_in if self._inbox is not None else 0

    @property
    def protocol_errors(self) -> int:
        return self._inbox.protocol_errors if self._inbox is not None else 0

    @property
    def bot_ignored(self) -> Mapping[str, int]:
        return self._inbox.ignored if self._inbox is not None else {}

    @property
    def stream_sid_mismatches(self) -> int:
        return self._inbox.stream_sid_mismatches if self._inbox is not None else 0

    @property
    def recording_path(self) -> str:
        return self.recorder.path if self.recorder is not None else ""

    # ---- events from the SIP engine (loop thread) ----------------------------------------

    def on_answered(self) -> None:
        self.answered_at = time.monotonic()

    def on_media(self, media: MediaInfo) -> None:
        self.media = media
        self.log.info("media up: %s/%d from %s%s", media.codec, media.clock_rate, media.remote_rtp,
                      " (SRTP)" if media.srtp else "")

    def on_dtmf(self, digit: str, duration_ms: int, method: DtmfMethod) -> None:
        self.dtmf_digits += digit
        self.log.info("DTMF %s (%d ms, %s)", digit, duration_ms, method)
        if self.session is None or self.link is None:
            return
        if self._pump is not None:
            self._pump.flush_before_event()  # audio before the digit goes first
        text = self.session.dtmf(digit, duration_ms or 100)
        if text is not None:
            self.link.send_nowait(text)

    def on_sip_end(self, end: CallEnd, stats: StreamStats) -> None:
        self.state.sip_ended(end.code, end.reason)
        self.sip_end = end
        self.sip_ended_at = time.monotonic()
        self.sip_stats = stats
        self._sip_ended.set()

    def on_transfer_status(self, code: int, final: bool) -> None:
        self.log.info("transfer status %d%s", code, " (final)" if final else "")
        if final:
            # Whatever the outcome, this leg is done: the transferee called the target or failed.
            self.sip.hangup(self.handle)

    def request_stop(self, reason: str = "shutdown", kind: EndReason = "drain") -> None:
        """End the stream from the bridge's side (`stop` reason stopped) and hang up. `kind` is
        the API's end_reason for it (drain, rtp_timeout, ...): outbound calls report it."""
        self._stop(reason)

    def on_progress(self, code: int, with_sdp: bool) -> None:
        """A provisional answer to an INVITE the bridge sent: only outbound calls have them."""

    # ---- the media pump (the service calls these on the conference clock's wake-ups) ----------

    def pump_due(self) -> bool:
        """Whether this tick has work for `pump` (checked for every call on every tick)."""
        return self._pump is not None and self._pump.due()

    def pump(self, final: bool = False, tick_at: float = 0.0) -> None:
        if self._pump is not None:
            self._pump.pump(final, tick_at)

    # ---- the call's task ----------------------------------------------------------------

    async def run(self) -> None:
        try:
            await self._run()
        finally:
            if self._pump is not None:
                self._pump.running = False
            if self.link is not None and self.link.is_open:
                await self.link.close()
            if self.recorder is not None:
                await self.recorder.finish()
            self.state.finished()
            self.summary = call_summary(self)
            record(self.log, "call_summary", self.summary)

    async def _run(self) -> None:
        self.sip.ringing(self.handle)
        url, rate, params = self._choose_url()
        self.bot_url, self.socket_rate = url, rate
        link = await self._connect_bot(url, self.state.connect_interrupted, self.state.bot_unreachable)
        if link is not None:
            self._start_stream(link, rate, params)
            await self._converse(link)

    async def _connect_bot(self, url: str, interrupted: Callable[[], Ending],
                           unreachable: Callable[[str], Ending]) -> CallLink | None:
        """The bot's socket, or None: the caller hung up or the bridge stopped first (`interrupted`
        decides the end), or it could not be opened (`unreachable` does)."""
        connect_started = time.monotonic()
        connect = asyncio.ensure_future(self._open_link(url, self.policy.link, logger=self.log))
        if not await self._first(connect):
            self._carry_out(interrupted())
            connect.cancel()
            try:
                link = await connect
            except (asyncio.CancelledError, BotConnectError) as exc:
                exc.__traceback__ = None  # it would hold this frame: see below
            else:
                await link.close()
            return None
        # Read without raising: a raised error's traceback would hold this frame (and so the
        # call) in a cycle with the task that keeps the error, freed only by a full collection.
        error = connect.exception()
        if isinstance(error, BotConnectError):
            ending = unreachable(error.reason)
            self._carry_out(ending)
            self.log.error("%s", ending.end_reason)
            await self._wait_sip_end(5.0)
            return None
        self.link = connect.result()
        self.bot_connect_s = time.monotonic() - connect_started
        return self.link

    async def _first(self, task: asyncio.Future[CallLink]) -> bool:
        """Wait for `task` unless the caller hangs up or the bridge stops first (False then)."""
        ended = asyncio.ensure_future(self._sip_ended.wait())
        stopped = asyncio.ensure_future(self._stop_requested.wait())
        waiting: set[asyncio.Future[Any]] = {task, ended, stopped}
        try:
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ended.cancel()
            stopped.cancel()
        if self._stop_requested.is_set() and not task.done():
            return False
        return not self._sip_ended.is_set()

    async def _wait_sip_end(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._sip_ended.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def _choose_url(self) -> tuple[str, int, dict[str, str]]:
        """The bot URL of this call (the profile's, or one a SIP header names when the profile
        allows it), its sample rate and its query parameters."""
        policy = self.policy
        header = policy.bot.url_header
        requested = self.incoming.header(header) if header else None
        if header and requested:
            try:
                allowed = (bot_url_host_allowed(requested, policy.bot.url_header_allowed_hosts)
                           and parse_bot_url(requested, key=header))
            except ConfigError:
                allowed = None
            if allowed:
                self.log.info("bot URL from %s: %s", header, allowed.redacted)
                for warning in allowed.warnings:
                    self.log.warning("%s", warning)
                return requested, allowed.sample_rate, dict(allowed.query_parameters)
            self.log.warning("%s %s is not an allowed bot URL; using the profile's", header,
                             redact_url(requested))
        return policy.bot_url, policy.socket_rate, dict(policy.url_params)

    def _carry_out(self, ending: Ending) -> None:
        """What the end decided does to the SIP leg."""
        action = ending.sip_action
        if action is SipAction.BYE:
            self.sip.hangup(self.handle)
        elif action is SipAction.REFER and ending.target:
            self.sip.transfer(self.handle, ending.target)
        elif action is SipAction.REDIRECT and ending.target:
            self.sip.redirect(self.handle, ending.target)
        elif action is SipAction.REJECT and ending.sip_status is not None:
            self.sip.reject(self.handle, ending.sip_status, ending.sip_reason, ending.sip_headers)

    def _custom_parameters(self, url_params: dict[str, str]) -> dict[str, str]:
        params = dict(url_params)
        forward = self.policy.forward_headers
        if forward:
            for name, value in self.incoming.headers:
                if header_allowed(name, forward) and name not in params:
                    params[name] = value
        return params

    def _start_info(self, rate: int, url_params: dict[str, str]) -> StartInfo:
        """Who is calling, for the bot's `start`."""
        return StartInfo(
            stream_sid=self.stream_sid,
            call_sid=self.incoming.call_id,
            account_sid=self.policy.bot.account_sid,
            from_=self.incoming.from_user,
            to=self.incoming.to_user,
            custom_parameters=self._custom_parameters(url_params),
            sample_rate=rate,
        )

    def _open_session(self, rate: int, url_params: dict[str, str]) -> DialectSession:
        """The bot session of this call, in the profile's dialect."""
        bot = self.policy.bot
        return get_dialect(DEFAULT_DIALECT).session(
            self._start_info(rate, url_params), chunk_ms=bot.chunk_ms,
            max_message_bytes=bot.max_message_bytes, warn_message_bytes=bot.warn_message_bytes)

    def _make_channel(self) -> MediaChannel | PipeChannel:
        """The call's audio channel (native when the engine has the pipe), with its recorder."""
        policy = self.policy
        clock = policy.clock_rate
        frame = frame_bytes(clock, FRAME_MS)
        prebuffer = frame_bytes(clock, policy.bot.prebuffer_ms)
        cap = int(policy.bot.buffer_seconds * clock) * 2
        chunk_frames = policy.bot.chunk_ms // FRAME_MS
        playout = PlayoutBuffer(frame, prebuffer_bytes=prebuffer, cap_bytes=cap)
        native = functools.partial(self.sip.media_channel, self.handle, frame, chunk_frames, prebuffer, cap)
        settings = policy.recording
        if settings is not None and settings.enabled and self.hooks is not None:
            self.recorder = self.hooks.new_recorder(settings, self, frame)
        return open_channel(frame, playout, self._notify_media, recorder=self.recorder, native=native)

    def _start_stream(self, link: CallLink, rate: int, url_params: dict[str, str],
                      channel: MediaChannel | PipeChannel | None = None) -> None:
        """`connected` and `start` to the bot, the pump running; an inbound call is answered here
        (an outbound one was answered by the callee and brings the channel it dialled with)."""
        policy = self.policy
        session = self.session = self._open_session(rate, url_params)
        link.send_nowait(session.connected())
        link.send_nowait(session.start())
        answer = channel is None
        if channel is None:
            channel = self._make_channel()
        pump = self._pump = MediaPump(channel, session, link, policy, rate, self.probes, self.state,
                                      self._stop, self.log)
        self._inbox = BotInbox(session, link, pump, self.stream_sid, policy.bot.warn_message_bytes, self.log)
        pump.running = True
        self.state.bot_connected()
        if answer:
            self.sip.answer(self.handle, channel)
        # Caller audio straight from the pipe's sender thread when nothing between the
        # conference and the socket needs Python (no resampling, no TLS).
        sender = (isinstance(channel, PipeChannel) and isinstance(link, BotLink)
                  and pump.rx_resampler is None and hand_off(channel, session, link, rate))
        self.log.info("bot connected (%s, %d Hz%s)%s", redact_url(self.bot_url), rate,
                      ", caller audio from the native sender" if sender else "",
                      "; answering" if answer else "")

    async def _converse(self, link: CallLink) -> None:
        assert self._inbox is not None
        receiver = asyncio.ensure_future(self._inbox.read())
        ended = asyncio.ensure_future(self._sip_ended.wait())
        stopped = asyncio.ensure_future(self._stop_requested.wait())
        waiting: set[asyncio.Future[Any]] = {receiver, ended, stopped}
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        bot_closed = not self._sip_ended.is_set() and not self._stop_requested.is_set()
        if bot_closed:
            self._stop_pumping()
            self.log.info("bot closed the stream (code %s %s)", link.close_code, link.close_reason or "")
        ending = self.state.stream_over(link.close_code)
        if ending.cause.stop_reason is not None:
            self._stop_stream(ending)
        self._carry_out(ending)
        grace = self.policy.bot.stop_grace_s
        if link.is_open and not receiver.done() and grace > 0:
            # The bot may still be sending (an echo of the last audio) or close first itself;
            # what it sends now is read and ignored rather than hitting a closed socket.
            await asyncio.wait({receiver}, timeout=grace)
        # Wait for the socket to close (the bot answers our close) and for the SIP leg to end.
        if link.is_open:
            await link.close()
        try:
            await asyncio.wait_for(receiver, 5.0)
        except TimeoutError:
            pass
        ended.cancel()
        if not await self._wait_sip_end(_LEG_END_WAIT_S):
            # A transfer whose outcome never came, or a BYE never answered: end it ourselves.
            self.log.warning("the SIP leg is still up %.0f s later; hanging up", _LEG_END_WAIT_S)
            self.sip.hangup(self.handle)
            if not await self._wait_sip_end(35.0):
                self.log.warning("the SIP leg did not end after hang-up; giving up on it")

    def _stop_pumping(self) -> None:
        if self._pump is not None:
            self._pump.running = False

    def _stop_stream(self, ending: Ending) -> None:
        """Send what is left of the caller's audio, then `stop`, then close 1000."""
        reason = ending.cause.stop_reason
        if self.session is None or self.link is None or self._pump is None or reason is None:
            return
        self._pump.pump(final=True)
        self._pump.running = False
        text = self.session.stop(reason)
        if text is not None:
            self.link.send_nowait(text)
