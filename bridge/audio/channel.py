"""The hand-off between PJSIP's conference clock thread and the asyncio loop for one call.

The clock thread calls `rx_slot`/`rx_commit` (caller audio in) and `tx_frame` (bot audio out)
once per 20 ms frame for every call, one call after another, each time holding the GIL.
Everything it touches is preallocated: the caller's audio goes into a ring of frame-sized
memoryviews, the bot's audio comes out of one reused bytearray. The loop side drains the ring
in batches and feeds the playout buffer under a lock that the clock thread holds only for the
time of one frame copy.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from bridge.audio.framing import RING_FRAMES
from bridge.audio.playout import PlayoutBuffer
from bridge.audio.ring import ring_lapped, ring_span


class MediaChannel:
    native = False  # the clock thread calls into Python (see PipeChannel for the native one)

    def __init__(
        self,
        frame_bytes: int,
        playout: PlayoutBuffer,
        *,
        ring_frames: int = RING_FRAMES,
        notify: Callable[[], None] | None = None,
    ) -> None:
        self.frame_bytes = frame_bytes
        self._ring_frames = ring_frames
        self._rx_store = bytearray(frame_bytes * ring_frames)
        view = memoryview(self._rx_store)
        self._rx_slots = [view[i * frame_bytes : (i + 1) * frame_bytes] for i in range(ring_frames)]
        # Frame counters of the caller-audio ring (read-only outside this class): the clock
        # thread advances rx_written, the loop advances rx_read.
        self.rx_written = 0
        self.rx_read = 0
        self.rx_overrun_frames = 0
        self._tx_frame = bytearray(frame_bytes)
        self._silence = bytes(frame_bytes)
        self._lock = threading.Lock()
        self._playout = playout
        self._notify = notify
        # Set by the loop side once the call is over, so late clock callbacks do nothing.
        self.closed = False
        self.tx_frames_audio = 0
        # Marks not yet answered, kept here so the pump's per-tick check is one attribute read.
        self.marks_pending = 0

    # ---- clock thread side -------------------------------------------------------------

    def rx_slot(self) -> memoryview:
        """The slot the next caller frame is copied into (then `rx_commit`)."""
        return self._rx_slots[self.rx_written % self._ring_frames]

    def rx_commit(self) -> None:
        self.rx_written += 1
        if self._notify is not None:
            self._notify()

    def rx_commit_silence(self) -> None:
        """A heartbeat (empty frame): the stream to the bot never pauses, so it becomes silence."""
        self._rx_slots[self.rx_written % self._ring_frames][:] = self._silence
        self.rx_commit()

    def tx_frame(self) -> bytes | bytearray:
        """The next 20 ms of bot audio for the caller (silence when there is none)."""
        audio = self.tx_audio()
        return self._silence if audio is None else audio

    def tx_audio(self) -> bytearray | None:
        """The next 20 ms of bot audio, or None for silence (the caller leaves the frame empty)."""
        with self._lock:
            has_audio = self._playout.read_frame_into(self._tx_frame)
        if has_audio:
            self.tx_frames_audio += 1
            return self._tx_frame
        return None

    # ---- loop side ---------------------------------------------------------------------

    @property
    def rx_frames_ready(self) -> int:
        """Caller frames committed and not yet taken (the pump waits for a whole chunk)."""
        return self.rx_written - self.rx_read

    def rx_take(self, min_frames: int = 1) -> bytes:
        """Caller PCM committed since the last call, oldest first, in whole multiples of
        `min_frames` frames (b"" when fewer wait). The rest stays for the next take, so that a
        late take does not leave every later chunk a remainder behind (MediaPipe.rxTake)."""
        span = self._rx_span(max(1, min_frames))
        if span is None:
            return b""
        return self._rx_copy(*span)[0]

    def _rx_span(self, whole: int) -> tuple[int, int] | None:
        """The frames the next take copies (`ring_span`), with those already overwritten counted."""
        span = ring_span(self.rx_read, self.rx_written, self._ring_frames, whole)
        if span is None:
            return None
        start, end, overrun = span
        self.rx_overrun_frames += overrun
        return start, end

    def _rx_copy(self, start: int, end: int) -> tuple[bytes, int]:
        """The PCM of frames `start..end`, less the first ones the clock thread overwrote while
        they were copied (counted), and how many those were; the frames up to `end` are taken."""
        n = self._ring_frames
        data = b"".join(self._rx_slots[i % n] for i in range(start, end))
        lapped = ring_lapped(start, self.rx_written, n)
        if lapped:
            self.rx_overrun_frames += lapped
            data = data[lapped * self.frame_bytes :]
        self.rx_read = end
        return data, lapped

    def rx_chunk_time(self, tick_at: float) -> float:
        """When the chunk just taken was completed: the tick that woke the pump."""
        return tick_at

    def watch_probe(self, position: int) -> None:
        """Nothing to arm: the pump checks `probe_played_at` on every tick while a probe runs."""

    def probe_played_at(self, position: int, tick_at: float) -> float:
        """`tick_at` if audio past `position` has been played by now, else 0.0."""
        return tick_at if self._playout.played > position else 0.0

    def next_read_ms(self, now: float) -> float | None:
        """None: this channel does not know its own tick's phase (the bridge's estimate is used)."""
        del now
        return None

    def tick_phase_ms(self) -> float | None:
        return None

    def write_audio(self, pcm: bytes) -> int:
        with self._lock:
            return self._playout.write(pcm)

    def mark(self, name: str) -> None:
        with self._lock:
            self._playout.mark(name)
            self.marks_pending = self._playout.pending_marks

    def clear(self) -> list[str]:
        with self._lock:
            names = self._playout.clear()
            self.marks_pending = self._playout.pending_marks
            return names

    def take_played_marks(self) -> list[str]:
        with self._lock:
            names = self._playout.take_played_marks()
            self.marks_pending = self._playout.pending_marks
            return names

    @property
    def rx_frames(self) -> int:
        """Caller frames committed by the clock thread so far (a counter, for metrics)."""
        return self.rx_written

    @property
    def playout(self) -> PlayoutBuffer:
        """For reading counters; mutate only through the locked methods above."""
        return self._playout
