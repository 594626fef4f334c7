"""The bridge process: one SIP engine, the calls it carries, the media pump, and shutdown.

Calls on native pipes (the default) wake the loop through one eventfd when a call has work (a
whole chunk of caller audio, a mark's audio played, a latency probe passed), and only those calls
are pumped; the conference clock thread never runs Python for them. Calls on Python channels
(recorded calls, taps) wake it from the clock thread at most once per 20 ms tick for all of them
together: the first frame of a tick schedules one drain, which pumps every call that is due. A
slow fallback pump covers both in case a wake-up is ever missed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import gc
import logging
import signal
import time
import weakref
from collections.abc import Sequence
from typing import Any

from bridge.audio.latency import LatencyHistogram, TickClock
from bridge.call.bridged import BridgeCall
from bridge.call.dialer import Dialer
from bridge.call.outbound import DialSpec, OutboundCall
from bridge.call.policy import CallPolicy
from bridge.call.pump import LatencyProbes
from bridge.call.record import CallRecord
from bridge.config import Profile
from bridge.errors import BridgeError, CallFailed
from bridge.ops.api_service import ApiService
from bridge.ops.operations import Operations
from bridge.ops.view import EngineStats
from bridge.ops.webhooks import WebhookSender
from bridge.sip import CallEnd, DtmfMethod, IncomingCall, MediaInfo, RegistrationState, StreamStats
from bridge.sip.access import RateLimit
from bridge.sip.engine import EngineSettings, RegisterParams, SipEngine, TlsParams
from bridge.sip.router import SipRouter
from bridge.tap.service import TapService

log = logging.getLogger("bridge.service")

# Caller audio also gets pumped on this period even if no clock wake-up came (belt and braces).
_PUMP_FALLBACK_S = 0.1


def engine_settings(profile: Profile) -> EngineSettings:
    sip = profile.sip
    reg = sip.register
    return EngineSettings(
        listen_host=sip.listen_host,
        listen_port=sip.listen_port,
        transports=tuple(sip.transports),
        public_address=sip.public_address,
        rtp_port_start=sip.rtp_port_start,
        rtp_port_range=sip.rtp_port_range,
        codecs=tuple(sip.codecs),
        user_agent=sip.user_agent,
        clock_rate=profile.media.clock_rate,
        tick_phase_ms=profile.media.tick_phase_ms,
        rtp_latching=profile.media.rtp_latching,
        max_calls=sip.max_calls,
        register=None if reg is None else RegisterParams(
            registrar=reg.registrar,
            username=reg.username,
            password=reg.password.reveal(),
            realm=reg.realm,
            expires=reg.expires,
            identity=reg.identity,
            outbound_proxy=reg.outbound_proxy,
            contact=reg.contact,
        ),
        pjsip_log_level=4 if profile.logging.level == "debug" else 1,
        **_guard_settings(profile),
    )


def _guard_settings(profile: Profile) -> dict[str, Any]:
    """Access control, TLS, SRTP and the RTP timeout for the engine (see config/guard.py)."""
    guard = profile.sip.guard
    auth = guard.inbound_auth
    tls = guard.tls
    return {
        "allow_from": guard.allow_from,
        "rate_limit": RateLimit(guard.rate_limit.invites_per_second, guard.rate_limit.burst),
        "inbound_auth": None if auth is None else (auth.username, auth.password.reveal(), auth.realm),
        "tls": None if tls is None else TlsParams(
            listen_host=tls.listen_host, listen_port=tls.listen_port, cert_file=tls.cert_file,
            key_file=tls.key_file, ca_file=tls.ca_file, require_client_cert=tls.require_client_cert,
        ),
        "srtp": guard.srtp,
        "rtp_timeout_s": profile.media.rtp_timeout,
    }


def call_policy(profile: Profile) -> CallPolicy:
    """The settings every call of this profile runs under (derived once per profile load)."""
    return CallPolicy.from_profile(profile)


class BotCallEvents:
    """A bot call's SIP events (registered with the router): to the call, and to operations
    for what they count (call setup, digits)."""

    __slots__ = ("call", "ops")

    def __init__(self, call: BridgeCall, ops: Operations) -> None:
        self.call = call
        self.ops = ops

    def on_progress(self, code: int, with_sdp: bool) -> None:
        self.call.on_progress(code, with_sdp)

    def on_answered(self) -> None:
        self.call.on_answered()
        self.ops.call_answered(self.call)

    def on_media(self, media: MediaInfo) -> None:
        self.call.on_media(media)

    def on_dtmf(self, digit: str, duration_ms: int, method: DtmfMethod) -> None:
        self.call.on_dtmf(digit, duration_ms, method)
        self.ops.dtmf(method)

    def on_sip_end(self, end: CallEnd, stats: StreamStats) -> None:
        self.call.on_sip_end(end, stats)

    def on_transfer_status(self, code: int, final: bool) -> None:
        self.call.on_transfer_status(code, final)

    def on_rtp_timeout(self, seconds: float) -> None:
        # The caller vanished without a BYE: the bridge ends the stream (`stop` stopped) and hangs up.
        self.call.request_stop(f"no RTP from the caller for {seconds:g} s", "rtp_timeout")

    def on_metadata(self, message: str) -> None:
        pass  # SIPREC metadata concerns taps only


class Bridge:
    """The process: owns every BridgeCall; the engine's events come through its SipRouter.
    Implements bridge/ops' ServiceView."""

    def __init__(self, profile: Profile, profile_path: str | None = None) -> None:
        self.profile = profile
        self.profile_path = profile_path  # re-read on SIGHUP
        self.policy = call_policy(profile)
        self.calls: dict[int, BridgeCall] = {}
        # Every call object still in memory, live or finished: a finished call must be freed at
        # once (its buffers with it); /status shows the count, which stays at the live calls.
        self.call_objects: weakref.WeakSet[BridgeCall] = weakref.WeakSet()
        self.tasks: dict[int, asyncio.Task[None]] = {}
        self.loop: asyncio.AbstractEventLoop | None = None
        self.engine: SipEngine | None = None
        self.registration: RegistrationState | None = None
        self.counters: dict[str, int] = {"calls_total": 0, "calls_rejected": 0}
        self._wake_pending = False
        self._tick_at = 0.0
        self.ticks = TickClock()
        self.rtp_to_ws = LatencyHistogram()
        self.ws_to_rtp = LatencyHistogram()
        self.mark_lag = LatencyHistogram()
        self.clear_lag = LatencyHistogram()
        self._stopping = asyncio.Event()
        self.started = asyncio.Event()
        self.ops = Operations(self)  # systemd, control listener, metrics, recordings
        # Each call's SIP events go to the call (or tap leg) that registered its handle.
        self.router = SipRouter(self.on_incoming_call, self.on_registration)
        self.taps = TapService(self.router, self.notify_media)  # agent-assist taps (bridge/tap/)
        self.api: ApiService | None = None  # the call API (api.listen), with its webhook queue
        self.dialer: Dialer | None = None  # outbound calls placed through it

    # ---- lifecycle --------------------------------------------------------------------

    async def run(self, *, install_signal_handlers: bool = True, drain_timeout: float = 10.0) -> None:
        self.loop = asyncio.get_running_loop()
        self.engine = SipEngine(engine_settings(self.profile), self.router, self.loop)
        await self.loop.run_in_executor(None, self.engine.start)
        try:
            await self.ops.start()
            await self._start_api()
        except BridgeError:
            await self.loop.run_in_executor(None, self.engine.stop)
            await self.ops.stop()
            if self.api is not None:
                await self.api.stop()
            raise
        if install_signal_handlers:
            for sig in (signal.SIGTERM, signal.SIGINT):
                self.loop.add_signal_handler(sig, self.stop)
            self.loop.add_signal_handler(signal.SIGHUP, self.ops.request_reload)
        # Everything built so far (modules, the engine, configuration) lives as long as the
        # process: moved out of the collector's sight, a full collection with hundreds of calls
        # up no longer walks it (measured: 35 ms pauses of the loop, and of the audio, before).
        gc.collect()
        gc.freeze()
        log.info("bridge %r ready: up to %d calls, bot %s", self.profile.name,
                 self.profile.sip.max_calls, self.profile.bot.url_redacted)
        self.started.set()
        self.ops.ready()
        fallback = asyncio.ensure_future(self._pump_fallback())
        wakeup_fd = self.engine.media_wakeup_fd
        if wakeup_fd is not None:
            self.loop.add_reader(wakeup_fd, self._pump_woken)
        try:
            await self._stopping.wait()
        finally:
            fallback.cancel()
            if wakeup_fd is not None:
                self.loop.remove_reader(wakeup_fd)
            await self._drain(drain_timeout)
            await self.loop.run_in_executor(None, self.engine.stop)
            if self.api is not None:
                await self.api.stop()
            await self.ops.stop()
            log.info("bridge stopped: %d calls; added latency rtp->ws p99 %.1f ms, ws->rtp p99 %.1f ms",
                     self.counters["calls_total"], self.rtp_to_ws.percentile(0.99),
                     self.ws_to_rtp.percentile(0.99),
                     extra={"event": "latency", "rtp_to_ws": self.rtp_to_ws.summary(),
                            "ws_to_rtp": self.ws_to_rtp.summary(), "mark_lag": self.mark_lag.summary(),
                            "clear_to_silence": self.clear_lag.summary()})

    def stop(self) -> None:
        if not self._stopping.is_set():
            log.info("stopping: new calls get 503, %d call(s) in progress end", len(self.calls))
            self.ops.stopping()
            if self.engine is not None:
                self.engine.accepting = False
            if self.dialer is not None:
                self.dialer.draining = True
            self._stopping.set()

    async def _start_api(self) -> None:
        """The call API and its outbound calls, when the profile has api.listen."""
        if self.profile.api.listen_host is None:
            return
        self.api = ApiService(self.profile)
        await self.api.start_queue()
        self.dialer = Dialer(self.profile, self.api.reporter, self._start_outbound, self._registered)
        await self.api.serve(self.dialer)

    def _registered(self) -> bool:
        state = self.registration
        return state is not None and 200 <= state.code < 300 and state.expires > 0

    async def _drain(self, timeout: float) -> None:
        for call in list(self.calls.values()):
            call.request_stop("bridge shutting down")
        self.taps.stop_all()
        tasks = list(self.tasks.values())
        await self.taps.wait(timeout)
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=timeout)
            for task in pending:
                task.cancel()

    async def _pump_fallback(self) -> None:
        while True:
            await asyncio.sleep(_PUMP_FALLBACK_S)
            self._pump_all(include_native=True)

    # ---- media pump -------------------------------------------------------------------

    def notify_media(self) -> None:
        """Called on the conference clock thread after each caller frame: one wake per tick."""
        if not self._wake_pending:
            self._wake_pending = True
            self._tick_at = self.ticks.last = time.monotonic()
            loop = self.loop
            if loop is not None:
                loop.call_soon_threadsafe(self._pump_all)

    def _pump_woken(self) -> None:
        """The native pipes' eventfd: pump just the calls whose pipes have work."""
        assert self.engine is not None
        calls = self.calls
        for handle in self.engine.take_media_work():
            call = calls.get(handle)
            if call is not None and call.pumping:
                call.pump()

    def _pump_all(self, include_native: bool = False) -> None:
        """Pump the calls on Python channels that are due (woken by their tick), and with
        `include_native` the native ones too (the fallback: their own wake-up never came)."""
        self._wake_pending = False
        tick_at = self._tick_at
        for call in self.calls.values():
            channel = call.channel
            if channel is None or (channel.native and not include_native):
                continue
            if call.pumping and call.pump_due():
                call.pump(tick_at=tick_at)
        self.taps.pump()

    # ---- ServiceView (bridge/ops/view.py) -----------------------------------------------

    def live_calls(self) -> Sequence[BridgeCall]:
        return list(self.calls.values())

    def calls_in_memory(self) -> int:
        return len(self.call_objects)

    def engine_stats(self) -> EngineStats | None:
        engine = self.engine
        if engine is None:
            return None
        return EngineStats(running=engine.running, accepting=engine.accepting,
                           max_calls=engine.settings.max_calls, rejected_invites=engine.invites_turned_away(),
                           refused_requests=engine.refused_by_guard())

    def webhooks(self) -> WebhookSender | None:
        return self.api.sender if self.api is not None else None

    def apply_profile(self, profile: Profile) -> None:
        self.profile = profile
        self.policy = call_policy(profile)
        engine = self.engine
        if engine is not None and engine.settings.max_calls != profile.sip.max_calls:
            engine.settings = dataclasses.replace(engine.settings, max_calls=profile.sip.max_calls)

    # ---- events from the router ---------------------------------------------------------

    def on_incoming_call(self, incoming: IncomingCall) -> None:
        assert self.engine is not None
        if self.taps.take(incoming, self.profile, self.policy, self.engine):
            return
        call = BridgeCall(incoming, self.policy, self.engine, self.notify_media, probes=self._probes())
        call.log.info("INVITE from %s (%s) to %s via %s", incoming.from_user, incoming.from_uri,
                      incoming.to_user, incoming.source)
        self._run_call(incoming.handle, call)

    def _start_outbound(self, spec: DialSpec, record: CallRecord) -> OutboundCall:
        """A call the API placed: on a new engine handle, run like an inbound one."""
        assert self.engine is not None and self.api is not None
        handle = self.engine.new_handle()
        call = OutboundCall(handle, spec, record, self.policy, self.engine, self.notify_media,
                            self.api.reporter.report, probes=self._probes())
        self._run_call(handle, call)
        return call

    def _probes(self) -> LatencyProbes:
        return LatencyProbes(self.rtp_to_ws, self.ws_to_rtp, self.ticks, self.mark_lag, self.clear_lag)

    def _run_call(self, handle: int, call: BridgeCall) -> None:
        self.counters["calls_total"] += 1
        self.ops.call_started(call)
        self.calls[handle] = call
        self.router.register(handle, BotCallEvents(call, self.ops))
        self.call_objects.add(call)
        task = asyncio.ensure_future(call.run())
        self.tasks[handle] = task
        task.add_done_callback(functools.partial(self._call_done, handle))

    def _call_done(self, handle: int, task: asyncio.Task[None]) -> None:
        call = self.calls.pop(handle, None)
        self.tasks.pop(handle, None)
        self.router.unregister(handle)
        if call is not None:
            self.ops.call_done(call, failed=not task.cancelled() and task.exception() is not None)
            if isinstance(call, OutboundCall) and self.dialer is not None:
                self.dialer.call_done(call)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            # A bug in the bridge must not leave the caller hanging: hang up and log it loudly.
            self.counters["call_errors"] = self.counters.get("call_errors", 0) + 1
            log.error("call task failed", exc_info=exc,
                      extra={"call_sid": call.incoming.call_id if call else ""})
            if self.engine is not None:
                self.engine.hangup(handle, CallFailed.sip_status, CallFailed.sip_reason)

    def on_registration(self, state: RegistrationState) -> None:
        previous = self.registration
        self.registration = state
        self.ops.registration(state)
        if 200 <= state.code < 300 and state.expires > 0:
            level = logging.INFO
            what = f"registered (expires in {state.expires} s)"
        elif 200 <= state.code < 300:
            level, what = logging.INFO, "unregistered"
        else:
            level, what = logging.WARNING, f"registration failed: {state.code} {state.reason}"
        if previous is None or (previous.code, previous.active) != (state.code, state.active) \
                or level == logging.WARNING:
            log.log(level, "%s", what, extra={"sip_status": state.code})
        else:
            log.debug("registration refreshed (%d s)", state.expires)

