"""pjsua2.MediaPipe, the native media hand-off (native/media_pipe.hpp).

Its playout is a transcription of `PlayoutBuffer`, so a state machine drives both with the same random
operations and demands identical frames and counters after every step; its caller ring must behave like
`MediaChannel`'s; and its wake-ups, probe, close() and lifetime get one test per rule. `pushFrame` and
`pullFrame` run the exact code the conference clock runs, so no SIP endpoint is needed.
"""

from __future__ import annotations

import random
import select
import subprocess
import sys
import textwrap
import time
from typing import Any

import pjsua2 as pj
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test

from bridge.audio.pipe_channel import PipeChannel
from bridge.audio.playout import PlayoutBuffer

FRAME = 320


def frame(value: int, size: int = FRAME) -> bytes:
    return bytes([value]) * size


def make_pipe(
    wakeup: Any = None,
    *,
    pipe_id: int = 1,
    ring: int = 8,
    chunk: int = 1,
    prebuffer: int = 0,
    cap: int = FRAME * 100,
    gap: int = 10,
) -> Any:
    if wakeup is None:
        wakeup = pj.MediaWakeup()
    return pj.MediaPipe(pipe_id, wakeup, FRAME, ring, chunk, prebuffer, cap, gap)


def readable(wakeup: Any) -> bool:
    fd = wakeup.getFd()
    return bool(select.select([fd], [], [], 0)[0])


def take(wakeup: Any) -> list[int]:
    return list(wakeup.take())


# -- the playout against the Python reference -----------------------------------------------------------

PIPE_ID = 7


class PipeVersusReference(RuleBasedStateMachine):
    """The same operations on a PlayoutBuffer and on a MediaPipe wrapped in a PipeChannel."""

    frame_bytes: int
    pb: PlayoutBuffer
    wakeup: Any
    pipe: Any
    channel: PipeChannel
    out: bytearray
    marks_made: int
    # Whether PipeChannel has the pipe watching its first pending mark (one-shot: a post disarms it).
    armed: bool

    @initialize(
        frame_bytes=st.sampled_from([320, 640]),
        # Boundaries drawn often: no pre-buffer, exactly one frame, a cap that a single write fills.
        prebuffer=st.one_of(st.sampled_from([0, 1, 320, 640]), st.integers(min_value=0, max_value=2000)),
        extra_cap=st.one_of(st.sampled_from([0, 1]), st.integers(min_value=0, max_value=3000)),
        gap=st.one_of(st.sampled_from([0, 1, 12]), st.integers(min_value=0, max_value=12)),
    )
    def setup(self, frame_bytes: int, prebuffer: int, extra_cap: int, gap: int) -> None:
        cap = max(frame_bytes, prebuffer) + extra_cap  # may be odd: both round it down
        self.frame_bytes = frame_bytes
        self.pb = PlayoutBuffer(frame_bytes, prebuffer, cap, underrun_gap_frames=gap)
        self.wakeup = pj.MediaWakeup()
        self.pipe = pj.MediaPipe(PIPE_ID, self.wakeup, frame_bytes, 8, 4, prebuffer, cap, gap)
        self.channel = PipeChannel(self.pipe, frame_bytes)
        self.out = bytearray(frame_bytes)
        self.marks_made = 0
        self.armed = False

    @rule(
        length=st.one_of(
            st.sampled_from([0, 1, 2, 319, 320, 321, 640, 641]), st.integers(min_value=0, max_value=1500)
        ),
        seed=st.integers(min_value=0, max_value=2**16),
        then_pull=st.integers(min_value=0, max_value=15),
    )
    def write(self, length: int, seed: int, then_pull: int) -> None:
        # Pulls here too: Hypothesis disables a random subset of rules per example (swarm testing), and
        # a run that writes but never pulls would compare little.
        pcm = random.Random(seed).randbytes(length)
        expected = self.pb.write(pcm)
        assert self.channel.write_audio(pcm) == expected
        self.pull_frames(then_pull)

    @rule()
    def mark(self) -> None:
        name = f"m{self.marks_made}"
        self.marks_made += 1
        self.pb.mark(name)
        self.channel.mark(name)
        if self.channel.marks_pending == 1:
            self.armed = True

    @rule()
    def clear(self) -> None:
        expected = self.pb.clear()
        assert self.channel.clear() == expected
        self.armed = False

    @rule()
    def take_played_marks(self) -> None:
        expected = self.pb.take_played_marks()
        assert self.channel.take_played_marks() == expected
        if expected:
            self.armed = self.channel.marks_pending > 0

    @rule(count=st.integers(min_value=1, max_value=15))
    def pull(self, count: int) -> None:
        self.pull_frames(count)

    def pull_frames(self, count: int) -> None:
        zeros = bytes(self.frame_bytes)
        for _ in range(count):
            had_audio = self.pb.read_frame_into(self.out)
            got = self.pipe.pullFrame()
            if had_audio:
                assert got == bytes(self.out)
            else:
                assert got is None
                assert self.out == zeros
            self.check_counters()
            # The watched mark posts work on the tick that plays its audio out, and only then.
            first = self.channel._marks[0][0] if self.channel._marks else None
            due = self.armed and first is not None and first <= self.pb.played
            assert readable(self.wakeup) == due
            assert take(self.wakeup) == ([PIPE_ID] if due else [])
            if due:
                self.armed = False

    @invariant()
    def counters_match(self) -> None:
        self.check_counters()

    @invariant()
    def only_pulls_post_work(self) -> None:
        assert not readable(self.wakeup)

    def check_counters(self) -> None:
        pb, pipe = self.pb, self.pipe
        native = {
            "written": pipe.written(),
            "played": pipe.played(),
            "cleared": pipe.clearedBytes(),
            "dropped": pipe.droppedBytes(),
            "odd": pipe.oddBytes(),
            "underruns": pipe.underruns(),
            "frames_audio": pipe.framesAudio(),
            "frames_silence": pipe.framesSilence(),
            "buffered": pipe.bufferedBytes(),
            "playing": pipe.isPlaying(),
            "marks_pending": self.channel.marks_pending,
        }
        reference = {
            "written": pb.written,
            "played": pb.played,
            "cleared": pb.cleared_bytes,
            "dropped": pb.dropped_bytes,
            "odd": pb.odd_bytes_dropped,
            "underruns": pb.underruns,
            "frames_audio": pb.frames_audio,
            "frames_silence": pb.frames_silence,
            "buffered": pb.buffered_bytes,
            "playing": pb.is_playing,
            "marks_pending": pb.pending_marks,
        }
        assert native == reference


