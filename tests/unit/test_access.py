"""Source allow-list, per-source token buckets, log throttling and the inbound gate."""

from __future__ import annotations

import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.sip.access import (
    InboundGate,
    LogThrottle,
    RateLimit,
    RateLimiter,
    SourcePolicy,
    split_source,
)
from bridge.sip.digest import DigestAuthenticator, digest_response, parse_digest
from bridge.sip.rtpwatch import RtpWatch

INVITE = "INVITE sip:bot@127.0.0.1:5080 SIP/2.0\r\nVia: SIP/2.0/UDP x\r\nCall-ID: c\r\n\r\n"


def no_dns(name: str) -> list[str]:
    raise OSError(-2, "Name or service not known")


@pytest.mark.parametrize(
    "source, expected",
    [
        ("127.0.0.1:5060", ("127.0.0.1", 5060)),
        ("[::1]:5070", ("::1", 5070)),
        ("10.0.0.1", ("10.0.0.1", 0)),
        ("::1", ("::1", 0)),
        ("", ("", 0)),
        (":\u00b2", ("", 0)),  # a digit to str.isdigit(), not to int() (found by test_fuzz)
        ("1.2.3.4:\u0665\u0660", ("1.2.3.4", 0)),  # Arabic-Indic digits: not a SIP port
    ],
)
def test_split_source(source: str, expected: tuple[str, int]) -> None:
    assert split_source(source) == expected


def test_default_policy_is_loopback_only() -> None:
    policy = SourcePolicy(("127.0.0.0/8", "::1"))
    assert policy.allows("127.0.0.1") and policy.allows("127.9.9.9") and policy.allows("::1")
    assert policy.allows("::ffff:127.0.0.1")  # IPv4-mapped
    for other in ("10.0.0.1", "192.0.2.1", "::2", "not-an-address", ""):
        assert not policy.allows(other)
    assert not policy.open_to_all


def test_host_names_are_resolved_once_and_failures_deny() -> None:
    calls: list[str] = []

    def resolver(name: str) -> list[str]:
        calls.append(name)
        if name == "pbx.example.com":
            return ["192.0.2.10", "2001:db8::10"]
        raise OSError(-2, "Name or service not known")

    policy = SourcePolicy(["pbx.example.com", "gone.example.com", "198.51.100.0/24"], resolver)
    assert calls == ["pbx.example.com", "gone.example.com"]
    assert policy.allows("192.0.2.10") and policy.allows("2001:db8::10") and policy.allows("198.51.100.77")
    assert not policy.allows("192.0.2.11")
    assert policy.unresolved and policy.unresolved[0][0] == "gone.example.com"


def test_everyone_is_flagged() -> None:
    assert SourcePolicy(["0.0.0.0/0"]).open_to_all


def test_token_bucket() -> None:
    limiter = RateLimiter(rate=2.0, burst=3)
    assert [limiter.allow("a", 0.0) for _ in range(4)] == [True, True, True, False]
    assert limiter.allow("b", 0.0)  # per source
    assert not limiter.allow("a", 0.2)
    assert limiter.allow("a", 0.6)  # 0.6 s at 2/s refilled a token
    assert limiter.retry_after_s == 1


def test_token_bucket_state_is_bounded() -> None:
    limiter = RateLimiter(rate=1.0, burst=1, max_sources=100)
    for i in range(1000):
        limiter.allow(f"10.0.{i // 256}.{i % 256}", float(i))
    assert len(limiter) == 100


def test_log_throttle_logs_first_per_source_then_summaries(caplog: pytest.LogCaptureFixture) -> None:
    throttle = LogThrottle(logging.getLogger("t"), interval_s=60)
    with caplog.at_level(logging.WARNING, "t"):
        for i in range(1000):
            throttle.event("forbidden_source", "192.0.2.1", "INVITE rejected", i * 0.01)
        throttle.event("forbidden_source", "192.0.2.2", "INVITE rejected", 5.0)
        throttle.flush(30.0)
        assert throttle.lines == 2
        throttle.flush(61.0)
    assert throttle.lines == 3
    assert "999 more" in caplog.records[-1].getMessage()


