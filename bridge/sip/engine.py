"""The pjsua2 user agent. bridge/sip/ is the only package that imports pjsua2: this module owns the
endpoint, its thread, its commands and timers; calls.py the calls and account, inbound.py new
INVITEs and the ACK/RTP checks, registration.py the registration retry, ports.py the conference
ports, stack.py the start-up configuration, settings.py what the engine is started with, and
router.py takes the events on the loop to each call's owner.

Threads (see docs/architecture.md):
- the engine's own "sip" thread calls `libCreate()` and then polls `libHandleEvents()`; with
  `mainThreadOnly` every pjsua2 callback runs on it, and it runs the commands the loop submits,
  so pjsua2 objects are only ever touched from one Python thread;
- PJSIP's media thread receives RTP; its conference "clock" thread feeds each call's C++
  `PipeMediaPort`, which moves bytes through the call's `MediaPipe` without entering Python (the
  loop reads the pipe; see bridge/audio/pipe_channel.py). Recorded calls and taps use Python
  `MediaPort`s (bridge/sip/ports.py), which only move bytes through a `MediaChannel`. pjsua2
  objects other than the pipes and the wakeup (plain C++, no PJSIP calls) are still touched on
  the sip thread only;
- events go to the asyncio loop with `call_soon_threadsafe` (SIP events are rare; media never
  goes this way).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import pjsua2 as pj

from bridge.audio.channel import MediaChannel
from bridge.audio.pipe_channel import PipeChannel
from bridge.audio.ticks import TickCounter
from bridge.errors import SipStackError
from bridge.sip import REFUSED_REQUEST_REASONS, CallEnd, DtmfMethod, SipEventSink, StreamStats
from bridge.sip.access import InboundGate
from bridge.sip.calls import SipAccount, SipCall, op, tap_op
from bridge.sip.digest import DigestAuthenticator
from bridge.sip.inbound import InboundCalls
from bridge.sip.ports import (
    NATIVE_MEDIA,
    NATIVE_SEND,
    PIPE_RING_FRAMES,
    UNDERRUN_GAP_FRAMES,
    TickPort,
    quiesce,
)
from bridge.sip.registration import RegistrationRetry, registration_state
from bridge.sip.settings import EngineSettings, RegisterParams, TlsParams
from bridge.sip.stack import LogWriter, describe_start_error, init_stack

__all__ = ["EngineSettings", "RegisterParams", "SipEngine", "TlsParams"]

log = logging.getLogger("bridge.sip")

T = TypeVar("T")

_POLL_MS = 5
# An RFC 4733 end packet can be lost; a digit still waiting for one after this long is reported.
_DTMF_END_WAIT_S = 1.5


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
        self._calls: dict[int, SipCall] = {}  # sip thread only
        self._dead: list[SipCall] = []  # freed after the callback cycle that ended them
        self._ep: Any = None
        self._account: SipAccount | None = None
        self._writer: LogWriter | None = None
        self._registration = RegistrationRetry(settings.register)
        self.accepting = True  # cleared while draining: new INVITEs get 503
        self._wakeup: Any = pj.MediaWakeup() if NATIVE_MEDIA else None
        self._sender: Any = None  # pj.MediaSender, made with the first pipe (a caller never needs it)
        self.refused_requests = 0  # REFERs and Replaces from peers
        self.gate: InboundGate | None = None  # made by start() (it may resolve host names)
        self.inbound = InboundCalls(self, self._calls, sink, loop)
        self._next_media_check = 0.0
        self.conference_ticks = TickCounter()  # counted by TickPort once the first tap is answered
        self._tick_port: TickPort | None = None

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
        pipe = pj.MediaPipe(handle, self._wakeup, frame_bytes, PIPE_RING_FRAMES, chunk_frames,
                            prebuffer_bytes, cap_bytes, UNDERRUN_GAP_FRAMES)
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

    def invites_turned_away(self) -> dict[str, int]:
        """INVITEs the engine answered itself, by reason: 503 over capacity or shutting down, and
        the access gate's refusals (source not allowed, rate limited, digest challenge or failure)."""
        counts = dict(self.inbound.rejected_invites)
        if self.gate is not None:
            counts.update((kind, n) for kind, n in self.gate.counters.items() if kind != "auth_ok")
        return counts

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
        self._call_op(handle, lambda call: call.answer(op(180)))

    def answer(self, handle: int, channel: MediaChannel | PipeChannel) -> None:
        def do(call: SipCall) -> None:
            call.channel = channel
            call.answer(op(200))
            call.ok_sent_at = time.monotonic()

        self._call_op(handle, do)

    def ringing_tap(self, handle: int, media_count: int, audio_count: int) -> None:
        """180 for a tap: fixes the call setting (every offered audio stream answered, receive only)."""
        def do(call: SipCall) -> None:
            call.tap_media_count = media_count
            call.answer(tap_op(180, media_count, audio_count))

        self._call_op(handle, do)

    def answer_tap(self, handle: int, channels: list[MediaChannel | None]) -> None:
        """200 for a tap: channels[i] gets the audio of SDP media line i; nothing is ever sent
        into the call (the answer is a=recvonly and no port transmits to the call)."""
        def do(call: SipCall) -> None:
            self._ensure_tick_port()
            call.tap_channels = list(channels)
            audio_count = sum(1 for channel in channels if channel is not None)
            call.answer(tap_op(200, max(call.tap_media_count, len(channels)), audio_count))

        self._call_op(handle, do)

    def _ensure_tick_port(self) -> None:
        if self._tick_port is not None:
            return
        fmt = pj.MediaFormatAudio()
        fmt.init(pj.PJMEDIA_FORMAT_PCM, self.settings.clock_rate, 1, 20000, 16)
        port = TickPort(self.conference_ticks)
        port.createPort("ticks", fmt)
        port.startTransmit(self._ep.audDevManager().getPlaybackDevMedia())
        self._tick_port = port

    def reject(self, handle: int, code: int, reason: str = "", headers: dict[str, str] | None = None) -> None:
        def do(call: SipCall) -> None:
            call.ended_locally = True
            call.answer(op(code, reason, headers))

        self._call_op(handle, do)

    def redirect(self, handle: int, target_uri: str) -> None:
        """Pre-answer transfer: 302 Moved Temporarily with the target as Contact."""
        self.reject(handle, 302, "Moved Temporarily", {"Contact": f"<{target_uri}>"})

    def hangup(self, handle: int, code: int = 0, reason: str = "") -> None:
        def do(call: SipCall) -> None:
            call.ended_locally = True
            call.hangup(op(code, reason))

        self._call_op(handle, do)

    def transfer(self, handle: int, target_uri: str) -> None:
        """Blind transfer of an answered call (REFER)."""
        self._call_op(handle, lambda call: call.xfer(target_uri, op(0)))

    def send_dtmf(self, handle: int, digits: str, method: DtmfMethod = "rfc4733") -> None:
        def do(call: SipCall) -> None:
            prm = pj.CallSendDtmfParam()
            prm.digits = digits
            prm.method = pj.PJSUA_DTMF_METHOD_SIP_INFO if method == "info" else pj.PJSUA_DTMF_METHOD_RFC2833
            call.sendDtmf(prm)

        self._call_op(handle, do)

    def new_handle(self) -> int:
        """A handle for a call the application places (handles are never reused)."""
        return next(self._handles)

    def dial(self, handle: int, uri: str, from_uri: str | None, headers: Mapping[str, str],
             channel: MediaChannel | PipeChannel, early_media: bool = False) -> None:
        """Place call `handle` to `uri` with its audio channel attached. Its events (progress,
        answer, media, end) reach the sink like an inbound call's; an INVITE that cannot even be
        sent (a URI PJSIP refuses) ends at once with status 0."""
        def run() -> None:
            try:
                self._dial(handle, uri, from_uri, dict(headers), channel, early_media, outbound=True)
            except pj.Error as exc:
                self._calls.pop(handle, None)
                log.warning("call %d to %s could not be placed: %s", handle, uri, exc.info())
                self.emit("on_call_ended", handle, CallEnd(0, exc.info(), "local"), StreamStats())

        self._commands.put(run)

    def make_call(
        self, uri: str, channel: MediaChannel, headers: dict[str, str] | None = None
    ) -> concurrent.futures.Future[int]:
        """Place a call and return its handle (the test caller)."""
        def do() -> int:
            handle = next(self._handles)
            # The test caller's calls connect their audio at once, as they always have.
            self._dial(handle, uri, None, headers or {}, channel, early_media=False, outbound=False)
            return handle

        return self.submit(do)

    def _dial(self, handle: int, uri: str, from_uri: str | None, headers: dict[str, str],
              channel: MediaChannel | PipeChannel, early_media: bool, *, outbound: bool) -> None:
        assert self._account is not None
        call = SipCall(self, self._account, handle)
        call.channel = channel
        call.outbound = outbound
        call.early_media = early_media
        prm = op(0, "", headers)
        prm.opt.audioCount = 1
        prm.opt.videoCount = 0
        if from_uri:
            prm.txOption.localUri = from_uri
        # Known before makeCall: its callbacks may run inside it.
        self._calls[handle] = call
        call.makeCall(uri, prm)

    def _call_op(self, handle: int, fn: Callable[[SipCall], None]) -> None:
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
            self._writer, self._account = init_stack(self.settings, self.gate, self._keep_endpoint,
                                                     lambda: SipAccount(self))
        except pj.Error as exc:
            error = SipStackError(describe_start_error(self.settings, exc))
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

    def _keep_endpoint(self, ep: Any) -> None:
        self._ep = ep

    def _run_commands(self) -> None:
        while True:
            try:
                command = self._commands.get_nowait()
            except queue.Empty:
                return
            command()

    def _run_timers(self) -> None:
        now = time.monotonic()
        self._registration.tick(now, self._account)
        for call in self._calls.values():
            since = call.dtmf.pending_since
            if since is not None and now - since > _DTMF_END_WAIT_S:
                call._flush_dtmf()
        if now >= self._next_media_check:
            self._next_media_check = now + 1.0
            if self.gate is not None:
                self.gate.tick(now)
            self.inbound.check(now)

    def _shutdown(self) -> None:
        ep = self._ep
        self._run_commands()
        if self.gate is not None:
            self.gate.throttle.flush(time.monotonic(), force=True)
            refused = self.refused_by_guard()
            log.info("INVITEs turned away: %s, over_capacity=%d; peer REFER/Replaces refused: %d; "
                     "requests refused by the SIP guard: %s",
                     " ".join(f"{k}={v}" for k, v in self.gate.counters.items()),
                     self.inbound.rejected_over_capacity, self.refused_requests,
                     " ".join(f"{k}={v}" for k, v in refused.items()) or "none",
                     extra={"event": "access_counters", **self.gate.counters,
                            "over_capacity": self.inbound.rejected_over_capacity,
                            "refused_requests": self.refused_requests,
                            "incoming_errors": self.inbound.incoming_errors,
                            "guard": refused})
        if self._calls:
            log.info("hanging up %d call(s)", len(self._calls))
            for call in list(self._calls.values()):
                call.ended_locally = True
                try:
                    call.hangup(op(0))
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
        if self._tick_port is not None:
            quiesce(self._tick_port)
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

    def emit(self, method: str, *args: Any) -> None:
        try:
            self._loop.call_soon_threadsafe(getattr(self._sink, method), *args)
        except RuntimeError:
            pass  # the loop is closed: the process is exiting

    def incoming_call(self, account: SipAccount, prm: Any) -> None:
        handle = next(self._handles)
        call = SipCall(self, account, handle, prm.callId)
        self._calls[handle] = call
        self.inbound.admit(call, prm)

    def _free_dead(self) -> None:
        for call in self._dead:
            call.release_media()
        self._dead.clear()

    def call_gone(self, call: SipCall, end: CallEnd) -> None:
        self._calls.pop(call.handle, None)
        # Never delete a Call inside its own callback: it is freed after this cycle. pjsua hands
        # out call ids round-robin, so the id cannot be reused before then.
        self._dead.append(call)
        if not call.end_reported:
            call.end_reported = True
            self.emit("on_call_ended", call.handle, end, call.stats)

    def registration_changed(self, account: SipAccount, prm: Any) -> None:
        self.emit("on_registration", registration_state(account, prm))
        if not self._stop_requested:
            self._registration.answered(prm.code)
