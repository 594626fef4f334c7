"""Outbound limits (token bucket, calls in flight) and status events -> webhooks (which events, the
per-callback sequence, both shapes, the profile's callback for every call)."""

from __future__ import annotations

import email.parser
import email.policy
import json

from bridge.call.record import CallRecord
from bridge.ops.limits import CallLimits, TokenBucket
from bridge.ops.status_events import Callback, StatusReporter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket_refills_and_a_refusal_takes_nothing() -> None:
    clock = Clock()
    bucket = TokenBucket(5, 2, clock)
    assert bucket.try_take() == 0 and bucket.try_take() == 0
    assert abs(bucket.try_take() - 0.2) < 1e-9
    assert abs(bucket.try_take() - 0.2) < 1e-9  # refused twice: still 0.2 s, nothing was taken
    clock.now += 0.2
    assert bucket.try_take() == 0
    clock.now += 100
    assert [bucket.try_take() for _ in range(3)][:2] == [0, 0]  # never more than the burst


def test_call_limits() -> None:
    clock = Clock()
    limits = CallLimits(max_concurrent=2, calls_per_second=1, burst=5, clock=clock)
    assert limits.admit() is None and limits.admit() is None
    assert limits.admit() == ("too_many_calls", 1)
    limits.release()
    assert limits.admit() is None
    limits.release()
    limits.release()
    limits.release()
    assert limits.in_flight == 0
    limits = CallLimits(max_concurrent=10, calls_per_second=0.5, burst=1, clock=clock)
    assert limits.admit() is None
    assert limits.admit() == ("rate_limited", 2)
    assert limits.in_flight == 1


class Queue:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, str, str]] = []

    def enqueue(self, url: str, body: bytes, content_type: str, key: str) -> str:
        self.sent.append((url, body, content_type, key))
        return str(len(self.sent))


def record() -> CallRecord:
    return CallRecord(
        call_sid="CA1",
        direction="outbound",
        from_="+100",
        to="+918012345678",
        created_at=1e9,
        custom_parameters={"CustomField": "x"},
    )


def test_native_events_in_order_with_sequences_and_the_profile_callback() -> None:
    queue = Queue()
    reporter = StatusReporter(queue, Callback("http://127.0.0.1/all", ("completed",)))
    call = record()
    reporter.watch("CA1", Callback("http://127.0.0.1/own", ("initiated", "ringing", "answered", "completed")))
    for status, event in (
        ("initiated", "initiated"),
        ("ringing", "ringing"),
        ("ringing", "ringing"),
        ("in-progress", "answered"),
        ("completed", "completed"),
    ):
        call.status = status  # type: ignore[assignment]
        reporter.report(call, event)  # type: ignore[arg-type]
    own = [json.loads(body) for url, body, _, _ in queue.sent if url.endswith("/own")]
    assert [(e["event"], e["sequence"], e["status"]) for e in own] == [
        ("initiated", 1, "initiated"),
        ("ringing", 2, "ringing"),
        ("answered", 3, "in-progress"),
        ("completed", 4, "completed"),
    ]
    every = [json.loads(body) for url, body, _, _ in queue.sent if url.endswith("/all")]
    assert [(e["event"], e["sequence"]) for e in every] == [("completed", 1)]
    assert {key for _, _, _, key in queue.sent} == {"CA1 http://127.0.0.1/own", "CA1 http://127.0.0.1/all"}
    assert reporter.watching() == []


def test_exotel_callbacks_multipart_terminal_with_the_outcome() -> None:
    queue = Queue()
    reporter = StatusReporter(queue)
    call = record()
    reporter.watch(
        "CA1",
        Callback(
            "http://127.0.0.1/ex", ("ringing", "terminal"), exotel=True, content_type="multipart/form-data"
        ),
    )
    reporter.report(call, "initiated")  # Exotel has no such event
    call.status = "ringing"
    reporter.report(call, "ringing")
    reporter.report(call, "answered")  # not asked for
    call.status = "no-answer"
    reporter.report(call, "completed")
    assert len(queue.sent) == 2
    _, body, content_type, _ = queue.sent[1]
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body
    )
    fields = {
        p.get_param("name", header="content-disposition"): p.get_content() for p in message.iter_parts()
    }
    assert fields["EventType"] == "terminal" and fields["Status"] == "no-answer"
    assert fields["CustomField"] == "x"
