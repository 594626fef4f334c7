"""The registration retry: a failure schedules a REGISTER after a jittered back-off, a success
clears it; in trunk mode nothing is ever retried."""

from __future__ import annotations

import time

from bridge.sip.registration import RegistrationRetry
from bridge.sip.settings import RegisterParams


class Account:
    def __init__(self) -> None:
        self.sent: list[bool] = []

    def setRegistration(self, renew: bool) -> None:  # pjsua2's name
        self.sent.append(renew)


def params() -> RegisterParams:
    return RegisterParams(registrar="sip:pbx.example.com", username="u", password="p",
                          retry_min_s=10.0, retry_max_s=60.0)


def test_a_failure_retries_after_the_back_off_and_a_success_stops_it() -> None:
    retry, account = RegistrationRetry(params()), Account()
    now = time.monotonic()
    retry.answered(503)
    retry.tick(now + 7.0, account)  # 10 s less 20% jitter at most: not yet
    assert account.sent == []
    retry.tick(now + 12.5, account)
    assert account.sent == [True]
    retry.tick(now + 100.0, account)  # sent once per failure
    assert account.sent == [True]
    retry.answered(503)
    retry.answered(200)
    retry.tick(now + 1000.0, account)
    assert account.sent == [True]


def test_no_registration_no_retry() -> None:
    retry, account = RegistrationRetry(None), Account()
    retry.answered(408)
    retry.tick(time.monotonic() + 1000.0, account)
    assert account.sent == []
