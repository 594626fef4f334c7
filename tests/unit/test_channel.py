"""The clock-thread/loop hand-off: caller frames in order, overruns counted, bot frames out."""

from __future__ import annotations

import itertools
import threading

from bridge.audio.channel import MediaChannel
from bridge.audio.playout import PlayoutBuffer
from bridge.audio.ring import ring_lapped, ring_span

FRAME = 320


def channel(ring: int = 8, prebuffer: int = 0) -> MediaChannel:
    return MediaChannel(FRAME, PlayoutBuffer(FRAME, prebuffer, FRAME * 100), ring_frames=ring)


def push(ch: MediaChannel, value: int) -> None:
    ch.rx_slot()[:] = bytes([value]) * FRAME
    ch.rx_commit()


def test_frames_come_out_in_order_and_once() -> None:
    ch = channel()
    for i in range(5):
        push(ch, i)
    data = ch.rx_take()
    assert [data[i * FRAME] for i in range(5)] == [0, 1, 2, 3, 4]
    assert ch.rx_take() == b""


def test_a_late_take_takes_whole_chunks_and_leaves_the_rest_for_the_next() -> None:
    # Chunks of 5 frames; the loop comes a tick late and finds 6. Taking all 6 would leave the
    # chunker 1 frame over, and every later chunk would go out a frame (20 ms) late for good.
    ch = channel(ring=16)
    for i in range(6):
        push(ch, i)
    data = ch.rx_take(5)
    assert [data[i * FRAME] for i in range(len(data) // FRAME)] == [0, 1, 2, 3, 4]
    assert ch.rx_frames_ready == 1
    for i in range(6, 9):
        push(ch, i)
    assert ch.rx_take(5) == b""  # 4 waiting: the next chunk is not whole yet
    push(ch, 9)
    data = ch.rx_take(5)
    assert [data[i * FRAME] for i in range(len(data) // FRAME)] == [5, 6, 7, 8, 9]
    for i in range(10, 13):
        push(ch, i)
    assert len(ch.rx_take(1)) == 3 * FRAME  # the end of the call: whatever is left


def test_a_stalled_loop_loses_the_oldest_frames_and_counts_them() -> None:
    ch = channel(ring=8)
    for i in range(20):
        push(ch, i)
    data = ch.rx_take()
    assert len(data) == 7 * FRAME  # ring - 1: the slot being written next is never read
    assert data[0] == 13 and data[-1] == 19
    assert ch.rx_overrun_frames == 13


def test_ring_span_takes_whole_chunks_within_what_the_ring_holds() -> None:
    assert ring_span(0, 2, 8, whole=5) is None  # fewer than a whole chunk wait
    assert ring_span(0, 12, 8, whole=5) == (5, 10, 5)  # 7 readable: one chunk, 5 overrun
    assert ring_span(3, 9, 8) == (3, 9, 0)
    assert ring_lapped(5, 12, 8) == 0
    assert ring_lapped(5, 15, 8) == 3


def test_heartbeat_becomes_silence() -> None:
    ch = channel()
    push(ch, 7)
    ch.rx_commit_silence()
    data = ch.rx_take()
    assert data[FRAME:] == bytes(FRAME)


def test_notify_is_called_per_committed_frame() -> None:
    calls = []
    ch = MediaChannel(FRAME, PlayoutBuffer(FRAME, 0, FRAME * 10), notify=lambda: calls.append(1))
    push(ch, 1)
    ch.rx_commit_silence()
    assert len(calls) == 2


def test_tx_frames_play_bot_audio_then_silence() -> None:
    ch = channel()
    ch.write_audio(b"\x01\x00" * (FRAME // 2) * 2)
    assert bytes(ch.tx_frame()) == b"\x01\x00" * (FRAME // 2)
    assert bytes(ch.tx_frame()) == b"\x01\x00" * (FRAME // 2)
    assert bytes(ch.tx_frame()) == bytes(FRAME)
    assert ch.tx_frames_audio == 2


def test_clear_silences_the_next_frame_and_returns_marks() -> None:
    ch = channel()
    ch.write_audio(b"\x01\x00" * FRAME * 10)
    ch.mark("m1")
    assert ch.tx_frame() != bytes(FRAME)
    assert ch.clear() == ["m1"]
    assert bytes(ch.tx_frame()) == bytes(FRAME)


def test_concurrent_producer_and_consumer_keep_order() -> None:
    """A real clock-like thread writes while the loop side drains: order is kept, and every
    frame is either delivered or counted as overrun."""
    ch = channel(ring=16)
    total = 3000
    taken = bytearray()

    def producer() -> None:
        for i in range(total):
            push(ch, i % 251)

    thread = threading.Thread(target=producer)
    thread.start()
    while thread.is_alive():
        taken += ch.rx_take()
    thread.join()
    taken += ch.rx_take()
    values = [taken[i] for i in range(0, len(taken), FRAME)]
    assert len(values) + ch.rx_overrun_frames == total
    # Delivered frames are whole (never torn) and strictly in production order.
    for i in range(0, len(taken), FRAME):
        assert taken[i : i + FRAME] == bytes([taken[i]]) * FRAME
    diffs = [(b - a) % 251 for a, b in itertools.pairwise(values)]
    assert all(d >= 1 for d in diffs)
