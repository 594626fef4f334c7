"""One report per key press from PJSIP's per-packet DTMF callbacks, also on a bad network.

RFC 4733 sends a key press as a series of packets that share one RTP timestamp, the last ones
marked "end" (and repeated). PJSIP tells a new event from an update of the current one only by
the duration growing, so a reordered packet (a smaller duration arriving late) or a late
duplicate looks like a new key press: "123#" became "11233#" with 40 +- 20 ms of jitter. Here
an RFC 4733 event is known by (digit, RTP timestamp) and reported once; SIP INFO digits, which
carry no timestamp, keep the plain behaviour.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from bridge.sip import DtmfMethod

Report = tuple[str, int, DtmfMethod]  # digit, duration ms, method


@dataclass(slots=True)
class _Pending:
    digit: str
    method: DtmfMethod
    duration: int
    since: float
    key: tuple[str, int] | None


class DtmfTracker:
    def __init__(self) -> None:
        self.pending: _Pending | None = None
        self._done: deque[tuple[str, int]] = deque(maxlen=32)  # events already reported

    @property
    def pending_since(self) -> float | None:
        return self.pending.since if self.pending is not None else None

    def event(self, digit: str, method: DtmfMethod, timestamp: int, duration: int, *, is_update: bool,
              is_end: bool, now: float) -> list[Report]:
        """One callback from PJSIP; returns the key presses to report now (0, 1 or 2)."""
        key = (digit, timestamp) if method == "rfc4733" else None
        if key is not None and key in self._done:
            return []  # a late, reordered or repeated packet of a key press already reported
        pending = self.pending
        if not is_end:
            if pending is not None and (pending.key == key if key is not None else is_update):
                pending.duration = max(pending.duration, duration)
                return []
            if is_update and key is None:
                return []
            started = self.flush()  # a new key press started while the previous never ended
            self.pending = _Pending(digit, method, duration, now, key)
            return started
        out: list[Report] = []
        if pending is not None:
            if key is not None and pending.key != key:
                out = self.flush()
            else:
                duration = max(duration, pending.duration)
                self.pending = None
        if key is not None:
            self._done.append(key)
        out.append((digit, duration, method))
        return out

    def flush(self) -> list[Report]:
        """The pending key press (its end never came), reported as it is."""
        pending = self.pending
        if pending is None:
            return []
        self.pending = None
        if pending.key is not None:
            self._done.append(pending.key)
        return [(pending.digit, pending.duration, pending.method)]
