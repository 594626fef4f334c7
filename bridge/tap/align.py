"""Lining up the tracks of a tapped conversation by conference tick, pure.

Every frame a tap receives is stamped with the conference tick it was committed in (see
`bridge.audio.ticks`). Frames of different tracks with the same stamp left PJSIP's jitter buffers
in the same 20 ms tick, so they are output side by side: the tracks stay aligned to the frame
however each one started (a forked call answered later), paused (a silent side), or lost packets
(the jitter buffer still hands over a frame every tick, concealed or silent).

Output runs up to the tick every live track has reached, so nothing is emitted for a track before
its frame for that tick is in. A track that falls behind (its call's media not connected yet, a
stalled hand-off) holds the others back by at most `max_lag_frames`; past that it is padded with
silence and its frames that arrive too late are dropped (both counted). Memory per track is
bounded by that lag.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

__all__ = ["AlignedBlock", "TrackAligner"]


@dataclass(frozen=True, slots=True)
class AlignedBlock:
    start_tick: int  # conference tick of the first frame
    frames: int
    tracks: dict[str, bytes]  # every known track's audio for these ticks (silence where it had none)


@dataclass(slots=True)
class _Track:
    buf: bytearray = field(default_factory=bytearray)
    start: int | None = None  # tick of buf[0]; None until the first frame
    end: int = 0  # tick after the last frame in buf
    ended: bool = False


class TrackAligner:
    def __init__(self, frame_bytes: int, *, max_lag_frames: int = 10) -> None:
        if frame_bytes <= 0 or max_lag_frames < 0:
            raise ValueError("need frame_bytes > 0 and max_lag_frames >= 0")
        self.frame_bytes = frame_bytes
        self.max_lag_frames = max_lag_frames
        self._tracks: dict[str, _Track] = {}
        self.origin: int | None = None  # tick of the first frame output
        self.out = 0  # next tick to output (valid once origin is set)
        self.late_frames: Counter[str] = Counter()  # arrived after their tick was output: dropped
        self.gap_frames: Counter[str] = Counter()  # ticks a track skipped: silence
        self.lag_frames: Counter[str] = Counter()  # ticks output before a live track had them: silence

    @property
    def keys(self) -> list[str]:
        return list(self._tracks)

    def add(self, key: str) -> None:
        """A track that will produce frames: output waits for it (within the lag limit)."""
        if key not in self._tracks:
            self._tracks[key] = _Track()

    def end(self, key: str) -> None:
        """The track produces no more frames; it is dropped once its audio has been output."""
        track = self._tracks.get(key)
        if track is not None:
            track.ended = True

    def push(self, key: str, ticks: list[int], data: bytes) -> None:
        """Frames of one track, oldest first, with the tick of each (`len(data)` = frames x size)."""
        track = self._tracks.get(key)
        size = self.frame_bytes
        if track is None or track.ended or not ticks:
            return
        if len(data) != len(ticks) * size:
            raise ValueError(f"{len(ticks)} ticks need {len(ticks) * size} bytes, got {len(data)}")
        if track.start is None:
            first = ticks[0]
            if self.origin is not None and first < self.out:
                first = self.out  # its earliest frames are already late
            track.start = track.end = first
        n = len(ticks)
        if ticks[0] == track.end and ticks[-1] - ticks[0] == n - 1:
            track.buf += data  # the common case: the next frames, contiguous
            track.end += n
            return
        for i, tick in enumerate(ticks):
            if tick < track.end:
                self.late_frames[key] += 1
                continue
            gap = tick - track.end
            if gap:
                track.buf += bytes(gap * size)
                self.gap_frames[key] += gap
            track.buf += data[i * size : (i + 1) * size]
            track.end = tick + 1

    def pop(self, final: bool = False) -> AlignedBlock | None:
        """The aligned audio of every track up to the tick all live tracks have reached (or, with
        `final`, up to the newest frame of any track); None when nothing is ready."""
        started = [t for t in self._tracks.values() if t.start is not None]
        if not started:
            return None
        if self.origin is None:
            self.origin = self.out = min(t.start for t in started if t.start is not None)
        newest = max(t.end for t in started)
        if final:
            ready = newest
        else:
            holds = [t.end if t.start is not None else self.out for t in self._tracks.values() if not t.ended]
            ready = min(holds) if holds else newest
            ready = max(ready, newest - self.max_lag_frames)
        out = self.out
        if ready <= out:
            return None
        n = ready - out
        size = self.frame_bytes
        blocks: dict[str, bytes] = {}
        for key, track in list(self._tracks.items()):
            if track.start is None:
                blocks[key] = bytes(n * size)
                if track.ended:
                    del self._tracks[key]
                else:
                    self.lag_frames[key] += n
                continue
            lead = min(max(track.start - out, 0), n)  # before the track's first frame
            have = max(min(track.end, ready) - max(track.start, out), 0)
            tail = n - lead - have
            skip = max(out - track.start, 0)  # frames of buf before `out` (never, by construction)
            piece = bytes(track.buf[skip * size : (skip + have) * size])
            blocks[key] = bytes(lead * size) + piece + bytes(tail * size)
            if tail and not track.ended:
                self.lag_frames[key] += tail
            consumed = skip + have
            if consumed:
                del track.buf[: consumed * size]
                track.start = max(track.start, out) + have
            if track.end < ready:
                track.start = track.end = ready  # a lagging track: what comes for these ticks is late
                track.buf.clear()
            if track.ended and track.end <= ready:
                del self._tracks[key]
        self.out = ready
        return AlignedBlock(start_tick=out, frames=n, tracks=blocks)

    def pending_frames(self, key: str) -> int:
        """Frames of a track received and not yet output."""
        track = self._tracks.get(key)
        return 0 if track is None or track.start is None else track.end - track.start
