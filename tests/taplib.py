"""Helpers for the tap tests: an RTP sender for several G.711 streams at once, test signals with
time markers, and analysis of what the tap service received.

sipp does the SIP of every tap test (it streams only one RTP stream per call), and this sender
plays the media: one UDP socket per stream bound to the port the offer announced, PCMU packets of
20 ms paced from one absolute schedule, so packet k of every stream leaves at the same moment.
"""

from __future__ import annotations

import base64
import multiprocessing
import random
import socket
import struct
import time
import wave
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from bridge.audio.g711 import ulaw_decode, ulaw_encode
from tests.botlib import Stream
from tests.peerlib import free_udp_range

RATE = 8000
FRAME = 160  # samples per 20 ms packet


def wav_pcm(path: Path) -> bytes:
    with wave.open(str(path)) as wav:
        return bytes(wav.readframes(wav.getnframes()))


def tone(freq: float, seconds: float, amplitude: float = 6000.0) -> bytes:
    t = np.arange(int(seconds * RATE)) / RATE
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype("<i2").tobytes()


def bursts(freq: float, seconds: float, *, every_s: float = 1.0, burst_ms: int = 200,
           amplitude: float = 6000.0) -> bytes:
    """Silence with a tone burst starting exactly at every `every_s` (a packet boundary)."""
    out = np.zeros(int(seconds * RATE), dtype=np.float64)
    n = burst_ms * RATE // 1000
    t = np.arange(n) / RATE
    burst = amplitude * np.sin(2 * np.pi * freq * t)
    step = int(every_s * RATE)
    for start in range(0, len(out) - n, step):
        out[start : start + n] = burst
    return out.astype("<i2").tobytes()


def expected_g711(pcm: bytes) -> bytes:
    """What a receiver decodes from `pcm` sent as PCMU."""
    return ulaw_decode(ulaw_encode(pcm))


@dataclass
class RtpStream:
    """One stream: its audio (PCM16 8 kHz, looped), and which packets are lost or held back."""

    pcm: bytes
    port: int  # local port (the offer's)
    loss: float = 0.0  # random loss ratio (sequence numbers skipped)
    silent: list[tuple[float, float]] = field(default_factory=list)  # (from_s, to_s): nothing sent, seq kept
    lost: list[tuple[float, float]] = field(default_factory=list)  # (from_s, to_s): packets lost, seq skipped
    keep: Callable[[int], bool] | None = None  # packets (by number) random loss never takes
    sent: int = 0  # the counters are filled in when the sender stops
    dropped: int = 0
    received: int = 0  # datagrams that came back to this RTP port (a tap must send none)
    ssrc: int = field(default_factory=lambda: random.getrandbits(32))


