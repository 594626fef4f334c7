"""Tracks lined up by conference tick: simultaneous frames side by side whatever each track's start,
gaps, lag or end; late frames dropped and counted; never a frame at the wrong tick."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.tap.align import AlignedBlock, TrackAligner

SIZE = 4  # bytes per frame: small frames keep the property test fast
SILENCE = bytes(SIZE)


def frame(key: str, tick: int) -> bytes:
    return bytes([ord(key[0]), 1 + tick % 200]) * (SIZE // 2)


def push(al: TrackAligner, key: str, ticks: list[int]) -> None:
    al.push(key, ticks, b"".join(frame(key, t) for t in ticks))


def frames_of(block: AlignedBlock, key: str) -> list[bytes]:
    data = block.tracks[key]
    return [data[i : i + SIZE] for i in range(0, len(data), SIZE)]


def test_simultaneous_frames_come_out_side_by_side() -> None:
    al = TrackAligner(SIZE)
    al.add("a")
    al.add("b")
    push(al, "a", [100, 101, 102])
    assert al.pop() is None  # b has nothing yet: wait (within the lag limit)
    push(al, "b", [100, 101])
    block = al.pop()
    assert block is not None and (block.start_tick, block.frames) == (100, 2)
    assert frames_of(block, "a") == [frame("a", 100), frame("a", 101)]
    assert frames_of(block, "b") == [frame("b", 100), frame("b", 101)]
    assert al.origin == 100 and al.out == 102


def test_a_track_that_starts_later_is_silent_before_its_first_frame() -> None:
    al = TrackAligner(SIZE, max_lag_frames=0)
    al.add("a")
    push(al, "a", [10, 11, 12])
    block = al.pop()
    assert block is not None and block.start_tick == 10 and block.frames == 3
    al.add("b")
    push(al, "a", [13, 14, 15])
    push(al, "b", [14, 15])
    block = al.pop()
    assert block is not None and block.start_tick == 13
    assert frames_of(block, "b") == [SILENCE, frame("b", 14), frame("b", 15)]


def test_gaps_in_a_track_are_silence_and_counted() -> None:
    al = TrackAligner(SIZE)
    al.add("a")
    push(al, "a", [0, 1, 4, 5])
    block = al.pop()
    assert block is not None
    want = [frame("a", 0), frame("a", 1), SILENCE, SILENCE, frame("a", 4), frame("a", 5)]
    assert frames_of(block, "a") == want
    assert al.gap_frames["a"] == 2


def test_a_lagging_track_holds_the_others_only_up_to_the_limit() -> None:
    al = TrackAligner(SIZE, max_lag_frames=3)
    al.add("a")
    al.add("b")
    push(al, "a", list(range(0, 10)))
    push(al, "b", [0, 1])
    block = al.pop()
    assert block is not None and block.frames == 7  # a is 8 ahead of b: output runs to 10 - 3
    assert frames_of(block, "b")[2:] == [SILENCE] * 5 and al.lag_frames["b"] == 5
    push(al, "b", [2, 3, 7, 8])  # 2..6 are late now
    assert al.late_frames["b"] == 2
    block = al.pop(final=True)
    assert block is not None and block.start_tick == 7
    assert frames_of(block, "b") == [frame("b", 7), frame("b", 8), SILENCE]


def test_a_track_that_never_sends_holds_output_at_most_the_lag_limit() -> None:
    al = TrackAligner(SIZE, max_lag_frames=2)
    al.add("a")
    al.add("b")
    push(al, "a", [0, 1])
    assert al.pop() is None
    push(al, "a", [2, 3])
    block = al.pop()
    assert block is not None and block.frames == 2 and frames_of(block, "b") == [SILENCE, SILENCE]


def test_an_ended_track_stops_holding_and_goes_away_once_output() -> None:
    al = TrackAligner(SIZE)
    al.add("a")
    al.add("b")
    push(al, "a", [0, 1, 2, 3])
    push(al, "b", [0, 1])
    al.end("b")
    block = al.pop()
    assert block is not None and block.frames == 4
    assert frames_of(block, "b") == [frame("b", 0), frame("b", 1), SILENCE, SILENCE]
    assert al.lag_frames["b"] == 0  # an ended track's silence is not lag
    assert al.keys == ["a"]
    al.push("b", [4], frame("b", 4))  # ignored: it ended
    push(al, "a", [4])
    block = al.pop()
    assert block is not None and list(block.tracks) == ["a"]


def test_pushing_mismatched_sizes_is_a_bug() -> None:
    al = TrackAligner(SIZE)
    al.add("a")
    with pytest.raises(ValueError, match="bytes"):
        al.push("a", [0, 1], bytes(SIZE))


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[dict[str, list[int]], list[tuple[str, int]], int]:
    tracks: dict[str, list[int]] = {}
    for key in ("a", "b", "c")[: draw(st.integers(1, 3))]:
        start = draw(st.integers(0, 30))
        length = draw(st.integers(0, 60))
        ticks = [t for t in range(start, start + length) if draw(st.integers(0, 9)) > 0]  # ~10 % gaps
        tracks[key] = ticks
    # Interleaving: (track, how many frames) pushes, with pops in between ("", 0).
    steps = draw(st.lists(st.tuples(st.sampled_from(["", *tracks]), st.integers(1, 7)), max_size=60))
    return tracks, steps, draw(st.integers(0, 12))


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_no_frame_is_ever_output_at_another_tick_and_none_is_lost_silently(
        scenario: tuple[dict[str, list[int]], list[tuple[str, int]], int]) -> None:
    tracks, steps, lag = scenario
    al = TrackAligner(SIZE, max_lag_frames=lag)
    for key in tracks:
        al.add(key)
    cursor = dict.fromkeys(tracks, 0)
    blocks: list[AlignedBlock] = []

    def pop(final: bool = False) -> None:
        block = al.pop(final)
        if block is not None:
            blocks.append(block)

    for key, n in steps:
        if not key:
            pop()
            continue
        ticks = tracks[key][cursor[key] : cursor[key] + n]
        cursor[key] += len(ticks)
        push(al, key, ticks)
    for key, ticks in tracks.items():
        push(al, key, ticks[cursor[key] :])
        al.end(key)
    pop(final=True)
    # Blocks are contiguous in tick order.
    for before, after in itertools.pairwise(blocks):
        assert after.start_tick == before.start_tick + before.frames
    for key, ticks in tracks.items():
        output = 0
        for block in blocks:
            if key not in block.tracks:
                continue
            for i, data in enumerate(frames_of(block, key)):
                tick = block.start_tick + i
                assert data in (SILENCE, frame(key, tick)), f"{key}: tick {tick} carries another tick's frame"
                output += data != SILENCE
        # Every frame was output at its own tick, or counted as late.
        assert output + al.late_frames[key] == len(ticks)
        if not any(not key for key, _ in steps):
            assert al.late_frames[key] == 0  # nothing output before everything was in: nothing late
