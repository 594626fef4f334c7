"""StreamResampler: chunking invariance, continuity, no drift, frequency preserved, edge cases."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.audio.resample import StreamResampler

PAIRS = [(8000, 16000), (8000, 24000), (16000, 8000), (24000, 8000), (16000, 24000), (24000, 16000)]
AMPLITUDE = 12000


def sine(rate: int, seconds: float, freq: float = 1000.0) -> bytes:
    t = np.arange(int(rate * seconds)) / rate
    return (np.sin(2 * np.pi * freq * t) * AMPLITUDE).astype("<i2").tobytes()


def samples(pcm: bytes) -> npt.NDArray[np.int32]:
    return np.frombuffer(pcm, dtype="<i2").astype(np.int32)


def run(rs: StreamResampler, chunks: list[bytes]) -> bytes:
    return b"".join(rs.process(c) for c in chunks) + rs.flush()


def cut(data: bytes, sizes: list[int]) -> list[bytes]:
    chunks, pos = [], 0
    for size in sizes:
        chunks.append(data[pos : pos + size])
        pos += size
    chunks.append(data[pos:])
    return chunks


ONE_SHOT = {pair: run(StreamResampler(*pair), [sine(pair[0], 0.5)]) for pair in PAIRS}


@pytest.mark.parametrize("pair", PAIRS)
@settings(max_examples=25, deadline=None)
# Byte sizes, odd ones included, so the half-sample carry is exercised too.
@given(sizes=st.lists(st.integers(min_value=0, max_value=3000), max_size=40))
def test_chunked_equals_one_shot(pair: tuple[int, int], sizes: list[int]) -> None:
    chunked = run(StreamResampler(*pair), cut(sine(pair[0], 0.5), sizes))
    one = ONE_SHOT[pair]
    assert len(chunked) == len(one)
    assert np.abs(samples(chunked) - samples(one)).max() <= 1


@pytest.mark.parametrize("pair", PAIRS)
def test_no_discontinuity_at_chunk_borders(pair: tuple[int, int]) -> None:
    in_rate, out_rate = pair
    rng = np.random.default_rng(7)
    data = sine(in_rate, 1.0)
    sizes = [int(s) * 2 for s in rng.integers(1, 400, size=200)]
    y = samples(run(StreamResampler(*pair), cut(data, sizes)))
    steady = y[out_rate // 20 : -out_rate // 20]  # skip the onset/offset of the tone itself
    max_step = np.abs(np.diff(steady)).max()
    # A 1 kHz sine of amplitude A moves at most 2*pi*f/fs*A per sample; a click would exceed it.
    bound = 2 * np.pi * 1000 / out_rate * AMPLITUDE
    assert max_step <= bound * 1.02 + 2
    one_step = np.abs(np.diff(samples(ONE_SHOT[pair])[out_rate // 20 : -out_rate // 20])).max()
    assert max_step <= one_step + 1


@pytest.mark.parametrize("pair", PAIRS)
def test_no_drift_over_ten_seconds(pair: tuple[int, int]) -> None:
    in_rate, out_rate = pair
    rs = StreamResampler(in_rate, out_rate)
    data = sine(in_rate, 10.0)
    step = in_rate // 50 * 2
    out_samples = 0
    for i in range(0, len(data), step):
        out_samples += len(rs.process(data[i : i + step])) // 2
    exact = out_rate * 10
    # Output plus what soxr still holds back accounts for every sample...
    assert abs(out_samples + rs.delay_ms * out_rate / 1000 - exact) <= 2
    # ...and after the flush it all came out.
    out_samples += len(rs.flush()) // 2
    assert abs(out_samples - exact) <= 1


@pytest.mark.parametrize("pair", PAIRS)
def test_frequency_preserved(pair: tuple[int, int]) -> None:
    _, out_rate = pair
    y = samples(ONE_SHOT[pair]).astype(np.float64)
    spectrum = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    freqs = np.fft.rfftfreq(len(y), 1 / out_rate)
    assert abs(freqs[int(np.argmax(spectrum))] - 1000) <= 2
    # Level preserved too: the passband is flat at 1 kHz.
    rms = np.sqrt(np.mean(y[out_rate // 10 : -out_rate // 10] ** 2))
    assert abs(rms - AMPLITUDE / np.sqrt(2)) < AMPLITUDE * 0.01


@pytest.mark.parametrize("rate", [8000, 16000, 24000])
def test_identity_returns_input_object(rate: int) -> None:
    rs = StreamResampler(rate, rate)
    data = sine(rate, 0.02)
    assert rs.process(data) is data
    assert rs.delay_ms == 0.0
    assert rs.flush() == b""


def test_identity_keeps_sample_alignment_on_odd_input() -> None:
    rs = StreamResampler(8000, 8000)
    assert rs.process(b"\x01") == b""
    assert rs.process(b"\x02\x03\x04") == b"\x01\x02\x03\x04"
    assert rs.process(b"\x05\x06\x07") == b"\x05\x06"
    assert rs.flush() == b""  # the lone half-sample is dropped
    assert rs.process(b"\x08\x09") == b"\x08\x09"


@pytest.mark.parametrize(("in_rate", "out_rate"), [(44100, 8000), (8000, 48000), (0, 8000), (8000, 8001)])
def test_unsupported_rates(in_rate: int, out_rate: int) -> None:
    with pytest.raises(ValueError, match="unsupported sample rate"):
        StreamResampler(in_rate, out_rate)


def test_empty_input() -> None:
    rs = StreamResampler(8000, 16000)
    assert rs.process(b"") == b""
    assert rs.flush() == b""


def test_flush_returns_tail_and_stream_continues() -> None:
    rs = StreamResampler(8000, 16000)
    first = rs.process(sine(8000, 0.2)) + rs.flush()
    assert len(first) == 2 * 3200
    assert rs.delay_ms == 0.0
    second = rs.process(sine(8000, 0.2)) + rs.flush()
    assert second == first  # a flushed resampler starts the next segment from a clean state


def test_reset_discards_held_back_audio() -> None:
    rs = StreamResampler(16000, 8000)
    rs.process(sine(16000, 0.1))
    assert rs.delay_ms > 0
    rs.reset()
    assert rs.delay_ms == 0.0
    assert rs.flush() == b""


def test_full_scale_input_saturates_instead_of_wrapping() -> None:
    # A full-scale square wave makes the filter overshoot; out-of-range values must clip, not wrap
    # around to the opposite sign (which would be a loud click).
    square = np.where(np.sin(2 * np.pi * 200 * np.arange(8000) / 8000) >= 0, 32767, -32768).astype("<i2")
    y = samples(run(StreamResampler(8000, 16000), [square.tobytes()]))
    assert y.max() == 32767
    assert y.min() == -32768
    positive = np.repeat(square.astype(np.int32) > 0, 2)
    # Away from the edges, every output sample keeps the sign of the input plateau it belongs to.
    edges = np.convolve(np.abs(np.diff(positive.astype(np.int32))), np.ones(9), mode="same") > 0
    interior = ~np.concatenate([edges, [True]])
    assert np.all((y[interior] > 0) == positive[interior])