def test_pipe_plays_out_exactly_like_playout_buffer() -> None:
    run_state_machine_as_test(
        PipeVersusReference, settings=settings(max_examples=200, stateful_step_count=50, deadline=None)
    )


def test_pipe_channel_exposes_the_pipe_counters() -> None:
    pipe = make_pipe()
    ch = PipeChannel(pipe, FRAME)
    assert ch.write_audio(frame(1, 2 * FRAME) + b"\x05") == 2 * FRAME
    assert pipe.pullFrame() == frame(1)
    assert (ch.playout.written, ch.playout.played, ch.playout.buffered_bytes) == (2 * FRAME, FRAME, FRAME)
    assert ch.playout.is_playing
    assert ch.tx_frames_audio == 1


# -- caller ring ----------------------------------------------------------------------------------------


def test_frames_come_out_in_order_and_once() -> None:
    pipe = make_pipe()
    for i in range(5):
        pipe.pushFrame(frame(i))
    assert pipe.rxReady() == 5
    data = pipe.rxTake(1)
    assert data == b"".join(frame(i) for i in range(5))
    assert pipe.rxTake(1) == b""
    assert (pipe.rxWritten(), pipe.rxRead(), pipe.rxReady()) == (5, 5, 0)


def test_take_waits_for_min_frames() -> None:
    pipe = make_pipe()
    for i in range(3):
        pipe.pushFrame(frame(i))
    assert pipe.rxTake(4) == b""
    assert pipe.rxRead() == 0  # nothing consumed
    pipe.pushFrame(frame(3))
    assert pipe.rxTake(4) == b"".join(frame(i) for i in range(4))
    pipe.pushFrame(frame(9))
    assert pipe.rxTake(0) == frame(9)  # 0 means 1, as in MediaChannel


def test_a_stalled_reader_loses_the_oldest_frames_and_counts_them() -> None:
    pipe = make_pipe(ring=8)
    for i in range(20):
        pipe.pushFrame(frame(i))
    data = pipe.rxTake(1)
    assert len(data) == 7 * FRAME  # ring - 1: the slot being written next is never read
    assert data == b"".join(frame(i) for i in range(13, 20))
    assert pipe.rxOverruns() == 13
    pipe.pushFrame(frame(20))
    assert pipe.rxTake(1) == frame(20)
    assert pipe.rxOverruns() == 13


@pytest.mark.parametrize("heartbeat", [b"", b"\x07" * 10, b"\x07" * (FRAME + 2)])
def test_heartbeat_becomes_a_frame_of_silence(heartbeat: bytes) -> None:
    pipe = make_pipe(ring=2)
    pipe.pushFrame(frame(7))
    pipe.rxTake(1)
    pipe.pushFrame(frame(8))  # the slot the heartbeat reuses
    pipe.rxTake(1)
    pipe.pushFrame(heartbeat)
    assert pipe.rxTake(1) == bytes(FRAME)


