"""The engine's events to whoever owns the call they are about.

The engine reports to one `SipEventSink`; the service hands it a `SipRouter`. A call's events go
to the object registered for its handle (a bot call, a tap leg), which implements `CallEvents`;
new calls go to the application's admission and registration changes to the service. Events
for a handle nobody owns (a call already finished, or one refused before it was registered) are
dropped: nothing is left to tell.

Everything here runs on the asyncio loop (the engine posts its events there).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from bridge.sip import CallEnd, DtmfMethod, IncomingCall, MediaInfo, RegistrationState, StreamStats

__all__ = ["CallEvents", "SipRouter"]


class CallEvents(Protocol):
    """One call's SIP events (loop), for the object that registered its handle."""

    def on_progress(self, code: int, with_sdp: bool) -> None:
        """An outbound call's 180/183 (with_sdp: a 183 offering early media)."""

    def on_answered(self) -> None:
        """The call is answered: the caller's ACK confirmed our 200, or the callee answered ours."""

    def on_media(self, media: MediaInfo) -> None: ...

    def on_dtmf(self, digit: str, duration_ms: int, method: DtmfMethod) -> None: ...

    def on_sip_end(self, end: CallEnd, stats: StreamStats) -> None: ...

    def on_transfer_status(self, code: int, final: bool) -> None: ...

    def on_rtp_timeout(self, seconds: float) -> None:
        """No RTP from the caller for `seconds` while audio was expected (see rtpwatch.py)."""

    def on_metadata(self, message: str) -> None:
        """A request within the call carried SIPREC metadata (taps); `message` is all of it."""


class SipRouter:
    """A SipEventSink that hands each call's events to the owner registered for its handle."""

    def __init__(self, on_incoming: Callable[[IncomingCall], None],
                 on_registration: Callable[[RegistrationState], None]) -> None:
        self._owners: dict[int, CallEvents] = {}
        self._on_incoming = on_incoming
        self._on_registration = on_registration

    def register(self, handle: int, owner: CallEvents) -> None:
        self._owners[handle] = owner

    def unregister(self, handle: int) -> None:
        self._owners.pop(handle, None)

    # ---- SipEventSink ---------------------------------------------------------------------

    def on_incoming_call(self, call: IncomingCall) -> None:
        self._on_incoming(call)

    def on_registration(self, state: RegistrationState) -> None:
        self._on_registration(state)

    def on_call_progress(self, handle: int, code: int, with_sdp: bool) -> None:
        owner = self._owners.get(handle)
        if owner is not None:
            owner.on_progress(code, with_sdp)

    def on_call_answered(self, handle: int) -> None:
        owner = self._owners.get(handle)
        if owner is not None:
            owner.on_answered()

    def on_call_media(self, handle: int, media: MediaInfo) -> None:
        owner = self._owners.get(handle)
        if owner is not None:
            owner.on_media(media)

    def on_call_dtmf(self, handle: int, digit: str, duration_ms: int, method: DtmfMethod) -> None:
        owner = self._owners.get(handle)
        if owner is not None:
            owner.on_dtmf(digit, duration_ms, method)

    def on_call_ended(self, handle: int, end: CallEnd, stats: StreamStats) -> None:
        owner = self._owners.get(handle)
        if owner is not None:
            owner.on_sip_end(end, stats)

    def on_transfer_status(self, handle: int, code: int, final: bool) -> None:
        owner = self._owners.get(handle)
        if owner is not None:
            owner.on_transfer_status(code, final)

    def on_call_rtp_timeout(self, handle: int, seconds: float) -> None:
        owner = self._owners.get(handle)
        if owner is not None:
            owner.on_rtp_timeout(seconds)

    def on_call_metadata(self, handle: int, message: str) -> None:
        owner = self._owners.get(handle)
        if owner is not None:
            owner.on_metadata(message)
