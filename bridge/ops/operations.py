"""Running the bridge as a service: systemd notifications and watchdog, the control listener
(/healthz, /readyz, /metrics, /status), metrics, recordings and SIGHUP reloads.

The service (bridge/service.py) owns one `Operations` and calls its hooks on the loop when
something happens (an INVITE, an answer, a digit, a registration change, a call's end); nothing
here runs on the media clock thread. What it reads of the service is a `ServiceView`
(bridge/ops/view.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import resource
import time
from typing import TYPE_CHECKING, Any

from bridge import __version__
from bridge.call.recording import CallRecorder, RecordingError, RecordingStore
from bridge.config import RecordingSettings, load_profile
from bridge.errors import ConfigError
from bridge.ops.control import ControlServer, Response
from bridge.ops.metrics import CONTENT_TYPE, BridgeMetrics, LiveState, call_counters
from bridge.ops.reload import plan_reload
from bridge.ops.sdnotify import Notifier, watchdog_interval
from bridge.ops.view import ServiceView
from bridge.sip import DtmfMethod, RegistrationState

if TYPE_CHECKING:
    from bridge.call.bridged import BridgeCall

log = logging.getLogger("bridge.ops")

__all__ = ["Operations"]

STATUS_EVERY_S = 30.0  # STATUS= is re-sent at least this often (and on every change)
_STATUS_COALESCE_S = 0.2
# File descriptors per call (RTP + RTCP sockets, the bot's socket and the native sender's
# duplicate of it, a SIP TCP connection) and for the rest of the process; the unit sets
# LimitNOFILE=16384.
FDS_PER_CALL = 5
FDS_BASE = 256


class Operations:
    def __init__(self, bridge: ServiceView) -> None:
        self.bridge = bridge
        self.notifier = Notifier()
        self.metrics = BridgeMetrics(self.live_state, bridge.profile.name)
        self.recordings = RecordingStore()
        self.control: ControlServer | None = None
        self.started_wall = time.time()
        self.started = time.monotonic()
        self.draining = False
        self.is_ready = False  # ready() was called: the bridge takes calls (/healthz)
        self.reloads = 0
        self.invites = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._status_dirty: asyncio.Event | None = None
        self._reloading: asyncio.Task[bool] | None = None

    # ---- lifecycle (loop) ---------------------------------------------------------------

    async def start(self) -> None:
        """After the SIP engine started: recordings directory, control listener, fd limit."""
        profile = self.bridge.profile
        if profile.recording.enabled:
            await self.recordings.prepare(profile.recording, recover=True)
        control = profile.control
        if control.listen_host is not None:
            self.control = ControlServer(control.listen_host, control.listen_port, {
                "/healthz": self.healthz,
                "/readyz": self.readyz,
                "/metrics": self.metrics_page,
                "/status": self.status_page,
            })
            await self.control.start()
        self._check_fd_limit(profile.sip.max_calls)

    def ready(self) -> None:
        """The bridge takes calls: READY=1, then the watchdog and STATUS tasks."""
        self._status_dirty = asyncio.Event()
        self.is_ready = True
        self.notifier.ready(self.status_line())
        interval = watchdog_interval()
        if self.notifier.enabled:
            self._tasks.append(asyncio.ensure_future(self._status_task()))
            if interval is not None:
                self._tasks.append(asyncio.ensure_future(self._watchdog_task(interval)))
                log.info("systemd watchdog: pinging every %.1f s", interval)

    def stopping(self) -> None:
        self.draining = True
        self.notifier.stopping(f"draining {len(self.bridge.live_calls())} call(s)")

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self._reloading is not None:
            self._reloading.cancel()
        if self.control is not None:
            await self.control.close()
        await asyncio.get_running_loop().run_in_executor(None, self.recordings.shutdown)
        self.notifier.close()

    def _check_fd_limit(self, max_calls: int) -> None:
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        need = FDS_BASE + FDS_PER_CALL * max_calls
        if soft != resource.RLIM_INFINITY and soft < need:
            log.warning("the open-file limit is %d but %d calls need about %d; raise it (LimitNOFILE= in "
                        "the unit, ulimit -n) or calls will fail once sockets run out", soft, max_calls, need)

    async def _watchdog_task(self, interval: float) -> None:
        # On the loop on purpose: a loop that stops turning stops the pings.
        while True:
            self.notifier.watchdog()
            await asyncio.sleep(interval)

    async def _status_task(self) -> None:
        assert self._status_dirty is not None
        while True:
            try:
                await asyncio.wait_for(self._status_dirty.wait(), STATUS_EVERY_S)
                await asyncio.sleep(_STATUS_COALESCE_S)  # one update for a burst of changes
            except TimeoutError:
                pass
            self._status_dirty.clear()
            if not self.draining:
                self.notifier.status(self.status_line())

    def _changed(self) -> None:
        if self._status_dirty is not None:
            self._status_dirty.set()

    def status_line(self) -> str:
        calls = len(self.bridge.live_calls())
        plural = "" if calls == 1 else "s"
        return f"{calls} active call{plural} (max {self._max_calls()}); {self.registration_text()}"

    def registration_text(self) -> str:
        reg = self.bridge.profile.sip.register
        state = self.bridge.registration
        if reg is None:
            return "trunk mode (not registering)"
        if state is None:
            return f"registering with {reg.registrar}"
        if state.active and 200 <= state.code < 300:
            return f"registered with {reg.registrar}"
        return f"not registered with {reg.registrar} ({state.code} {state.reason}); retrying"

    # ---- hooks from the service (loop) --------------------------------------------------

    def call_started(self, call: BridgeCall) -> None:
        call.hooks = self
        self.invites += 1
        self.metrics.invites.inc()
        self._changed()

    def call_answered(self, call: BridgeCall) -> None:
        if call.answered_at is not None:
            self.metrics.setup.observe(call.answered_at - call.created)
        if call.bot_connect_s is not None:
            self.metrics.bot_connect.observe(call.bot_connect_s)

    def call_done(self, call: BridgeCall, *, failed: bool) -> None:
        self.metrics.call_finished(call)
        if failed:
            self.metrics.call_errors.inc()
        self._changed()

    def dtmf(self, method: DtmfMethod) -> None:
        self.metrics.dtmf.labels(method).inc()

    def registration(self, state: RegistrationState) -> None:
        if not 200 <= state.code < 300:
            self.metrics.registration_failures.inc()
        self._changed()

    def new_recorder(self, settings: RecordingSettings, call: BridgeCall,
                     frame_bytes: int) -> CallRecorder | None:
        """CallHooks: a recorder for a call whose policy records."""
        if self.draining:
            return None
        return self.recordings.new_recorder(settings, call.incoming.call_id, call.stream_sid,
                                            call.started_wall, call.policy.clock_rate, frame_bytes, call.log)

    # ---- SIGHUP ---------------------------------------------------------------------------

    def request_reload(self) -> None:
        if self._reloading is not None and not self._reloading.done():
            log.warning("SIGHUP while a reload is running: ignored (send it again once it is done)")
            return
        self._reloading = asyncio.ensure_future(self.reload())

    async def reload(self) -> bool:
        """Re-read the profile file; apply what can change live. False when the file was rejected."""
        bridge = self.bridge
        path = bridge.profile_path
        if path is None:
            log.warning("SIGHUP: this bridge was not started from a profile file; nothing to reload")
            return False
        self.notifier.reloading()
        try:
            return await self._reload(path)
        finally:
            self.notifier.ready(self.status_line())

    async def _reload(self, path: str) -> bool:
        bridge = self.bridge
        loop = asyncio.get_running_loop()
        try:
            new = await loop.run_in_executor(None, load_profile, path)
            if new.recording.enabled:
                await self.recordings.prepare(new.recording, recover=False)
        except ConfigError as exc:
            where = f" (key {exc.key})" if exc.key else ""
            log.error("reload rejected: bad profile %s%s: %s; still running the previous profile",
                      path, where, exc.message, extra={"event": "reload", "result": "rejected"})
            self.metrics.reloads.labels("rejected").inc()
            return False
        except RecordingError as exc:
            log.error("reload rejected: %s; still running the previous profile", exc,
                      extra={"event": "reload", "result": "rejected"})
            self.metrics.reloads.labels("rejected").inc()
            return False
        plan = plan_reload(bridge.profile, new)
        for warning in new.warnings:
            log.warning("profile: %s", warning)
        bridge.apply_profile(plan.profile)
        logging.getLogger().setLevel(plan.profile.logging.level.upper())
        self.reloads += 1
        self.metrics.reloads.labels("applied").inc()
        in_progress = len(bridge.live_calls())
        if plan.applied:
            log.info("profile reloaded from %s: %s changed; new calls use the new settings, %d call(s) in "
                     "progress keep theirs", path, ", ".join(plan.applied), in_progress,
                     extra={"event": "reload", "result": "applied", "changed": plan.applied})
        else:
            log.info("profile reloaded from %s: nothing changed", path,
                     extra={"event": "reload", "result": "applied", "changed": []})
        if plan.needs_restart:
            log.warning("profile %s changes %s, which only a restart applies; still using the running "
                        "values", path, ", ".join(plan.needs_restart),
                        extra={"event": "reload", "needs_restart": plan.needs_restart})
        self._changed()
        return True

    # ---- the control listener's pages (loop) ----------------------------------------------

    def live_state(self) -> LiveState:
        bridge = self.bridge
        engine = bridge.engine_stats()
        reg = bridge.registration
        return LiveState(
            calls=list(bridge.live_calls()),
            max_calls=engine.max_calls if engine is not None else bridge.profile.sip.max_calls,
            accepting=bool(engine is not None and engine.accepting and not self.draining),
            registration_enabled=bridge.profile.sip.register is not None,
            registered=bool(reg is not None and reg.active),
            registration_code=reg.code if reg is not None else 0,
            rejected_by_engine=dict(engine.rejected_invites) if engine is not None else {},
            refused_requests=dict(engine.refused_requests) if engine is not None else {},
            latency={"caller_to_bot": bridge.rtp_to_ws, "bot_to_caller": bridge.ws_to_rtp},
            webhooks=bridge.webhooks(),
        )

    def _max_calls(self) -> int:
        engine = self.bridge.engine_stats()
        return engine.max_calls if engine is not None else self.bridge.profile.sip.max_calls

    def healthz(self) -> Response:
        # Answering at all shows the loop turns; the SIP thread must run too.
        engine = self.bridge.engine_stats()
        if engine is None or not self.is_ready:
            return Response(503, b"starting\n")
        if not engine.running:
            return Response(503, b"the SIP stack stopped\n")
        return Response(200, b"ok\n")

    def not_ready_reasons(self) -> list[str]:
        state = self.live_state()
        reasons = []
        if self.draining or not state.accepting:
            reasons.append("draining: new calls get 503")
        if state.registration_enabled and not state.registered:
            reasons.append(self.registration_text())
        if len(state.calls) >= state.max_calls:
            reasons.append(f"at capacity ({len(state.calls)}/{state.max_calls} calls)")
        return reasons

    def readyz(self) -> Response:
        reasons = self.not_ready_reasons()
        if reasons:
            return Response(503, ("not ready: " + "; ".join(reasons) + "\n").encode())
        return Response(200, b"ready\n")

    def metrics_page(self) -> Response:
        return Response(200, self.metrics.exposition(), CONTENT_TYPE)

    def status_page(self) -> Response:
        return Response(200, json.dumps(self.snapshot(), ensure_ascii=False).encode(), "application/json")

    def snapshot(self) -> dict[str, Any]:
        """Everything `sip-ws-bridge status` shows."""
        bridge = self.bridge
        state = self.live_state()
        now = time.monotonic()
        finished = self.metrics.finished
        totals = {name: int(value) for name, value in vars(finished).items()}
        for call in state.calls:
            for name, value in vars(call_counters(call)).items():
                totals[name] = totals.get(name, 0) + int(value)
        calls_by_cause: dict[str, int] = {}
        for metric in self.metrics.calls.collect():
            for sample in metric.samples:
                if sample.name.endswith("_total") and sample.value:
                    cause = sample.labels["end_cause"]
                    calls_by_cause[cause] = calls_by_cause.get(cause, 0) + int(sample.value)
        return {
            "name": bridge.profile.name,
            "version": __version__,
            "pid": os.getpid(),
            "started": self.started_wall,
            "uptime_s": round(now - self.started, 1),
            "ready": not self.not_ready_reasons(),
            "not_ready": self.not_ready_reasons(),
            "draining": self.draining,
            "registration": self.registration_text(),
            "active_calls": len(state.calls),
            # Call objects in memory, ended ones included: more than active_calls for long means
            # finished calls are being kept (and their audio buffers with them).
            "calls_in_memory": bridge.calls_in_memory(),
            "max_calls": state.max_calls,
            "invites": self.invites,
            "calls_ended": calls_by_cause,
            "rejected": {**state.rejected_by_engine, **self.metrics.rejected},
            "reloads": self.reloads,
            "totals": totals,
            # Measured from the calls (None without one): where in every 20 ms the media clock
            # reads them (`media.tick_phase_ms`).
            "tick_phase_ms": next((phase for call in state.calls if call.channel is not None
                                   and (phase := call.channel.tick_phase_ms()) is not None), None),
            "calls": [self._call_row(call, now) for call in state.calls],
        }

    @staticmethod
    def _call_row(call: BridgeCall, now: float) -> dict[str, Any]:
        counters = call_counters(call)
        channel = call.channel
        return {
            "call_sid": call.incoming.call_id,
            "stream_sid": call.stream_sid,
            "from": call.incoming.from_user,
            "to": call.incoming.to_user,
            "state": call.outcome if call.outcome != "pending" else "connecting",
            "age_s": round(now - call.created, 1),
            "answered_s": round(now - call.answered_at, 1) if call.answered_at is not None else None,
            "codec": call.media.codec if call.media else "",
            "dtmf": call.dtmf_digits,
            "frames_in": counters.caller_frames,
            "frames_out": counters.bot_frames_played,
            "underruns": counters.underruns,
            "drops": counters.media_to_bot_dropped + counters.caller_frames_lost,
            "playout_ms": round(channel.playout.buffered_bytes * 1000 / (2 * call.policy.clock_rate))
            if channel is not None else 0,
            "bytes_to_bot": counters.bytes_to_bot,
            "bytes_from_bot": counters.audio_bytes_from_bot,
            "recording": call.recorder is not None,
            # "native": the MediaPipe in C++ carries the audio; "python": the clock thread calls
            # into Python every frame (recorded calls, or SIP_WS_BRIDGE_PY_MEDIA=1).
            "media_path": ("native" if channel.native else "python") if channel is not None else "",
            # "sender": the native pipe's sender thread writes caller audio to the bot's socket;
            # "loop": the event loop does (Python port, TLS, resampling, SIP_WS_BRIDGE_PY_SEND=1).
            "caller_audio_via": ("sender" if getattr(channel, "sending", False) else "loop")
            if channel is not None else "",
        }