# -- wake-ups -------------------------------------------------------------------------------------------


def test_a_whole_chunk_posts_once_until_taken() -> None:
    wakeup = pj.MediaWakeup()
    pipe = make_pipe(wakeup, pipe_id=42, ring=16, chunk=4)
    assert pipe.rxChunkTime() == 0.0
    before = time.monotonic()
    for i in range(3):
        pipe.pushFrame(frame(i))
        assert not readable(wakeup)
    pipe.pushFrame(frame(3))
    after = time.monotonic()
    assert readable(wakeup)
    chunk_at = pipe.rxChunkTime()
    assert before <= chunk_at <= after
    pipe.pushFrame(frame(4))  # still queued: posts nothing more
    pipe.pushFrame(frame(5))
    assert pipe.rxChunkTime() == chunk_at  # stamped when the chunk completed
    assert take(wakeup) == [42]
    assert not readable(wakeup)
    assert take(wakeup) == []
    # A take a tick or two late takes the whole chunk and leaves the rest: the next chunk is
    # due when it is whole, not a chunk after the take (which would keep it behind for good).
    assert pipe.rxTake(4) == b"".join(frame(i) for i in range(4))
    assert pipe.rxReady() == 2
    pipe.pushFrame(frame(6))
    assert not readable(wakeup)  # the next chunk is not whole yet
    pipe.pushFrame(frame(7))
    assert take(wakeup) == [42]
    assert pipe.rxChunkTime() >= chunk_at
    assert pipe.rxTake(4) == b"".join(frame(i) for i in (4, 5, 6, 7))


def test_two_pipes_on_one_wakeup() -> None:
    wakeup = pj.MediaWakeup()
    first = make_pipe(wakeup, pipe_id=1)
    second = make_pipe(wakeup, pipe_id=2)
    second.pushFrame(frame(1))
    first.pushFrame(frame(1))
    second.pushFrame(frame(2))
    assert readable(wakeup)
    assert take(wakeup) == [2, 1]  # oldest first, each once
    assert take(wakeup) == []


def test_watch_mark_posts_when_its_audio_has_played() -> None:
    wakeup = pj.MediaWakeup()
    pipe = make_pipe(wakeup, pipe_id=3)
    pipe.write(frame(1, 2 * FRAME))
    position = pipe.mark()
    assert position == 2 * FRAME
    pipe.watchMark(position)
    assert not readable(wakeup)
    assert pipe.pullFrame() == frame(1)
    assert not readable(wakeup)
    assert pipe.pullFrame() == frame(1)
    assert take(wakeup) == [3]
    assert pipe.pullFrame() is None
    assert take(wakeup) == []  # one-shot


def test_watch_mark_minus_one_stops_watching() -> None:
    wakeup = pj.MediaWakeup()
    pipe = make_pipe(wakeup)
    pipe.write(frame(1))
    pipe.watchMark(pipe.mark())
    pipe.watchMark(-1)
    pipe.pullFrame()
    assert not readable(wakeup)


def test_watch_probe_stamps_the_tick_that_plays_past_it() -> None:
    wakeup = pj.MediaWakeup()
    pipe = make_pipe(wakeup, pipe_id=5)
    assert pipe.probeTime() == 0.0
    pipe.write(frame(1, 3 * FRAME))
    pipe.watchProbe(FRAME)
    pipe.pullFrame()  # played == FRAME: not past it yet
    assert pipe.probeTime() == 0.0
    assert not readable(wakeup)
    before = time.monotonic()
    pipe.pullFrame()
    after = time.monotonic()
    assert before <= pipe.probeTime() <= after
    assert take(wakeup) == [5]
    stamped = pipe.probeTime()
    pipe.pullFrame()
    assert pipe.probeTime() == stamped  # first pass only
    assert take(wakeup) == []
    pipe.watchProbe(10 * FRAME)  # a new probe starts unstamped
    assert pipe.probeTime() == 0.0


def test_clear_forgets_the_probe() -> None:
    wakeup = pj.MediaWakeup()
    pipe = make_pipe(wakeup)
    pipe.write(frame(1, 3 * FRAME))
    pipe.watchProbe(100)
    assert pipe.clear() == 3 * FRAME
    # played (cleared audio counts) is now past 100, but the probe's audio is gone: no stamp.
    assert pipe.pullFrame() is None
    pipe.write(frame(2))
    assert pipe.pullFrame() == frame(2)
    assert pipe.probeTime() == 0.0
    assert not readable(wakeup)


