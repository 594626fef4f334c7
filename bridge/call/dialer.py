"""Outbound calls for the call API: the service's `CallBackend` (bridge/ops/api.py).

A request that passed the API's checks is admitted here against the limits (calls in flight,
calls per second) and the bridge's state (draining, not registered), becomes a `DialSpec` (the
number as `sip:<number>@<registrar or trunk>`, the caller id, the headers) and an `OutboundCall`
the service runs like any other call. Ended calls stay visible to the API for an hour (the last
100).
"""

from __future__ import annotations

import collections
import logging
import time
import urllib.parse
import uuid
from collections.abc import Callable, Sequence

from bridge.call.outbound import DialSpec, OutboundCall
from bridge.call.record import CallRecord
from bridge.config import Profile, redact_url
from bridge.ops.api_model import ApiError, CallRequest
from bridge.ops.limits import CallLimits
from bridge.ops.status_events import Callback, StatusReporter

__all__ = ["Dialer"]

log = logging.getLogger("bridge.dialer")

_KEEP_ENDED = 100
_KEEP_ENDED_S = 3600.0

# Starts a placed call: the service creates it on a fresh engine handle, runs it, and returns it.
CallStarter = Callable[[DialSpec, CallRecord], OutboundCall]


def via_host(profile: Profile) -> str | None:
    """The host a number is dialled at: the trunk's, or the registrar's."""
    via = profile.outbound.via
    if via is None:
        return None
    if via.kind == "trunk" and via.uri:
        return via.uri.split(":", 1)[1].split(";", 1)[0]
    reg = profile.sip.register
    if reg is None:
        return None
    return reg.registrar.split(":", 1)[1].split(";", 1)[0] if ":" in reg.registrar else reg.registrar


def target_uri(to: str, host: str) -> str:
    """A number becomes sip:<number>@<host> (a leading + kept); a sip: URI is dialled as given."""
    if to.lower().startswith(("sip:", "sips:")):
        return to
    return f"sip:{to}@{host}"


class Dialer:
    def __init__(
        self,
        profile: Profile,
        reporter: StatusReporter,
        start: CallStarter,
        registered: Callable[[], bool],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.profile = profile
        self.reporter = reporter
        self._start = start
        self._registered = registered
        self._clock = clock
        outbound = profile.outbound
        self.limits = CallLimits(outbound.max_concurrent, outbound.calls_per_second, outbound.burst)
        self.draining = False
        self.live: dict[str, OutboundCall] = {}
        self.ended: collections.deque[CallRecord] = collections.deque()

    @property
    def account_sid(self) -> str:
        return self.profile.api.account_sid or self.profile.bot.account_sid

    # ---- CallBackend ----------------------------------------------------------------------

    def place_call(self, request: CallRequest) -> CallRecord:
        profile = self.profile
        if self.draining:
            raise ApiError(
                "draining", "the bridge is stopping; place the call on another bridge", retry_after=5
            )
        host = via_host(profile)
        if host is None:
            raise ApiError(
                "not_registered",
                "outbound.via is not set: the profile has no way out for calls (a registrar or a trunk)",
            )
        via = profile.outbound.via
        if via is not None and via.kind == "registrar" and not self._registered():
            raise ApiError(
                "not_registered",
                "the bridge is not registered with its registrar yet; retry shortly",
                retry_after=5,
            )
        refused = self.limits.admit()
        if refused is not None:
            code, retry_after = refused
            what = (
                f"{self.limits.max_concurrent} outbound calls are in progress (outbound.max_concurrent)"
                if code == "too_many_calls"
                else f"over {profile.outbound.calls_per_second:g} calls a second (outbound.calls_per_second)"
            )
            raise ApiError(code, what, retry_after=retry_after)
        caller = request.from_ or profile.outbound.caller_id
        call_sid = "CA" + uuid.uuid4().hex
        spec = DialSpec(
            call_sid=call_sid,
            target_uri=target_uri(request.to, host),
            from_user=caller or "",
            to_user=request.to,
            from_uri=f"sip:{_user(caller)}@{host}" if caller else None,
            headers={**profile.outbound.headers, **request.headers},
            bot_url=request.bot_url,
            custom_parameters=dict(request.custom_parameters),
            ring_timeout=request.ring_timeout,
            time_limit=request.time_limit,
            early_media=request.early_media,
        )
        record = CallRecord(
            call_sid=call_sid,
            direction="outbound",
            from_=caller or "",
            to=request.to,
            created_at=self._clock(),
            account_sid=self.account_sid,
            bot_url=redact_url(request.bot_url or profile.bot.url_redacted),
            custom_parameters=dict(request.custom_parameters),
        )
        record.updated_at = record.created_at
        self.reporter.watch(call_sid, _own_callback(request))

        try:
            self.live[call_sid] = self._start(spec, record)
        except BaseException:
            self.limits.release()
            raise
        log.info("outbound call %s to %s placed", call_sid, spec.target_uri, extra={"call_sid": call_sid})
        return record

    def calls(self) -> Sequence[CallRecord]:
        self._forget_old()
        return [call.record for call in self.live.values()] + list(self.ended)

    def call(self, call_sid: str) -> CallRecord | None:
        live = self.live.get(call_sid)
        if live is not None:
            return live.record
        return next((record for record in self.ended if record.call_sid == call_sid), None)

    def end_call(self, call_sid: str) -> CallRecord:
        live = self.live.get(call_sid)
        if live is None or live.record.ended:
            record = self.call(call_sid)
            if record is None:
                raise ApiError("not_found", f"no call {call_sid[:64]!r}")
            raise ApiError("call_not_active", f"call {call_sid} has ended ({record.status})")
        live.end_by_api()
        return live.record

    # ---- the service's side ----------------------------------------------------------------

    def call_done(self, call: OutboundCall) -> None:
        """The call's task ended (its record is final): free its slot and keep its record."""
        if self.live.pop(call.record.call_sid, None) is not None:
            self.limits.release()
        self.ended.appendleft(call.record)
        self._forget_old()

    def _forget_old(self) -> None:
        cutoff = self._clock() - _KEEP_ENDED_S
        while self.ended and (len(self.ended) > _KEEP_ENDED or (self.ended[-1].ended_at or 0) < cutoff):
            self.ended.pop()


def _user(caller: str) -> str:
    return urllib.parse.quote(caller, safe="+*#-_.!~'()&=$,;?/")


def _own_callback(request: CallRequest) -> Callback | None:
    if request.status_callback is None:
        return None
    return Callback(
        request.status_callback, request.status_callback_events, request.exotel, request.callback_content_type
    )
