"""A call's media hand-off through the native `MediaPipe` (compiled into our pjsua2 build).

Same interface as `MediaChannel`, but the conference clock thread never enters Python: it copies
caller frames into the pipe's ring and plays bot audio out of the pipe's playout buffer in C++
(native/media_pipe.hpp, a transcription of `PlayoutBuffer`). The pipe tells the loop when a
call has work (a whole chunk of caller audio, a mark's audio played out, a latency probe passed)
through one eventfd for the whole process; the loop then pumps only those calls.

Mark names stay here (the pipe knows positions only). This module never imports pjsua2: the SIP
engine builds the pipe and hands it in.
"""

from __future__ import annotations

from collections import deque
from typing import Any, NamedTuple, Protocol

from bridge.audio.latency import TICK_S

__all__ = ["MediaPipeLike", "PipeChannel", "SendStatus"]


class MediaPipeLike(Protocol):
    """The loop-side methods of pjsua2.MediaPipe (see native/media_pipe.hpp)."""

    def close(self) -> None: ...
    def rxReady(self) -> int: ...
    def rxTake(self, min_frames: int) -> bytes: ...
    def write(self, pcm: bytes) -> int: ...
    def mark(self) -> int: ...
    def clear(self) -> int: ...
    def watchMark(self, pos: int) -> None: ...
    def watchProbe(self, pos: int) -> None: ...
    def probeTime(self) -> float: ...
    def watchNextRead(self) -> None: ...
    def nextReadTime(self) -> float: ...
    def pullTime(self) -> float: ...
    def rxChunkTime(self) -> float: ...
    def rxWritten(self) -> int: ...
    def rxOverruns(self) -> int: ...
    def written(self) -> int: ...
    def played(self) -> int: ...
    def droppedBytes(self) -> int: ...
    def underruns(self) -> int: ...
    def framesAudio(self) -> int: ...
    def bufferedBytes(self) -> int: ...
    def isPlaying(self) -> bool: ...
    def senderAttach(self, sender: Any, fd: int, template: bytes, seq: int, chunk: int, samples: int,
                     rate: int, backlog_limit: int) -> bool: ...
    def senderWriteRaw(self, frame: bytes) -> bool: ...
    def senderWriteEvent(self, template: bytes) -> int: ...
    def senderDetach(self) -> tuple[bytes, int, int, int]: ...
    def senderStatus(self) -> tuple[int, int, int, float, int, int, int]: ...
    def senderLatencies(self) -> list[float]: ...
    def senderPoll(self) -> None: ...


class SendStatus(NamedTuple):
    """The native sender's counters for one call (MediaPipe.senderStatus)."""

    messages: int  # written to the socket's queue, media and events
    text_bytes: int  # their JSON, as BotLink.sent_bytes counts it
    media_dropped: int  # while the bot was not reading
    stalled_since: float  # time.monotonic() of the first drop since the last message, or 0.0
    error: int  # errno of a failed write (the connection is broken), or 0
    backlog_bytes: int  # queued in the pipe, not yet taken by the kernel
    chunks: int  # media messages of the stream so far (chunk number of the last)


class PipePlayout:
    """Read-only playout counters, shaped like the `PlayoutBuffer` properties callers read."""

    __slots__ = ("_pipe",)

    def __init__(self, pipe: MediaPipeLike) -> None:
        self._pipe = pipe

    @property
    def buffered_bytes(self) -> int:
        return self._pipe.bufferedBytes()

    @property
    def is_playing(self) -> bool:
        return self._pipe.isPlaying()

    @property
    def written(self) -> int:
        return self._pipe.written()

    @property
    def played(self) -> int:
        return self._pipe.played()

    @property
    def underruns(self) -> int:
        return self._pipe.underruns()

    @property
    def dropped_bytes(self) -> int:
        return self._pipe.droppedBytes()


