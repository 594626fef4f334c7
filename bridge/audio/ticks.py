"""A count of the conference clock's 20 ms ticks, shared by the clock thread and the loop.

The SIP engine advances it once per tick from a media port that PJSIP's conference reads before
it delivers any frame of that tick (see `SipEngine.answer_tap`); a channel that stamps each frame
it receives with the current count knows exactly which tick the frame belongs to. Frames of two
calls stamped with the same count left their jitter buffers in the same tick, so lining tracks
up by their stamps keeps them aligned however each one started, paused or lost packets.
"""

from __future__ import annotations

__all__ = ["TickCounter"]


class TickCounter:
    """One int, written by the clock thread only (a plain attribute store under the GIL)."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0

    def advance(self) -> None:
        self.value += 1
