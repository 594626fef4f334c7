"""One bridged call: SIP leg <-> audio <-> AgentStream session <-> the bot's WebSocket.

Lifecycle: the INVITE rings (180) while the bot's socket opens; when it is open the bridge sends
`connected` and `start` and answers (200); caller audio is pumped to the bot in chunks and the
bot's audio plays out in 20 ms frames; it ends when the caller hangs up (`stop` callended, close
1000), when the bot closes (BYE or transfer, per profile) or when the bridge stops the stream
(`stop` stopped, then BYE). If the bot cannot be reached the INVITE is rejected with the
profile's status or redirected (302) to the fallback URI: the caller is never left in dead air.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import os
import ssl
import time
import urllib.parse
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from bridge.audio.channel import MediaChannel
from bridge.audio.framing import Chunker, frame_bytes
from bridge.audio.latency import LatencyHistogram, TickClock, playout_wait_ms
from bridge.audio.pipe_channel import PipeChannel
from bridge.audio.playout import PlayoutBuffer
from bridge.audio.resample import StreamResampler
from bridge.bot.dialect import DEFAULT_DIALECT, DialectSession, get_dialect
from bridge.bot.events import BotClear, BotMark, BotMedia, ProtocolError, StartInfo
from bridge.call.native_send import hand_off
from bridge.call.recording import CallHooks, CallRecorder, open_channel
from bridge.call.summary import summary_extras
from bridge.config import RecordingSettings
from bridge.errors import BotConnectError
from bridge.logs import CallLog, record
from bridge.sip import CallEnd, DtmfMethod, IncomingCall, MediaInfo, StreamStats
from bridge.ws.client import BotLink, open_bot_link, redact_url

FRAME_MS = 20  # the conference clock's frame: every call's audio moves in these steps

log = logging.getLogger("bridge.call")

SOCKET_RATES = (8000, 16000, 24000)
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


@dataclass(frozen=True, slots=True)
class CallPolicy:
    """The per-call slice of a profile (built by the service; plain values so tests can make one)."""

    bot_url: str
    bot_headers: Mapping[str, str] = field(default_factory=dict)
    connect_timeout: float = 10.0
    stop_grace_s: float = 0.25
    connect_retries: int = 1
    chunk_ms: int = 20
    prebuffer_ms: int = 60
    buffer_seconds: float = 30.0
    max_message_bytes: int = 1 << 20
    warn_message_bytes: int = 100 * 1024
    clear_answers_marks: bool = True
    account_sid: str = "sip-ws-bridge"
    forward_headers: tuple[str, ...] = ("X-*",)
    url_header: str | None = None
    url_header_allowed_hosts: tuple[str, ...] = ()
    unreachable_action: Literal["reject", "transfer"] = "reject"
    unreachable_status: int = 503
    unreachable_transfer_to: str | None = None
    close_action: Literal["hangup", "transfer"] = "hangup"
    close_transfer_to: str | None = None
    clock_rate: int = 8000
    header_allowed: Callable[[str, tuple[str, ...]], bool] | None = None
    host_allowed: Callable[[str, tuple[str, ...]], bool] | None = None
    recording: RecordingSettings | None = None  # None: this call is not recorded
    stall_timeout: float = 10.0  # the bot read nothing for this long: end the call (0 = never)
    ping_interval: float = 20.0  # WebSocket keepalive; an unanswered ping closes the socket
    ping_timeout: float = 20.0
    ssl_context: ssl.SSLContext | None = None  # for wss:// (None: the library's verifying default)


def socket_rate_and_params(url: str) -> tuple[int, dict[str, str], str | None]:
    """(sample rate, other query pairs, warning) from a bot URL, per agentstream.md."""
    query = urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query, keep_blank_values=True)
    rate = 8000
    warning = None
    params: dict[str, str] = {}
    for key, value in query:
        if key in ("sample-rate", "sample_rate"):
            if value.isascii() and value.isdigit() and int(value) in SOCKET_RATES:
                rate = int(value)
            else:
                warning = f"unsupported sample rate {value!r} in the bot URL; using 8000"
        else:
            params.setdefault(key, value)
    return rate, params, warning


class BridgeCall:
    def __init__(self, incoming: IncomingCall, policy: CallPolicy, sip: SipLeg,
                 notify_media: Callable[[], None]) -> None:
        self.incoming = incoming
        self.handle = incoming.handle
        self.policy = policy
        self.sip = sip
        self._notify_media = notify_media
        self.stream_sid = uuid.uuid4().hex
        self.log = CallLog(log, call_sid=incoming.call_id, stream_sid=self.stream_sid)
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
        self._sip_ended = asyncio.Event()
        self._stop_requested: asyncio.Event = asyncio.Event()
        self.link: BotLink | None = None
        self.session: DialectSession | None = None
        self.channel: MediaChannel | PipeChannel | None = None
        self.media: MediaInfo | None = None
        self.outcome = "pending"  # answered | rejected | redirected | abandoned
        self.end_reason = ""
        self.stop_reason: str | None = None
        self.dtmf_digits = ""
        self.bot_media_messages = 0
        self.bot_bytes_in = 0
        self.media_drops = 0
        self._sender_drops = 0  # media_dropped of the native sender, as last counted
        self._stall_warned = False
        self.protocol_errors = 0
        self.large_messages = 0
        # Bot messages the contract says to log and ignore (events out of place, a streamSid
        # that is not this stream's): counted; logged once per call and kind.
        self.bot_ignored: dict[str, int] = {}
        self.stream_sid_mismatches = 0
        self._closing: asyncio.Future[None] | None = None  # our 1009 close of the bot's socket
        self._chunker: Chunker | None = None
        self._chunk_frames = 1
        self._prebuffer_frames = 0
        self._rx_resampler: StreamResampler | None = None
        self._tx_resampler: StreamResampler | None = None
        self.socket_rate = 8000
        self.bot_url = policy.bot_url
        self.rtp_to_ws: LatencyHistogram | None = None
        self.ws_to_rtp: LatencyHistogram | None = None
        self.ticks: TickClock | None = None
        self.mark_lag: LatencyHistogram | None = None
        self.clear_lag: LatencyHistogram | None = None  # clear -> the first tick without its audio
        self._clear_at = 0.0
        self._mark_due: collections.deque[float] = collections.deque()  # when each pending mark's audio ends
        self._probe: tuple[int, float, float] | None = None  # playout position, arrival, allowance ms
        self._next_probe = 0.0
        self.pumping = False

    @property
    def media_to_bot(self) -> int:
        """Media messages sent to the bot so far (the native sender's count while it sends)."""
        channel = self.channel
        if isinstance(channel, PipeChannel) and channel.sending:
            return channel.send_status().chunks
        return self.session.chunks_sent if self.session is not None else 0

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
        self.pump()  # audio before the digit goes first
        if isinstance(self.channel, PipeChannel) and self.channel.sending:
            self.channel.send_due()
        text = self.session.dtmf(digit, duration_ms or 100)
        if text is not None:
            self.link.send_nowait(text)

    def on_sip_end(self, end: CallEnd, stats: StreamStats) -> None:
        if end.code == 408 and end.reason == "no ACK":
            self.end_reason = self.end_reason or "the caller never confirmed the answer (no ACK)"
        self.sip_end = end
        self.sip_ended_at = time.monotonic()
        self.sip_stats = stats
        self._sip_ended.set()

    def on_transfer_status(self, code: int, final: bool) -> None:
        self.log.info("transfer status %d%s", code, " (final)" if final else "")
        if final:
            # Whatever the outcome, this leg is done: the transferee called the target or failed.
            self.sip.hangup(self.handle)

    def request_stop(self, reason: str = "shutdown") -> None:
        """End the stream from the bridge's side (`stop` reason stopped) and hang up."""
        self.end_reason = self.end_reason or reason
        self._stop_requested.set()

    # ---- the call's task ----------------------------------------------------------------

    async def run(self) -> None:
        try:
            await self._run()
        finally:
            self.pumping = False
            if self.link is not None and self.link.is_open:
                await self.link.close(1000)
            if self.recorder is not None:
                await self.recorder.finish()
            self._summary()

    async def _run(self) -> None:
        self.sip.ringing(self.handle)
        url = self.bot_url = self._choose_url()
        rate, params, warning = socket_rate_and_params(url)
        if warning:
            self.log.warning("%s", warning)
        self.socket_rate = rate
        connect_started = time.monotonic()
        connect = asyncio.ensure_future(open_bot_link(
            url,
            headers=self.policy.bot_headers,
            timeout=self.policy.connect_timeout,
            retries=self.policy.connect_retries,
            max_message_bytes=self.policy.max_message_bytes,
            ssl_context=self.policy.ssl_context,
            ping_interval=self.policy.ping_interval,
            ping_timeout=self.policy.ping_timeout,
            logger=self.log,
        ))
        if not await self._first(connect):
            self.outcome = "abandoned"
            self.end_reason = "caller hung up while the bot was connecting"
            connect.cancel()
            try:
                link = await connect
            except (asyncio.CancelledError, BotConnectError) as exc:
                exc.__traceback__ = None  # it would hold this frame: see below
            else:
                await link.close(1000)
            return
        # Read without raising: a raised error's traceback would hold this frame (and so the
        # call) in a cycle with the task that keeps the error, freed only by a full collection.
        error = connect.exception()
        if isinstance(error, BotConnectError):
            self._bot_unreachable(error)
            await self._wait_sip_end(5.0)
            return
        self.link = connect.result()
        self.bot_connect_s = time.monotonic() - connect_started
        self._start_stream(rate, params)
        await self._converse()

    async def _first(self, task: asyncio.Future[BotLink]) -> bool:
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
            self.sip.reject(self.handle, 503, "Service Unavailable", {"Retry-After": "5"})
            return False
        return not self._sip_ended.is_set()

    async def _wait_sip_end(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._sip_ended.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def _choose_url(self) -> str:
        policy = self.policy
        if policy.url_header:
            requested = self.incoming.header(policy.url_header)
            if requested:
                parts = urllib.parse.urlsplit(requested)
                allowed = (
                    parts.scheme in ("ws", "wss")
                    and policy.host_allowed is not None
                    and policy.host_allowed(requested, policy.url_header_allowed_hosts)
                )
                if allowed:
                    self.log.info("bot URL from %s: %s", policy.url_header, redact_url(requested))
                    return requested
                self.log.warning("%s %s is not an allowed bot URL; using the profile's",
                                 policy.url_header, redact_url(requested))
        return policy.bot_url

    def _bot_unreachable(self, exc: BotConnectError) -> None:
        policy = self.policy
        target = policy.unreachable_transfer_to
        if policy.unreachable_action == "transfer" and target:
            self.outcome = "redirected"
            self.end_reason = f"bot unreachable ({exc.reason}); redirected to {target}"
            self.sip.redirect(self.handle, target)
        else:
            self.outcome = "rejected"
            self.end_reason = f"bot unreachable ({exc.reason}); rejected with {policy.unreachable_status}"
            self.sip.reject(self.handle, policy.unreachable_status, "Bot Unavailable")
        self.log.error("%s", self.end_reason)

    def _custom_parameters(self, url_params: dict[str, str]) -> dict[str, str]:
        params = dict(url_params)
        allowed = self.policy.header_allowed
        if allowed is not None and self.policy.forward_headers:
            for name, value in self.incoming.headers:
                if allowed(name, self.policy.forward_headers) and name not in params:
                    params[name] = value
        return params

    def _start_stream(self, rate: int, url_params: dict[str, str]) -> None:
        policy = self.policy
        assert self.link is not None
        info = StartInfo(
            stream_sid=self.stream_sid,
            call_sid=self.incoming.call_id,
            account_sid=policy.account_sid,
            from_=self.incoming.from_user,
            to=self.incoming.to_user,
            custom_parameters=self._custom_parameters(url_params),
            sample_rate=rate,
        )
        self.session = get_dialect(DEFAULT_DIALECT).session(
            info, chunk_ms=policy.chunk_ms, max_message_bytes=policy.max_message_bytes,
            warn_message_bytes=policy.warn_message_bytes,
        )
        self.link.send_nowait(self.session.connected())
        self.link.send_nowait(self.session.start())
        clock = policy.clock_rate
        frame = frame_bytes(clock, FRAME_MS)
        prebuffer = frame_bytes(clock, policy.prebuffer_ms)
        self._prebuffer_frames = -(-prebuffer // frame)  # as the playout buffer counts it
        cap = int(policy.buffer_seconds * clock) * 2
        self._chunk_frames = policy.chunk_ms // FRAME_MS
        playout = PlayoutBuffer(frame, prebuffer_bytes=prebuffer, cap_bytes=cap)
        native = functools.partial(self.sip.media_channel, self.handle, frame, self._chunk_frames,
                                   prebuffer, cap)
        self.channel, self.recorder = open_channel(self, frame, playout, self._notify_media, native)
        self._chunker = Chunker(frame_bytes(rate, policy.chunk_ms))
        self._rx_resampler = StreamResampler(clock, rate) if rate != clock else None
        self._tx_resampler = StreamResampler(rate, clock) if rate != clock else None
        self.pumping = True
        self.outcome = "answered"
        self.sip.answer(self.handle, self.channel)
        # Caller audio straight from the pipe's sender thread when nothing between the
        # conference and the socket needs Python (no resampling, no TLS).
        sender = (isinstance(self.channel, PipeChannel) and self._rx_resampler is None
                  and hand_off(self.channel, self.session, self.link, rate))
        self.log.info("bot connected (%s, %d Hz%s); answering", redact_url(self.bot_url), rate,
                      ", caller audio from the native sender" if sender else "")

    async def _converse(self) -> None:
        assert self.link is not None
        receiver = asyncio.ensure_future(self._receive(self.link))
        ended = asyncio.ensure_future(self._sip_ended.wait())
        stopped = asyncio.ensure_future(self._stop_requested.wait())
        waiting: set[asyncio.Future[Any]] = {receiver, ended, stopped}
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if self._sip_ended.is_set():
            self.end_reason = self.end_reason or "caller hung up"
            self._stop_stream("callended")
        elif self._stop_requested.is_set():
            self._stop_stream("stopped")
            self.sip.hangup(self.handle)
        else:
            self._bot_closed()
        if self.link.is_open and not receiver.done() and self.policy.stop_grace_s > 0:
            # The bot may still be sending (an echo of the last audio) or close first itself;
            # what it sends now is read and ignored rather than hitting a closed socket.
            await asyncio.wait({receiver}, timeout=self.policy.stop_grace_s)
        # Wait for the socket to close (the bot answers our close) and for the SIP leg to end.
        if self.link.is_open:
            await self.link.close(1000)
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

    def _bot_closed(self) -> None:
        assert self.link is not None
        self.pumping = False
        code = self.link.close_code
        policy = self.policy
        self.log.info("bot closed the stream (code %s %s)", code, self.link.close_reason or "")
        if policy.close_action == "transfer" and policy.close_transfer_to:
            self.end_reason = f"bot closed ({code}); transferred to {policy.close_transfer_to}"
            self.sip.transfer(self.handle, policy.close_transfer_to)
        else:
            self.end_reason = f"bot closed ({code})"
            self.sip.hangup(self.handle)

    def _stop_stream(self, reason: str) -> None:
        """Send what is left of the caller's audio, then `stop`, then close 1000."""
        if self.session is None or self.link is None:
            return
        self.pump(final=True)
        self.pumping = False
        text = self.session.stop(reason)  # type: ignore[arg-type]
        self.stop_reason = reason
        if text is not None:
            self.link.send_nowait(text)

    async def _receive(self, link: BotLink) -> None:
        """Bot messages, in order: most arrive through the socket's fast path straight into
        `_on_bot_message`; the rest (fragmented ones) come through websockets here."""
        assert self.session is not None and self.channel is not None
        link.set_message_handler(self._on_bot_message)
        async for message in link.messages():
            self._on_bot_message(message)
        if self._closing is not None:
            await self._closing

    def _on_bot_message(self, message: str | bytes) -> None:
        session = self.session
        channel = self.channel
        link = self.link
        if session is None or channel is None or link is None or self._closing is not None:
            return
        try:
            event = session.receive(message)
        except ProtocolError as exc:
            self.protocol_errors += 1
            self.log.warning("bot message over the hard limit (%s); closing with 1009", exc.kind)
            self._closing = asyncio.ensure_future(link.close(1009, "message too big"))
            return
        if session.stream_sid_mismatch != self.stream_sid_mismatches:
            self._note_stream_sid(session)
        if event is None:
            self._note_rejects(session)
            self._note_ignored(session)
        elif isinstance(event, BotMedia):
            if session.large_messages > self.large_messages:
                self.large_messages = session.large_messages
                if self.large_messages <= 5 or self.large_messages % 100 == 0:
                    self.log.warning(
                        "bot message of %d bytes of audio is over %d bytes (accepted; %d so far)",
                        len(event.payload), self.policy.warn_message_bytes, self.large_messages)
            self.bot_media_messages += 1
            self.bot_bytes_in += len(event.payload)
            pcm = event.payload
            if self._tx_resampler is not None:
                pcm = self._tx_resampler.process(pcm)
            if self.ws_to_rtp is not None and self._probe is None and pcm:
                self._start_probe(channel)
            channel.write_audio(pcm)
        elif isinstance(event, BotMark):
            if self.mark_lag is not None:
                self._mark_due.append(time.monotonic() + self._queued_ms(channel) / 1000.0)
            channel.mark(event.name)
        elif isinstance(event, BotClear):
            self._probe = None  # its audio was dropped
            pending = channel.clear()
            if self.clear_lag is not None and isinstance(channel, PipeChannel):
                # From here to the tick that no longer plays the dropped audio.
                self._clear_at = time.monotonic()
                channel.watch_next_read()
            if self._tx_resampler is not None:
                # Its tail belongs to the audio just dropped.
                self._tx_resampler = StreamResampler(self.socket_rate, self.policy.clock_rate)
            self.log.info("clear: dropped queued audio, %d mark(s) pending", len(pending))
            self._answer_marks(pending, cleared=True)

    def _note_stream_sid(self, session: DialectSession) -> None:
        if not self.stream_sid_mismatches:
            self.log.warning("bot message names a streamSid that is not this stream's (%s); accepted, "
                             "counted in the call summary (logged once per call)", self.stream_sid)
        self.stream_sid_mismatches = session.stream_sid_mismatch

    def _note_ignored(self, session: DialectSession) -> None:
        for kind, count in session.ignored.items():
            if self.bot_ignored.get(kind, 0) == count:
                continue
            if kind not in self.bot_ignored:
                last = session.last_ignored
                # What a bot sends after `stop` (during the grace) is normal: debug only.
                self.log.log(logging.DEBUG if kind == "after_stop" else logging.INFO,
                             "bot message ignored (%s%s): it has no meaning here; counted in the call "
                             "summary (logged once per call and kind)", kind,
                             f", event {last.event[:40]!r}" if kind == "unknown" and last else "")
            self.bot_ignored[kind] = count

    def _note_rejects(self, session: DialectSession) -> None:
        total = sum(session.errors.values())
        if total > self.protocol_errors:
            self.protocol_errors = total
            # Rate-limited: the first few, then every hundredth.
            if total <= 5 or total % 100 == 0:
                self.log.warning("dropped a bad bot message (total %d: %s)", total, dict(session.errors))

    def _answer_marks(self, names: list[str], *, cleared: bool = False) -> None:
        if self.session is None or self.link is None:
            return
        for name in names:
            if cleared and not self.policy.clear_answers_marks:
                self.session.forget_mark(name)
                continue
            text = self.session.mark(name)
            if text is not None:
                self.link.send_nowait(text)
            if self._mark_due:
                due = self._mark_due.popleft()
                if not cleared and self.mark_lag is not None:
                    self.mark_lag.record(max(0.0, time.monotonic() - due) * 1000.0)

    # ---- the media pump (loop thread, woken by the conference clock) -------------------

    def _queued_ms(self, channel: MediaChannel | PipeChannel) -> float:
        """Audio that must play before anything written now: queued audio, the pre-buffer delay
        when idle, and the rest of the frame in flight."""
        playout = channel.playout
        queued = playout.buffered_bytes / (self.policy.clock_rate * 2 / 1000)
        if not playout.is_playing:
            queued += self.policy.prebuffer_ms
        return queued + self._to_next_read_ms(channel, time.monotonic())

    def _to_next_read_ms(self, channel: MediaChannel | PipeChannel, now: float) -> float:
        """Until the clock next reads this call's bot audio: from the call's own tick when the
        channel knows it (the native pipe), else from the bridge's estimate of the tick phase."""
        own = channel.next_read_ms(now)
        if own is not None:
            return own
        return self.ticks.to_next_tick_ms(now) if self.ticks is not None else 0.0

    def _start_probe(self, channel: MediaChannel | PipeChannel) -> None:
        """Sample one bot message (about once a second) for the ws->rtp latency; the allowance
        is the wait the playout schedule itself imposes (`playout_wait_ms`) and the wait for
        this call's next tick."""
        now = time.monotonic()
        playout = channel.playout
        if now < self._next_probe or (playout.buffered_bytes and not playout.is_playing):
            return  # still pre-buffering earlier audio: its wait is not ours to measure
        allowance = playout_wait_ms(playout.buffered_bytes, channel.frame_bytes, playout.is_playing,
                                    self._prebuffer_frames) + self._to_next_read_ms(channel, now)
        self._probe = (playout.written, now, allowance)
        channel.watch_probe(playout.written)

    def pump_due(self) -> bool:
        """Whether this tick has work for `pump` (checked for every call on every tick)."""
        channel = self.channel
        return channel is not None and (
            channel.rx_frames_ready >= self._chunk_frames
            or channel.marks_pending > 0
            or self._probe is not None
        )

    def pump(self, final: bool = False, tick_at: float = 0.0) -> None:
        channel = self.channel
        session = self.session
        link = self.link
        if channel is None or session is None or link is None or self._chunker is None:
            return
        if isinstance(channel, PipeChannel) and channel.sending:
            # The pipe's sender thread writes the caller's audio: here are its latencies and
            # troubles. At the end, what is due goes and the rest of the audio goes from here.
            self._check_sender(channel, link)
            if final:
                channel.send_due()
                link.take_writes_back()
        if not session.handed_off:
            self._pump_caller_audio(channel, session, link, final, tick_at)
        probe = self._probe
        if probe is not None and self.ws_to_rtp is not None:
            played_at = channel.probe_played_at(probe[0], tick_at)
            if played_at:
                self.ws_to_rtp.record((played_at - probe[1]) * 1000.0 - probe[2])
                self._probe = None
                self._next_probe = played_at + 1.0
        if self._clear_at and isinstance(channel, PipeChannel):
            silent_at = channel.next_read_at()
            if silent_at and self.clear_lag is not None:
                self.clear_lag.record((silent_at - self._clear_at) * 1000.0)
                self._clear_at = 0.0
        if channel.marks_pending:
            played = channel.take_played_marks()
            if played:
                self._answer_marks(played)

    def _pump_caller_audio(self, channel: MediaChannel | PipeChannel, session: DialectSession,
                           link: BotLink, final: bool, tick_at: float) -> None:
        assert self._chunker is not None
        # Take caller audio once a whole chunk waits (or at the end): with 100 ms chunks this
        # skips four ticks in five, and nothing is sent earlier anyway.
        pcm = channel.rx_take(1 if final else self._chunk_frames)
        if pcm:
            if self._rx_resampler is not None:
                pcm = self._rx_resampler.process(pcm)
            chunk_at = channel.rx_chunk_time(tick_at) if self.rtp_to_ws is not None else 0.0
            ticks = self.ticks
            if ticks is not None and chunk_at > ticks.last:
                ticks.last = chunk_at  # a tick's time: the media clock's phase for the probes
            for chunk in self._chunker.push(pcm):
                text = session.media(chunk)
                if text is not None and not link.send_nowait(text, droppable=True):
                    self.media_drops += 1
                elif chunk_at and self.rtp_to_ws is not None:
                    self.rtp_to_ws.record((time.monotonic() - chunk_at) * 1000.0)
            if link.stalled_since is not None:
                self._check_stall(link.stalled_since)
        if final:
            rest = self._chunker.flush()
            if rest:
                text = session.media(rest)
                if text is not None:
                    link.send_nowait(text)

    def _check_sender(self, channel: PipeChannel, link: BotLink) -> None:
        """The native sender's news: latencies to record, media dropped, a broken socket."""
        latencies = channel.send_latencies()  # taken even unrecorded: the pipe wakes the loop until they are
        if self.rtp_to_ws is not None:
            record = self.rtp_to_ws.record
            for ms in latencies:
                record(ms)
        status = channel.send_status()
        if status.media_dropped > self._sender_drops:
            self.media_drops += status.media_dropped - self._sender_drops
            self._sender_drops = status.media_dropped
        if status.error:
            if link.abort():  # the first time: the socket is closing from here on
                self.log.warning("WebSocket write failed: %s", os.strerror(status.error))
        elif status.stalled_since:
            self._check_stall(status.stalled_since)

    def _check_stall(self, since: float) -> None:
        """The bot stopped reading (its socket's backlog is full): warn once, end after stall_timeout."""
        stalled = time.monotonic() - since
        if not self._stall_warned:
            self._stall_warned = True
            self.log.warning("the bot is not reading its socket: caller audio is being dropped; the call "
                             "ends if this lasts %g s (bot.stall_timeout)", self.policy.stall_timeout)
        limit = self.policy.stall_timeout
        if limit > 0 and stalled >= limit and not self._stop_requested.is_set():
            self.log.warning("the bot read nothing for %.1f s (%d media messages dropped); ending the call",
                             stalled, self.media_drops)
            self.request_stop(f"bot stopped reading for {limit:g} s")

    # ---- the end ------------------------------------------------------------------------

    def _summary(self) -> None:
        now = time.monotonic()
        end = self.sip_end
        playout = self.channel.playout if self.channel else None
        fields: dict[str, object] = {
            "from": self.incoming.from_user,
            "to": self.incoming.to_user,
            "outcome": self.outcome,
            # From the answer to the end of the SIP leg (or now, if the bridge ends it later): not
            # the bot's closing handshake and grace after `stop`.
            "duration_s": round((self.sip_ended_at or now) - self.answered_at, 3) if self.answered_at else 0,
            "ended_by": end.ended_by if end else "bridge",
            "end_reason": self.end_reason,
            "sip_status": end.code if end else 0,
            "stop_reason": self.stop_reason or "",
            "codec": self.media.codec if self.media else "",
            "dtmf": self.dtmf_digits,
            "rtp_rx_packets": self.sip_stats.rx_packets,
            "rtp_rx_lost": self.sip_stats.rx_lost,
            "jitter_ms": round(self.sip_stats.rx_jitter_ms_mean, 2),
            "bot_media_messages": self.bot_media_messages,
            "bytes_from_bot": self.bot_bytes_in,
            "bytes_to_bot": self.link.sent_bytes if self.link else 0,
            "media_drops": self.media_drops,
            "underruns": playout.underruns if playout else 0,
            "playout_dropped_bytes": playout.dropped_bytes if playout else 0,
            "protocol_errors": self.protocol_errors,
            "bot_ignored": dict(self.bot_ignored),
            "stream_sid_mismatches": self.stream_sid_mismatches,
        }
        fields.update(summary_extras(self, fields))
        self.summary = fields
        record(self.log, "call_summary", fields)
