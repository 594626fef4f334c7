"""Detects a caller that vanished without a BYE: no RTP for `media.rtp_timeout` seconds.

PJSIP has no RTP inactivity timer, so the engine polls each answered call's received-packet
counter about once a second and feeds it here. The clock only runs while audio is expected:
it is paused while the caller holds the call (re-INVITE with sendonly/inactive) and restarts
when audio resumes, so hold music that never comes does not end a held call.
"""

from __future__ import annotations


class RtpWatch:
    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._last_count = -1
        self._last_change = 0.0
        self.fired = False

    def update(self, now: float, rx_packets: int, expecting: bool) -> bool:
        """True once (the first time) the caller has sent nothing for `timeout_s` while expected."""
        if self.fired or self.timeout_s <= 0:
            return False
        if not expecting or rx_packets != self._last_count or self._last_count < 0:
            self._last_count = rx_packets
            self._last_change = now
            return False
        if now - self._last_change >= self.timeout_s:
            self.fired = True
            return True
        return False

    def silent_for(self, now: float) -> float:
        return now - self._last_change if self._last_count >= 0 else 0.0
