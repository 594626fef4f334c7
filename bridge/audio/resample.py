"""Streaming PCM16LE mono resampler between the rates the bridge speaks (8, 16, 24 kHz).

A polyphase FIR in numpy. It replaced soxr, whose stream mode holds output back and releases it in
blocks: with 20 ms input, 8k->16k returned 108 ms on one call in five and nothing otherwise (63 ms
held back on average), which alone broke the latency budget. Here every call returns the output of
all the input seen so far: 20 ms in gives exactly 20 ms out on every call, for every pair, and the
only latency is the filter's group delay, a constant reported by `delay_ms`.

Filter. One Kaiser-windowed sinc per rate pair (out/in = L/M in lowest terms), designed at the
common rate in_rate * L with its cut-off at the lower rate's Nyquist frequency. Transition bands:
3.4-4.6 kHz when 8 kHz is involved (so neither images nor aliases land in the 0.3-3.4 kHz telephone
band), 7-9 kHz for 16k<->24k. The length is the shortest that reaches _STOP_DB of stop band, rounded
up so the group delay is a whole number of both input and output samples (an impulse then comes out
on one output sample; flush() knows exactly how much is left). Design response (the unit tests check
it through the streaming path):

    pair          taps  delay     pass band            stop band
    8k<->16k        65  2.00 ms   +/-0.002 dB to 3.4k  -76.4 dB from 4.6k
    8k<->24k        97  2.00 ms   +/-0.002 dB to 3.4k  -76.7 dB from 4.6k
    16k<->24k      121  1.25 ms   +/-0.001 dB to 7k    -79.7 dB from 9k

A shorter filter trades stop band for delay at ~34 dB per ms for the 8 kHz pairs (1.5 ms would give
~60 dB); 2 ms keeps a margin over the 60 dB requirement while staying within the 2 ms latency target.

Computation. Output j sits at j*M on the common grid and input i at i*L; gathering, for each block of
L consecutive outputs, the input window they share turns a whole call into one (blocks x K) @ (K x L)
product (K = 33..97), with no Python loop over samples or even phases. The window matrix is a strided
view of [history | chunk | zero padding], copied contiguous so BLAS takes it. Outputs that would need
input not yet received are computed against the zero padding, dropped, and computed again next call.

Determinism. BLAS changes its summation order with the matrix size (measured: 1-ulp differences for
the same output computed in differently sized calls), which could flip a rounding and make the output
depend on how the input was cut. So the taps are quantised to multiples of 2**-24: with int16 input,
every product and partial sum is then a multiple of 2**-24 below 2**17, which float64 holds exactly
(up to 2**29). The sums are exact in any order, and the output is bit-identical however it is cut.

Cost (benchmarks/bench_audio.py, 20 ms per call, int16 conversion included): 8-11 µs per call for
every pair, p99 within ~1.5x of p50 since every call does the same work. Construction ~0.3 µs; the
six filter banks take ~0.7 ms to design, once, at import.
"""

from __future__ import annotations

from math import ceil, gcd, pi

import numpy as np
import numpy.typing as npt

__all__ = ["SUPPORTED_RATES", "StreamResampler"]

SUPPORTED_RATES = frozenset({8000, 16000, 24000})

_STOP_DB = 75.0
# Taps are multiples of 2**-24: quantisation noise ~-130 dB (irrelevant next to the stop band), and
# with int16 input every partial sum is a multiple of 2**-24 below 2**17, exact in float64 (below 2**29).
_TAP_BITS = 24

_F64 = npt.NDArray[np.float64]
_NO_HIST: _F64 = np.zeros(0)