class RtpSender:
    """Sends every stream's packet k at start + k * 20 ms (absolute schedule: no drift).

    The schedule runs in a forked child process: in the test's own process, a collection or the
    bot thread holding the GIL could stall it for tens of ms, and the burst that follows makes
    PJSIP's jitter buffers grow and then shrink each at its own pace, which is not what these
    tests are about. Targets go to the child and counters come back through shared memory.
    """

    def __init__(self, streams: list[RtpStream], seconds: float, seed: int = 7) -> None:
        self.streams = streams
        self.seconds = seconds
        self.seed = seed
        self._socks = []
        for stream in streams:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind(("127.0.0.1", stream.port))
            self._socks.append(sock)
        ctx = multiprocessing.get_context("fork")
        self._targets = ctx.Array("i", len(streams))  # the answer's port per stream, 0 until known
        self._counts = ctx.Array("q", 3 * len(streams))  # sent, dropped, received per stream
        self._stop = ctx.Event()
        self._process = ctx.Process(target=self._run, daemon=True)

    def start(self) -> RtpSender:
        self._process.start()
        return self

    def aim(self, index: int, port: int) -> None:
        """Stream `index` starts sending to 127.0.0.1:`port` (the answer's port)."""
        self._targets[index] = port

    def stop(self) -> None:
        self._stop.set()
        self._process.join(5)
        if self._process.is_alive():
            self._process.kill()
        for i, stream in enumerate(self.streams):
            stream.sent, stream.dropped, stream.received = self._counts[3 * i : 3 * i + 3]
        for sock in self._socks:
            sock.close()

    def _run(self) -> None:  # in the child
        rng = random.Random(self.seed)
        payloads = [ulaw_encode(s.pcm) for s in self.streams]
        t0 = time.monotonic() + 0.05
        for k in range(int(self.seconds * 50)):
            if self._stop.is_set():
                return
            delay = t0 + k * 0.02 - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            now_s = k * 0.02
            for i, stream in enumerate(self.streams):
                sock, payload = self._socks[i], payloads[i]
                self._counts[3 * i + 2] += self._drain(sock)
                port = self._targets[i]
                if not port:
                    continue
                if any(a <= now_s < b for a, b in stream.silent):
                    continue
                lucky = stream.keep is not None and stream.keep(k)
                if any(a <= now_s < b for a, b in stream.lost) or (not lucky and rng.random() < stream.loss):
                    self._counts[3 * i + 1] += 1
                    continue
                n = len(payload)
                off = (k * FRAME) % n
                chunk = (payload[off : off + FRAME] + payload[: max(0, off + FRAME - n)])[:FRAME]
                header = struct.pack("!BBHII", 0x80, 0, k & 0xFFFF, (k * FRAME) & 0xFFFFFFFF, stream.ssrc)
                sock.sendto(header + chunk, ("127.0.0.1", port))
                self._counts[3 * i] += 1

    @staticmethod
    def _drain(sock: socket.socket) -> int:
        got = 0
        while True:
            try:
                sock.recv(2048, socket.MSG_DONTWAIT)
            except (BlockingIOError, OSError):
                return got
            got += 1


def rtp_ports(count: int) -> list[int]:
    """Even ports for `count` streams (RTP + RTCP each), above the bridges' RTP ranges."""
    lo, _ = free_udp_range(2 * count, lo=60200, hi=65000)
    return [lo + 2 * i for i in range(count)]


def wait_file(path: Path, timeout: float = 15.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return path.read_text().strip()
        time.sleep(0.02)
    raise TimeoutError(f"{path} was not written")


def pcm_of(stream: Stream) -> bytes:
    return b"".join(base64.b64decode(m["media"]["payload"]) for m in stream.of("media"))


def samples(pcm: bytes) -> npt.NDArray[np.float64]:
    return np.frombuffer(pcm, dtype="<i2").astype(np.float64)


def band_energy(x: npt.NDArray[np.float64], freq: float, rate: int = RATE) -> float:
    """Energy within +-100 Hz of `freq`, over the whole signal."""
    spectrum = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / rate)
    return float(spectrum[(freqs > freq - 100) & (freqs < freq + 100)].sum())


def onsets(x: npt.NDArray[np.float64], threshold: float = 1500.0, min_gap: int = RATE // 2,
           band: Callable[[npt.NDArray[np.float64]], npt.NDArray[np.float64]] | None = None) -> list[int]:
    """Sample indices where the signal first exceeds `threshold` after at least `min_gap` below it."""
    y = np.abs(band(x) if band is not None else x)
    above = np.flatnonzero(y > threshold)
    found: list[int] = []
    last = -min_gap - 1
    for i in above:
        if i - last > min_gap:
            found.append(int(i))
        last = int(i)
    return found


def pair_offsets(a: list[int], b: list[int], max_pair: int = RATE // 4) -> list[int]:
    """For each onset of `a`, the signed distance (samples) to the nearest onset of `b`."""
    out: list[int] = []
    bb = np.array(b)
    if not len(bb):
        return out
    for x in a:
        j = int(np.argmin(np.abs(bb - x)))
        if abs(int(bb[j]) - x) <= max_pair:
            out.append(int(bb[j]) - x)
    return out


def media_timestamps_ok(stream: Stream, channels: int = 1, rate: int = RATE) -> bool:
    """Every media timestamp equals the audio sent so far (ms), and chunks count from 1."""
    total = 0
    for i, msg in enumerate(stream.of("media"), 1):
        if int(msg["media"]["chunk"]) != i:
            return False
        total += len(base64.b64decode(msg["media"]["payload"])) // (2 * channels)
        if int(msg["media"]["timestamp"]) != total * 1000 // rate:
            return False
    return True
