"""PlayoutBuffer: one test per rule, then a property test over arbitrary interleavings."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.audio.playout import PlayoutBuffer

FB = 320  # 20 ms at 8 kHz
SILENCE = bytes(FB)


def audio(n: int, byte: int = 0x11) -> bytes:
    return bytes([byte]) * n


class Reader:
    """Drives read_frame_into with one preallocated frame, as the media clock does."""

    def __init__(self, pb: PlayoutBuffer) -> None:
        self.pb = pb
        self.out = bytearray(pb.frame_bytes)

    def read(self) -> tuple[bool, bytes]:
        had_audio = self.pb.read_frame_into(self.out)
        return had_audio, bytes(self.out)

    def read_flags(self, n: int) -> list[bool]:
        return [self.read()[0] for _ in range(n)]


def make(prebuffer: int = 0, cap: int = FB * 1000, gap: int = 10) -> tuple[PlayoutBuffer, Reader]:
    pb = PlayoutBuffer(FB, prebuffer, cap, underrun_gap_frames=gap)
    return pb, Reader(pb)


# -- starting playback --------------------------------------------------------------------------------


def test_starts_idle_and_plays_silence() -> None:
    pb, r = make(prebuffer=3 * FB)
    assert not pb.is_playing
    assert r.read() == (False, SILENCE)
    assert pb.frames_silence == 1


def test_without_prebuffer_playback_starts_on_first_read_after_write() -> None:
    pb, r = make(prebuffer=0)
    pb.write(audio(FB))
    assert r.read() == (True, audio(FB))
    assert pb.is_playing


def test_prebuffer_is_a_delay_not_a_fill_level() -> None:
    pb, r = make(prebuffer=3 * FB)
    pb.write(audio(10 * FB))  # far more than the pre-buffer: still waits out the delay
    assert r.read_flags(3) == [False, False, False]
    assert not pb.is_playing
    assert r.read() == (True, audio(FB))
    assert pb.is_playing


def test_prebuffer_delay_runs_from_the_first_byte() -> None:
    pb, r = make(prebuffer=3 * FB)
    pb.write(audio(FB, 1))
    assert r.read() == (False, SILENCE)
    pb.write(audio(FB, 2))
    assert r.read() == (False, SILENCE)
    pb.write(audio(FB, 3))  # the pre-buffer's worth is queued now, but the delay is not over
    assert r.read() == (False, SILENCE)
    assert r.read() == (True, audio(FB, 1))
    assert r.read() == (True, audio(FB, 2))
    assert r.read() == (True, audio(FB, 3))


def test_prebuffer_delay_does_not_stretch_with_later_writes() -> None:
    pb, r = make(prebuffer=2 * FB)
    pb.write(audio(100))
    r.read()
    pb.write(audio(FB))
    r.read()
    # Two reads since the first byte: playback starts with whatever is queued.
    assert r.read() == (True, audio(FB))
    assert r.read() == (True, audio(100) + bytes(FB - 100))


def test_short_utterance_is_flushed_after_waiting_prebuffer_frames() -> None:
    pb, r = make(prebuffer=150)  # ceil(150 / 320) = 1 frame of waiting
    pb.write(audio(100))
    assert r.read() == (False, SILENCE)
    had_audio, frame = r.read()
    assert had_audio
    assert frame == audio(100) + bytes(FB - 100)
    assert not pb.is_playing  # ran dry: back to pre-buffering


def test_wait_counts_only_reads_after_first_byte() -> None:
    pb, r = make(prebuffer=3 * FB)
    assert r.read_flags(5) == [False] * 5  # nothing queued: does not count as waiting
    pb.write(audio(FB))
    assert r.read_flags(4) == [False, False, False, True]


def test_mark_does_not_cut_the_delay_short() -> None:
    pb, r = make(prebuffer=3 * FB)
    pb.write(audio(100))
    pb.mark("end")
    assert r.read_flags(3) == [False, False, False]
    assert pb.take_played_marks() == []  # its audio has not been read yet
    had_audio, frame = r.read()
    assert had_audio
    assert frame == audio(100) + bytes(FB - 100)
    assert pb.take_played_marks() == ["end"]


def test_bot_marking_every_chunk_keeps_the_cushion() -> None:
    pb, r = make(prebuffer=3 * FB)
    for i in range(5):
        pb.write(audio(FB, i + 1))
        pb.mark(f"m{i}")
    assert r.read_flags(3) == [False, False, False]
    for i in range(5):
        assert r.read() == (True, audio(FB, i + 1))
        assert pb.take_played_marks() == [f"m{i}"]


def test_audio_after_running_dry_is_delayed_again() -> None:
    pb, r = make(prebuffer=2 * FB)
    pb.write(audio(FB))
    assert r.read_flags(4) == [False, False, True, False]  # the fourth read ran dry
    pb.write(audio(FB))
    assert r.read_flags(3) == [False, False, True]


def test_mark_before_new_audio_does_not_start_playback() -> None:
    pb, r = make(prebuffer=3 * FB)
    pb.mark("nothing-before")
    pb.write(audio(FB))
    assert r.read() == (False, SILENCE)
    assert pb.take_played_marks() == ["nothing-before"]


# -- marks --------------------------------------------------------------------------------------------


def test_mark_is_answered_only_after_its_audio_was_read() -> None:
    pb, r = make()
    pb.write(audio(3 * FB))
    pb.mark("a")
    pb.write(audio(FB))
    pb.mark("b")
    r.read()
    assert pb.take_played_marks() == []
    r.read()
    assert pb.take_played_marks() == []
    r.read()
    assert pb.take_played_marks() == ["a"]
    assert pb.take_played_marks() == []  # each mark once
    assert pb.pending_marks == 1
    r.read()
    assert pb.take_played_marks() == ["b"]
    assert pb.pending_marks == 0


def test_mark_inside_a_frame_is_due_when_that_frame_is_read() -> None:
    pb, r = make()
    pb.write(audio(FB + 100))
    pb.mark("mid")
    pb.write(audio(FB))
    r.read()
    assert pb.take_played_marks() == []
    r.read()  # bytes 320..640 include the mark's position (420)
    assert pb.take_played_marks() == ["mid"]


def test_mark_with_nothing_queued_is_answered_at_once() -> None:
    pb, r = make()
    pb.mark("idle")
    assert pb.take_played_marks() == ["idle"]
    pb.write(audio(FB))
    r.read()
    pb.mark("after-all-played")
    assert pb.take_played_marks() == ["after-all-played"]


def test_consecutive_marks_keep_their_order() -> None:
    pb, r = make()
    pb.write(audio(FB))
    for name in ("1", "2", "3"):
        pb.mark(name)
    r.read()
    assert pb.take_played_marks() == ["1", "2", "3"]


# -- clear (barge-in) ---------------------------------------------------------------------------------


def test_clear_drops_audio_returns_pending_marks_and_next_frame_is_silence() -> None:
    pb, r = make()
    pb.write(audio(2 * FB))
    pb.mark("a")
    pb.write(audio(5 * FB))
    pb.mark("b")
    r.read()
    r.read()
    r.read()
    assert pb.take_played_marks() == ["a"]
    r.read()
    assert pb.clear() == ["b"]
    assert pb.cleared_bytes == 3 * FB
    assert pb.buffered_bytes == 0
    assert not pb.is_playing
    assert r.read() == (False, SILENCE)
    assert pb.take_played_marks() == []
    assert pb.pending_marks == 0


def test_clear_returns_due_but_untaken_marks_too_in_order() -> None:
    pb, r = make()
    pb.write(audio(FB))
    pb.mark("due")
    pb.write(audio(FB))
    pb.mark("pending")
    r.read()
    assert pb.clear() == ["due", "pending"]
    assert pb.take_played_marks() == []


def test_marks_after_clear_behave() -> None:
    pb, r = make(prebuffer=2 * FB)
    pb.write(audio(10 * FB))
    pb.clear()
    assert pb.written - pb.played == pb.buffered_bytes == 0
    pb.mark("nothing-queued")
    assert pb.take_played_marks() == ["nothing-queued"]
    pb.write(audio(FB, 7))
    pb.mark("new")
    assert pb.take_played_marks() == []
    assert r.read_flags(2) == [False, False]  # a new segment: the pre-buffer delay again
    assert pb.take_played_marks() == []
    assert r.read() == (True, audio(FB, 7))
    assert pb.take_played_marks() == ["new"]


def test_audio_after_clear_is_prebuffered_again() -> None:
    pb, r = make(prebuffer=2 * FB)
    pb.write(audio(4 * FB))
    r.read()
    pb.clear()
    pb.write(audio(FB, 9))
    assert r.read() == (False, SILENCE)
    assert r.read() == (False, SILENCE)
    assert r.read() == (True, audio(FB, 9))


# -- cap and odd lengths ------------------------------------------------------------------------------


def test_cap_accepts_what_fits_and_counts_the_rest() -> None:
    pb, r = make(cap=1000)
    assert pb.write(audio(1200)) == 1000
    assert pb.dropped_bytes == 200
    assert pb.write(audio(10)) == 0
    assert pb.dropped_bytes == 210
    assert pb.written == 1000
    r.read()
    assert pb.write(audio(400)) == 320
    assert pb.buffered_bytes == 1000


def test_odd_cap_never_leaves_half_a_sample() -> None:
    pb = PlayoutBuffer(FB, 0, 1001)
    assert pb.write(audio(2000)) == 1000


def test_odd_length_write_drops_the_last_byte() -> None:
    pb, _ = make()
    assert pb.write(audio(321)) == 320
    assert pb.odd_bytes_dropped == 1
    assert pb.write(b"\x01") == 0
    assert pb.odd_bytes_dropped == 2
    assert pb.written == 320
    assert pb.dropped_bytes == 0


# -- underruns ----------------------------------------------------------------------------------------


def test_underrun_when_audio_resumes_soon_after_running_dry() -> None:
    pb, r = make(gap=10)
    pb.write(audio(FB))
    assert r.read_flags(2) == [True, False]  # second read runs dry
    assert not pb.is_playing
    r.read_flags(5)
    pb.write(audio(FB))
    assert pb.underruns == 1
    pb.write(audio(FB))  # same gap: counted once
    assert pb.underruns == 1


def test_partial_frame_then_resume_is_an_underrun() -> None:
    pb, r = make(gap=10)
    pb.write(audio(100))
    had_audio, frame = r.read()
    assert had_audio
    assert frame == audio(100) + bytes(FB - 100)  # padded with zeros
    pb.write(audio(FB))
    assert pb.underruns == 1


def test_no_underrun_at_end_of_turn_mark() -> None:
    pb, r = make(gap=10)
    pb.write(audio(FB))
    pb.mark("turn-end")
    r.read_flags(3)
    pb.write(audio(FB))
    assert pb.underruns == 0


def test_no_underrun_when_end_mark_arrives_after_running_dry() -> None:
    pb, r = make(gap=10)
    pb.write(audio(FB))
    r.read_flags(3)
    pb.mark("late-turn-end")
    pb.write(audio(FB))
    assert pb.underruns == 0


@pytest.mark.parametrize(("reads", "underruns"), [(11, 1), (12, 0)])
def test_underrun_gap_boundary(reads: int, underruns: int) -> None:
    pb, r = make(gap=10)
    pb.write(audio(FB))
    # Runs dry on read 2: audio 9 reads later is an interruption, 10 reads later a new turn.
    r.read_flags(reads)
    pb.write(audio(FB))
    assert pb.underruns == underruns


def test_no_underrun_after_clear() -> None:
    pb, r = make(gap=10)
    pb.write(audio(FB))
    r.read_flags(2)  # ran dry mid-stream...
    pb.clear()  # ...but the bot then barged in: what follows is a new turn
    pb.write(audio(FB))
    assert pb.underruns == 0


def test_exactly_empty_buffer_refilled_before_next_read_plays_on() -> None:
    pb, r = make(prebuffer=2 * FB)
    pb.write(audio(2 * FB))
    assert r.read_flags(4) == [False, False, True, True]
    pb.write(audio(FB))  # arrived in time: no gap, no pre-buffering, no underrun
    assert r.read() == (True, audio(FB))
    assert pb.underruns == 0


# -- bursty bots ---------------------------------------------------------------------------------------

BURST_FRAMES = 5  # 100 ms bursts, every 100 ms (5 reads of 20 ms)


def play_bursts(prebuffer: int, jitter: list[int]) -> tuple[PlayoutBuffer, list[bool], bytes]:
    """Burst b lands just before read 1 + 5b + jitter[b]; returns the buffer, read flags, audio out."""
    pb, r = make(prebuffer=prebuffer)
    arrivals = {1 + BURST_FRAMES * b + e: b for b, e in enumerate(jitter)}
    flags, heard = [], bytearray()
    for t in range(BURST_FRAMES * len(jitter) + prebuffer // FB + 10):
        if t in arrivals:
            pb.write(audio(BURST_FRAMES * FB, arrivals[t] + 1))
        had_audio, frame = r.read()
        flags.append(had_audio)
        if had_audio:
            heard += frame
    return pb, flags, bytes(heard)


def assert_played_through(pb: PlayoutBuffer, flags: list[bool], heard: bytes, bursts: int) -> None:
    assert pb.underruns == 0
    first, last = flags.index(True), len(flags) - 1 - flags[::-1].index(True)
    assert all(flags[first : last + 1])  # once playing, no silent frame between bursts
    assert heard == b"".join(audio(BURST_FRAMES * FB, b + 1) for b in range(bursts))


def test_late_burst_is_absorbed_by_the_prebuffer_delay() -> None:
    # First burst early, the next one late: 2 reads of slack needed. With playback starting as soon
    # as 60 ms were buffered (the old rule), the second burst came 40 ms after the first ran out.
    jitter = [-1, 1, -1, 1, 0, 1, -1, 1]
    pb, flags, heard = play_bursts(3 * FB, jitter)
    assert flags[:3] == [False, False, False]  # 60 ms of delay before the first frame
    assert_played_through(pb, flags, heard, len(jitter))


def test_too_short_a_delay_underruns_on_a_late_burst() -> None:
    # The same arrivals with a 20 ms delay: the late burst leaves a gap, counted as an underrun.
    pb, flags, _ = play_bursts(FB, [-1, 1])
    assert pb.underruns == 1
    first, last = flags.index(True), len(flags) - 1 - flags[::-1].index(True)
    assert not all(flags[first : last + 1])


@settings(max_examples=200, deadline=None)
@given(jitter=st.lists(st.integers(min_value=-1, max_value=1), min_size=2, max_size=30))
def test_bursts_with_one_read_of_jitter_never_underrun(jitter: list[int]) -> None:
    pb, flags, heard = play_bursts(3 * FB, jitter)
    assert_played_through(pb, flags, heard, len(jitter))


# -- counters and API ---------------------------------------------------------------------------------


def test_frame_counters() -> None:
    pb, r = make()
    r.read()
    pb.write(audio(FB + 10))
    r.read_flags(3)
    assert pb.frames_audio == 2
    assert pb.frames_silence == 2


def test_read_into_wrong_size_raises() -> None:
    pb, _ = make()
    with pytest.raises(ValueError, match="320"):
        pb.read_frame_into(bytearray(160))


@pytest.mark.parametrize(
    ("frame", "prebuffer", "cap", "gap"),
    [
        (0, 0, 320, 10),
        (321, 0, 1000, 10),
        (320, -1, 1000, 10),
        (320, 0, 100, 10),
        (320, 2000, 1000, 10),
        (320, 0, 1000, -1),
    ],
)
def test_constructor_validation(frame: int, prebuffer: int, cap: int, gap: int) -> None:
    with pytest.raises(ValueError):
        PlayoutBuffer(frame, prebuffer, cap, underrun_gap_frames=gap)


# -- property test ------------------------------------------------------------------------------------

SMALL_FB = 8

ops = st.lists(
    st.one_of(
        st.tuples(st.just("write"), st.binary(max_size=40)),
        st.tuples(st.just("mark")),
        st.tuples(st.just("clear")),
        st.tuples(st.just("read"), st.integers(min_value=1, max_value=4)),
        st.tuples(st.just("take")),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(
    prebuffer=st.integers(min_value=0, max_value=5 * SMALL_FB),
    extra_cap=st.integers(min_value=0, max_value=60),
    gap=st.integers(min_value=0, max_value=5),
    script=ops,
)
def test_any_interleaving_keeps_invariants(
    prebuffer: int, extra_cap: int, gap: int, script: list[tuple[object, ...]]
) -> None:
    cap = max(SMALL_FB, prebuffer) + extra_cap
    pb = PlayoutBuffer(SMALL_FB, prebuffer, cap, underrun_gap_frames=gap)
    out = bytearray(SMALL_FB)
    model = bytearray()  # the unplayed audio, as the buffer should hold it
    offered = 0
    queued: list[str] = []
    position: dict[str, int] = {}
    returned: list[str] = []

    def accept_returned(names: list[str]) -> None:
        for name in names:
            # Never before all audio written before it was read or cleared.
            assert pb.played >= position[name]
        returned.extend(names)

    delay = -(-prebuffer // SMALL_FB)
    waited = 0  # silent reads while idle with audio queued

    def read() -> bool:
        nonlocal waited
        idle_with_audio = not pb.is_playing and bool(model)
        was_playing = pb.is_playing
        before = pb.audio_bytes_read
        had_audio = pb.read_frame_into(out)
        n = pb.audio_bytes_read - before
        assert 0 <= n <= SMALL_FB
        assert had_audio == (n > 0)
        assert out[:n] == model[:n]
        assert out[n:] == bytes(SMALL_FB - n)
        del model[:n]
        if idle_with_audio:
            # The pre-buffer delay: exactly `delay` silent reads, then audio, whatever is queued.
            assert had_audio == (waited >= delay)
            waited = 0 if had_audio else waited + 1
        elif not was_playing:
            assert not had_audio
        return had_audio

    just_cleared = False
    for op in script:
        kind = op[0]
        if kind == "write":
            data = op[1]
            assert isinstance(data, bytes)
            offered += len(data)
            expected = max(0, min(len(data) & ~1, (cap & ~1) - len(model)))
            assert pb.write(data) == expected
            model += data[:expected]
            if expected:
                just_cleared = False
        elif kind == "mark":
            name = f"m{len(queued)}"
            queued.append(name)
            position[name] = pb.written
            pb.mark(name)
        elif kind == "clear":
            accept_returned(pb.clear())
            model.clear()
            waited = 0
            just_cleared = True
        elif kind == "read":
            count = op[1]
            assert isinstance(count, int)
            for _ in range(count):
                had_audio = read()
                if just_cleared:
                    assert not had_audio  # barge-in: silence right after clear
        else:
            accept_returned(pb.take_played_marks())
            # Everything due was handed out.
            assert all(position[n] > pb.played for n in queued[len(returned) :])

        assert pb.buffered_bytes == len(model) <= cap
        assert pb.written - pb.played == pb.buffered_bytes
        assert pb.audio_bytes_read + pb.cleared_bytes + pb.buffered_bytes == pb.written
        assert pb.written + pb.dropped_bytes + pb.odd_bytes_dropped == offered
        assert pb.pending_marks == len(queued) - len(returned)
        assert pb.frames_audio + pb.frames_silence >= 0

    # Nothing gets stuck: with no more input, reading plays out everything queued.
    for _ in range(pb.buffered_bytes // SMALL_FB + -(-prebuffer // SMALL_FB) + 2):
        read()
    assert pb.buffered_bytes == 0
    accept_returned(pb.take_played_marks())
    assert pb.pending_marks == 0
    accept_returned(pb.clear())
    # Every mark came out exactly once, in the order queued.
    assert returned == queued
