"""Keeps PJSIP's own error lines from flooding the log.

Junk from the network (random datagrams, an endless header on TCP) makes PJSIP log one error per
packet, each quoting what it received. Anyone who can reach the SIP port could fill the disk
with that, before any allow-list applies. So PJSIP's error and warning lines share a budget
(a burst, then a steady rate); what is over it is counted and the next line that passes says
how many were left out. Each line is also cut to a bounded length.
"""

from __future__ import annotations

import threading

MAX_LINE = 400


class LineBudget:
    """At most `burst` lines at once, refilled at `per_second`. Thread-safe (PJSIP logs from any thread)."""

    def __init__(self, per_second: float = 1.0, burst: int = 30) -> None:
        self.per_second = per_second
        self.burst = float(burst)
        self._tokens = float(burst)
        self._at: float | None = None
        self._dropped = 0
        self.dropped_total = 0
        self._lock = threading.Lock()

    def take(self, now: float) -> tuple[bool, int]:
        """(whether to log this line, how many were dropped since the last one logged)."""
        with self._lock:
            if self._at is not None:
                self._tokens = min(self.burst, self._tokens + (now - self._at) * self.per_second)
            self._at = now
            if self._tokens < 1.0:
                self._dropped += 1
                self.dropped_total += 1
                return False, 0
            self._tokens -= 1.0
            dropped, self._dropped = self._dropped, 0
            return True, dropped


def shorten(message: str, limit: int = MAX_LINE) -> str:
    text = message.rstrip()
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text)} characters)"