class _Bank:
    """The precomputed filter of one rate pair, shared read-only by every resampler of that pair."""

    __slots__ = ("delay", "down", "hist", "lo", "silence", "taps", "up", "width")

    def __init__(self, in_rate: int, out_rate: int) -> None:
        g = gcd(in_rate, out_rate)
        up, down = out_rate // g, in_rate // g
        fs = in_rate * up  # the common grid the filter h is designed on
        cutoff = min(in_rate, out_rate) / 2
        transition = 1200.0 if cutoff == 4000 else 2000.0
        # Kaiser's length estimate for _STOP_DB, then the half-length (the group delay) rounded up to
        # a multiple of up*down: a whole number of input and of output samples.
        half = (_STOP_DB - 7.95) / (2.285 * 2 * pi * transition / fs) / 2
        delay_fs = ceil(half / (up * down)) * up * down
        n_taps = 2 * delay_fs + 1
        # Spend the rounded-up length on more attenuation rather than a narrower transition.
        stop_db = 7.95 + 2.285 * 2 * pi * transition / fs * (n_taps - 1)
        k = np.arange(n_taps) - delay_fs
        h = np.sinc(2 * cutoff / fs * k) * np.kaiser(n_taps, 0.1102 * (stop_db - 8.7))
        h *= up / h.sum()  # unity gain at DC after zero-stuffing by `up`

        # Block form: output b*up + r uses input b*down + m with tap r*down - m*up, for m in [lo, hi].
        lo = -((n_taps - 1) // up)
        hi = (up - 1) * down // up
        width = hi - lo + 1
        m = np.arange(lo, hi + 1)[:, None]
        idx = np.arange(up)[None, :] * down - m * up
        taps = np.where((idx >= 0) & (idx < n_taps), h[np.clip(idx, 0, n_taps - 1)], 0.0)
        taps = np.rint(taps * 2.0**_TAP_BITS)
        if 32768 * np.abs(taps).sum(axis=0).max() >= 2.0**53:  # pragma: no cover - design guard
            raise AssertionError("resampler taps too large for exact float64 sums")
        taps *= 2.0**-_TAP_BITS  # a power of two: exact
        taps.setflags(write=False)

        self.up = up
        self.down = down
        self.lo = lo
        self.width = width
        self.taps: _F64 = taps
        self.delay = delay_fs // down  # in output samples
        # Input samples kept between calls: enough for the oldest window a call can start with
        # (a block begins at most down-1 samples before the first new input).
        self.hist = down - 1 - lo
        silence = np.zeros(self.hist)
        silence.setflags(write=False)
        self.silence: _F64 = silence


# Designed once at import (~1 ms for all six) so that creating a resampler, once per call and again
# on every barge-in, is only a dictionary look-up and a few attribute stores.
_BANKS: dict[tuple[int, int], _Bank] = {
    (a, b): _Bank(a, b) for a in sorted(SUPPORTED_RATES) for b in sorted(SUPPORTED_RATES) if a != b
}


class StreamResampler:
    """Stateful resampler for one direction of one call: feed chunks of any size, get audio back.

    Each process() returns every output sample whose input has arrived, so output keeps pace with
    input (n input samples in total always gave ceil(n * out_rate / in_rate) output samples) and lags
    it by the constant `delay_ms`. The output does not depend on how the input was cut, bit for bit.
    An odd trailing byte (half a sample) is kept and joined to the next call rather than shifting every
    later sample by one byte. The stream starts from silence, after reset() and flush() too.
    """

    __slots__ = ("_bank", "_carry", "_hist", "_in_rate", "_n_in", "_n_out", "_out_rate")

    def __init__(self, in_rate: int, out_rate: int) -> None:
        for rate in (in_rate, out_rate):
            if rate not in SUPPORTED_RATES:
                raise ValueError(f"unsupported sample rate {rate}; expected one of {sorted(SUPPORTED_RATES)}")
        self._in_rate = in_rate
        self._out_rate = out_rate
        self._carry = b""
        self._bank = _BANKS.get((in_rate, out_rate))
        self._hist: _F64 = self._bank.silence if self._bank is not None else _NO_HIST
        self._n_in = 0  # input samples since the last reset/flush
        self._n_out = 0  # output samples returned since then

    @property
    def in_rate(self) -> int:
        return self._in_rate

    @property
    def out_rate(self) -> int:
        return self._out_rate

    @property
    def delay_ms(self) -> float:
        """Group delay: the output lags the input by this much, constantly (0 when rates match)."""
        if self._bank is None:
            return 0.0
        return self._bank.delay * 1000.0 / self._out_rate

    def process(self, pcm: bytes) -> bytes:
        """Resample one chunk and return all the output it completes. Returns `pcm` if rates match."""
        if self._carry or len(pcm) & 1:
            pcm = self._carry + pcm
            even = len(pcm) & ~1
            self._carry = pcm[even:]
            pcm = pcm[:even]
        if self._bank is None:
            return pcm
        if not pcm:
            return b""
        return self._run(np.frombuffer(pcm, dtype="<i2"))

    def flush(self) -> bytes:
        """End the segment: return the filter's remaining output and start the next one from silence.

        That is what process() would return for 2 * delay_ms of silent input: the last delay_ms of
        the audio plus the filter's decay after it, so the segment ends smoothly and nothing is lost.
        Use it at the end of a bot turn or of the call; between chunks it is never needed. A pending
        odd byte is discarded: half a sample cannot be played.
        """
        self._carry = b""
        bank = self._bank
        if bank is None or self._n_in == 0:
            return b""
        tail = self._run(np.zeros(2 * bank.delay * bank.down // bank.up))
        self.reset()
        return tail

    def reset(self) -> None:
        """Forget the input seen so far (barge-in: cleared audio must not leak into the next)."""
        self._carry = b""
        if self._bank is not None:
            self._hist = self._bank.silence
        self._n_in = 0
        self._n_out = 0

    def _run(self, x: npt.NDArray[np.int16] | _F64) -> bytes:
        bank = self._bank
        assert bank is not None
        up, down, hist, width = bank.up, bank.down, bank.hist, bank.width
        n0 = self._n_in
        n1 = n0 + x.size
        j0 = self._n_out
        # Output j needs inputs up to floor(j * down / up): all j below j1 are complete.
        j1 = -(-n1 * up // down)
        b0 = j0 // up
        b1 = -(-j1 // up)
        # buf[i] holds input sample n0 - hist + i; zeros after the chunk complete the last block.
        end = hist + x.size
        size = max(end, (b1 - 1) * down + width + bank.lo - n0 + hist)
        buf = np.empty(size)
        buf[:hist] = self._hist
        buf[hist:end] = x
        buf[end:] = 0.0
        self._hist = buf[x.size : end]
        self._n_in = n1
        if j1 == j0:
            return b""
        self._n_out = j1
        start = b0 * down + bank.lo - n0 + hist
        windows: _F64 = np.ndarray(
            (b1 - b0, width), dtype=np.float64, buffer=buf, offset=start * 8, strides=(down * 8, 8)
        )
        y = (np.ascontiguousarray(windows) @ bank.taps).ravel()[j0 - b0 * up : j1 - b0 * up]
        np.rint(y, out=y)
        # Filter overshoot on near-full-scale input must saturate: astype alone would wrap it around.
        # (The method, not np.clip: same ufunc, a third of the Python overhead.)
        y.clip(-32768.0, 32767.0, out=y)
        return y.astype("<i2").tobytes()
