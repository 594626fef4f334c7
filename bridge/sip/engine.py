"""The pjsua2 user agent: the only module of the bridge that imports pjsua2.

Threads (see design.md):
- the engine's own "sip" thread calls `libCreate()` and then polls `libHandleEvents()`; with
  `mainThreadOnly` every pjsua2 callback runs on it, and it runs the commands the loop submits,
  so pjsua2 objects are only ever touched from one Python thread;
- PJSIP's media thread receives RTP; its conference "clock" thread feeds each call's C++
  `PipeMediaPort`, which moves bytes through the call's `MediaPipe` without entering Python (the
  loop reads the pipe; see bridge/audio/pipe_channel.py). Recorded calls and taps use Python
  `_MediaPort`s, which only move bytes through a `MediaChannel`. pjsua2 objects other than the
  pipes and the wakeup (plain C++, no PJSIP calls) are still touched on the sip thread only;
- events go to the asyncio loop with `call_soon_threadsafe` (SIP events are rare; media never
  goes this way).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ctypes
import gc
import itertools
import logging
import os
import queue
import random
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pjsua2 as pj

from bridge.audio.channel import MediaChannel
from bridge.audio.pipe_channel import PipeChannel
from bridge.audio.ticks import TickCounter
from bridge.errors import SipStackError
from bridge.latency import TICK_S
from bridge.sip import (
    REFUSED_REQUEST_REASONS,
    CallEnd,
    DtmfMethod,
    IncomingCall,
    MediaInfo,
    RegistrationState,
    SipEventSink,
    StreamStats,
)
from bridge.sip.access import InboundGate, RateLimit
from bridge.sip.digest import DigestAuthenticator
from bridge.sip.dtmf import DtmfTracker
from bridge.sip.message import parse_headers, printable, uri_user
from bridge.sip.pjlog import LineBudget, shorten
from bridge.sip.rtpwatch import RtpWatch

log = logging.getLogger("bridge.sip")
pjlog = logging.getLogger("bridge.pjsip")

T = TypeVar("T")

_CODEC_IDS = {"PCMU": "PCMU/8000/1", "PCMA": "PCMA/8000/1", "G722": "G722/16000/1"}
_POLL_MS = 5
# pjmedia_stream_dtmf_event_flags (not exported by the SWIG module).
_DTMF_IS_UPDATE = 1 << 0
_DTMF_IS_END = 1 << 1
# An RFC 4733 end packet can be lost; a digit still waiting for one after this long is reported.
_DTMF_END_WAIT_S = 1.5
# A 2xx to an INVITE that no ACK confirms within 64*T1 ends the call (RFC 3261 13.3.1.4, the
# time the UAS retransmits it). PJSIP then sends a BYE and waits another 64*T1 for its answer;
# the bot's stream and the call's slot need not wait for that.
_ACK_WAIT_S = 32.0


@dataclass(frozen=True, slots=True)
class RegisterParams:
    registrar: str
    username: str
    password: str
    realm: str = "*"
    expires: int = 300
    identity: str | None = None
    outbound_proxy: str | None = None
    contact: str | None = None  # forced Contact (a front/load balancer address)
    retry_min_s: float = 2.0
    retry_max_s: float = 120.0


@dataclass(frozen=True, slots=True)
class TlsParams:
    """SIP over TLS: a listener (the bridge) or a client transport (the test caller)."""

    listen_host: str
    listen_port: int
    cert_file: str = ""
    key_file: str = ""
    ca_file: str | None = None
    require_client_cert: bool = False  # server: clients must present a certificate signed by ca_file
    verify_server: bool = False  # client: check the server's certificate against ca_file


@dataclass(frozen=True, slots=True)
class EngineSettings:
    listen_host: str
    listen_port: int
    transports: tuple[str, ...] = ("udp", "tcp")
    public_address: str | None = None
    rtp_port_start: int = 20000
    rtp_port_range: int = 10000
    codecs: tuple[str, ...] = ("PCMU", "PCMA", "G722")
    user_agent: str = "sip-ws-bridge"
    clock_rate: int = 8000
    tick_phase_ms: int | None = None  # when in every 20 ms the conference clock ticks (None: any)
    rtp_latching: str = "first"  # first | follow (media.rtp_latching)
    max_calls: int = 100  # admission limit; beyond it INVITEs get 503 + Retry-After
    register: RegisterParams | None = None
    pjsip_log_level: int = 1
    retry_after_s: int = 5
    # Who may call (see access.py); the defaults let in loopback only.
    allow_from: tuple[str, ...] = ("127.0.0.0/8", "::1")
    rate_limit: RateLimit | None = field(default_factory=RateLimit)
    inbound_auth: tuple[str, str, str] | None = None  # username, password, realm
    client_auth: tuple[str, str] | None = None  # username, password: answer challenges (test caller)
    tls: TlsParams | None = None
    srtp: str = "disabled"  # optional | mandatory | disabled
    rtp_timeout_s: float = 0.0  # 0 = never end a call for lack of RTP


F = TypeVar("F", bound=Callable[..., None])
callback_errors = 0


def _guarded(fn: F) -> F:
    """Callbacks are called from C++: an exception must not cross back into PJSIP.

    SWIG would print it and keep its traceback in sys.last_traceback, which keeps pjsua2 objects
    alive past libDestroy() (an abort at exit). So it is logged with its traceback and counted.
    """

    def wrapper(*args: Any) -> None:
        global callback_errors
        try:
            fn(*args)
        except Exception:  # the C++ boundary: counted and logged, never propagated
            callback_errors += 1
            log.exception("error in SIP callback %s", fn.__name__)

    wrapper.__name__ = fn.__name__
    return wrapper  # type: ignore[return-value]


class _LogWriter(pj.LogWriter):  # type: ignore[misc]
    """PJSIP's log into stdlib logging. Called from any PJSIP thread, rarely at the levels we ask."""

    budget = LineBudget()  # errors and warnings: junk from the network must not flood the log

    def write(self, entry: Any) -> None:
        level = entry.level
        pylevel = logging.ERROR if level <= 1 else logging.WARNING if level == 2 else logging.DEBUG
        message = shorten(str(entry.msg))
        if level <= 2:
            allowed, dropped = self.budget.take(time.monotonic())
            if not allowed:
                return
            if dropped:
                message = f"{message} [{dropped} more PJSIP error/warning lines were left out]"
        pjlog.log(pylevel, "%s", message)


