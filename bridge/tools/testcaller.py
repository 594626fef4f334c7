"""A built-in SIP test caller: dials a URI, speaks a WAV, sends DTMF, records what it hears.

It runs the bridge's own SIP engine as a user agent placing one call, so the demo needs no
third-party softphone. What it heard is kept as PCM at 8 kHz, aligned with what it said (both
directions are clocked by the same conference tick), so the echo delay can be measured.
"""

from __future__ import annotations

import asyncio
import io
import time
import wave
from dataclasses import dataclass, field
from importlib import resources

import numpy as np

from bridge.audio.channel import MediaChannel
from bridge.audio.playout import PlayoutBuffer
from bridge.sip import CallEnd, DtmfMethod, IncomingCall, MediaInfo, RegistrationState, StreamStats
from bridge.sip.engine import EngineSettings, SipEngine, TlsParams

RATE = 8000
FRAME = 320  # 20 ms at 8 kHz, 16-bit


def sample_utterance() -> bytes:
    """The packaged sample utterance: 8 kHz mono PCM16LE speech (espeak-ng)."""
    data = resources.files("bridge").joinpath("data/sample_8k.wav").read_bytes()
    with wave.open(io.BytesIO(data)) as wav:
        assert wav.getframerate() == RATE and wav.getnchannels() == 1 and wav.getsampwidth() == 2
        return bytes(wav.readframes(wav.getnframes()))


@dataclass
class CallResult:
    answered: bool = False
    end: CallEnd | None = None
    media: MediaInfo | None = None
    setup_ms: float = 0.0
    said_at_byte: int = 0  # position in `heard` when the utterance started to play
    heard: bytearray = field(default_factory=bytearray)
    digits_sent: str = ""


class _Sink:
    def __init__(self) -> None:
        self.answered = asyncio.Event()
        self.ended = asyncio.Event()
        self.end: CallEnd | None = None
        self.media: MediaInfo | None = None

    def on_incoming_call(self, call: IncomingCall) -> None:
        pass  # the test caller only places calls

    def on_call_progress(self, handle: int, code: int, with_sdp: bool) -> None:
        pass  # ringing is not a result: the answer or the end is

    def on_call_answered(self, handle: int) -> None:
        self.answered.set()

    def on_call_media(self, handle: int, media: MediaInfo) -> None:
        self.media = media

    def on_call_dtmf(self, handle: int, digit: str, duration_ms: int, method: DtmfMethod) -> None:
        pass

    def on_call_ended(self, handle: int, end: CallEnd, stats: StreamStats) -> None:
        self.end = end
        self.ended.set()

    def on_transfer_status(self, handle: int, code: int, final: bool) -> None:
        pass

    def on_call_rtp_timeout(self, handle: int, seconds: float) -> None:
        pass  # the test caller runs without an RTP timeout

    def on_call_metadata(self, handle: int, message: str) -> None:
        pass  # only tap calls report SIPREC metadata

    def on_registration(self, state: RegistrationState) -> None:
        pass


