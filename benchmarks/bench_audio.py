"""Micro-benchmark of the per-frame audio work on the 20 ms media path.

Usage: python benchmarks/bench_audio.py [iterations]
Prints microseconds per call (best of 5 runs, so scheduler noise does not inflate the figure).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

from bridge.audio.framing import Chunker, frame_bytes
from bridge.audio.g711 import alaw_decode, ulaw_decode, ulaw_encode
from bridge.audio.playout import PlayoutBuffer
from bridge.audio.resample import StreamResampler

FRAME_8K = frame_bytes(8000, 20)  # 320


def per_call_us(fn: Callable[[], object], iterations: int, repeat: int = 5) -> float:
    for _ in range(min(iterations, 1000)):
        fn()
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(iterations):
            fn()
        best = min(best, time.perf_counter() - start)
    return best / iterations * 1e6


def bench_playout(iterations: int) -> float:
    pb = PlayoutBuffer(FRAME_8K, 3 * FRAME_8K, 20 * 8000 * 2)
    out = bytearray(FRAME_8K)
    burst = bytes(range(256)) * 25  # 6400 bytes: a TTS-style burst of 400 ms

    def step() -> None:
        # Keep the buffer fed so every call is a real audio read, not the cheap silent path.
        if pb.buffered_bytes < 2 * FRAME_8K:
            pb.write(burst)
        pb.read_frame_into(out)

    return per_call_us(step, iterations)


def main() -> None:
    iterations = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    ulaw = bytes(range(96, 256))  # 160 bytes = 20 ms of G.711
    pcm8 = ulaw_decode(ulaw)
    rs_up = StreamResampler(8000, 16000)
    rs_down = StreamResampler(16000, 8000)
    pcm16 = pcm8 * 2
    chunker = Chunker(frame_bytes(8000, 100))

    results = {
        "PlayoutBuffer.read_frame_into (320 B, fed)": bench_playout(iterations),
        "ulaw_decode (160 B)": per_call_us(lambda: ulaw_decode(ulaw), iterations),
        "alaw_decode (160 B)": per_call_us(lambda: alaw_decode(ulaw), iterations),
        "ulaw_encode (320 B)": per_call_us(lambda: ulaw_encode(pcm8), iterations),
        "resample 20 ms 8k->16k (amortised)": per_call_us(lambda: rs_up.process(pcm8), iterations // 4),
        "resample 20 ms 16k->8k (amortised)": per_call_us(lambda: rs_down.process(pcm16), iterations // 4),
        "Chunker.push 320 B into 1600 B chunks": per_call_us(lambda: chunker.push(pcm8), iterations),
    }
    width = max(map(len, results))
    for name, us in results.items():
        print(f"{name:<{width}}  {us:8.2f} µs/call")


if __name__ == "__main__":
    main()
