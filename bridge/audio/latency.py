"""Bridge-added latency, measured inside the process at almost no cost.

Two directions, each a fixed-bin histogram (recording is an index increment):

- caller -> bot (`rtp_to_ws`): from the conference tick that completed a chunk (its last 20 ms
  frame left PJSIP's jitter buffer) to the moment that chunk's `media` event was written to the
  bot's socket. The jitter buffer's own delay is PJSIP's and is reported from its statistics.
- bot -> caller (`ws_to_rtp`): from a bot `media` message's arrival to the tick whose frame
  carried its first byte into RTP, minus the wait the playout schedule imposes (the whole frames
  queued ahead of it, and the pre-buffer's frames when playout was idle) and the wait for the
  call's next 20 ms tick (the native pipe stamps each of its reads, so that phase is the call's
  own; Python channels use the bridge's estimate). Sampled about once a second per call.
"""

from __future__ import annotations

from bridge.audio.framing import FRAME_MS

# TICK_S lives in framing.py; re-exported for bridge/audio/pipe_channel.py and bridge/sip/stack.py,
# which import it from here (their owners may switch to framing and drop this line).
from bridge.audio.framing import TICK_S as TICK_S

_BIN_MS = 0.1


class TickClock:
    """When the conference clock last ticked (set on the clock thread, read on the loop)."""

    __slots__ = ("last",)

    def __init__(self) -> None:
        self.last = 0.0

    def to_next_tick_ms(self, now: float) -> float:
        """How long until the next 20 ms tick: a frame read at a tick plays until the next one,
        so audio arriving now cannot start before then (the media clock's phase)."""
        if not self.last:
            return 0.0
        return max(0.0, (self.last + TICK_S - now) % TICK_S) * 1000.0


def playout_wait_ms(buffered_bytes: int, frame_bytes: int, playing: bool, prebuffer_frames: int) -> int:
    """How many ms of whole ticks the playout schedule makes audio written now wait after the
    next tick: every whole frame queued ahead (the frame that holds its first byte plays it, even
    when earlier audio fills part of that frame) and, when playout is idle, the pre-buffer's
    frames. What the `ws_to_rtp` probe takes off as the schedule's, not the bridge's, delay."""
    frames = buffered_bytes // frame_bytes
    if not playing:
        frames += prebuffer_frames
    return frames * FRAME_MS


_BINS = 2000  # 0-200 ms in 0.1 ms steps; beyond goes to the last bin


class LatencyHistogram:
    __slots__ = ("count", "counts", "total_ms")

    def __init__(self) -> None:
        self.counts = [0] * (_BINS + 1)
        self.count = 0
        self.total_ms = 0.0

    def record(self, ms: float) -> None:
        index = int(ms / _BIN_MS) if ms > 0 else 0
        self.counts[index if index < _BINS else _BINS] += 1
        self.count += 1
        self.total_ms += ms

    def percentile(self, q: float) -> float:
        """The q-quantile (0..1) in ms, to the bin's upper edge; 0 when empty."""
        if not self.count:
            return 0.0
        target = q * self.count
        seen = 0
        for index, n in enumerate(self.counts):
            seen += n
            if seen >= target and n:
                return round((index + 1) * _BIN_MS, 2)
        return round((_BINS + 1) * _BIN_MS, 2)

    def summary(self) -> dict[str, float]:
        return {
            "count": self.count,
            "mean": round(self.total_ms / self.count, 3) if self.count else 0.0,
            "p50": self.percentile(0.50),
            "p95": self.percentile(0.95),
            "p99": self.percentile(0.99),
        }

    def buckets(self, edges_ms: tuple[float, ...]) -> list[int]:
        """Cumulative counts at each edge (for a Prometheus histogram)."""
        out = []
        for edge in edges_ms:
            limit = min(int(edge / _BIN_MS), _BINS + 1)
            out.append(sum(self.counts[:limit]))
        return out
