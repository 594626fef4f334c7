"""One pjsua2 call and the account that receives them: callbacks from PJSIP (sip thread) turned
into events for the engine's owner, plus the CallOpParam builders. Every callback is guarded: an
exception must never cross back into C++."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import pjsua2 as pj

from bridge.audio.channel import MediaChannel
from bridge.audio.pipe_channel import PipeChannel
from bridge.sip import CallEnd, DtmfMethod, MediaInfo, StreamStats
from bridge.sip.access import InboundGate
from bridge.sip.dtmf import DtmfTracker
from bridge.sip.ports import MediaPort, quiesce
from bridge.sip.rtpwatch import RtpWatch
from bridge.sip.settings import EngineSettings

log = logging.getLogger("bridge.sip")

# pjmedia_stream_dtmf_event_flags (not exported by the SWIG module).
DTMF_IS_UPDATE = 1 << 0
DTMF_IS_END = 1 << 1


class CallOwner(Protocol):
    """What calls and the account need from the engine that owns them (sip thread)."""

    settings: EngineSettings
    gate: InboundGate | None
    refused_requests: int

    def emit(self, method: str, *args: Any) -> None: ...

    def call_gone(self, call: SipCall, end: CallEnd) -> None: ...

    def incoming_call(self, account: SipAccount, prm: Any) -> None: ...

    def registration_changed(self, account: SipAccount, prm: Any) -> None: ...


F = TypeVar("F", bound=Callable[..., None])
callback_errors = 0


def guarded(fn: F) -> F:
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



class SipCall(pj.Call):  # type: ignore[misc]
    def __init__(self, engine: CallOwner, account: Any, handle: int, call_id: int = pj.PJSUA_INVALID_ID):
        super().__init__(account, call_id)
        self.engine = engine
        self.handle = handle
        self.channel: MediaChannel | PipeChannel | None = None
        self.port: Any = None  # MediaPort, or pj.PipeMediaPort for a PipeChannel
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
        self.tap_ports: dict[int, MediaPort] = {}
        self.tap_slots: dict[int, int] = {}
        self.tap_media_count = 0  # m-lines in the offer: the call setting for every answer
        self.outbound = False  # the bridge sent the INVITE (an API call)
        self.early_media = False  # outbound: audio flows from a 183 with SDP, not only from the answer
        self.held_media = -1  # outbound: the audio stream that waits for the answer to be connected

    def release_media(self) -> None:
        """Drop the conference ports before the channels (sip thread): a PipeMediaPort's callbacks
        use its MediaPipe until the port is destroyed. Python ports are first taken out of the
        conference's rounds (see bridge/sip/ports.py, _FREEING)."""
        for port in [self.port, *self.tap_ports.values()]:
            if isinstance(port, MediaPort):
                quiesce(port)
        self.port = None
        self.tap_ports.clear()
        self.channel = None

    # -- callbacks (sip thread) --

    @guarded
    def onCallState(self, prm: Any) -> None:
        ci = self.getInfo()
        if ci.state == pj.PJSIP_INV_STATE_EARLY and self.outbound:
            self.engine.emit("on_call_progress", self.handle, ci.lastStatusCode, False)
        elif ci.state == pj.PJSIP_INV_STATE_CONFIRMED and not self.answered:
            self.answered = True
            if self.held_media >= 0:
                index, self.held_media = self.held_media, -1
                self._connect_media(index)
            self.engine.emit("on_call_answered", self.handle)
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
            self.engine.call_gone(self, end)

    @guarded
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
            if self.outbound and ci.state <= pj.PJSIP_INV_STATE_EARLY:
                # Early media (a 183 with SDP): ringback and announcements reach the bot only when
                # the API asked for them; otherwise the callee's audio starts with the answer.
                self.engine.emit("on_call_progress", self.handle, ci.lastStatusCode, True)
                if not self.early_media:
                    self.held_media = index
                    return
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
                port = MediaPort(channel)
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
        self.engine.emit("on_call_media", self.handle, info)

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
                port = MediaPort(channel)
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

    @guarded
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
        self.engine.emit("on_call_metadata", self.handle, message)

    @guarded
    def onCallSdpCreated(self, prm: Any) -> None:
        # Our offer or answer: with SRTP it carries SDES keys (a=crypto) or a SAVP profile.
        sdp = str(prm.sdp.wholeSdp)
        self.srtp = "a=crypto:" in sdp or "RTP/SAVP" in sdp

    @guarded
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

    @guarded
    def onDtmfEvent(self, prm: Any) -> None:
        method: DtmfMethod = "info" if prm.method == pj.PJSUA_DTMF_METHOD_SIP_INFO else "rfc4733"
        duration = int(prm.duration) if prm.duration < 0xFFFFFFFF else 0
        reports = self.dtmf.event(str(prm.digit), method, int(prm.timestamp), duration,
                                  is_update=bool(prm.flags & DTMF_IS_UPDATE),
                                  is_end=bool(prm.flags & DTMF_IS_END), now=time.monotonic())
        for digit, ms, meth in reports:
            self.engine.emit("on_call_dtmf", self.handle, digit, ms, meth)

    def _flush_dtmf(self) -> None:
        for digit, ms, meth in self.dtmf.flush():
            self.engine.emit("on_call_dtmf", self.handle, digit, ms, meth)

    def onCallRedirected(self, prm: Any) -> int:
        # Report a 3xx to the application as the call's end instead of silently dialling the
        # target: the bridge never places calls a peer can steer elsewhere.
        # PJSIP then ends the call as 487; remember the real answer for CallEnd.
        self.redirected = (response_code(prm.e, 302), str(prm.targetUri))
        return int(pj.PJSIP_REDIRECT_STOP)

    @guarded
    def onCallTransferRequest(self, prm: Any) -> None:
        # A REFER from the far end would make the bridge dial whatever its Refer-To says (toll
        # fraud): refused. Transfers go only to targets from the profile (SipEngine.transfer).
        prm.statusCode = pj.PJSIP_SC_DECLINE
        self.engine.refused_requests += 1
        log.warning("REFER to %.80r on call %d refused with 603: the bridge only transfers to targets "
                    "from its profile", str(prm.dstUri), self.handle)

    @guarded
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

    @guarded
    def onCallTransferStatus(self, prm: Any) -> None:
        self.engine.emit("on_transfer_status", self.handle, prm.statusCode, bool(prm.finalNotify))