def gate(**kwargs: object) -> InboundGate:
    return InboundGate(resolver=no_dns, logger=logging.getLogger("gate-test"), **kwargs)  # type: ignore[arg-type]


def test_gate_rejects_unlisted_sources_with_403_and_counts() -> None:
    g = gate()
    verdict = g.admit("192.0.2.1:5060", INVITE, 0.0)
    assert verdict is not None and verdict.code == 403 and verdict.kind == "forbidden_source"
    assert g.admit("127.0.0.1:5060", INVITE, 0.0) is None
    assert g.counters["forbidden_source"] == 1


def test_gate_rate_limits_with_retry_after() -> None:
    g = gate(rate_limit=RateLimit(invites_per_second=1, burst=2))
    results = [g.admit("127.0.0.1:5060", INVITE, 0.0) for _ in range(3)]
    assert results[:2] == [None, None]
    limited = results[2]
    assert limited is not None and limited.code == 503 and limited.headers == {"Retry-After": "1"}
    assert g.counters["rate_limited"] == 1


def test_gate_digest_flow() -> None:
    auth = DigestAuthenticator("trunk", "pw", "r")
    g = gate(auth=auth)
    first = g.admit("127.0.0.1:5060", INVITE, 0.0)
    assert first is not None and first.code == 401
    params = parse_digest(first.headers["WWW-Authenticate"])
    assert params is not None
    response = digest_response(
        username="trunk",
        realm="r",
        password="pw",
        method="INVITE",
        uri="sip:bot@127.0.0.1:5080",
        nonce=params["nonce"],
        nc="00000001",
        cnonce="x",
    )
    header = (
        f'Authorization: Digest username="trunk", realm="r", nonce="{params["nonce"]}", '
        f'uri="sip:bot@127.0.0.1:5080", response="{response}", qop=auth, nc=00000001, '
        'cnonce="x"'
    )
    retry = INVITE.replace("Call-ID: c\r\n", f"Call-ID: c\r\n{header}\r\n")
    assert g.admit("127.0.0.1:5060", retry, 1.0) is None
    wrong = retry.replace(response, "0" * 32)
    verdict = g.admit("127.0.0.1:5060", wrong, 2.0)
    assert verdict is not None and verdict.code == 403
    counters = g.counters
    assert counters["auth_challenged"] == 1 and counters["auth_ok"] == 1 and counters["auth_failed"] == 1


@settings(max_examples=300, deadline=None)
@given(
    st.text(max_size=60),
    st.text(max_size=400) | st.binary(max_size=400).map(lambda b: b.decode("latin-1")),
    st.floats(allow_nan=False, allow_infinity=False),
)
def test_gate_never_raises(source: str, message: str, now: float) -> None:
    g = gate(auth=DigestAuthenticator("u", "p"), allow_from=("0.0.0.0/0", "::/0"))
    verdict = g.admit(source, message, now)
    assert verdict is not None  # junk never authenticates


def test_rtp_watch_fires_once_after_silence_and_pauses_on_hold() -> None:
    watch = RtpWatch(3.0)
    assert not watch.update(0.0, 0, True)
    assert not watch.update(1.0, 50, True)
    assert not watch.update(2.0, 50, True)
    assert not watch.update(3.9, 50, True)
    assert watch.update(4.0, 50, True)
    assert not watch.update(5.0, 50, True)  # once
    held = RtpWatch(3.0)
    for t in range(10):
        assert not held.update(float(t), 7, expecting=False)
    # The clock restarts at the last moment audio was not expected (t=9).
    assert not held.update(10.0, 7, True) and not held.update(11.9, 7, True)
    assert held.update(12.0, 7, True)
    assert not RtpWatch(0).update(100.0, 0, True)
