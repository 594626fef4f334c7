"""Calls coming in, and answered calls gone wrong (sip thread, but for the hand-over on the loop).

An INVITE is let in or answered by the engine itself (access gate, capacity, draining), then
described for the application and handed to it on the loop. Once a second the engine's timers
look for a 200 no ACK confirmed and for callers that stopped sending RTP.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any, Protocol

import pjsua2 as pj

from bridge.sip import CallEnd, IncomingCall, SipEventSink
from bridge.sip.access import InboundGate
from bridge.sip.calls import SipCall, op
from bridge.sip.message import message_body, parse_headers, printable, uri_user
from bridge.sip.rtpwatch import RtpWatch
from bridge.sip.settings import EngineSettings

log = logging.getLogger("bridge.sip")

__all__ = ["ACK_WAIT_S", "InboundCalls", "InboundHost"]

# A 2xx to an INVITE that no ACK confirms within 64*T1 ends the call (RFC 3261 13.3.1.4, the
# time the UAS retransmits it). PJSIP then sends a BYE and waits another 64*T1 for its answer;
# the bot's stream and the call's slot need not wait for that.
ACK_WAIT_S = 32.0


class InboundHost(Protocol):
    """What the inbound side needs of the engine (read on every use: a reload replaces settings)."""

    settings: EngineSettings
    gate: InboundGate | None
    accepting: bool

    def reject(self, handle: int, code: int, reason: str = "",
               headers: dict[str, str] | None = None) -> None: ...

    def emit(self, method: str, *args: Any) -> None: ...


class InboundCalls:
    """Admission of new calls and the checks of answered ones; counts what it turned away."""

    def __init__(self, host: InboundHost, calls: Mapping[int, SipCall], sink: SipEventSink,
                 loop: asyncio.AbstractEventLoop) -> None:
        self._host = host
        self._calls = calls  # the engine's calls by handle (sip thread only)
        self._sink = sink
        self._loop = loop
        self.rejected_over_capacity = 0
        self.rejected_invites: dict[str, int] = {}  # by reason (over_capacity, shutting_down), for metrics
        self.incoming_errors = 0  # INVITEs the application failed on (answered 500)

    # ---- a new INVITE (sip thread, inside onIncomingCall) ----------------------------------

    def admit(self, call: SipCall, prm: Any) -> None:
        """`call` was just made for the INVITE in `prm`: turn it away or hand it to the loop."""
        host = self._host
        handle = call.handle
        ci = call.getInfo()
        rdata = prm.rdata
        verdict = host.gate.admit(rdata.srcAddress, rdata.wholeMsg, time.monotonic()) if host.gate else None
        if verdict is not None:
            # Not let in (source, rate or credentials): never seen by the loop or a bot. Every
            # answer here is queued to run after this callback returns: a final answer inside
            # onIncomingCall resets the call, and pjsua2 (Endpoint::on_incoming_call) then frees
            # the INVITE's cloned rdata a second time, an assertion that aborts the process.
            host.reject(handle, verdict.code, verdict.reason, verdict.headers)
            return
        # Calls already reported ended (a 200 never ACKed, waiting for PJSIP's BYE to time out)
        # hold no bot socket and no slot.
        live = sum(1 for other in self._calls.values() if not other.end_reported)
        if not host.accepting or live > host.settings.max_calls:
            self.rejected_over_capacity += 1
            reason = "Shutting Down" if not host.accepting else "Over Capacity"
            key = "shutting_down" if not host.accepting else "over_capacity"
            self.rejected_invites[key] = self.rejected_invites.get(key, 0) + 1
            host.reject(handle, 503, reason, {"Retry-After": str(host.settings.retry_after_s)})
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
            body=message_body(message),
        )
        try:
            self._loop.call_soon_threadsafe(self._deliver, incoming)
        except RuntimeError:
            pass  # the loop is closed: the process is exiting

    def _deliver(self, incoming: IncomingCall) -> None:
        """On the loop: hand a new call to the application, which must give it a final answer.

        Whatever goes wrong there, the caller still gets one (500) and the call's slot is freed:
        a bug triggered by one odd INVITE must not hold a slot and its sockets for good."""
        try:
            self._sink.on_incoming_call(incoming)
        except Exception:  # the application's bug: counted, logged with its traceback, answered 500
            self.incoming_errors += 1
            log.exception("INVITE %s could not be handled; answered 500", incoming.call_id,
                          extra={"call_sid": incoming.call_id})
            self._host.reject(incoming.handle, 500, "Server Internal Error")

    # ---- once a second (sip thread) ------------------------------------------------------

    def check(self, now: float) -> None:
        self._check_rtp(now)
        self._check_ack(now)

    def _check_ack(self, now: float) -> None:
        """Timer H needs no finer grain than a second: end answered calls never ACKed."""
        late = [call for call in self._calls.values()
                if call.ok_sent_at is not None and not call.answered and not call.end_reported
                and now - call.ok_sent_at > ACK_WAIT_S]
        for call in late:  # hanging up may remove the call from the calls: not while iterating them
            self._ack_timeout(call)

    def _check_rtp(self, now: float) -> None:
        """Tell the loop about answered calls whose caller stopped sending RTP."""
        timeout = self._host.settings.rtp_timeout_s
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
                self._host.emit("on_call_rtp_timeout", call.handle, timeout)

    def _ack_timeout(self, call: SipCall) -> None:
        log.warning("call %d: the caller never ACKed the 200 (%.0f s); ending it", call.handle, ACK_WAIT_S)
        # Reported first: hangup() may end the call at once, and that end (PJSIP's own status
        # for a call it gave up on) is not the cause.
        call.end_reported = True
        self._host.emit("on_call_ended", call.handle, CallEnd(code=408, reason="no ACK", ended_by="remote"),
                        call.stats)
        call.ended_locally = True
        try:
            call.hangup(op(0))
        except pj.Error as exc:
            log.debug("hang-up after a missing ACK: %s", exc.info())