async def place_call(
    target: str,
    *,
    local_port: int,
    utterance: bytes,
    digits: str = "",
    dtmf_method: DtmfMethod = "rfc4733",
    hold_after_s: float = 2.0,
    answer_timeout_s: float = 30.0,
    headers: dict[str, str] | None = None,
    rtp_port_start: int = 40000,
    local_ip: str = "127.0.0.1",
    auth: tuple[str, str] | None = None,
    tls: TlsParams | None = None,
    srtp: str = "disabled",
) -> CallResult:
    """Call `target`, say `utterance` once answered, send `digits`, listen, hang up.

    `auth` answers digest challenges; `tls` adds a TLS transport (dial `...;transport=tls`);
    `srtp` is offered as pjsua does it (optional: RTP/AVP with crypto, mandatory: RTP/SAVP).
    """
    loop = asyncio.get_running_loop()
    sink = _Sink()
    engine = SipEngine(
        EngineSettings(listen_host=local_ip, listen_port=local_port, transports=("udp",),
                       rtp_port_start=rtp_port_start, rtp_port_range=1000, max_calls=4,
                       user_agent="sip-ws-bridge-testcaller", client_auth=auth, tls=tls, srtp=srtp),
        sink, loop,
    )
    await loop.run_in_executor(None, engine.start)
    result = CallResult()
    playout = PlayoutBuffer(FRAME, prebuffer_bytes=0, cap_bytes=len(utterance) + 2 * FRAME)
    channel = MediaChannel(FRAME, playout)
    try:
        started = time.monotonic()
        handle = await asyncio.wrap_future(engine.make_call(target, channel, headers))
        answered = asyncio.ensure_future(sink.answered.wait())
        ended = asyncio.ensure_future(sink.ended.wait())
        await asyncio.wait({answered, ended}, timeout=answer_timeout_s,
                           return_when=asyncio.FIRST_COMPLETED)
        answered.cancel()
        if not sink.answered.is_set():
            if not sink.ended.is_set():
                engine.hangup(handle)
                await asyncio.wait_for(sink.ended.wait(), 10)
            result.end = sink.end
            return result
        result.answered = True
        result.setup_ms = (time.monotonic() - started) * 1000

        async def listen(seconds: float) -> None:
            until = time.monotonic() + seconds
            while time.monotonic() < until and not sink.ended.is_set():
                result.heard += channel.rx_take()
                await asyncio.sleep(0.02)
            result.heard += channel.rx_take()

        await listen(0.5)  # let media settle
        result.said_at_byte = len(result.heard)
        if utterance:
            channel.write_audio(utterance)
        await listen(len(utterance) / (2 * RATE) + 0.5)
        if digits:
            engine.send_dtmf(handle, digits, dtmf_method)
            result.digits_sent = digits
        await listen(hold_after_s)
        if not sink.ended.is_set():
            engine.hangup(handle)
        await asyncio.wait_for(ended, 10)
        result.end = sink.end
        result.media = sink.media
        return result
    finally:
        await loop.run_in_executor(None, engine.stop)


@dataclass(frozen=True)
class EchoMatch:
    delay_ms: float  # median over the segments: the round trip caller -> bot -> caller
    median_corr: float  # median normalised correlation of the segments at their best lag
    matched: float  # fraction of voiced segments that match (correlation >= 0.9)
    segments: int


