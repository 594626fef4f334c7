"""A built-in SIP test caller: dials a URI, speaks a WAV, sends DTMF, records what it hears.

It runs the bridge's own SIP engine as a user agent placing one call, so the demo needs no
third-party softphone. What it heard is kept as PCM at 8 kHz, aligned with what it said (both
directions are clocked by the same conference tick), so the echo delay can be measured.
"""

from __future__ import annotations

import asyncio
import time
import wave
from dataclasses import dataclass, field
from importlib import resources

import numpy as np

from bridge.audio.channel import MediaChannel
from bridge.audio.playout import PlayoutBuffer
from bridge.sip import CallEnd, DtmfMethod, IncomingCall, MediaInfo, RegistrationState, StreamStats
from bridge.sip.engine import EngineSettings, SipEngine

RATE = 8000
FRAME = 320  # 20 ms at 8 kHz, 16-bit


def sample_utterance() -> bytes:
    """The packaged sample utterance: 8 kHz mono PCM16LE speech (espeak-ng)."""
    data = resources.files("bridge").joinpath("data/sample_8k.wav").read_bytes()
    import io

    with wave.open(io.BytesIO(data)) as wav:
        assert wav.getframerate() == RATE and wav.getnchannels() == 1 and wav.getsampwidth() == 2
        return wav.readframes(wav.getnframes())


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

    def on_registration(self, state: RegistrationState) -> None:
        pass


async def place_call(
    target: str,
    *,
    local_port: int,
    utterance: bytes,
    digits: str = "",
    hold_after_s: float = 2.0,
    answer_timeout_s: float = 30.0,
    headers: dict[str, str] | None = None,
    rtp_port_start: int = 40000,
) -> CallResult:
    """Call `target`, say `utterance` once answered, send `digits`, listen, hang up."""
    loop = asyncio.get_running_loop()
    sink = _Sink()
    engine = SipEngine(
        EngineSettings(listen_host="127.0.0.1", listen_port=local_port, transports=("udp",),
                       rtp_port_start=rtp_port_start, rtp_port_range=1000, max_calls=4,
                       user_agent="sip-ws-bridge-testcaller"),
        sink, loop,
    )
    await loop.run_in_executor(None, engine.start)
    result = CallResult()
    channel = MediaChannel(FRAME, PlayoutBuffer(FRAME, prebuffer_bytes=0, cap_bytes=len(utterance) + FRAME))
    try:
        started = time.monotonic()
        handle = await asyncio.wrap_future(engine.make_call(target, channel, headers))
        answered = asyncio.ensure_future(sink.answered.wait())
        ended = asyncio.ensure_future(sink.ended.wait())
        await asyncio.wait({answered, ended}, timeout=answer_timeout_s, return_when=asyncio.FIRST_COMPLETED)
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
        channel.write_audio(utterance)
        await listen(len(utterance) / (2 * RATE) + 0.5)
        if digits:
            engine.send_dtmf(handle, digits)
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


def echo_delay_ms(said: bytes, heard: bytes, said_at_byte: int) -> tuple[float, float]:
    """(delay in ms, normalised correlation) of `said` inside `heard` after `said_at_byte`."""
    ref = np.frombuffer(said, dtype="<i2").astype(np.float64)
    got = np.frombuffer(heard, dtype="<i2").astype(np.float64)
    start = said_at_byte // 2
    if len(got) < start + len(ref) // 2 or not ref.any():
        return float("nan"), 0.0
    window = got[start:]
    n = 1
    while n < len(window) + len(ref):
        n *= 2
    corr = np.fft.irfft(np.fft.rfft(window, n) * np.conj(np.fft.rfft(ref, n)), n)[: len(window)]
    lag = int(np.argmax(corr))
    seg = window[lag : lag + len(ref)]
    if len(seg) < len(ref):
        seg = np.pad(seg, (0, len(ref) - len(seg)))
    denom = float(np.linalg.norm(seg) * np.linalg.norm(ref)) or 1.0
    return lag / RATE * 1000.0, float(np.dot(seg, ref) / denom)
