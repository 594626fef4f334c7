"""The tap hand-off: each frame stamped with its conference tick; overruns counted and left out."""

from __future__ import annotations

from bridge.audio.ticks import TickCounter
from bridge.tap.channel import TapChannel

FRAME = 320


def commit(ch: TapChannel, ticks: TickCounter, value: int) -> None:
    ticks.advance()  # the tick port runs first in every conference tick
    ch.rx_slot()[:] = bytes([value]) * FRAME
    ch.rx_commit()


def test_frames_carry_the_tick_they_were_committed_in() -> None:
    ticks = TickCounter()
    woken = []
    ch = TapChannel(FRAME, ticks, ring_frames=8, notify=lambda: woken.append(1))
    for i in range(3):
        commit(ch, ticks, i)
    ticks.advance()  # a tick in which this channel got nothing (it was not connected)
    ticks.advance()
    ch.rx_commit_silence()
    got, data = ch.take()
    assert got == [1, 2, 3, 5]
    assert [data[i * FRAME] for i in range(4)] == [0, 1, 2, 0]
    assert ch.take() == ([], b"") and len(woken) == 4


def test_an_overrun_drops_the_oldest_frames_with_their_ticks() -> None:
    ticks = TickCounter()
    ch = TapChannel(FRAME, ticks, ring_frames=8)
    for i in range(20):
        commit(ch, ticks, i)
    got, data = ch.take()
    assert got == list(range(14, 21)) and len(data) == 7 * FRAME and data[0] == 13
    assert ch.rx_overrun_frames == 13


def test_a_tap_never_plays_anything() -> None:
    ch = TapChannel(FRAME, TickCounter())
    ch.write_audio(bytes(FRAME * 4))
    assert ch.tx_audio() is None and ch.tx_frame() == bytes(FRAME)


def test_frames_lapped_while_being_copied_are_dropped_with_their_ticks() -> None:
    ticks = TickCounter()
    ch = TapChannel(FRAME, ticks, ring_frames=8)
    for i in range(7):
        commit(ch, ticks, i)

    class LappedOnFirstRead(list[memoryview]):
        """The ring's slots, as the clock thread would have them: it commits three frames
        just as the loop starts copying."""

        fired = False

        def __getitem__(self, index: int) -> memoryview:  # type: ignore[override]
            if not self.fired:
                self.fired = True
                for value in range(100, 103):
                    commit(ch, ticks, value)
            return list.__getitem__(self, index)

    ch._rx_slots = LappedOnFirstRead(ch._rx_slots)
    got, data = ch.take()
    assert got == [4, 5, 6, 7] and [data[i * FRAME] for i in range(4)] == [3, 4, 5, 6]
    assert ch.rx_overrun_frames == 3
    got, data = ch.take()
    assert got == [8, 9, 10] and [data[i * FRAME] for i in range(3)] == [100, 101, 102]