def echo_match(said: bytes, heard: bytes, said_at_byte: int, *, segment_ms: int = 250,
               search_ms: int = 120) -> EchoMatch:
    """Where and how well `said` comes back inside `heard`, judged segment by segment.

    A global correlation is ruined by any timing slip (an adaptive jitter buffer legitimately
    drops or inserts 10-20 ms), so each voiced segment is matched at its own best lag near the
    global one.
    """
    ref = np.frombuffer(said, dtype="<i2").astype(np.float64)
    got = np.frombuffer(heard, dtype="<i2").astype(np.float64)[said_at_byte // 2 :]
    if len(got) < len(ref) // 2 or not ref.any():
        return EchoMatch(float("nan"), 0.0, 0.0, 0)
    n = 1
    while n < len(got) + len(ref):
        n *= 2
    corr = np.fft.irfft(np.fft.rfft(got, n) * np.conj(np.fft.rfft(ref, n)), n)[: len(got)]
    base = int(np.argmax(corr))
    seg = RATE * segment_ms // 1000
    search = RATE * search_ms // 1000
    voiced_floor = 0.1 * float(np.sqrt(np.mean(ref**2)))
    lags: list[int] = []
    corrs: list[float] = []
    for i in range(0, len(ref) - seg + 1, seg):
        piece = ref[i : i + seg]
        norm = float(np.linalg.norm(piece))
        if norm / np.sqrt(seg) < voiced_floor:
            continue
        lo = max(0, base + i - search)
        hi = min(len(got) - seg, base + i + search)
        if hi <= lo:
            continue
        window = got[lo : hi + seg]
        scores = np.correlate(window, piece, mode="valid")
        energy = np.sqrt(np.convolve(window**2, np.ones(seg), mode="valid"))
        scores = scores / (energy * norm + 1e-9)
        best = int(np.argmax(scores))
        lags.append(lo + best - i)
        corrs.append(float(scores[best]))
    if not corrs:
        return EchoMatch(float("nan"), 0.0, 0.0, 0)
    return EchoMatch(
        delay_ms=float(np.median(lags)) / RATE * 1000.0,
        median_corr=float(np.median(corrs)),
        matched=sum(c >= 0.9 for c in corrs) / len(corrs),
        segments=len(corrs),
    )


def _read_wav_8k(path: str) -> bytes:
    with wave.open(path) as wav:
        if wav.getframerate() != RATE or wav.getnchannels() != 1 or wav.getsampwidth() != 2:
            raise SystemExit(f"{path}: need 8 kHz mono 16-bit WAV")
        return bytes(wav.readframes(wav.getnframes()))


def main(argv: list[str] | None = None) -> int:
    """`python -m bridge.tools.testcaller URI ...`: one call; prints a JSON result line."""
    import argparse
    import json
    import logging

    parser = argparse.ArgumentParser(prog="python -m bridge.tools.testcaller")
    parser.add_argument("target")
    parser.add_argument("--local-port", type=int, required=True)
    parser.add_argument("--local-ip", default="127.0.0.1", help="address to call from")
    parser.add_argument("--rtp-port", type=int, default=40000)
    parser.add_argument("--wav", help="8 kHz mono WAV to say (default: the sample utterance)")
    parser.add_argument("--silent", action="store_true", help="say nothing")
    parser.add_argument("--digits", default="")
    parser.add_argument("--dtmf-method", choices=("rfc4733", "info"), default="rfc4733")
    parser.add_argument("--hold", type=float, default=1.0, help="seconds to stay after the digits")
    parser.add_argument("--heard", help="write what the caller heard to this WAV")
    parser.add_argument("--header", action="append", default=[], help="'Name: value' for the INVITE")
    parser.add_argument("--auth", help="USER:PASSWORD to answer digest challenges with")
    parser.add_argument("--srtp", choices=("disabled", "optional", "mandatory"), default="disabled")
    parser.add_argument("--tls-ca", help="enable SIP over TLS; verify the server against this CA")
    parser.add_argument("--tls-cert", help="client certificate (PEM) for SIP over TLS")
    parser.add_argument("--tls-key", help="client key (PEM) for SIP over TLS")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    utterance = b"" if args.silent else (_read_wav_8k(args.wav) if args.wav else sample_utterance())
    headers = dict(h.split(":", 1) for h in args.header)
    headers = {k.strip(): v.strip() for k, v in headers.items()}
    result = asyncio.run(place_call(
        args.target, local_port=args.local_port, utterance=utterance, digits=args.digits,
        dtmf_method=args.dtmf_method, hold_after_s=args.hold, headers=headers or None,
        rtp_port_start=args.rtp_port,
        local_ip=args.local_ip,
        auth=(args.auth.partition(":")[0], args.auth.partition(":")[2]) if args.auth else None,
        tls=TlsParams(args.local_ip, 0, args.tls_cert or "", args.tls_key or "", args.tls_ca,
                      verify_server=True) if args.tls_ca else None,
        srtp=args.srtp,
    ))
    if args.heard:
        with wave.open(args.heard, "wb") as wav:
            wav.setnchannels(1)
            wav.setsampwidth(2)
            wav.setframerate(RATE)
            wav.writeframes(bytes(result.heard))
    print(json.dumps({
        "answered": result.answered,
        "setup_ms": round(result.setup_ms, 1),
        "said_at_s": result.said_at_byte / (2 * RATE),
        "heard_s": len(result.heard) / (2 * RATE),
        "codec": result.media.codec if result.media else None,
        "end_code": result.end.code if result.end else None,
        "end_reason": result.end.reason if result.end else None,
        "ended_by": result.end.ended_by if result.end else None,
    }))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
