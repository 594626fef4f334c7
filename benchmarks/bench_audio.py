"""Micro-benchmark of the per-frame audio work on the 20 ms media path.

Usage: python benchmarks/bench_audio.py [iterations]
Prints microseconds per call (best of 5 runs, so scheduler noise does not inflate the figure).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

import numpy as np

from bridge.audio.framing import Chunker, frame_bytes
from bridge.audio.g711 import alaw_decode, ulaw_decode, ulaw_encode
from bridge.audio.playout import PlayoutBuffer
from bridge.audio.resample import StreamResampler

FRAME_8K = frame_bytes(8000, 20)  # 320
RATE_PAIRS = [(8000, 16000), (8000, 24000), (16000, 8000), (24000, 8000), (16000, 24000), (24000, 16000)]


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


def bench_resample(in_rate: int, out_rate: int, iterations: int) -> tuple[float, float, float]:
    """Mean (best of 5), p50 and p99 µs for one 20 ms chunk per call.

    The percentiles are there because the point of the resampler is steady work: every call returns
    20 ms, so the p99 should stay near the mean (no call does a block's worth of work).
    """
    rs = StreamResampler(in_rate, out_rate)
    rng = np.random.default_rng(1)
    pcm = np.clip(rng.normal(0, 3000, in_rate // 50), -32768, 32767).astype("<i2").tobytes()
    mean = per_call_us(lambda: rs.process(pcm), iterations)
    times = np.empty(iterations)
    clock = time.perf_counter_ns
    for i in range(iterations):
        start = clock()
        rs.process(pcm)
        times[i] = clock() - start
    p50, p99 = np.percentile(times, [50, 99]) / 1000
    return mean, float(p50), float(p99)


def main() -> None:
    iterations = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    ulaw = bytes(range(96, 256))  # 160 bytes = 20 ms of G.711
    pcm8 = ulaw_decode(ulaw)
    chunker = Chunker(frame_bytes(8000, 100))

    results = {
        "PlayoutBuffer.read_frame_into (320 B, fed)": bench_playout(iterations),
        "ulaw_decode (160 B)": per_call_us(lambda: ulaw_decode(ulaw), iterations),
        "alaw_decode (160 B)": per_call_us(lambda: alaw_decode(ulaw), iterations),
        "ulaw_encode (320 B)": per_call_us(lambda: ulaw_encode(pcm8), iterations),
        "Chunker.push 320 B into 1600 B chunks": per_call_us(lambda: chunker.push(pcm8), iterations),
    }
    # Once per call and again on every barge-in (the call replaces its resampler on clear).
    results["StreamResampler(8000, 16000) construction"] = per_call_us(
        lambda: StreamResampler(8000, 16000), iterations
    )
    width = max(map(len, results))
    for name, us in results.items():
        print(f"{name:<{width}}  {us:8.2f} µs/call")
    for a, b in RATE_PAIRS:
        mean, p50, p99 = bench_resample(a, b, iterations // 4)
        delay = StreamResampler(a, b).delay_ms
        name = f"resample 20 ms {a // 1000}k->{b // 1000}k"
        print(f"{name:<{width}}  {mean:8.2f} µs/call  (p50 {p50:.1f}, p99 {p99:.1f}; delay {delay:.2f} ms)")


if __name__ == "__main__":
    main()
