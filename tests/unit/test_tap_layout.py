"""Track layouts: mixing with clipping, stereo interleaving, which channels each socket gets."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.tap.layout import deinterleave, interleave, mix, sink_signals


def pcm(values: list[int]) -> bytes:
    return np.array(values, dtype="<i2").tobytes()


samples16 = st.integers(-32768, 32767)


@given(st.lists(st.lists(samples16, min_size=8, max_size=8), min_size=0, max_size=4))
def test_mix_is_the_clipped_sum(signals: list[list[int]]) -> None:
    got = np.frombuffer(mix([pcm(s) for s in signals], 16), dtype="<i2")
    want = np.clip(np.sum(np.array(signals, dtype=np.int64).reshape(-1, 8), axis=0), -32768, 32767) \
        if signals else np.zeros(8)
    assert got.tolist() == want.tolist()


def test_mix_clips_instead_of_wrapping() -> None:
    assert np.frombuffer(mix([pcm([30000, -30000]), pcm([30000, -30000])], 4), dtype="<i2").tolist() == [
        32767, -32768]


@given(st.lists(st.tuples(samples16, samples16), max_size=50))
def test_interleave_round_trip(pairs: list[tuple[int, int]]) -> None:
    left, right = pcm([a for a, _ in pairs]), pcm([b for _, b in pairs])
    stereo = interleave(left, right)
    assert np.frombuffer(stereo, dtype="<i2").tolist() == [x for pair in pairs for x in pair]
    assert deinterleave(stereo) == (left, right)


def test_interleave_needs_equal_lengths() -> None:
    with pytest.raises(ValueError, match="length"):
        interleave(b"\x00\x00", b"")


def test_what_each_layout_sends() -> None:
    tracks = {"1:0": pcm([100, 100]), "1:1": pcm([7, 7]), "2:0": pcm([1, 1])}
    roles = {"1:0": "agent", "1:1": "customer", "2:0": "customer"}
    assert sink_signals("separate", tracks, roles, 4, only="1:1") == [pcm([7, 7])]  # type: ignore[arg-type]
    assert sink_signals("separate", tracks, roles, 4, only="9:9") == [bytes(4)]  # type: ignore[arg-type]
    assert sink_signals("mixed", tracks, roles, 4) == [pcm([108, 108])]  # type: ignore[arg-type]
    # stereo: customers (summed) left, agents right
    assert sink_signals("stereo", tracks, roles, 4) == [pcm([8, 8]), pcm([100, 100])]  # type: ignore[arg-type]
    assert sink_signals("stereo", {"1:1": pcm([5, 5])}, {"1:1": "customer"}, 4) == [pcm([5, 5]), bytes(4)]