# SWIG's director wraps every callback in PyGILState_Ensure()/Release(); on a thread Python did
# not create, that creates and destroys a thread state each time (~11 us, about half the
# bridge's CPU per call). Holding one extra Ensure() for the life of PJSIP's clock thread keeps
# its thread state alive, so each callback only takes and drops the GIL. This relies on
# CPython's documented PyGILState semantics (a nested Ensure only bumps a counter); it lives
# here only, and tests/unit/test_gil_pin.py checks it. SIP_WS_BRIDGE_NO_GIL_PIN=1 turns it off.
_PIN_GIL = os.environ.get("SIP_WS_BRIDGE_NO_GIL_PIN", "") != "1"
# Calls' media through the native MediaPipe (our pjsua2 build) unless turned off, e.g. to compare
# with the Python port in a benchmark. Recorded calls and taps always use the Python port.
NATIVE_MEDIA = hasattr(pj, "MediaPipe") and os.environ.get("SIP_WS_BRIDGE_PY_MEDIA", "") != "1"
# Caller audio written to bots' sockets by the pipes' sender thread unless turned off (the same
# kind of comparison: SIP_WS_BRIDGE_PY_SEND=1 sends it from the event loop).
NATIVE_SEND = (NATIVE_MEDIA and hasattr(pj, "MediaSender")
               and os.environ.get("SIP_WS_BRIDGE_PY_SEND", "") != "1")
# Caller frames a pipe holds before the oldest are overwritten (1.28 s), as for MediaChannel.
_PIPE_RING_FRAMES = 64
_UNDERRUN_GAP_FRAMES = 10
_pinned_threads: set[int] = set()


def _pin_thread_state() -> None:
    ident = threading.get_ident()
    if ident not in _pinned_threads:
        ctypes.pythonapi.PyGILState_Ensure()  # never released: the thread state stays
        _pinned_threads.add(ident)


class _MediaPort(pj.AudioMediaPort):  # type: ignore[misc]
    """Runs on the conference clock thread, once per 20 ms per direction: only moves bytes."""

    def __init__(self, channel: MediaChannel) -> None:
        super().__init__()
        self._channel = channel
        self._frame_bytes = channel.frame_bytes
        self._pin_pending = _PIN_GIL

    def onFrameReceived(self, frame: Any) -> None:
        if self._pin_pending:
            self._pin_pending = False
            _pin_thread_state()
        channel = self._channel
        if channel.closed:
            return
        if frame.size == self._frame_bytes:
            frame.buf.copy_to_bytearray(channel.rx_slot())
            channel.rx_commit()
        else:
            # size 0 is the conference's heartbeat: no audio from the caller this tick.
            channel.rx_commit_silence()

    def onFrameRequested(self, frame: Any) -> None:
        audio = self._channel.tx_audio()
        if audio is not None:
            frame.type = pj.PJMEDIA_FRAME_TYPE_AUDIO
            frame.buf.assign_from_bytes(audio)
        # else: an untouched (NONE) frame, which the stream encodes as silence: RTP never pauses.


class _TickPort(pj.AudioMediaPort):  # type: ignore[misc]
    """Counts conference ticks for taps: the conference reads it (it transmits to slot 0) in the
    first phase of every tick, before it hands any port that tick's frame."""

    def __init__(self, ticks: TickCounter) -> None:
        super().__init__()
        self._ticks = ticks
        self._pin_pending = _PIN_GIL

    def onFrameRequested(self, frame: Any) -> None:
        if self._pin_pending:
            self._pin_pending = False
            _pin_thread_state()
        self._ticks.value += 1  # the frame stays NONE: nothing is played


