"""The SIP router: each call's engine events reach the owner registered for its handle, and only it."""

from __future__ import annotations

from typing import Any

from bridge.sip import (
    CallEnd,
    DtmfMethod,
    IncomingCall,
    MediaInfo,
    RegistrationState,
    SipEventSink,
    StreamStats,
)
from bridge.sip.router import CallEvents, SipRouter


class Owner:
    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def on_answered(self) -> None:
        self.events.append(("answered",))

    def on_media(self, media: MediaInfo) -> None:
        self.events.append(("media", media.codec))

    def on_dtmf(self, digit: str, duration_ms: int, method: DtmfMethod) -> None:
        self.events.append(("dtmf", digit, duration_ms, method))

    def on_sip_end(self, end: CallEnd, stats: StreamStats) -> None:
        self.events.append(("end", end.code))

    def on_transfer_status(self, code: int, final: bool) -> None:
        self.events.append(("transfer", code, final))

    def on_rtp_timeout(self, seconds: float) -> None:
        self.events.append(("rtp_timeout", seconds))

    def on_metadata(self, message: str) -> None:
        self.events.append(("metadata", message))


def router() -> tuple[SipRouter, list[IncomingCall], list[RegistrationState]]:
    incoming: list[IncomingCall] = []
    registrations: list[RegistrationState] = []
    return SipRouter(incoming.append, registrations.append), incoming, registrations


def test_each_event_reaches_the_owner_of_its_handle() -> None:
    sink, _, _ = router()
    first, second = Owner(), Owner()
    owner: CallEvents = first  # the protocol holds
    sink.register(1, owner)
    sink.register(2, second)
    sink.on_call_answered(1)
    sink.on_call_media(1, MediaInfo("PCMU", 8000, "127.0.0.1:4000"))
    sink.on_call_dtmf(2, "5", 160, "rfc4733")
    sink.on_transfer_status(2, 200, True)
    sink.on_call_rtp_timeout(1, 30.0)
    sink.on_call_metadata(2, "INVITE ...")
    sink.on_call_ended(1, CallEnd(200, "BYE", "remote"), StreamStats())
    assert first.events == [("answered",), ("media", "PCMU"), ("rtp_timeout", 30.0), ("end", 200)]
    assert second.events == [("dtmf", "5", 160, "rfc4733"), ("transfer", 200, True),
                             ("metadata", "INVITE ...")]


def test_events_for_a_handle_nobody_owns_are_dropped() -> None:
    sink, _, _ = router()
    owner = Owner()
    sink.register(7, owner)
    sink.unregister(7)
    sink.unregister(8)  # never registered: no error
    sink.on_call_answered(7)
    sink.on_call_ended(8, CallEnd(487, "Request Terminated", "remote"), StreamStats())
    assert owner.events == []


def test_new_calls_and_registration_go_to_the_service() -> None:
    sink, incoming, registrations = router()
    engine_sink: SipEventSink = sink  # what the engine is given
    call = IncomingCall(handle=3, call_id="c", from_uri="sip:a@h", to_uri="sip:b@h", from_user="a",
                        to_user="b", source="127.0.0.1:5060")
    engine_sink.on_incoming_call(call)
    engine_sink.on_registration(RegistrationState(200, "OK", True, 300))
    assert incoming == [call]
    assert registrations == [RegistrationState(200, "OK", True, 300)]
