"""One tap socket's messages, pure: aligned audio in, AgentStream text out (one-way).

A stream is created as soon as the bridge decides it is needed, usually before its socket is open:
audio pushed meanwhile is kept (at the conference rate, bounded) and sent right after `connected`
and `start` when `open` is called. Audio is placed on the conversation's timeline by conference
tick: a stream that starts later than its conversation (the second call of a forked pair) is
padded with silence back to its `first_tick`, so the timestamps of all the conversation's
streams agree; a stream started mid-conversation (after a participant change) starts at that
tick, and says where in `start.custom_parameters.conversation_offset_ms`.
"""

from __future__ import annotations

from collections.abc import Sequence

from bridge.audio.framing import FRAME_MS, Chunker, frame_bytes
from bridge.audio.resample import StreamResampler
from bridge.bot.agentstream.events import StartInfo, StopReason
from bridge.bot.agentstream.session import StreamSession
from bridge.tap.layout import interleave

__all__ = ["TapStream"]


class TapStream:
    def __init__(self, *, channels: int, clock_rate: int, first_tick: int | None = None,
                 max_pending_s: float = 60.0) -> None:
        if channels not in (1, 2):
            raise ValueError(f"channels must be 1 or 2, not {channels}")
        self.channels = channels
        self.clock_rate = clock_rate
        self._frame = frame_bytes(clock_rate, FRAME_MS)
        self.first_tick = first_tick  # tick of the stream's first sample (None: the first audio's)
        self._next = first_tick  # tick the next pushed audio should start at
        self._pending = [bytearray() for _ in range(channels)]
        self._max_pending = int(max_pending_s * 1000 / FRAME_MS) * self._frame
        self.session: StreamSession | None = None
        self._chunker: Chunker | None = None
        self._resamplers: list[StreamResampler] = []
        self.frames = 0  # 20 ms frames of audio taken (padding included)
        self.padded_frames = 0  # silence put in to keep the timeline
        self.dropped_frames = 0  # pending audio dropped while the socket was not open (over the cap)

    @property
    def is_open(self) -> bool:
        return self.session is not None

    def push(self, start_tick: int, signals: Sequence[bytes]) -> list[str]:
        """Audio of every channel for the ticks from `start_tick`; the media messages it completes."""
        if len(signals) != self.channels:
            raise ValueError(f"expected {self.channels} channel(s), got {len(signals)}")
        size = self._frame
        frames = len(signals[0]) // size
        if self._next is None:
            self._next = self.first_tick = start_tick
        gap = start_tick - self._next
        if gap < 0:  # ticks already covered: keep only what is new
            drop = min(-gap, frames)
            signals = [s[drop * size :] for s in signals]
            frames -= drop
            start_tick += drop
        elif gap > 0:  # ticks this stream missed (it starts later than its timeline): silence
            signals = [bytes(gap * size) + s for s in signals]
            self.padded_frames += gap
            frames += gap
            start_tick -= gap
        self._next = start_tick + frames
        if not frames:
            return []
        self.frames += frames
        if self.session is None:
            for pending, signal in zip(self._pending, signals, strict=True):
                pending += signal
            over = len(self._pending[0]) - self._max_pending
            if over > 0:
                over = -(-over // size) * size
                for pending in self._pending:
                    del pending[:over]
                self.dropped_frames += over // size
                if self.first_tick is not None:
                    self.first_tick += over // size
            return []
        return self._encode(signals)

    def open(self, info: StartInfo, chunk_ms: int) -> list[str]:
        """The socket is open: `connected`, `start`, then the audio kept meanwhile."""
        if self.session is not None:
            raise RuntimeError("the stream is already open")
        if info.channels != self.channels:
            raise ValueError(f"start says {info.channels} channel(s); the stream has {self.channels}")
        rate = info.sample_rate
        self.session = StreamSession(info, chunk_ms=chunk_ms, two_way=False)
        self._chunker = Chunker(frame_bytes(rate, chunk_ms) * self.channels)
        if rate != self.clock_rate:
            self._resamplers = [StreamResampler(self.clock_rate, rate) for _ in range(self.channels)]
        messages = [self.session.connected(), self.session.start()]
        pending = [bytes(p) for p in self._pending]
        self._pending = [bytearray() for _ in range(self.channels)]
        if pending[0]:
            messages += self._encode(pending)
        return messages

    def _encode(self, signals: Sequence[bytes]) -> list[str]:
        session, chunker = self.session, self._chunker
        assert session is not None and chunker is not None
        if self._resamplers:
            signals = [r.process(s) for r, s in zip(self._resamplers, signals, strict=True)]
        pcm = signals[0] if self.channels == 1 else interleave(signals[0], signals[1])
        out = []
        for chunk in chunker.push(pcm):
            text = session.media(chunk)
            if text is not None:
                out.append(text)
        return out

    def close(self, reason: StopReason) -> list[str]:
        """The rest of the audio (a short last chunk) and `stop`; [] if never opened or closed."""
        session, chunker = self.session, self._chunker
        if session is None or chunker is None:
            return []
        rest = chunker.flush()
        texts = (session.media(rest) if rest else None, session.stop(reason))
        return [text for text in texts if text is not None]