class _Call(pj.Call):  # type: ignore[misc]
    def __init__(self, engine: SipEngine, account: Any, handle: int, call_id: int = pj.PJSUA_INVALID_ID):
        super().__init__(account, call_id)
        self.engine = engine
        self.handle = handle
        self.channel: MediaChannel | PipeChannel | None = None
        self.port: Any = None  # _MediaPort, or pj.PipeMediaPort for a PipeChannel
        self.connected_slot = -1
        self.ended_locally = False
        self.answered = False
        self.ok_sent_at: float | None = None  # when the 200 went out (the ACK timer runs from it)
        self.end_reported = False  # the loop was told the call ended (maybe before PJSIP knew)
        self.stats = StreamStats()
        self.dtmf = DtmfTracker()  # one report per key press, also with reordered packets
        self.redirected: tuple[int, str] | None = None
        self.srtp = False
        self.media_index = -1
        self.rx_expected = False  # media active and not held: RTP should be arriving
        self.rtp_watch: RtpWatch | None = None
        # A tap (receive only): one channel per SDP media line (None: not taken); never transmits.
        self.tap_channels: list[MediaChannel | None] | None = None
        self.tap_ports: dict[int, _MediaPort] = {}
        self.tap_slots: dict[int, int] = {}
        self.tap_media_count = 0  # m-lines in the offer: the call setting for every answer

    def release_media(self) -> None:
        """Drop the conference ports before the channels (sip thread): a PipeMediaPort's callbacks
        use its MediaPipe until the port is destroyed."""
        self.port = None
        self.tap_ports.clear()
        self.channel = None

    # -- callbacks (sip thread) --

    @_guarded
    def onCallState(self, prm: Any) -> None:
        ci = self.getInfo()
        if ci.state == pj.PJSIP_INV_STATE_CONFIRMED and not self.answered:
            self.answered = True
            self.engine._emit("on_call_answered", self.handle)
        elif ci.state == pj.PJSIP_INV_STATE_DISCONNECTED:
            self._flush_dtmf()
            code, reason = ci.lastStatusCode, ci.lastReason
            if self.redirected is not None:
                code, target = self.redirected
                reason = f"redirected to {target}"
            end = CallEnd(code=code, reason=reason, ended_by="local" if self.ended_locally else "remote")
            if self.channel is not None:
                self.channel.closed = True
            for tap_channel in self.tap_channels or ():
                if tap_channel is not None:
                    tap_channel.closed = True
            self.engine._call_gone(self, end)

    @_guarded
    def onCallMediaState(self, prm: Any) -> None:
        ci = self.getInfo()
        if self.tap_channels is not None:
            self._connect_tap_media(ci, self.tap_channels)
            return
        self.rx_expected = False
        for index, media in enumerate(ci.media):
            if media.type != pj.PJMEDIA_TYPE_AUDIO:
                continue
            # SIPREC streams and calls on hold report REMOTE_HOLD while audio may still flow.
            if media.status not in (pj.PJSUA_CALL_MEDIA_ACTIVE, pj.PJSUA_CALL_MEDIA_REMOTE_HOLD):
                continue
            self.media_index = index
            self.rx_expected = media.status == pj.PJSUA_CALL_MEDIA_ACTIVE  # the RTP timer pauses on hold
            self._connect_media(index)
            return

    def _connect_media(self, index: int) -> None:
        if self.channel is None:
            return
        audio = self.getAudioMedia(index)
        slot = audio.getPortId()
        if self.port is None:
            channel = self.channel
            if isinstance(channel, PipeChannel):
                port = pj.PipeMediaPort()
                port.createPort(f"bridge{self.handle}", self.engine.settings.clock_rate, channel.pipe)
            else:
                fmt = pj.MediaFormatAudio()
                fmt.init(pj.PJMEDIA_FORMAT_PCM, self.engine.settings.clock_rate, 1, 20000, 16)
                port = _MediaPort(channel)
                port.createPort(f"bridge{self.handle}", fmt)
            self.port = port
        if slot != self.connected_slot:
            audio.startTransmit(self.port)
            self.port.startTransmit(audio)
            self.connected_slot = slot
            self._report_media(index)

    def _report_media(self, index: int) -> None:
        """Tell the loop which codec and far end the stream at `index` uses."""
        try:
            si = self.getStreamInfo(index)
            info = MediaInfo(codec=si.codecName, clock_rate=si.codecClockRate,
                             remote_rtp=si.remoteRtpAddress, srtp=self.srtp)
        except pj.Error:
            info = MediaInfo(codec="?", clock_rate=0, remote_rtp="")
        self.engine._emit("on_call_media", self.handle, info)

    def _connect_tap_media(self, ci: Any, channels: list[MediaChannel | None]) -> None:
        """Each received stream into its own port; no port ever transmits into the call.

        Recorded streams are sendonly from the far end, so they report REMOTE_HOLD while audio
        flows; both that and ACTIVE are taken. The RTP watch counts the packets of them all."""
        first = True
        self.rx_expected = False
        for index, media in enumerate(ci.media):
            if media.type != pj.PJMEDIA_TYPE_AUDIO or index >= len(channels):
                continue
            channel = channels[index]
            if channel is None:
                continue
            if media.status not in (pj.PJSUA_CALL_MEDIA_ACTIVE, pj.PJSUA_CALL_MEDIA_REMOTE_HOLD):
                continue
            audio = self.getAudioMedia(index)
            slot = audio.getPortId()
            port = self.tap_ports.get(index)
            if port is None:
                fmt = pj.MediaFormatAudio()
                fmt.init(pj.PJMEDIA_FORMAT_PCM, self.engine.settings.clock_rate, 1, 20000, 16)
                port = _MediaPort(channel)
                port.createPort(f"tap{self.handle}.{index}", fmt)
                self.tap_ports[index] = port
            if first:
                self.media_index = index
                self.rx_expected = True
            if self.tap_slots.get(index) != slot:
                audio.startTransmit(port)  # stream -> port only
                self.tap_slots[index] = slot
                if first:
                    self._report_media(index)
            first = False

    @_guarded
    def onCallTsxState(self, prm: Any) -> None:
        # A tap follows SIPREC metadata updates: any request the far end sends within the call
        # (re-INVITE, UPDATE) whose body carries rs-metadata goes to the loop as a whole.
        if self.tap_channels is None:
            return
        event = prm.e
        if event.type != pj.PJSIP_EVENT_TSX_STATE or event.body.tsxState.type != pj.PJSIP_EVENT_RX_MSG:
            return
        message = str(event.body.tsxState.src.rdata.wholeMsg)
        if message.startswith("SIP/") or "rs-metadata" not in message:
            return
        self.engine._emit("on_call_metadata", self.handle, message)

    @_guarded
    def onCallSdpCreated(self, prm: Any) -> None:
        # Our offer or answer: with SRTP it carries SDES keys (a=crypto) or a SAVP profile.
        sdp = str(prm.sdp.wholeSdp)
        self.srtp = "a=crypto:" in sdp or "RTP/SAVP" in sdp

    @_guarded
    def onStreamDestroyed(self, prm: Any) -> None:
        try:
            stat = self.getStreamStat(prm.streamIdx)
        except pj.Error:
            return
        rx = stat.rtcp.rxStat
        self.stats = StreamStats(
            rx_packets=rx.pkt,
            rx_lost=rx.loss,
            rx_jitter_ms_mean=rx.jitterUsec.mean / 1000.0,
            tx_packets=stat.rtcp.txStat.pkt,
        )

    @_guarded
    def onDtmfEvent(self, prm: Any) -> None:
        method: DtmfMethod = "info" if prm.method == pj.PJSUA_DTMF_METHOD_SIP_INFO else "rfc4733"
        duration = int(prm.duration) if prm.duration < 0xFFFFFFFF else 0
        reports = self.dtmf.event(str(prm.digit), method, int(prm.timestamp), duration,
                                  is_update=bool(prm.flags & _DTMF_IS_UPDATE),
                                  is_end=bool(prm.flags & _DTMF_IS_END), now=time.monotonic())
        for digit, ms, meth in reports:
            self.engine._emit("on_call_dtmf", self.handle, digit, ms, meth)

    def _flush_dtmf(self) -> None:
        for digit, ms, meth in self.dtmf.flush():
            self.engine._emit("on_call_dtmf", self.handle, digit, ms, meth)

    def onCallRedirected(self, prm: Any) -> int:
        # Report a 3xx to the application as the call's end instead of silently dialling the
        # target: the bridge never places calls a peer can steer elsewhere.
        # PJSIP then ends the call as 487; remember the real answer for CallEnd.
        self.redirected = (_response_code(prm.e, 302), str(prm.targetUri))
        return int(pj.PJSIP_REDIRECT_STOP)

    @_guarded
    def onCallTransferRequest(self, prm: Any) -> None:
        # A REFER from the far end would make the bridge dial whatever its Refer-To says (toll
        # fraud): refused. Transfers go only to targets from the profile (SipEngine.transfer).
        prm.statusCode = pj.PJSIP_SC_DECLINE
        self.engine.refused_requests += 1
        log.warning("REFER to %.80r on call %d refused with 603: the bridge only transfers to targets "
                    "from its profile", str(prm.dstUri), self.handle)

    @_guarded
    def onCallReplaceRequest(self, prm: Any) -> None:
        # An INVITE with Replaces would take over this call (RFC 3891) without passing the
        # source allow-list or authentication: refused. A source the gate turns away gets the
        # gate's own answer (403 for a stranger), as for any other INVITE.
        gate = self.engine.gate
        rdata = prm.rdata
        verdict = gate.admit(rdata.srcAddress, rdata.wholeMsg, time.monotonic()) if gate else None
        if verdict is not None and verdict.code != 401:
            prm.statusCode = verdict.code
            prm.reason = verdict.reason
            return
        prm.statusCode = pj.PJSIP_SC_DECLINE
        self.engine.refused_requests += 1
        log.warning("INVITE with Replaces for call %d refused with 603", self.handle)

    @_guarded
    def onCallTransferStatus(self, prm: Any) -> None:
        self.engine._emit("on_transfer_status", self.handle, prm.statusCode, bool(prm.finalNotify))


