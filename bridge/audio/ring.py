"""The arithmetic of taking frames out of a ring that the clock thread writes and the loop reads.

The writer and the reader each advance a frame counter (never wrapped); slot `i % ring_frames`
holds frame `i`. The reader never reads the slot being written next, so at most `ring_frames - 1`
frames can be taken, and frames the writer lapped are counted as overrun and left out. Every
Python ring (MediaChannel, TapChannel) takes with these two functions; MediaPipe::rxTake is the
same in C++.
"""

from __future__ import annotations

__all__ = ["ring_lapped", "ring_span"]


def ring_span(read: int, written: int, ring_frames: int, whole: int = 1) -> tuple[int, int, int] | None:
    """The frames a take copies, as (start, end, overrun), or None when fewer than `whole` wait.

    `start..end` are whole multiples of `whole` frames (the rest stays for the next take), from
    no further back than the ring holds; `overrun` counts the frames before `start` that were
    overwritten before this take."""
    if written - read < whole:
        return None
    limit = ring_frames - 1  # the slot being written next is never read
    start = read
    overrun = 0
    if written - start > limit:
        overrun = written - start - limit
        start = written - limit
    end = start + (written - start) // whole * whole
    return start, end, overrun


def ring_lapped(start: int, written_now: int, ring_frames: int) -> int:
    """How many frames from `start` the writer overwrote while they were being copied
    (`written_now`: its counter after the copy); they are to be discarded and counted."""
    return max(0, written_now - start - (ring_frames - 1))
