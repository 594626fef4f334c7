"""The ws->rtp probe's allowance: exactly the wait the playout schedule imposes, in whole ticks.

Audio written between two ticks is first heard at the tick whose frame holds its first byte. The
allowance (`playout_wait_ms`) must match that tick for any amount queued ahead (aligned to frames or
not) and any pre-buffer, in the Python playout buffer and in the native pipe alike; otherwise the
probe reads up to a frame below zero (an allowance too big) or a frame too high. And the native
channel knows its own tick's phase (`next_read_ms`), so the wait for the next tick is not guessed.
"""

from __future__ import annotations

import time

import pjsua2 as pj
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.audio.latency import playout_wait_ms
from bridge.audio.pipe_channel import PipeChannel
from bridge.audio.playout import PlayoutBuffer

FRAME = 320
PROBE = b"\x7f\x7f"  # two bytes of the probed bot message's audio


def ticks_until_heard_python(ahead: int, prebuffer: int, playing: bool) -> tuple[int, int, bool]:
    """(ticks until the probe's first byte is read, bytes queued ahead, playing) for PlayoutBuffer."""
    playout = PlayoutBuffer(FRAME, prebuffer, FRAME * 1000)
    out = bytearray(FRAME)
    if playing:
        playout.write(bytes(FRAME * 10 + ahead))
        while not playout.is_playing:
            playout.read_frame_into(out)
        while playout.buffered_bytes > ahead:  # a frame at a time: `ahead` is what stays queued
            playout.read_frame_into(out)
    elif ahead:
        return 0, 0, False  # idle with audio queued: the probe skips that case
    queued, is_playing = playout.buffered_bytes, playout.is_playing
    position = playout.written
    playout.write(PROBE)
    ticks = 0
    while playout.played <= position:
        playout.read_frame_into(out)
        ticks += 1
    return ticks, queued, is_playing


def ticks_until_heard_native(ahead: int, prebuffer: int, playing: bool) -> tuple[int, int, bool]:
    """The same for the native pipe (its playout is a transcription of PlayoutBuffer)."""
    pipe = pj.MediaPipe(1, pj.MediaWakeup(), FRAME, 8, 1, prebuffer, FRAME * 1000, 10)
    if playing:
        pipe.write(bytes(FRAME * 10 + ahead))
        while not pipe.isPlaying():
            pipe.pullFrame()
        while pipe.bufferedBytes() > ahead:
            pipe.pullFrame()
    elif ahead:
        return 0, 0, False
    queued, is_playing = pipe.bufferedBytes(), pipe.isPlaying()
    position = pipe.written()
    pipe.watchProbe(position)
    pipe.write(PROBE)
    ticks = 0
    while not pipe.probeTime():
        pipe.pullFrame()
        ticks += 1
    return ticks, queued, is_playing


EVEN = st.integers(0, 6 * FRAME).map(lambda n: n & ~1)  # whole 16-bit samples


@settings(max_examples=150, deadline=None)
@given(ahead=EVEN, prebuffer=EVEN, playing=st.booleans(), native=st.booleans())
def test_the_allowance_is_the_ticks_the_schedule_makes_the_audio_wait(
    ahead: int, prebuffer: int, playing: bool, native: bool
) -> None:
    run = ticks_until_heard_native if native else ticks_until_heard_python
    ticks, queued, is_playing = run(ahead, prebuffer, playing)
    if ticks == 0:
        return
    prebuffer_frames = -(-prebuffer // FRAME)
    # The first tick comes after the wait for the next tick (measured separately): each later
    # tick is 20 ms of the schedule's own.
    assert playout_wait_ms(queued, FRAME, is_playing, prebuffer_frames) == (ticks - 1) * 20


def test_half_a_frame_ahead_is_no_wait_beyond_the_next_tick() -> None:
    # The old allowance counted 10 ms here and the probe read -10 ms.
    assert ticks_until_heard_python(FRAME // 2, 0, True)[0] == 1
    assert playout_wait_ms(FRAME // 2, FRAME, True, 0) == 0


def test_the_native_channel_knows_when_its_clock_reads_next() -> None:
    pipe = pj.MediaPipe(1, pj.MediaWakeup(), FRAME, 8, 1, 0, FRAME * 100, 10)
    channel = PipeChannel(pipe, FRAME)
    assert pipe.pullTime() == 0.0
    assert channel.next_read_ms(time.monotonic()) is None  # no tick yet: the bridge's estimate is used
    before = time.monotonic()
    pipe.pullFrame()
    after = time.monotonic()
    pulled = pipe.pullTime()
    assert before <= pulled <= after
    assert channel.next_read_ms(pulled) == 20.0
    assert abs(channel.next_read_ms(pulled + 0.0125) - 7.5) < 1e-6  # type: ignore[operator]
    assert channel.next_read_ms(pulled + 0.035) == 0.0  # overdue: the clock reads as soon as it runs