class _Account(pj.Account):  # type: ignore[misc]
    def __init__(self, engine: SipEngine) -> None:
        super().__init__()
        self.engine = engine

    @_guarded
    def onIncomingCall(self, prm: Any) -> None:
        self.engine._incoming(self, prm)

    @_guarded
    def onRegState(self, prm: Any) -> None:
        self.engine._reg_state(self, prm)


class SipEngine:
    """Owns the pjsua2 endpoint on its own thread. All public methods are safe from any thread."""

    def __init__(self, settings: EngineSettings, sink: SipEventSink, loop: asyncio.AbstractEventLoop) -> None:
        self.settings = settings
        self._sink = sink
        self._loop = loop
        self._commands: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._start_error: BaseException | None = None
        self._stop_requested = False
        self._stopped = threading.Event()
        self._handles = itertools.count(1)
        self._calls: dict[int, _Call] = {}  # sip thread only
        self._dead: list[_Call] = []  # freed after the callback cycle that ended them
        self._ep: Any = None
        self._account: _Account | None = None
        self._writer: _LogWriter | None = None
        self._reg_failures = 0
        self._reg_retry_at: float | None = None
        self.accepting = True  # cleared while draining: new INVITEs get 503
        self._wakeup: Any = pj.MediaWakeup() if NATIVE_MEDIA else None
        self._sender: Any = None  # pj.MediaSender, made with the first pipe (a caller never needs it)
        self.rejected_over_capacity = 0
        self.refused_requests = 0  # REFERs and Replaces from peers
        self.incoming_errors = 0  # INVITEs the application failed on (answered 500)
        self.gate: InboundGate | None = None  # made by start() (it may resolve host names)
        self._next_media_check = 0.0
        self.rejected_invites: dict[str, int] = {}  # by reason (over_capacity, shutting_down), for metrics
        self.conference_ticks = TickCounter()  # counted by _TickPort once the first tap is answered
        self._tick_port: _TickPort | None = None

    # ---- lifecycle --------------------------------------------------------------------

    def start(self, timeout: float = 15.0) -> None:
        s = self.settings
        # Made here, before the SIP thread's start-up clock runs: host names in allow_from are
        # resolved now (blocking DNS, once), and the SIP thread only reads the gate afterwards.
        self.gate = InboundGate(
            s.allow_from, s.rate_limit,
            DigestAuthenticator(*s.inbound_auth) if s.inbound_auth is not None else None,
        )
        self._thread = threading.Thread(target=self._run, name="sip", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise SipStackError(f"the SIP stack did not start within {timeout:.0f} s")
        if self._start_error is not None:
            raise self._start_error

    # ---- native media (loop thread; no PJSIP calls, so no thread registration needed) --------

    @property
    def media_wakeup_fd(self) -> int | None:
        """Readable when some PipeChannel has work (see take_media_work); None without pipes."""
        return self._wakeup.getFd() if self._wakeup is not None else None

    def take_media_work(self) -> list[int]:
        """Handles of the calls whose pipes posted work since the last call."""
        return list(self._wakeup.take()) if self._wakeup is not None else []

    def media_channel(self, handle: int, frame_bytes: int, chunk_frames: int, prebuffer_bytes: int,
                      cap_bytes: int) -> PipeChannel | None:
        """A native channel for call `handle` (None when native media is off: use MediaChannel)."""
        if self._wakeup is None:
            return None
        pipe = pj.MediaPipe(handle, self._wakeup, frame_bytes, _PIPE_RING_FRAMES, chunk_frames,
                            prebuffer_bytes, cap_bytes, _UNDERRUN_GAP_FRAMES)
        if self._sender is None and NATIVE_SEND:
            self._sender = pj.MediaSender()
        return PipeChannel(pipe, frame_bytes, self._sender)

    def stop(self, timeout: float = 10.0) -> None:
        """Hang up every call, unregister and destroy the endpoint."""
        self._stop_requested = True
        if self._thread is not None:
            self._thread.join(timeout)

    def refused_by_guard(self) -> dict[str, int]:
        """Requests the native guard answered with an error or dropped, by reason (any thread:
        plain counters, read without a lock)."""
        if not hasattr(pj, "SipGuard"):
            return {}
        return dict(zip(REFUSED_REQUEST_REASONS, (int(n) for n in pj.SipGuard.counts()), strict=False))

    @property
    def active_calls(self) -> int:
        return len(self._calls)

    @property
    def running(self) -> bool:
        """The SIP thread is alive (for /healthz)."""
        return self._thread is not None and self._thread.is_alive()

    # ---- commands (any thread) ----------------------------------------------------------

    def submit(self, fn: Callable[[], T]) -> concurrent.futures.Future[T]:
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                future.set_result(fn())
            except BaseException as exc:  # noqa: BLE001 - delivered to the caller through the future
                future.set_exception(exc)

        self._commands.put(run)
        return future

    def ringing(self, handle: int) -> None:
        self._call_op(handle, lambda call: call.answer(_op(180)))

    def answer(self, handle: int, channel: MediaChannel | PipeChannel) -> None:
        def do(call: _Call) -> None:
            call.channel = channel
            call.answer(_op(200))
            call.ok_sent_at = time.monotonic()

        self._call_op(handle, do)

    def ringing_tap(self, handle: int, media_count: int, audio_count: int) -> None:
        """180 for a tap: fixes the call setting (every offered audio stream answered, receive only)."""
        def do(call: _Call) -> None:
            call.tap_media_count = media_count
            call.answer(_tap_op(180, media_count, audio_count))

        self._call_op(handle, do)

    def answer_tap(self, handle: int, channels: list[MediaChannel | None]) -> None:
        """200 for a tap: channels[i] gets the audio of SDP media line i; nothing is ever sent
        into the call (the answer is a=recvonly and no port transmits to the call)."""
        def do(call: _Call) -> None:
            self._ensure_tick_port()
            call.tap_channels = list(channels)
            audio_count = sum(1 for channel in channels if channel is not None)
            call.answer(_tap_op(200, max(call.tap_media_count, len(channels)), audio_count))

        self._call_op(handle, do)

    def _ensure_tick_port(self) -> None:
        if self._tick_port is not None:
            return
        fmt = pj.MediaFormatAudio()
        fmt.init(pj.PJMEDIA_FORMAT_PCM, self.settings.clock_rate, 1, 20000, 16)
        port = _TickPort(self.conference_ticks)
        port.createPort("ticks", fmt)
        port.startTransmit(self._ep.audDevManager().getPlaybackDevMedia())
        self._tick_port = port

    def reject(self, handle: int, code: int, reason: str = "", headers: dict[str, str] | None = None) -> None:
        def do(call: _Call) -> None:
            call.ended_locally = True
            call.answer(_op(code, reason, headers))

        self._call_op(handle, do)

    def redirect(self, handle: int, target_uri: str) -> None:
        """Pre-answer transfer: 302 Moved Temporarily with the target as Contact."""
        self.reject(handle, 302, "Moved Temporarily", {"Contact": f"<{target_uri}>"})

    def hangup(self, handle: int, code: int = 0, reason: str = "") -> None:
        def do(call: _Call) -> None:
            call.ended_locally = True
            call.hangup(_op(code, reason))

        self._call_op(handle, do)

    def transfer(self, handle: int, target_uri: str) -> None:
        """Blind transfer of an answered call (REFER)."""
        self._call_op(handle, lambda call: call.xfer(target_uri, _op(0)))

    def send_dtmf(self, handle: int, digits: str, method: DtmfMethod = "rfc4733") -> None:
        def do(call: _Call) -> None:
            prm = pj.CallSendDtmfParam()
            prm.digits = digits
            prm.method = pj.PJSUA_DTMF_METHOD_SIP_INFO if method == "info" else pj.PJSUA_DTMF_METHOD_RFC2833
            call.sendDtmf(prm)

        self._call_op(handle, do)

    def make_call(
        self, uri: str, channel: MediaChannel, headers: dict[str, str] | None = None
    ) -> concurrent.futures.Future[int]:
        def do() -> int:
            assert self._account is not None
            handle = next(self._handles)
            call = _Call(self, self._account, handle)
            call.channel = channel
            prm = _op(0, "", headers)
            prm.opt.audioCount = 1
            prm.opt.videoCount = 0
            call.makeCall(uri, prm)
            self._calls[handle] = call
            return handle

        return self.submit(do)

    def _call_op(self, handle: int, fn: Callable[[_Call], None]) -> None:
        def run() -> None:
            call = self._calls.get(handle)
            if call is None:
                log.debug("call %d is gone; command dropped", handle)
                return
            try:
                fn(call)
            except pj.Error as exc:
                # A race with the far end (e.g. hanging up a call that just ended) is normal.
                log.warning("SIP operation on call %d failed: %s", handle, exc.info())

        self._commands.put(run)

    # ---- the sip thread ----------------------------------------------------------------

    def _run(self) -> None:
        error: BaseException | None = None
        try:
            self._init_stack()
        except pj.Error as exc:
            error = SipStackError(_describe_start_error(self.settings, exc))
        except BaseException as exc:  # noqa: BLE001 - start() re-raises it in the caller's thread
            error = exc
        if error is not None:
            # Tear down here: pjlib objects must die on a thread registered with pjlib.
            self._destroy()
            self._start_error = error
            self._ready.set()
            self._stopped.set()
            return
        self._ready.set()
        try:
            while not self._stop_requested:
                self._ep.libHandleEvents(_POLL_MS)
                self._free_dead()
                self._run_commands()
                self._run_timers()
            self._shutdown()
        finally:
            self._stopped.set()

    def _run_commands(self) -> None:
        while True:
            try:
                command = self._commands.get_nowait()
            except queue.Empty:
                return
            command()

    def _run_timers(self) -> None:
        now = time.monotonic()
        if self._reg_retry_at is not None and now >= self._reg_retry_at and self._account is not None:
            self._reg_retry_at = None
            try:
                self._account.setRegistration(True)
            except pj.Error as exc:
                log.warning("re-registration could not be sent: %s", exc.info())
                self._schedule_reg_retry()
        for call in list(self._calls.values()):
            since = call.dtmf.pending_since
            if since is not None and now - since > _DTMF_END_WAIT_S:
                call._flush_dtmf()
            if (call.ok_sent_at is not None and not call.answered and not call.end_reported
                    and now - call.ok_sent_at > _ACK_WAIT_S):
                self._ack_timeout(call)
        if now >= self._next_media_check:
            self._next_media_check = now + 1.0
            if self.gate is not None:
                self.gate.tick(now)
            self._check_rtp(now)

    def _check_rtp(self, now: float) -> None:
        """Once a second: tell the loop about answered calls whose caller stopped sending RTP."""
        timeout = self.settings.rtp_timeout_s
        if timeout <= 0:
            return
        for call in self._calls.values():
            if not call.answered or call.media_index < 0:
                continue
            if call.rtp_watch is None:
                call.rtp_watch = RtpWatch(timeout)
            try:
                # A tap counts every stream it records: one silent side must not end the call.
                indexes = list(call.tap_slots) if call.tap_channels is not None else [call.media_index]
                rx_packets = sum(int(call.getStreamStat(i).rtcp.rxStat.pkt) for i in indexes)
            except pj.Error:
                continue
            if call.rtp_watch.update(now, rx_packets, call.rx_expected):
                log.warning("call %d: no RTP from the caller for %.0f s; ending it", call.handle, timeout)
                self._emit("on_call_rtp_timeout", call.handle, timeout)

    def _init_stack(self) -> None:
        s = self.settings
        ep = pj.Endpoint()
        self._ep = ep
        with _quiet_stdout():
            # pjlib logs its banner to stdout at level 5 before libInit() applies our log config.
            ep.libCreate()
        cfg = pj.EpConfig()
        if cfg.uaConfig.maxCalls < s.max_calls:
            raise SipStackError(
                f"this pjsua2 build allows {cfg.uaConfig.maxCalls} calls but the profile asks for "
                f"{s.max_calls}; install the project's pjsua2 build (scripts/build-pjsua2.sh), "
                "not the PyPI wheel"
            )
        # Keep pjsua's own limit at the compiled maximum: the admission limit is ours, so that
        # an INVITE over capacity gets 503 with Retry-After instead of pjsua's bare 486.
        cfg.uaConfig.threadCnt = 0
        cfg.uaConfig.mainThreadOnly = True
        cfg.uaConfig.userAgent = s.user_agent
        cfg.logConfig.level = s.pjsip_log_level
        cfg.logConfig.consoleLevel = s.pjsip_log_level
        cfg.logConfig.msgLogging = 0
        writer = _LogWriter()
        cfg.logConfig.writer = writer
        writer.__disown__()  # libDestroy() deletes the writer
        self._writer = writer
        med = cfg.medConfig
        med.clockRate = s.clock_rate
        med.sndClockRate = s.clock_rate
        med.channelCount = 1
        med.audioFramePtime = 20
        med.ptime = 20
        med.threadCnt = 1
        med.hasIoqueue = True
        med.noVad = True  # the bot hears a continuous stream; no comfort-noise gaps in RTP
        med.ecTailLen = 0
        # Never close the (null) sound device when idle: reopened for the next call, its clock
        # would start at a new phase, and `tick_phase_ms` would be lost.
        med.sndAutoCloseTime = -1
        med.quality = 4  # resampling quality when a G.722 leg meets the 8 kHz clock
        ep.libInit(cfg)
        if hasattr(pj, "SipGuard"):
            # Answers what PJSIP would drop or pass on (see scripts/pjsua2_sip_guard.hpp).
            ipv6_media = ":" in s.listen_host or ":" in (s.public_address or "")
            pj.SipGuard.install(ipv6_media)
            rtp, rtcp = _LATCHING[s.rtp_latching]
            pj.SipGuard.setLatching(rtp, rtcp)
            sources = pj.StringVector()
            for network in self.gate.policy.networks if self.gate is not None else ():
                sources.append(str(network))
            pj.SipGuard.setReplacesSources(sources)

        for proto in s.transports:
            tc = pj.TransportConfig()
            tc.port = s.listen_port
            if s.listen_host not in ("0.0.0.0", ""):
                tc.boundAddress = s.listen_host
            if s.public_address:
                tc.publicAddress = s.public_address
            kind = pj.PJSIP_TRANSPORT_UDP if proto == "udp" else pj.PJSIP_TRANSPORT_TCP
            try:
                ep.transportCreate(kind, tc)
            except pj.Error as exc:
                raise SipStackError(
                    f"cannot listen for SIP on {proto.upper()} {s.listen_host}:{s.listen_port}: "
                    f"{exc.reason} (is another instance running on that port?)"
                ) from None
        if s.tls is not None:
            self._create_tls_transport(ep, s.tls)
        ep.libStart()
        if s.tick_phase_ms is not None:
            _wait_for_phase(s.tick_phase_ms / 1000.0)
            log.info("media clock: ticks %d ms past every 20 ms (media.tick_phase_ms)", s.tick_phase_ms)
        # The null device's clock drives the conference: its phase is set here, for good (see
        # sndAutoCloseTime above).
        ep.audDevManager().setNullDev()
        for codec in ep.codecEnum2():
            ep.codecSetPriority(codec.codecId, 0)
        for rank, name in enumerate(s.codecs):
            ep.codecSetPriority(_CODEC_IDS[name], 250 - rank)

        ac = pj.AccountConfig()
        host = s.public_address or s.listen_host
        reg = s.register
        if reg is not None:
            ac.idUri = reg.identity or f"sip:{reg.username}@{_registrar_host(reg.registrar)}"
            ac.regConfig.registrarUri = reg.registrar
            ac.regConfig.timeoutSec = reg.expires
            ac.regConfig.retryIntervalSec = 0  # our own backoff (see _schedule_reg_retry)
            ac.regConfig.firstRetryIntervalSec = 0
            ac.sipConfig.authCreds.append(pj.AuthCredInfo("digest", reg.realm, reg.username, 0, reg.password))
            if reg.outbound_proxy:
                ac.sipConfig.proxies.append(reg.outbound_proxy)
            if reg.contact:
                ac.sipConfig.contactForced = f"<{reg.contact}>"
        else:
            ac.idUri = f"sip:bridge@{host}:{s.listen_port}"
            ac.regConfig.registerOnAdd = False
        if s.client_auth is not None and reg is None:
            user, password = s.client_auth
            ac.sipConfig.authCreds.append(pj.AuthCredInfo("digest", "*", user, 0, password))
        # SIPREC (RFC 7866) recording sessions are taken as taps; PJSIP checks their form.
        ac.callConfig.siprecUse = pj.PJSUA_SIP_SIPREC_OPTIONAL
        ac.mediaConfig.srtpUse = _SRTP_USE[s.srtp]
        # SDES keys may travel over plain UDP/TCP SIP: SRTP where the peer offers it still beats
        # clear RTP on a separate path. For keys that never travel in clear, use sip.tls.
        ac.mediaConfig.srtpSecureSignaling = 0
        mt = ac.mediaConfig.transportConfig
        mt.port = s.rtp_port_start
        mt.portRange = s.rtp_port_range
        if s.listen_host not in ("0.0.0.0", ""):
            mt.boundAddress = s.listen_host
        if s.public_address:
            mt.publicAddress = s.public_address
        account = _Account(self)
        account.create(ac, True)
        self._account = account
        log.info(
            "SIP listening on %s %s:%d (%s)", "/".join(t.upper() for t in s.transports), s.listen_host,
            s.listen_port, "registering as " + ac.idUri if reg else "trunk mode: accepting INVITEs directly",
        )
        if self.gate is not None:
            for line in self.gate.describe():
                log.info("%s", line)

    def _create_tls_transport(self, ep: Any, t: TlsParams) -> None:
        for path, key in ((t.cert_file, "sip.tls.cert_file"), (t.key_file, "sip.tls.key_file"),
                          (t.ca_file, "sip.tls.ca_file")):
            if path and not os.access(path, os.R_OK):
                raise SipStackError(f"{key}: cannot read {path}; check the path and its permissions")
        tc = pj.TransportConfig()
        tc.port = t.listen_port
        if t.listen_host not in ("0.0.0.0", ""):
            tc.boundAddress = t.listen_host
        if self.settings.public_address:
            tc.publicAddress = self.settings.public_address
        tls = tc.tlsConfig
        tls.certFile = t.cert_file
        tls.privKeyFile = t.key_file
        if t.ca_file:
            tls.CaListFile = t.ca_file
        tls.proto = pj.PJ_SSL_SOCK_PROTO_TLS1_2 | pj.PJ_SSL_SOCK_PROTO_TLS1_3
        tls.verifyServer = t.verify_server
        tls.verifyClient = t.require_client_cert
        tls.requireClientCert = t.require_client_cert
        try:
            ep.transportCreate(pj.PJSIP_TRANSPORT_TLS, tc)
        except pj.Error as exc:
            raise SipStackError(
                f"cannot listen for SIP on TLS {t.listen_host}:{t.listen_port}: {exc.reason} (is the port "
                "in use, or are sip.tls.cert_file and key_file not a matching PEM certificate and key?)"
            ) from None
        log.info("SIP listening on TLS %s:%d%s", t.listen_host, t.listen_port,
                 " (client certificates required)" if t.require_client_cert else "")

    def _shutdown(self) -> None:
        ep = self._ep
        self._run_commands()
        if self.gate is not None:
            self.gate.throttle.flush(time.monotonic(), force=True)
            refused = self.refused_by_guard()
            log.info("INVITEs turned away: %s, over_capacity=%d; peer REFER/Replaces refused: %d; "
                     "requests refused by the SIP guard: %s",
                     " ".join(f"{k}={v}" for k, v in self.gate.counters.items()),
                     self.rejected_over_capacity, self.refused_requests,
                     " ".join(f"{k}={v}" for k, v in refused.items()) or "none",
                     extra={"event": "access_counters", **self.gate.counters,
                            "over_capacity": self.rejected_over_capacity,
                            "refused_requests": self.refused_requests,
                            "incoming_errors": self.incoming_errors,
                            "guard": refused})
        if self._calls:
            log.info("hanging up %d call(s)", len(self._calls))
            for call in list(self._calls.values()):
                call.ended_locally = True
                try:
                    call.hangup(_op(0))
                except pj.Error:
                    pass
        deadline = time.monotonic() + 3.0
        while self._calls and time.monotonic() < deadline:
            ep.libHandleEvents(20)
            self._free_dead()
        if self._account is not None and self.settings.register is not None:
            try:
                self._account.setRegistration(False)
                end = time.monotonic() + 1.0
                while time.monotonic() < end:
                    ep.libHandleEvents(20)
            except pj.Error:
                pass
        self._destroy()

    def _destroy(self) -> None:
        # Any pjsua2 object alive after libDestroy() aborts the process: drop them all first.
        for call in self._calls.values():
            call.release_media()
        self._calls.clear()
        self._free_dead()
        self._account = None
        self._tick_port = None
        gc.collect()
        if self._ep is not None and hasattr(pj, "SipGuard"):
            pj.SipGuard.uninstall()
        if self._ep is not None:
            try:
                self._ep.libDestroy()
            except pj.Error as exc:
                log.warning("libDestroy: %s", exc.info())
            self._ep = None

    # ---- callbacks from pjsua2 objects (sip thread) ----------------------------------------

    def _emit(self, method: str, *args: Any) -> None:
        try:
            self._loop.call_soon_threadsafe(getattr(self._sink, method), *args)
        except RuntimeError:
            pass  # the loop is closed: the process is exiting

    def _incoming(self, account: _Account, prm: Any) -> None:
        handle = next(self._handles)
        call = _Call(self, account, handle, prm.callId)
        self._calls[handle] = call
        ci = call.getInfo()
        rdata = prm.rdata
        verdict = self.gate.admit(rdata.srcAddress, rdata.wholeMsg, time.monotonic()) if self.gate else None
        if verdict is not None:
            # Not let in (source, rate or credentials): never seen by the loop or a bot. Every
            # answer here is queued to run after this callback returns: a final answer inside
            # onIncomingCall resets the call, and pjsua2 (Endpoint::on_incoming_call) then frees
            # the INVITE's cloned rdata a second time, an assertion that aborts the process.
            self.reject(handle, verdict.code, verdict.reason, verdict.headers)
            return
        # Calls already reported ended (a 200 never ACKed, waiting for PJSIP's BYE to time out)
        # hold no bot socket and no slot.
        live = sum(1 for other in self._calls.values() if not other.end_reported)
        if not self.accepting or live > self.settings.max_calls:
            self.rejected_over_capacity += 1
            reason = "Shutting Down" if not self.accepting else "Over Capacity"
            key = "shutting_down" if not self.accepting else "over_capacity"
            self.rejected_invites[key] = self.rejected_invites.get(key, 0) + 1
            self.reject(handle, 503, reason, {"Retry-After": str(self.settings.retry_after_s)})
            log.warning("INVITE %s from %s rejected: 503 %s", printable(ci.callIdString), rdata.srcAddress,
                        reason, extra={"call_sid": printable(ci.callIdString)})
            return
        message = rdata.wholeMsg
        incoming = IncomingCall(
            handle=handle,
            call_id=printable(ci.callIdString),
            from_uri=printable(ci.remoteUri),
            to_uri=printable(ci.localUri),
            from_user=printable(uri_user(ci.remoteUri)),
            to_user=printable(uri_user(ci.localUri)),
            source=rdata.srcAddress,
            headers=tuple((printable(name), printable(value)) for name, value in parse_headers(message)),
            # Kept as received (lone surrogates for non-UTF-8 bytes): the tap's parsers judge it.
            body=_message_body(message),
        )
        try:
            self._loop.call_soon_threadsafe(self._deliver_incoming, incoming)
        except RuntimeError:
            pass  # the loop is closed: the process is exiting

    def _deliver_incoming(self, incoming: IncomingCall) -> None:
        """On the loop: hand a new call to the application, which must give it a final answer.

        Whatever goes wrong there, the caller still gets one (500) and the call's slot is freed:
        a bug triggered by one odd INVITE must not hold a slot and its sockets for good."""
        try:
            self._sink.on_incoming_call(incoming)
        except Exception:  # the application's bug: counted, logged with its traceback, answered 500
            self.incoming_errors += 1
            log.exception("INVITE %s could not be handled; answered 500", incoming.call_id,
                          extra={"call_sid": incoming.call_id})
            self.reject(incoming.handle, 500, "Server Internal Error")

    def _ack_timeout(self, call: _Call) -> None:
        log.warning("call %d: the caller never ACKed the 200 (%.0f s); ending it", call.handle, _ACK_WAIT_S)
        # Reported first: hangup() may end the call at once, and that end (PJSIP's own status
        # for a call it gave up on) is not the cause.
        call.end_reported = True
        self._emit("on_call_ended", call.handle, CallEnd(code=408, reason="no ACK", ended_by="remote"),
                   call.stats)
        call.ended_locally = True
        try:
            call.hangup(_op(0))
        except pj.Error as exc:
            log.debug("hang-up after a missing ACK: %s", exc.info())

    def _free_dead(self) -> None:
        for call in self._dead:
            call.release_media()
        self._dead.clear()

    def _call_gone(self, call: _Call, end: CallEnd) -> None:
        self._calls.pop(call.handle, None)
        # Never delete a Call inside its own callback: it is freed after this cycle. pjsua hands
        # out call ids round-robin, so the id cannot be reused before then.
        self._dead.append(call)
        if not call.end_reported:
            call.end_reported = True
            self._emit("on_call_ended", call.handle, end, call.stats)

    def _reg_state(self, account: _Account, prm: Any) -> None:
        info = account.getInfo()
        state = RegistrationState(
            code=prm.code, reason=prm.reason, active=bool(info.regIsActive), expires=int(prm.expiration)
        )
        self._emit("on_registration", state)
        if self._stop_requested:
            return
        if 200 <= prm.code < 300:
            self._reg_failures = 0
            self._reg_retry_at = None
        else:
            self._reg_failures += 1
            self._schedule_reg_retry()

    def _schedule_reg_retry(self) -> None:
        reg = self.settings.register
        if reg is None:
            return
        delay = min(reg.retry_max_s, reg.retry_min_s * (2 ** min(self._reg_failures - 1, 16)))
        delay *= random.uniform(0.8, 1.2)  # spread a fleet's retries after a PBX restart
        self._reg_retry_at = time.monotonic() + delay
        log.info("registration retry in %.1f s (failure %d)", delay, self._reg_failures)


@contextlib.contextmanager
def _quiet_stdout() -> Iterator[None]:
    sys.stdout.flush()
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


# Packets in a row from a new source that move a stream there (RTP, RTCP): "first" never once the
# SDP address was heard (a stream that has heard nothing yet still latches, for NAT); "follow"
# is PJSIP's default rule.
_NEVER = 0xFFFFFFFF
_LATCHING = {"first": (_NEVER, _NEVER), "follow": (10, 3)}

_SRTP_USE = {
    "optional": pj.PJMEDIA_SRTP_OPTIONAL,
    "mandatory": pj.PJMEDIA_SRTP_MANDATORY,
    "disabled": pj.PJMEDIA_SRTP_DISABLED,
}


def _op(code: int, reason: str = "", headers: dict[str, str] | None = None) -> Any:
    prm = pj.CallOpParam(True)
    prm.statusCode = code
    if reason:
        prm.reason = reason
    for name, value in (headers or {}).items():
        hdr = pj.SipHeader()
        hdr.hName = name
        hdr.hValue = value
        prm.txOption.headers.append(hdr)
    return prm


def _tap_op(code: int, media_count: int, audio_count: int) -> Any:
    """The same call setting for a tap's 180 and 200 (PJSIP takes the first one it sees): every
    offered audio stream answered, each receive only (a=recvonly)."""
    prm = _op(code)
    prm.opt.audioCount = max(1, audio_count)
    prm.opt.videoCount = 0
    prm.opt.flag |= pj.PJSUA_CALL_SET_MEDIA_DIR
    for _ in range(max(1, media_count)):
        prm.opt.mediaDir.append(pj.PJMEDIA_DIR_DECODING)
    return prm


def _message_body(message: str) -> str:
    """What follows the header block of a SIP message."""
    for separator in ("\r\n\r\n", "\n\n"):
        _, found, body = message.partition(separator)
        if found:
            return body
    return ""


def _response_code(event: Any, default: int) -> int:
    """The status code of the SIP response behind a pjsua2 event, if it carries one."""
    try:
        first_line = str(event.body.tsxState.src.rdata.wholeMsg).split("\r\n", 1)[0]
        return int(first_line.split()[1])
    except (AttributeError, IndexError, ValueError):
        return default


def _registrar_host(registrar: str) -> str:
    host = registrar.split(":", 1)[1] if ":" in registrar else registrar
    host = host.split(";", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _wait_for_phase(phase_s: float) -> None:
    """Sleep until time.monotonic() is `phase_s` past a multiple of the 20 ms tick. PJSIP's clock
    runs on the same monotonic clock and schedules each tick a whole period after the last, so a
    clock started now keeps this phase."""
    time.sleep((phase_s - time.monotonic() % TICK_S) % TICK_S)


def _describe_start_error(settings: EngineSettings, exc: Any) -> str:
    return f"the SIP stack failed to start: {exc.title}: {exc.reason}"


def pjsua2_max_calls() -> int:
    """PJSUA_MAX_CALLS of the installed pjsua2 (1024 for the project's build, 4 for PyPI's)."""
    return int(pj.EpConfig().uaConfig.maxCalls)
