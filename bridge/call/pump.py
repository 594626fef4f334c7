"""One call's media pump: caller audio to the bot in chunks, the bot's audio, marks and clears
into the playout, and the latency probes (loop thread, woken by the conference clock).

Everything here runs per 20 ms tick for every call: nothing allocates beyond the audio itself,
and the probes sample (about one bot message a second) rather than measure every message.
"""

from __future__ import annotations

import collections
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from bridge.audio.channel import MediaChannel
from bridge.audio.framing import FRAME_MS, Chunker, frame_bytes
from bridge.audio.latency import LatencyHistogram, TickClock, playout_wait_ms
from bridge.audio.pipe_channel import PipeChannel
from bridge.audio.resample import StreamResampler
from bridge.bot.dialect import DialectSession
from bridge.call.link import CallLink
from bridge.call.policy import CallPolicy
from bridge.call.state import CallState
from bridge.logs import CallLog

__all__ = ["LatencyProbes", "MediaPump"]



@dataclass(slots=True)
class LatencyProbes:
    """The bridge-wide histograms every call's pump records into (None: not measured)."""

    rtp_to_ws: LatencyHistogram | None = None
    ws_to_rtp: LatencyHistogram | None = None
    ticks: TickClock | None = None  # the media clock's phase, for calls that do not know their own
    mark_lag: LatencyHistogram | None = None
    clear_lag: LatencyHistogram | None = None  # clear -> the first tick without its audio


