"""Registration with the registrar (sip thread): each answer as a `RegistrationState` for the
loop, and the retry after a failure, backed off exponentially with jitter."""

from __future__ import annotations

import logging
import random
import time
from typing import Any

import pjsua2 as pj

from bridge.sip import RegistrationState
from bridge.sip.settings import RegisterParams

log = logging.getLogger("bridge.sip")

__all__ = ["RegistrationRetry", "registration_state"]


def registration_state(account: Any, prm: Any) -> RegistrationState:
    """The registrar's answer (pjsua2's OnRegStateParam) as the loop sees it."""
    info = account.getInfo()
    return RegistrationState(
        code=prm.code, reason=prm.reason, active=bool(info.regIsActive), expires=int(prm.expiration)
    )


class RegistrationRetry:
    """When to send the REGISTER again after a failure (sip thread; the engine's timers poll it)."""

    def __init__(self, register: RegisterParams | None) -> None:
        self._register = register
        self._failures = 0
        self._retry_at: float | None = None

    def answered(self, code: int) -> None:
        """A registrar's answer: a success clears the back-off, a failure schedules a retry."""
        if 200 <= code < 300:
            self._failures = 0
            self._retry_at = None
        else:
            self._failures += 1
            self._schedule()

    def tick(self, now: float, account: Any) -> None:
        """Re-register once the retry is due (a failure to send it schedules the next one)."""
        if self._retry_at is None or now < self._retry_at or account is None:
            return
        self._retry_at = None
        try:
            account.setRegistration(True)
        except pj.Error as exc:
            log.warning("re-registration could not be sent: %s", exc.info())
            self._schedule()

    def _schedule(self) -> None:
        reg = self._register
        if reg is None:
            return
        delay = min(reg.retry_max_s, reg.retry_min_s * (2 ** min(self._failures - 1, 16)))
        delay *= random.uniform(0.8, 1.2)  # spread a fleet's retries after a PBX restart
        self._retry_at = time.monotonic() + delay
        log.info("registration retry in %.1f s (failure %d)", delay, self._failures)
