"""A stream's counters (sequence number, media chunks, samples) and their hand-off to another writer.

Every dialect the native sender can write for numbers its messages the same way (see
bridge/bot/template.py): while the sender writes, it counts; when it lets go, the session carries
on from its counters. A dialect's session keeps one of these rather than its own bookkeeping, so
the hand-off behaves the same whatever the wire format.
"""

from __future__ import annotations

from .events import SessionStateError

__all__ = ["Numbering"]


class Numbering:
    """`seq` is the next sequence number; `chunks` and `samples` what media has carried so far."""

    __slots__ = ("chunks", "handed_off", "samples", "seq")

    def __init__(self, first_seq: int = 1) -> None:
        self.seq = first_seq
        self.chunks = 0
        # Timestamps derive from the running sample count, not a sum of per-chunk milliseconds,
        # so chunks that are not a whole number of milliseconds never drift.
        self.samples = 0
        self.handed_off = False

    def next_seq(self) -> int | None:
        """The number for the next message, counted; None while another writer numbers them
        (the message then carries a slot for it: template.Slot.SEQ)."""
        if self.handed_off:
            return None
        seq = self.seq
        self.seq = seq + 1
        return seq

    def media(self, samples: int) -> tuple[int, int, int]:
        """Count one media message of `samples` samples: (its sequence number, its chunk
        number, samples so far)."""
        if self.handed_off:
            raise SessionStateError("media while another writer numbers the messages; "
                                    "take the numbering back first")
        seq = self.seq
        self.seq = seq + 1
        self.chunks += 1
        self.samples += samples
        return seq, self.chunks, self.samples

    def hand_off(self) -> tuple[int, int, int]:
        """(next sequence number, chunks, samples) for another writer to carry on from."""
        if self.handed_off:
            raise SessionStateError("the numbering is already handed off")
        self.handed_off = True
        return self.seq, self.chunks, self.samples

    def take_back(self, seq: int, chunks: int, samples: int) -> None:
        """The writer is done: carry on from its counters (which never go backwards)."""
        if not self.handed_off:
            raise SessionStateError("taking the numbering back without handing it off")
        if seq < self.seq or chunks < self.chunks or samples < self.samples:
            raise ValueError(f"the writer's counters went backwards: {seq, chunks, samples} < "
                             f"{self.seq, self.chunks, self.samples}")
        self.handed_off = False
        self.seq, self.chunks, self.samples = seq, chunks, samples