class MediaPump:
    """Moves one call's audio between its channel and its bot session."""

    def __init__(self, channel: MediaChannel | PipeChannel, session: DialectSession, link: CallLink,
                 policy: CallPolicy, socket_rate: int, probes: LatencyProbes, state: CallState,
                 on_stall: Callable[[str], None], log: CallLog) -> None:
        self.channel = channel
        self.session = session
        self.link = link
        self.policy = policy
        self.socket_rate = socket_rate
        self.probes = probes
        self._state = state
        self._on_stall = on_stall
        self.log = log
        clock = policy.clock_rate
        self.chunk_frames = policy.bot.chunk_ms // FRAME_MS
        prebuffer = frame_bytes(clock, policy.bot.prebuffer_ms)
        self._prebuffer_frames = -(-prebuffer // channel.frame_bytes)  # as the playout buffer counts it
        self._chunker = Chunker(frame_bytes(socket_rate, policy.bot.chunk_ms))
        self.rx_resampler = StreamResampler(clock, socket_rate) if socket_rate != clock else None
        self._tx_resampler = StreamResampler(socket_rate, clock) if socket_rate != clock else None
        self.running = False
        self.media_drops = 0
        self._sender_drops = 0  # media_dropped of the native sender, as last counted
        self._stall_warned = False
        self._clear_at = 0.0
        self._mark_due: collections.deque[float] = collections.deque()  # when each pending mark's audio ends
        self._probe: tuple[int, float, float] | None = None  # playout position, arrival, allowance ms
        self._next_probe = 0.0

    # ---- the bot's audio, marks and clears (from BotInbox) ------------------------------

    def play(self, pcm: bytes) -> None:
        if self._tx_resampler is not None:
            pcm = self._tx_resampler.process(pcm)
        if self.probes.ws_to_rtp is not None and self._probe is None and pcm:
            self._start_probe(self.channel)
        self.channel.write_audio(pcm)

    def mark(self, name: str) -> None:
        if self.probes.mark_lag is not None:
            self._mark_due.append(time.monotonic() + self._queued_ms(self.channel) / 1000.0)
        self.channel.mark(name)

    def clear(self) -> None:
        """Drop the queued audio; its marks are answered (or forgotten, per the profile)."""
        channel = self.channel
        self._probe = None  # its audio was dropped
        pending = channel.clear()
        if self.probes.clear_lag is not None and isinstance(channel, PipeChannel):
            # From here to the tick that no longer plays the dropped audio.
            self._clear_at = time.monotonic()
            channel.watch_next_read()
        if self._tx_resampler is not None:
            # Its tail belongs to the audio just dropped.
            self._tx_resampler = StreamResampler(self.socket_rate, self.policy.clock_rate)
        self.log.info("clear: dropped queued audio, %d mark(s) pending", len(pending))
        self.answer_marks(pending, cleared=True)

    def answer_marks(self, names: list[str], *, cleared: bool = False) -> None:
        session, link = self.session, self.link
        for name in names:
            if cleared and not self.policy.bot.clear_answers_marks:
                session.forget_mark(name)
                continue
            text = session.mark(name)
            if text is not None:
                link.send_nowait(text)
            if self._mark_due:
                due = self._mark_due.popleft()
                if not cleared and self.probes.mark_lag is not None:
                    self.probes.mark_lag.record(max(0.0, time.monotonic() - due) * 1000.0)

    # ---- the tick ------------------------------------------------------------------------

    def due(self) -> bool:
        """Whether this tick has work for `pump` (checked for every call on every tick)."""
        channel = self.channel
        return (channel.rx_frames_ready >= self.chunk_frames or channel.marks_pending > 0
                or self._probe is not None)

    def pump(self, final: bool = False, tick_at: float = 0.0) -> None:
        channel, link = self.channel, self.link
        if isinstance(channel, PipeChannel) and channel.sending:
            # The pipe's sender thread writes the caller's audio: here are its latencies and
            # troubles. At the end, what is due goes and the rest of the audio goes from here.
            self._check_sender(channel, link)
            if final:
                channel.send_due()
                link.take_writes_back()
        if not self.session.handed_off:
            self._pump_caller_audio(channel, final, tick_at)
        probe = self._probe
        ws_to_rtp = self.probes.ws_to_rtp
        if probe is not None and ws_to_rtp is not None:
            played_at = channel.probe_played_at(probe[0], tick_at)
            if played_at:
                ws_to_rtp.record((played_at - probe[1]) * 1000.0 - probe[2])
                self._probe = None
                self._next_probe = played_at + 1.0
        if self._clear_at and isinstance(channel, PipeChannel):
            silent_at = channel.next_read_at()
            if silent_at and self.probes.clear_lag is not None:
                self.probes.clear_lag.record((silent_at - self._clear_at) * 1000.0)
                self._clear_at = 0.0
        if channel.marks_pending:
            played = channel.take_played_marks()
            if played:
                self.answer_marks(played)

    def flush_before_event(self) -> None:
        """Send the caller audio taken so far before an event (a DTMF digit) that follows it."""
        self.pump()
        if isinstance(self.channel, PipeChannel) and self.channel.sending:
            self.channel.send_due()

    def _pump_caller_audio(self, channel: MediaChannel | PipeChannel, final: bool, tick_at: float) -> None:
        session, link = self.session, self.link
        rtp_to_ws = self.probes.rtp_to_ws
        # Take caller audio once a whole chunk waits (or at the end): with 100 ms chunks this
        # skips four ticks in five, and nothing is sent earlier anyway.
        pcm = channel.rx_take(1 if final else self.chunk_frames)
        if pcm:
            if self.rx_resampler is not None:
                pcm = self.rx_resampler.process(pcm)
            chunk_at = channel.rx_chunk_time(tick_at) if rtp_to_ws is not None else 0.0
            ticks = self.probes.ticks
            if ticks is not None and chunk_at > ticks.last:
                ticks.last = chunk_at  # a tick's time: the media clock's phase for the probes
            for chunk in self._chunker.push(pcm):
                text = session.media(chunk)
                if text is not None and not link.send_nowait(text, droppable=True):
                    self.media_drops += 1
                elif chunk_at and rtp_to_ws is not None:
                    rtp_to_ws.record((time.monotonic() - chunk_at) * 1000.0)
            if link.stalled_since is not None:
                self._check_stall(link.stalled_since)
        if final:
            rest = self._chunker.flush()
            if rest:
                text = session.media(rest)
                if text is not None:
                    link.send_nowait(text)

    # ---- the probes ----------------------------------------------------------------------

    def _queued_ms(self, channel: MediaChannel | PipeChannel) -> float:
        """Audio that must play before anything written now: queued audio, the pre-buffer delay
        when idle, and the rest of the frame in flight."""
        playout = channel.playout
        queued = playout.buffered_bytes / (self.policy.clock_rate * 2 / 1000)
        if not playout.is_playing:
            queued += self.policy.bot.prebuffer_ms
        return queued + self._to_next_read_ms(channel, time.monotonic())

    def _to_next_read_ms(self, channel: MediaChannel | PipeChannel, now: float) -> float:
        """Until the clock next reads this call's bot audio: from the call's own tick when the
        channel knows it (the native pipe), else from the bridge's estimate of the tick phase."""
        own = channel.next_read_ms(now)
        if own is not None:
            return own
        ticks = self.probes.ticks
        return ticks.to_next_tick_ms(now) if ticks is not None else 0.0

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

    # ---- a bot that stopped reading --------------------------------------------------------

    def _check_sender(self, channel: PipeChannel, link: CallLink) -> None:
        """The native sender's news: latencies to record, media dropped, a broken socket."""
        latencies = channel.send_latencies()  # taken even unrecorded: the pipe wakes the loop until they are
        rtp_to_ws = self.probes.rtp_to_ws
        if rtp_to_ws is not None:
            record = rtp_to_ws.record
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
        limit = self.policy.bot.guard.stall_timeout
        if not self._stall_warned:
            self._stall_warned = True
            self.log.warning("the bot is not reading its socket: caller audio is being dropped; the call "
                             "ends if this lasts %g s (bot.stall_timeout)", limit)
        if limit > 0 and stalled >= limit and not self._state.stop_wanted:
            self.log.warning("the bot read nothing for %.1f s (%d media messages dropped); ending the call",
                             stalled, self.media_drops)
            self._on_stall(f"bot stopped reading for {limit:g} s")