class SipAccount(pj.Account):  # type: ignore[misc]
    def __init__(self, engine: CallOwner) -> None:
        super().__init__()
        self.engine = engine

    @guarded
    def onIncomingCall(self, prm: Any) -> None:
        self.engine.incoming_call(self, prm)

    @guarded
    def onRegState(self, prm: Any) -> None:
        self.engine.registration_changed(self, prm)


def op(code: int, reason: str = "", headers: dict[str, str] | None = None) -> Any:
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


def tap_op(code: int, media_count: int, audio_count: int) -> Any:
    """The same call setting for a tap's 180 and 200 (PJSIP takes the first one it sees): every
    offered audio stream answered, each receive only (a=recvonly)."""
    prm = op(code)
    prm.opt.audioCount = max(1, audio_count)
    prm.opt.videoCount = 0
    prm.opt.flag |= pj.PJSUA_CALL_SET_MEDIA_DIR
    for _ in range(max(1, media_count)):
        prm.opt.mediaDir.append(pj.PJMEDIA_DIR_DECODING)
    return prm


def response_code(event: Any, default: int) -> int:
    """The status code of the SIP response behind a pjsua2 event, if it carries one."""
    try:
        first_line = str(event.body.tsxState.src.rdata.wholeMsg).split("\r\n", 1)[0]
        return int(first_line.split()[1])
    except (AttributeError, IndexError, ValueError):
        return default
