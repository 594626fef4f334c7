"""The SIP side of the bridge.

bridge/sip/ is the only package that imports pjsua2. Everything else talks to its engine through
the plain types below: events arrive on the asyncio loop as calls on a `SipEventSink` (the service
gives the engine a `SipRouter`, router.py, which hands each call's events to the call's owner),
commands go to the engine's own thread and are safe to issue from the loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

DtmfMethod = Literal["rfc4733", "info"]
EndedBy = Literal["remote", "local"]


@dataclass(frozen=True, slots=True)
class IncomingCall:
    handle: int  # engine-assigned, never reused (pjsua call ids are)
    call_id: str  # SIP Call-ID
    from_uri: str
    to_uri: str
    from_user: str
    to_user: str
    source: str  # "ip:port" the INVITE came from
    headers: tuple[tuple[str, str], ...] = field(default_factory=tuple)
    # The INVITE's body as text (SDP, or multipart SDP + rs-metadata for SIPREC): read by taps.
    body: str = ""

    def header(self, name: str) -> str | None:
        lname = name.lower()
        for key, value in self.headers:
            if key.lower() == lname:
                return value
        return None


@dataclass(frozen=True, slots=True)
class MediaInfo:
    codec: str  # e.g. "PCMU"
    clock_rate: int  # the codec's RTP clock rate
    remote_rtp: str
    srtp: bool = False  # the media is SRTP (our SDP carries crypto attributes)


@dataclass(frozen=True, slots=True)
class CallEnd:
    code: int  # the SIP status of the end (200 for a BYE, 487 after CANCEL, ...)
    reason: str
    ended_by: EndedBy


@dataclass(frozen=True, slots=True)
class StreamStats:
    rx_packets: int = 0
    rx_lost: int = 0
    rx_jitter_ms_mean: float = 0.0
    tx_packets: int = 0


@dataclass(frozen=True, slots=True)
class RegistrationState:
    code: int
    reason: str
    active: bool
    expires: int


class SipEventSink(Protocol):
    """Receives the engine's events, always on the asyncio loop thread."""

    def on_incoming_call(self, call: IncomingCall) -> None: ...

    def on_call_progress(self, handle: int, code: int, with_sdp: bool) -> None:
        """An outbound call's provisional answer (180, 183; with_sdp: early media offered)."""

    def on_call_answered(self, handle: int) -> None: ...

    def on_call_media(self, handle: int, media: MediaInfo) -> None: ...

    def on_call_dtmf(self, handle: int, digit: str, duration_ms: int, method: DtmfMethod) -> None: ...

    def on_call_ended(self, handle: int, end: CallEnd, stats: StreamStats) -> None: ...

    def on_transfer_status(self, handle: int, code: int, final: bool) -> None: ...

    def on_call_rtp_timeout(self, handle: int, seconds: float) -> None:
        """No RTP from the caller for `seconds` while audio was expected (see rtpwatch.py)."""

    def on_call_metadata(self, handle: int, message: str) -> None:
        """A request within a tap call (re-INVITE, UPDATE) carried SIPREC metadata; `message` is all of it."""

    def on_registration(self, state: RegistrationState) -> None: ...


# Why the native SIP guard answered a request with an error (or dropped an ACK) before any call
# existed: the order of SipGuard::counts() in native/sip_guard.hpp, and metric labels.
REFUSED_REQUEST_REASONS: tuple[str, ...] = (
    "bad_framing", "unsupported_uri_scheme", "unsupported_require", "not_acceptable", "unusable_media",
    "no_such_dialog", "method_not_allowed", "method_not_implemented", "replaces_forbidden", "unparseable",
    "unreachable_contact", "unsupported_body",
)
