"""One tapped conversation on the loop: its calls (legs), tracks, sockets and the pump between them.

A SIPREC conversation is one leg with one track per recorded stream; a forked conversation is one
leg per call (one track each), joined by correlation id. Each leg rings while the sockets it
needs open, is answered receive-only once they are (never before: no audio is lost), and is
rejected with the profile's `bot.on_unreachable.sip_status` if they cannot be opened.

Every tick the pump takes each track's stamped frames, lines them up (`TrackAligner`), lays them
out per socket (`sink_signals`) and encodes them (`TapStream`). Sockets are AgentStream one-way
streams: `connected`, `start`, `media`..., `stop`; whatever the service sends is ignored. A
participant change in the SIPREC metadata ends the affected socket (`stop` "stopped") and opens a
new one whose `start` names the new participant (`conversation_offset_ms` places it on the
conversation's timeline). The conversation ends when its last leg does: every socket gets `stop`
"callended" (or "stopped" when the bridge ended it) and is closed with 1000.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from bridge.audio.framing import FRAME_MS, frame_bytes
from bridge.audio.ticks import TickCounter
from bridge.bot.agentstream.events import StartInfo, StopReason
from bridge.call.policy import CallPolicy
from bridge.config import header_allowed
from bridge.config.tap import TapSettings
from bridge.errors import BotConnectError
from bridge.logs import CallLog, record
from bridge.sip import CallEnd, IncomingCall, MediaInfo, StreamStats
from bridge.tap.align import TrackAligner
from bridge.tap.channel import TapChannel
from bridge.tap.correlate import MAX_TRACKS, TapPlan
from bridge.tap.layout import sink_signals
from bridge.tap.metadata import (
    MetadataError,
    RecordingMetadata,
    message_parts,
    metadata_of,
    parse_metadata,
    parse_sdp_streams,
    sdp_of,
)
from bridge.tap.sink import TapSink
from bridge.tap.stream import TapStream
from bridge.tap.tracks import TrackInfo, forked_track, siprec_tracks
from bridge.ws.client import redact_url

log = logging.getLogger("bridge.tap")

__all__ = ["TapConversation", "TapLeg", "TapSip"]

# A track may hold the others back this long (its media not connected yet, a stalled hand-off)
# before it is padded with silence; 200 ms.
MAX_LAG_FRAMES = 10
_LEG_END_WAIT_S = 10.0


class TapSip(Protocol):
    """What a tap needs from the SIP engine."""

    conference_ticks: TickCounter

    def ringing_tap(self, handle: int, media_count: int, audio_count: int) -> None: ...
    def answer_tap(self, handle: int, channels: list[Any]) -> None: ...
    def reject(
        self, handle: int, code: int, reason: str = "", headers: dict[str, str] | None = None
    ) -> None: ...
    def hangup(self, handle: int, code: int = 0, reason: str = "") -> None: ...


@dataclass(eq=False)
class TapLeg:
    """One SIP call of a conversation."""

    incoming: IncomingCall
    plan: TapPlan
    tracks: list[TrackInfo]
    log: CallLog
    keys: list[str] = field(default_factory=list)
    channels: dict[int, TapChannel] = field(default_factory=dict)  # SDP media index -> channel
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    end: CallEnd | None = None
    stats: StreamStats = field(default_factory=StreamStats)
    media: MediaInfo | None = None
    outcome: str = "pending"  # answered | rejected | abandoned
    answered_at: float | None = None
    hung_up_by_bridge: str = ""  # why the bridge ended it ("" when the far end did)

    @property
    def handle(self) -> int:
        return self.incoming.handle


class TapConversation:
    """One conversation: its legs, tracks, aligner and sockets (loop thread only)."""

    def __init__(self, conversation_id: str, kind: str, *, sip: TapSip, policy: CallPolicy, tap: TapSettings,
                 notify_media: Callable[[], None], on_done: Callable[[TapConversation], None]) -> None:
        self.conversation_id = conversation_id
        self.kind = kind
        self.sip = sip
        self.policy = policy
        self.tap = tap
        self.layout = tap.layout
        self._notify_media = notify_media
        self._on_done = on_done
        if tap.url is not None:
            self.url = tap.url.url.reveal()
            self.headers = {name: value.reveal() for name, value in tap.headers.items()}
            self.rate, self.url_params = tap.url.sample_rate, dict(tap.url.query_parameters)
        else:
            self.url, self.headers = policy.bot_url, dict(policy.link.headers)
            self.rate, self.url_params = policy.socket_rate, dict(policy.url_params)
        self.clock_rate = policy.clock_rate
        self.frame = frame_bytes(self.clock_rate, FRAME_MS)
        self.chunk_frames = max(1, policy.bot.chunk_ms // FRAME_MS)
        self.aligner = TrackAligner(self.frame, max_lag_frames=MAX_LAG_FRAMES)
        self.legs: dict[int, TapLeg] = {}
        self.all_legs: list[TapLeg] = []
        self.tracks: dict[str, TrackInfo] = {}
        self.channels: dict[str, TapChannel] = {}  # live tracks' hand-offs
        self.sinks: list[TapSink] = []  # open or opening
        self.all_sinks: list[TapSink] = []
        self.metadata: RecordingMetadata | None = None
        self.metadata_updates = 0
        self.created = time.monotonic()
        self.started_wall = time.time()
        self.end_reason = ""
        self.finished = False
        self.tasks: set[asyncio.Task[None]] = set()  # sockets being closed
        self._deferred: TapSink | None = None  # a shared socket waiting for the other side
        self._defer_timer: asyncio.TimerHandle | None = None
        self.log = CallLog(log, call_sid="", conversation_id=conversation_id)

    # ---- legs -----------------------------------------------------------------------------

    def add_leg(self, incoming: IncomingCall, plan: TapPlan) -> TapLeg | None:
        """A call joins (None: it cannot, and was rejected)."""
        leg_log = CallLog(log, call_sid=incoming.call_id, conversation_id=self.conversation_id)
        if not self.legs and not self.all_legs:
            self.log = CallLog(log, call_sid=incoming.call_id, conversation_id=self.conversation_id)
        if plan.kind == "siprec":
            if plan.metadata_error:
                leg_log.warning("SIPREC INVITE: %s; streams are mapped by order, participants unknown",
                                plan.metadata_error)
            self.metadata = plan.metadata
            tracks = siprec_tracks(plan.streams, plan.metadata, self.tap.agent_match)
        else:
            taken = [t.role for t in self.tracks.values()]
            track, warning = forked_track(plan.track_value, incoming.from_uri, taken)
            audio = [s.index for s in plan.streams if s.media == "audio" and s.port != 0]
            tracks = [dataclasses.replace(track, media_index=audio[0] if audio else 0)]
            if warning:
                leg_log.warning("%s header: %s", self.tap.track_header, warning)
        if not tracks or len(self.tracks) + len(tracks) > MAX_TRACKS:
            why = "no audio stream to record" if not tracks else f"more than {MAX_TRACKS} tracks"
            leg_log.warning("tap call rejected with 488: %s", why)
            self.sip.reject(incoming.handle, 488, "Not Acceptable Here")
            return None
        leg = TapLeg(incoming=incoming, plan=plan, tracks=tracks, log=leg_log)
        self.legs[leg.handle] = leg
        self.all_legs.append(leg)
        for track in tracks:
            key = f"{leg.handle}:{track.media_index}"
            leg.keys.append(key)
            self.tracks[key] = track
        shown = ", ".join(f"{t.role}={t.name or t.number or '?'}" + (f" [label {t.label}]" if t.label else "")
                          for t in tracks)
        leg_log.info("tap %s (%s, %s): %s", self.conversation_id, self.kind, self.layout, shown)
        return leg

    async def run_leg(self, leg: TapLeg) -> None:
        try:
            await self._run_leg(leg)
        finally:
            self._leg_over(leg)

    async def _run_leg(self, leg: TapLeg) -> None:
        media_count = max(len(leg.plan.streams), 1)
        self.sip.ringing_tap(leg.handle, media_count, len(leg.tracks))
        for track in leg.tracks:
            channel = TapChannel(self.frame, self.sip.conference_ticks, notify=self._notify_media)
            leg.channels[track.media_index] = channel
        sinks = self._sinks_for(leg)
        opened = asyncio.ensure_future(asyncio.gather(*(asyncio.shield(s.opened) for s in sinks)))
        ended = asyncio.ensure_future(leg.ended.wait())
        waiting: set[asyncio.Future[Any]] = {opened, ended}
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        if leg.ended.is_set():
            opened.cancel()
            leg.outcome = "abandoned"
            leg.log.info("the tap call ended before it was answered")
            return
        ended.cancel()
        if not all(opened.result()):
            reasons = "; ".join(sorted({s.error for s in sinks if s.error})) or "not opened"
            unreachable = self.policy.bot.on_unreachable
            status = unreachable.sip_status if unreachable.action == "reject" else BotConnectError.sip_status
            leg.outcome = "rejected"
            leg.hung_up_by_bridge = "tap service unreachable"
            leg.log.error("tap service %s unreachable (%s); rejecting the tap call with %d",
                          redact_url(self.url), reasons, status)
            self.end_reason = self.end_reason or f"tap service unreachable ({reasons})"
            self.sip.reject(leg.handle, status, "Tap Service Unavailable")
            return
        channels: list[Any] = [None] * (max(leg.channels) + 1)
        for index, channel in leg.channels.items():
            channels[index] = channel
        for key, track in zip(leg.keys, leg.tracks, strict=True):
            self.channels[key] = leg.channels[track.media_index]
            self.aligner.add(key)
        self.sip.answer_tap(leg.handle, channels)
        leg.outcome = "answered"
        leg.answered_at = time.monotonic()
        await leg.ended.wait()

    def _leg_over(self, leg: TapLeg) -> None:
        """The leg's SIP side ended (or it was never answered): flush its tracks, end its sockets."""
        if leg.handle not in self.legs:
            return
        self._collect()
        for key in leg.keys:
            self.aligner.end(key)
            channel = self.channels.pop(key, None)
            if channel is not None:
                channel.closed = True
        del self.legs[leg.handle]
        reason: StopReason = "stopped" if leg.hung_up_by_bridge else "callended"
        if not self.legs:
            if self._deferred is not None and self.aligner.origin is not None:
                self._open_deferred()  # the other side never came: what was kept still goes out
            self._emit(final=True)
            self.end_reason = self.end_reason or (
                leg.hung_up_by_bridge or "the recorded call ended" if self.kind == "siprec"
                else leg.hung_up_by_bridge or "every tapped call ended")
            for sink in list(self.sinks):
                self._finish(sink, reason)
            self._done()
            return
        self._emit()
        for sink in list(self.sinks):
            if sink.track in leg.keys:
                self._finish(sink, reason)

    # ---- sockets --------------------------------------------------------------------------

    def _sinks_for(self, leg: TapLeg) -> list[TapSink]:
        """The sockets a leg needs open before it is answered (made here when missing)."""
        if self.layout == "separate":
            # A later call's socket starts at the conversation's first tick (silence until its
            # audio), so the timestamps of every socket agree.
            why = "start" if self.aligner.origin is None else "join"
            return [self._new_sink(key, self.aligner.origin, why) for key in leg.keys]
        shared = next((s for s in self.sinks if s.track is None and not s.done), None)
        if shared is None:
            first = self.aligner.out if self.aligner.origin is not None else None
            # Forked legs arrive one by one, and `start` names both sides: the socket opens once the
            # other side has joined (or tap.pair_timeout_s has passed); meanwhile the first leg is
            # answered and its audio kept, so none is lost.
            defer = self.kind == "forked" and first is None
            shared = self._new_sink(None, first, "start" if first is None else "reopen", start=not defer)
            if defer:
                self._deferred = shared
                self._defer_timer = asyncio.get_running_loop().call_later(
                    self.tap.pair_timeout_s, self._open_deferred)
        if self._deferred is not None:
            if {"customer", "agent"} <= {t.role for t in self.tracks.values()}:
                self._open_deferred()
            else:
                return []
        return [shared]

    def _open_deferred(self) -> None:
        sink, self._deferred = self._deferred, None
        if self._defer_timer is not None:
            self._defer_timer.cancel()
            self._defer_timer = None
        if sink is None or sink.done:
            return
        sink.start()
        sink.opened.add_done_callback(lambda opened: self._deferred_opened(sink, opened.result()))

    def _deferred_opened(self, sink: TapSink, ok: bool) -> None:
        if ok or self.finished:
            return
        self.log.error("tap service %s unreachable (%s); ending the tap calls", redact_url(self.url),
                       sink.error)
        if sink in self.sinks:
            self.sinks.remove(sink)
        self.request_stop(f"tap service unreachable ({sink.error})")

    def _new_sink(self, track: str | None, first_tick: int | None, why: str, *,
                  start: bool = True) -> TapSink:
        # Audio waits for a socket at most until the pair is complete (plus connecting): bounded.
        stream = TapStream(channels=2 if self.layout == "stereo" else 1, clock_rate=self.clock_rate,
                           first_tick=first_tick, max_pending_s=max(60.0, self.tap.pair_timeout_s + 30.0))
        sink = TapSink(self, stream, track, why)
        self.sinks.append(sink)
        self.all_sinks.append(sink)
        if start:
            sink.start()
        return sink

    def _finish(self, sink: TapSink, reason: StopReason) -> None:
        if sink in self.sinks:
            self.sinks.remove(sink)
        task = asyncio.ensure_future(sink.finish(reason))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def sink_lost(self, sink: TapSink) -> None:
        """The service closed a socket: it gets no more audio; with none left, the legs end."""
        if sink in self.sinks:
            self.sinks.remove(sink)
        code = sink.link.close_code if sink.link is not None else None
        self.log.info("the tap service closed stream %s (code %s)", sink.stream_sid, code,
                      extra={"stream_sid": sink.stream_sid})
        if not self.sinks and self.legs:
            self.request_stop("the tap service closed its stream")

    def start_info(self, sink: TapSink) -> StartInfo:
        """`start` of a socket, from what is known when it opens (the latest participants)."""
        leg = next(iter(self.legs.values()), None) or self.all_legs[0]
        if sink.track is not None:
            handle = int(sink.track.split(":", 1)[0])
            leg = next((candidate for candidate in self.all_legs if candidate.handle == handle), leg)
        params = dict(self.url_params)
        if self.policy.forward_headers:
            for name, value in leg.incoming.headers:
                if header_allowed(name, self.policy.forward_headers) and name not in params:
                    params[name] = value
        origin = self.aligner.origin
        first = sink.stream.first_tick
        offset = (first - origin) * FRAME_MS if origin is not None and first is not None else 0
        params.update({
            "conversation_id": self.conversation_id,
            "tap": self.kind,
            "layout": self.layout,
            "conversation_offset_ms": str(max(offset, 0)),
        })
        from_, to = leg.incoming.from_user, leg.incoming.to_user
        if sink.track is not None:
            track = self.tracks[sink.track]
            params.update(_track_params(track))
        else:
            for role in ("customer", "agent"):
                first_track = next((t for t in self.tracks.values() if t.role == role), None)
                if first_track is not None:
                    params[f"{role}_name"] = first_track.name
                    params[f"{role}_number"] = first_track.number
            if self.layout == "stereo":
                params["channel_map"] = "left=customer,right=agent"
        if self.kind == "siprec":
            customer = next((t for t in self.tracks.values() if t.role == "customer" and t.number), None)
            agent = next((t for t in self.tracks.values() if t.role == "agent" and t.number), None)
            from_ = customer.number if customer is not None else from_
            to = agent.number if agent is not None else to
            if self.metadata is not None and self.metadata.sip_session_id:
                params["recorded_session_id"] = self.metadata.sip_session_id
        return StartInfo(stream_sid=sink.stream_sid, call_sid=leg.incoming.call_id,
                         account_sid=self.policy.bot.account_sid, from_=from_, to=to,
                         custom_parameters=params, sample_rate=self.rate,
                         channels=2 if self.layout == "stereo" else 1)

    # ---- SIPREC metadata updates ------------------------------------------------------------

    def on_metadata(self, handle: int, message: str) -> None:
        leg = self.legs.get(handle)
        if leg is None or leg.plan.kind != "siprec":
            return
        _, parts = message_parts(message)
        xml = metadata_of(parts)
        if xml is None:
            return
        try:
            update = parse_metadata(xml)
        except MetadataError as exc:
            leg.log.warning("SIPREC metadata update ignored: %s", exc)
            return
        self.metadata_updates += 1
        self.metadata = update if self.metadata is None else self.metadata.merge(update)
        sdp = sdp_of(parts)
        streams = parse_sdp_streams(sdp) if sdp else list(leg.plan.streams)
        fresh = {t.media_index: t for t in siprec_tracks(streams, self.metadata, self.tap.agent_match)}
        changed = []
        for key, old in zip(leg.keys, leg.tracks, strict=True):
            new = fresh.get(old.media_index)
            if new is not None and not new.same_participant(self.tracks[key]):
                leg.log.info("SIPREC metadata: stream %s (label %s) is now %s %s (was %s)", old.media_index,
                             new.label, new.role, new.name or new.number or "?",
                             self.tracks[key].name or self.tracks[key].number or "?")
                self.tracks[key] = new
                changed.append(key)
        if not changed:
            leg.log.info("SIPREC metadata update %d: no stream changed participant", self.metadata_updates)
            return
        self._collect()
        self._emit()  # the old sockets get every frame up to the change
        restart = [s for s in self.sinks if s.track is None or s.track in changed]
        for sink in restart:
            self._finish(sink, "stopped")
            self._new_sink(sink.track, self.aligner.out, "participant change")

    # ---- the pump (every tick, from the service's media pump) ---------------------------------

    def pump_due(self) -> bool:
        return any(c.rx_frames_ready >= self.chunk_frames for c in self.channels.values())

    def pump(self) -> None:
        self._collect()
        self._emit()

    def _collect(self) -> None:
        for key, channel in self.channels.items():
            ticks, data = channel.take()
            if ticks:
                self.aligner.push(key, ticks, data)

    def _emit(self, final: bool = False) -> None:
        block = self.aligner.pop(final)
        if block is None or not self.sinks:
            return
        n_bytes = block.frames * self.frame
        roles = {key: track.role for key, track in self.tracks.items()}
        for sink in self.sinks:
            signals = sink_signals(self.layout, block.tracks, roles, n_bytes, only=sink.track)
            sink.send(sink.stream.push(block.start_tick, signals))

    # ---- events -----------------------------------------------------------------------------

    def on_media(self, handle: int, media: MediaInfo) -> None:
        leg = self.legs.get(handle)
        if leg is not None:
            leg.media = media
            leg.log.info("tap media up: %s/%d from %s", media.codec, media.clock_rate, media.remote_rtp)

    def on_sip_end(self, handle: int, end: CallEnd, stats: StreamStats) -> None:
        leg = self.legs.get(handle)
        if leg is not None:
            leg.end, leg.stats = end, stats
            leg.ended.set()

    def end_leg(self, handle: int, reason: str) -> None:
        """The bridge hangs up one leg (e.g. its RTP stopped)."""
        leg = self.legs.get(handle)
        if leg is not None and not leg.ended.is_set():
            leg.hung_up_by_bridge = reason
            leg.log.warning("ending the tap call: %s", reason)
            self.sip.hangup(handle)

    def request_stop(self, reason: str) -> None:
        """End the conversation from the bridge's side: `stop` "stopped" on every socket, BYE."""
        self.end_reason = self.end_reason or reason
        for leg in list(self.legs.values()):
            if not leg.ended.is_set():
                leg.hung_up_by_bridge = reason
                if leg.outcome == "answered":
                    self.sip.hangup(leg.handle)
                else:
                    self.sip.reject(leg.handle, 503, "Service Unavailable")
        asyncio.get_running_loop().call_later(_LEG_END_WAIT_S, self._give_up_legs)

    def _give_up_legs(self) -> None:
        for leg in list(self.legs.values()):
            if not leg.ended.is_set():
                leg.log.warning("the tap call's SIP leg did not end %.0f s after hang-up; giving up on it",
                                _LEG_END_WAIT_S)
                leg.ended.set()

    def _done(self) -> None:
        if self.finished:
            return
        self.finished = True
        self._summary()
        self._on_done(self)

    def _summary(self) -> None:
        answered = [leg.answered_at for leg in self.all_legs if leg.answered_at is not None]
        aligner = self.aligner
        fields: dict[str, object] = {
            "conversation_id": self.conversation_id,
            "tap": self.kind,
            "layout": self.layout,
            "start": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started_wall)),
            "duration_s": round(time.monotonic() - min(answered), 3) if answered else 0,
            "end_reason": self.end_reason,
            "calls": [{"call_sid": leg.incoming.call_id, "outcome": leg.outcome,
                       "sip_status": leg.end.code if leg.end else 0,
                       "codec": leg.media.codec if leg.media else "",
                       "rtp_rx_packets": leg.stats.rx_packets, "rtp_rx_lost": leg.stats.rx_lost}
                      for leg in self.all_legs],
            "tracks": [{"track": key, **_track_params(t)} for key, t in self.tracks.items()],
            "streams": [sink.summary() for sink in self.all_sinks],
            "metadata_updates": self.metadata_updates,
            "late_frames": sum(aligner.late_frames.values()),
            "gap_frames": sum(aligner.gap_frames.values()),
            "lag_frames": sum(aligner.lag_frames.values()),
            "overrun_frames": sum(c.rx_overrun_frames for leg in self.all_legs
                                  for c in leg.channels.values()),
        }
        record(self.log, "tap_summary", fields)


def _track_params(track: TrackInfo) -> dict[str, str]:
    params = {"track": track.role, "participant_name": track.name, "participant_number": track.number}
    if track.aor:
        params["participant_aor"] = track.aor
    if track.participant_id:
        params["participant_id"] = track.participant_id
    if track.label:
        params["label"] = track.label
    return params
