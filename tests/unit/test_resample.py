"""StreamResampler: output pace, constant delay, chunking invariance, continuity, quality, edge cases."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.audio.resample import StreamResampler

PAIRS = [(8000, 16000), (8000, 24000), (16000, 8000), (24000, 8000), (16000, 24000), (24000, 16000)]
AMPLITUDE = 12000


def sine(rate: int, seconds: float, freq: float = 1000.0, amplitude: float = AMPLITUDE) -> bytes:
    t = np.arange(int(rate * seconds)) / rate
    return np.rint(np.sin(2 * np.pi * freq * t) * amplitude).astype("<i2").tobytes()


def noise(rate: int, seconds: float, seed: int = 1) -> bytes:
    x = np.random.default_rng(seed).normal(0, 4000, int(rate * seconds))
    return np.clip(np.rint(x), -32768, 32767).astype("<i2").tobytes()


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


def chunks_20ms(data: bytes, rate: int) -> list[bytes]:
    step = rate // 50 * 2
    return [data[i : i + step] for i in range(0, len(data), step)]


def passband_top(pair: tuple[int, int]) -> float:
    return 3400.0 if min(pair) == 8000 else 7000.0


def delay_samples(rs: StreamResampler) -> int:
    n = rs.delay_ms * rs.out_rate / 1000
    assert n == int(n)  # the design keeps the delay a whole number of output samples
    return int(n)


ONE_SHOT = {pair: run(StreamResampler(*pair), [noise(pair[0], 0.3)]) for pair in PAIRS}


# -- pace and delay -----------------------------------------------------------------------------------


@pytest.mark.parametrize("pair", PAIRS)
def test_every_20ms_chunk_gives_exactly_20ms(pair: tuple[int, int]) -> None:
    in_rate, out_rate = pair
    rs = StreamResampler(in_rate, out_rate)
    sizes = {len(rs.process(chunk)) for chunk in chunks_20ms(noise(in_rate, 2.0), in_rate)}
    # From the very first call: nothing is held back in blocks, and there is no start-up burst.
    assert sizes == {out_rate // 50 * 2}


@pytest.mark.parametrize("pair", PAIRS)
@settings(max_examples=20, deadline=None)
@given(sizes=st.lists(st.integers(min_value=1, max_value=700), min_size=1, max_size=60))
def test_output_keeps_pace_for_any_chunking(pair: tuple[int, int], sizes: list[int]) -> None:
    in_rate, out_rate = pair
    rs = StreamResampler(in_rate, out_rate)
    data = noise(in_rate, sum(sizes) / in_rate)
    n_in = n_out = 0
    for chunk in cut(data, [2 * s for s in sizes]):
        n_in += len(chunk) // 2
        n_out += len(rs.process(chunk)) // 2
        # Every output sample whose input has arrived is returned: the count is proportional to the
        # input, rounded up to the next output sample (the fractional phase between the grids).
        assert 0 <= n_out - n_in * out_rate / in_rate < 1


@pytest.mark.parametrize("pair", PAIRS)
def test_delay_is_small_and_constant(pair: tuple[int, int]) -> None:
    rs = StreamResampler(*pair)
    before = rs.delay_ms
    assert 0 < before <= 2.0
    for chunk in chunks_20ms(noise(pair[0], 0.5), pair[0]):
        rs.process(chunk)
        assert rs.delay_ms == before


@pytest.mark.parametrize("pair", PAIRS)
def test_impulse_comes_out_delay_ms_later(pair: tuple[int, int]) -> None:
    in_rate, out_rate = pair
    x = np.zeros(in_rate // 5, dtype="<i2")
    at = in_rate // 10  # 100 ms: on both grids
    x[at] = 20000
    rs = StreamResampler(in_rate, out_rate)
    y = samples(b"".join(rs.process(c) for c in chunks_20ms(x.tobytes(), in_rate))).astype(np.float64)
    lag = int(np.argmax(np.correlate(y, np.abs(y), mode="full"))) - (len(y) - 1)
    peak = int(np.argmax(np.abs(y)))
    assert lag == 0  # the response is symmetric about its peak: linear phase
    assert (peak - out_rate // 10) * 1000 / out_rate == rs.delay_ms


@pytest.mark.parametrize("pair", PAIRS)
def test_chirp_cross_correlation_gives_delay_ms(pair: tuple[int, int]) -> None:
    in_rate, out_rate = pair
    seconds, f0, f1 = 0.5, 200.0, passband_top(pair) - 200

    def chirp(rate: int) -> npt.NDArray[np.float64]:
        t = np.arange(int(rate * seconds)) / rate
        return np.sin(2 * np.pi * (f0 * t + (f1 - f0) / (2 * seconds) * t**2)) * np.hanning(len(t))

    x = np.rint(chirp(in_rate) * AMPLITUDE).astype("<i2").tobytes()
    rs = StreamResampler(in_rate, out_rate)
    y = samples(b"".join(rs.process(c) for c in chunks_20ms(x, in_rate))).astype(np.float64)
    ideal = chirp(out_rate) * AMPLITUDE  # the same chirp generated directly at the output rate
    xc = np.correlate(y, ideal, mode="full")
    lag = int(np.argmax(xc)) - (len(ideal) - 1)
    assert lag * 1000 / out_rate == pytest.approx(rs.delay_ms)
    assert rs.delay_ms <= 2.0
    # Once aligned, the output is that chirp (passband flat, phase linear): within 0.1 % of full scale.
    d = delay_samples(rs)
    assert np.abs(y[d:] - ideal[: len(y) - d]).max() < 0.001 * 32768


# -- chunking, continuity, drift ----------------------------------------------------------------------


@pytest.mark.parametrize("pair", PAIRS)
@settings(max_examples=25, deadline=None)
# Byte sizes, odd ones included, so the half-sample carry is exercised too.
@given(sizes=st.lists(st.integers(min_value=0, max_value=3000), max_size=40))
def test_chunked_equals_one_shot_bit_for_bit(pair: tuple[int, int], sizes: list[int]) -> None:
    assert run(StreamResampler(*pair), cut(noise(pair[0], 0.3), sizes)) == ONE_SHOT[pair]


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
    assert max_step <= bound * 1.01 + 2


@pytest.mark.parametrize("pair", PAIRS)
def test_no_drift_over_ten_seconds(pair: tuple[int, int]) -> None:
    in_rate, out_rate = pair
    rs = StreamResampler(in_rate, out_rate)
    out_samples = sum(len(rs.process(c)) // 2 for c in chunks_20ms(sine(in_rate, 10.0), in_rate))
    assert out_samples == out_rate * 10
    # The flush adds the filter's tail, two group delays long, and nothing else.
    assert len(rs.flush()) // 2 == 2 * delay_samples(rs)


# -- quality ------------------------------------------------------------------------------------------


def steady_state(pair: tuple[int, int], freq: float, seconds: float = 1.0) -> npt.NDArray[np.float64]:
    in_rate, out_rate = pair
    rs = StreamResampler(in_rate, out_rate)
    y = samples(b"".join(rs.process(c) for c in chunks_20ms(sine(in_rate, seconds, freq), in_rate)))
    return y[out_rate // 10 :].astype(np.float64)  # past the filter's onset


F64 = npt.NDArray[np.float64]


def spectrum_db(y: F64, rate: int) -> tuple[F64, F64]:
    """Level of each frequency in dB relative to AMPLITUDE (Blackman window: low leakage)."""
    window = np.blackman(len(y))
    level: F64 = np.abs(np.fft.rfft(y * window)) / (window.sum() / 2)
    freqs: F64 = np.fft.rfftfreq(len(y), 1 / rate).astype(np.float64)
    db: F64 = 20 * np.log10(level / AMPLITUDE + 1e-12)
    return freqs, db


@pytest.mark.parametrize("pair", PAIRS)
def test_frequency_and_level_preserved_across_the_passband(pair: tuple[int, int]) -> None:
    for freq in (300.0, 1000.0, passband_top(pair)):
        y = steady_state(pair, freq)
        freqs, db = spectrum_db(y, pair[1])
        assert abs(freqs[int(np.argmax(db))] - freq) <= 2
        gain_db = 20 * np.log10(np.sqrt(np.mean(y**2)) / (AMPLITUDE / np.sqrt(2)))
        assert abs(gain_db) <= 0.5, (freq, gain_db)


@pytest.mark.parametrize("pair", [p for p in PAIRS if p[1] > p[0]])
def test_images_of_upsampling_are_60db_down(pair: tuple[int, int]) -> None:
    for freq in (1000.0, passband_top(pair)):
        freqs, db = spectrum_db(steady_state(pair, freq), pair[1])
        images = np.abs(freqs - freq) > 100  # everything but the tone itself
        assert db[images].max() <= -60, (freq, db[images].max())


@pytest.mark.parametrize("pair", [p for p in PAIRS if p[1] < p[0]])
def test_aliases_of_downsampling_are_60db_down(pair: tuple[int, int]) -> None:
    in_rate, out_rate = pair
    top = passband_top(pair)
    # From where an alias would land inside the passband (out_rate - top) up to the input's Nyquist.
    for freq in np.linspace(out_rate - top, in_rate / 2 - 100, 7):
        y = steady_state(pair, float(freq))
        level_db = 20 * np.log10(np.sqrt(np.mean(y**2)) / (AMPLITUDE / np.sqrt(2)) + 1e-12)
        assert level_db <= -60, (freq, level_db)


def test_full_scale_input_saturates_instead_of_wrapping() -> None:
    # A full-scale square wave makes the filter overshoot; out-of-range values must clip, not wrap
    # around to the opposite sign (which would be a loud click).
    square = np.where(np.sin(2 * np.pi * 200 * np.arange(8000) / 8000) >= 0, 32767, -32768).astype("<i2")
    rs = StreamResampler(8000, 16000)
    d = delay_samples(rs)
    y = samples(run(rs, [square.tobytes()]))[d : d + 16000]
    assert y.max() == 32767
    assert y.min() == -32768
    positive = np.repeat(square.astype(np.int32) > 0, 2)
    # Away from the edges, every output sample keeps the sign of the input plateau it belongs to.
    edges = np.convolve(np.abs(np.diff(positive.astype(np.int32))), np.ones(9), mode="same") > 0
    interior = ~np.concatenate([edges, [True]])
    assert np.all((y[interior] > 0) == positive[interior])


# -- flush, reset, identity, edge cases ---------------------------------------------------------------


def test_flush_returns_tail_and_next_segment_starts_clean() -> None:
    rs = StreamResampler(8000, 16000)
    d = delay_samples(rs)
    body = rs.process(sine(8000, 0.2))
    tail = rs.flush()
    assert len(body) == 2 * 3200
    assert len(tail) == 2 * 2 * d
    assert np.abs(samples(tail)[-4:]).max() <= 1  # the filter has run down to silence
    assert rs.process(sine(8000, 0.2)) + rs.flush() == body + tail
    assert rs.flush() == b""  # nothing new since: nothing held back


def test_flush_equals_feeding_silence() -> None:
    rs, ref = StreamResampler(24000, 16000), StreamResampler(24000, 16000)
    data = noise(24000, 0.1)
    silence = bytes(2 * 2 * 24000 * delay_samples(rs) // 16000)
    assert rs.process(data) + rs.flush() == ref.process(data) + ref.process(silence)


@pytest.mark.parametrize("pair", PAIRS)
def test_reset_forgets_state(pair: tuple[int, int]) -> None:
    in_rate, out_rate = pair
    data = noise(in_rate, 0.1, seed=2)
    fresh = StreamResampler(*pair).process(data)
    rs = StreamResampler(*pair)
    rs.process(noise(in_rate, 0.05, seed=3) + b"\x7f")  # history, a fractional phase and a half sample
    rs.reset()
    assert rs.process(data) == fresh
    assert rs.delay_ms * out_rate / 1000 == delay_samples(StreamResampler(*pair))


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
    assert rs.process(b"\x01") == b""  # half a sample: kept for the next call
    assert rs.flush() == b""


def test_rates_are_reported() -> None:
    rs = StreamResampler(24000, 8000)
    assert (rs.in_rate, rs.out_rate) == (24000, 8000)