def test_watch_next_read_stamps_the_first_tick_after_a_clear_and_posts_once() -> None:
    wakeup = pj.MediaWakeup()
    pipe = make_pipe(wakeup)
    pipe.write(frame(1, 5 * FRAME))
    assert pipe.pullFrame() == frame(1)
    pipe.clear()
    before = time.monotonic()
    pipe.watchNextRead()
    assert pipe.nextReadTime() == 0.0 and not readable(wakeup)
    assert pipe.pullFrame() is None  # that tick plays silence: the cleared audio is gone
    stamped = pipe.nextReadTime()
    assert before <= stamped <= time.monotonic()
    assert take(wakeup) == [1]
    assert pipe.pullFrame() is None
    assert pipe.nextReadTime() == stamped and not readable(wakeup)  # once per watch


def test_close_stops_everything() -> None:
    wakeup = pj.MediaWakeup()
    pipe = make_pipe(wakeup, chunk=1)
    pipe.write(frame(1, 2 * FRAME))
    pipe.watchMark(pipe.mark())
    pipe.watchProbe(0)
    pipe.close()
    pipe.pushFrame(frame(3))
    assert pipe.rxWritten() == 0
    assert pipe.rxTake(1) == b""
    for _ in range(3):
        assert pipe.pullFrame() is None
    assert (pipe.played(), pipe.framesAudio(), pipe.framesSilence()) == (0, 0, 0)
    assert pipe.probeTime() == 0.0
    assert not readable(wakeup)
    assert take(wakeup) == []


def test_pipe_channel_close_closes_the_pipe() -> None:
    pipe = make_pipe()
    ch = PipeChannel(pipe, FRAME)
    ch.closed = True
    assert ch.closed
    pipe.pushFrame(frame(1))
    assert ch.rx_frames == 0


# -- lifetime -------------------------------------------------------------------------------------------

LIFETIME_SCRIPTS = {
    "wakeup-dropped-before-its-pipes": """
        import gc
        import pjsua2 as pj
        wakeup = pj.MediaWakeup()
        pipes = [pj.MediaPipe(i, wakeup, 320, 8, 1, 0, 3200, 10) for i in range(3)]
        for p in pipes:
            p.pushFrame(bytes(320))  # queued in the wakeup's list
        del wakeup
        gc.collect()
        for p in pipes:  # the clock may still run after the loop dropped the wakeup
            p.pushFrame(bytes(320))
            p.write(b"\\x01\\x00" * 160)
            p.watchMark(p.mark())
            p.watchProbe(0)
            assert p.pullFrame() is not None
            assert len(p.rxTake(1)) == 640
        del pipes
        gc.collect()
        print("ok")
    """,
    "pipe-dropped-while-queued": """
        import gc
        import pjsua2 as pj
        wakeup = pj.MediaWakeup()
        kept = pj.MediaPipe(1, wakeup, 320, 8, 1, 0, 3200, 10)
        dropped = pj.MediaPipe(2, wakeup, 320, 8, 1, 0, 3200, 10)
        dropped.pushFrame(bytes(320))
        kept.pushFrame(bytes(320))
        del dropped
        gc.collect()
        assert list(wakeup.take()) == [1], "a dropped pipe must leave the wakeup's list"
        del wakeup
        del kept
        print("ok")
    """,
    "everything-alive-at-exit": """
        import pjsua2 as pj
        wakeup = pj.MediaWakeup()
        pipes = [pj.MediaPipe(i, wakeup, 320, 8, 1, 0, 3200, 10) for i in range(3)]
        for p in pipes:
            p.pushFrame(bytes(320))
            p.write(bytes(640))
        print("ok")  # module teardown frees the wakeup and the pipes in any order
    """,
}


@pytest.mark.parametrize("name", sorted(LIFETIME_SCRIPTS))
def test_lifetime_does_not_crash_or_hang(name: str) -> None:
    # In a subprocess: a crash or a hang fails this test instead of taking pytest down.
    script = textwrap.dedent(LIFETIME_SCRIPTS[name])
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=20, check=False
    )
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    assert result.stdout.strip() == "ok"


# -- bad input ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [5, "abc", None, [1, 2]])
def test_write_of_a_non_bytes_object_raises_and_the_pipe_still_works(bad: object) -> None:
    pipe = make_pipe()
    with pytest.raises(TypeError):
        pipe.write(bad)
    assert pipe.written() == 0
    assert pipe.write(bytearray(frame(4))) == FRAME  # any buffer will do
    assert pipe.pullFrame() == frame(4)


def test_push_of_a_non_bytes_object_raises_and_the_pipe_still_works() -> None:
    pipe = make_pipe()
    with pytest.raises(TypeError):
        pipe.pushFrame(5)
    assert pipe.rxWritten() == 0
    pipe.pushFrame(memoryview(frame(6)))
    assert pipe.rxTake(1) == frame(6)
