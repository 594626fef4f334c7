"""The clock thread -> loop hand-off for one tapped stream: caller frames stamped with their tick.

A tap never plays anything into the call, so the playout side of `MediaChannel` stays empty.
What a tap adds is one integer store per frame: the conference tick (`TickCounter`) in which the
frame was committed, so the loop can line several streams up exactly, however each one started,
paused or lost packets. Nothing here allocates on the clock thread.
"""

from __future__ import annotations

from collections.abc import Callable

from bridge.audio.channel import MediaChannel
from bridge.audio.framing import RING_FRAMES
from bridge.audio.playout import PlayoutBuffer
from bridge.audio.ticks import TickCounter

__all__ = ["TapChannel"]


class TapChannel(MediaChannel):
    def __init__(self, frame_bytes: int, ticks: TickCounter, *, ring_frames: int = RING_FRAMES,
                 notify: Callable[[], None] | None = None) -> None:
        super().__init__(frame_bytes, PlayoutBuffer(frame_bytes, prebuffer_bytes=0, cap_bytes=frame_bytes),
                         ring_frames=ring_frames, notify=notify)
        self._ticks = ticks
        self._rx_ticks = [0] * ring_frames

    # ---- clock thread side -------------------------------------------------------------

    def rx_commit(self) -> None:
        written = self.rx_written
        self._rx_ticks[written % self._ring_frames] = self._ticks.value
        self.rx_written = written + 1
        notify = self._notify
        if notify is not None:
            notify()

    def tx_audio(self) -> bytearray | None:
        return None  # a tap sends nothing into the call

    # ---- loop side ---------------------------------------------------------------------

    def take(self) -> tuple[list[int], bytes]:
        """(tick of each frame, their PCM) committed since the last call, oldest first.

        Frames the clock thread overwrote before the loop read them are counted in
        `rx_overrun_frames` and left out (their ticks with them: the aligner pads the gap)."""
        span = self._rx_span(1)
        if span is None:
            return [], b""
        start, end = span
        n = self._ring_frames
        # Read before the PCM: the lap check after its copy then covers the ticks as well.
        ticks = [self._rx_ticks[i % n] for i in range(start, end)]
        data, lapped = self._rx_copy(start, end)
        return (ticks[lapped:] if lapped else ticks), data