class PipeChannel:
    """Used on the asyncio thread, except `closed = True`, which the SIP thread sets when the call
    ends (an atomic flag in the pipe)."""

    native = True

    def __init__(self, pipe: MediaPipeLike, frame_bytes: int, sender: Any = None) -> None:
        self.pipe = pipe
        self.frame_bytes = frame_bytes
        self._sender = sender  # pjsua2.MediaSender, or None: caller audio goes through the loop
        self.sending = False
        self.playout = PipePlayout(pipe)
        self._marks: deque[tuple[int, str]] = deque()
        self._closed = False

    # ---- caller audio ---------------------------------------------------------------------

    @property
    def rx_frames_ready(self) -> int:
        return self.pipe.rxReady()

    def rx_take(self, min_frames: int = 1) -> bytes:
        """Caller PCM committed since the last take, if at least `min_frames` frames wait."""
        return self.pipe.rxTake(min_frames)

    def rx_chunk_time(self, tick_at: float) -> float:
        """When the clock completed the chunk just taken (time.monotonic())."""
        return self.pipe.rxChunkTime() or tick_at

    # ---- caller audio straight to the bot's socket (the native sender) ---------------------

    def start_sending(self, fd: int, template: bytes, seq: int, chunks: int, samples: int, rate: int,
                      backlog_limit: int) -> bool:
        """From now on the sender thread turns whole chunks into media messages for the socket
        `fd` (a duplicate of it), rendered from the dialect's media `template` (UTF-8 of a
        bridge/bot/template.py template) and numbered on from the given counters, and every
        other frame for that socket must go through send_event / send_raw. False when there is
        no sender; ValueError for a template without exactly one payload slot."""
        if self._sender is None or self.sending:
            return False
        self.sending = bool(self.pipe.senderAttach(self._sender, fd, template, seq, chunks, samples, rate,
                                                   backlog_limit))
        return self.sending

    def send_event(self, template: bytes) -> int:
        """Queue a message rendered from an event template (its sequence number's slot filled in
        here, in wire order with the media); returns the number, 0 if detached."""
        return self.pipe.senderWriteEvent(template)

    def send_raw(self, frame: bytes) -> bool:
        return self.pipe.senderWriteRaw(frame)

    def send_due(self) -> None:
        """Send the chunks that are due now, on this thread (before an event that must follow them)."""
        self.pipe.senderPoll()

    def stop_sending(self) -> tuple[bytes, int, int, int]:
        """Take the socket back: (bytes not yet written, next sequence number, chunks, samples)."""
        self.sending = False
        return self.pipe.senderDetach()

    def send_status(self) -> SendStatus:
        return SendStatus(*self.pipe.senderStatus())

    def send_latencies(self) -> list[float]:
        """ms from each chunk's completing tick to its message's write, since the last call."""
        return self.pipe.senderLatencies()

    # ---- bot audio ------------------------------------------------------------------------

    def write_audio(self, pcm: bytes) -> int:
        return self.pipe.write(pcm)

    def mark(self, name: str) -> None:
        position = self.pipe.mark()
        self._marks.append((position, name))
        if len(self._marks) == 1:
            self.pipe.watchMark(position)

    def clear(self) -> list[str]:
        self.pipe.clear()  # also forgets the probe: its audio is gone
        names = [name for _, name in self._marks]
        self._marks.clear()
        self.pipe.watchMark(-1)
        return names

    def take_played_marks(self) -> list[str]:
        marks = self._marks
        if not marks:
            return []
        played = self.pipe.played()
        names = []
        while marks and marks[0][0] <= played:
            names.append(marks.popleft()[1])
        if names:
            self.pipe.watchMark(marks[0][0] if marks else -1)
        return names

    @property
    def marks_pending(self) -> int:
        return len(self._marks)

    def watch_probe(self, position: int) -> None:
        """Wake the loop and stamp the time once audio past `position` has been played."""
        self.pipe.watchProbe(position)

    def probe_played_at(self, position: int, tick_at: float) -> float:
        """time.monotonic() of the tick that played past `position`, or 0.0 if none has yet."""
        del position, tick_at  # the pipe watches the position given to watch_probe
        return self.pipe.probeTime()

    def watch_next_read(self) -> None:
        """Wake the loop and stamp the time of the clock's next read of this call's bot audio."""
        self.pipe.watchNextRead()

    def next_read_at(self) -> float:
        """time.monotonic() of the read watch_next_read() asked for, or 0.0 if it has not come."""
        return self.pipe.nextReadTime()

    def next_read_ms(self, now: float) -> float | None:
        """How long until the clock next reads this call's bot audio (None before its first read):
        audio written now cannot start playing before then."""
        pulled = self.pipe.pullTime()
        if not pulled:
            return None
        # An overdue read (the clock thread running late) is due now: its delay is the bridge's.
        return min(TICK_S, max(0.0, TICK_S - (now - pulled))) * 1000.0

    def tick_phase_ms(self) -> float | None:
        """Where in every 20 ms the clock reads this call (ms past a multiple of 20 ms of
        time.monotonic()), or None before its first read: `media.tick_phase_ms` at work."""
        pulled = self.pipe.pullTime()
        return round(pulled % TICK_S * 1000.0, 1) if pulled else None

    # ---- state and counters ---------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    @closed.setter
    def closed(self, value: bool) -> None:
        if value and not self._closed:
            self._closed = True
            self.pipe.close()

    @property
    def rx_frames(self) -> int:
        return self.pipe.rxWritten()

    @property
    def rx_overrun_frames(self) -> int:
        return self.pipe.rxOverruns()

    @property
    def tx_frames_audio(self) -> int:
        return self.pipe.framesAudio()
