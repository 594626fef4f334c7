"""Toll-fraud limits on outbound calls, free of I/O: a token bucket for the call rate and a count of
calls in flight. A refused request takes no token, so a client retrying after `Retry-After` is not
punished for the refusals."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

__all__ = ["CallLimits", "TokenBucket"]


class TokenBucket:
    """`rate` tokens a second, at most `burst` saved up; starts full."""

    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a token bucket needs rate > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = burst
        self._at = clock()

    def _refill(self) -> float:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        return self._tokens

    def try_take(self) -> float:
        """0 when a token was taken, else the seconds until one will be there (nothing taken)."""
        tokens = self._refill()
        if tokens >= 1:
            self._tokens = tokens - 1
            return 0.0
        return (1 - tokens) / self.rate


class CallLimits:
    """outbound.max_concurrent (from `initiated` until ended, ringing included) and the rate."""

    def __init__(
        self,
        max_concurrent: int,
        calls_per_second: float,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_concurrent = max_concurrent
        self.in_flight = 0
        self.bucket = TokenBucket(
            calls_per_second, burst if burst is not None else 2 * calls_per_second, clock
        )

    def admit(self) -> tuple[str, int] | None:
        """None when a call may start now (it is counted in flight: call `release` when it ends); else
        the refusal's code and its Retry-After in whole seconds."""
        if self.in_flight >= self.max_concurrent:
            return "too_many_calls", 1
        wait = self.bucket.try_take()
        if wait:
            return "rate_limited", max(1, math.ceil(wait))
        self.in_flight += 1
        return None

    def release(self) -> None:
        self.in_flight = max(0, self.in_flight - 1)
