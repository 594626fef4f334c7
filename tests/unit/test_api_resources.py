"""The call resource and the status webhooks' bodies: field names and values, both shapes (native and
Exotel), time formats, the SIP-answer -> status table, and multipart bodies that a real parser reads."""

from __future__ import annotations

import email.parser
import email.policy
import json

import pytest

from bridge.call.record import (
    CallRecord,
    exotel_callback_fields,
    exotel_callback_json,
    exotel_time,
    iso_ms,
    multipart_body,
    status_after_final_response,
    status_event_body,
)

T0 = 1_796_000_000.25  # 2026-11-30T00:53:20.250Z


def record(**changes: object) -> CallRecord:
    base = CallRecord(
        call_sid="CA1",
        direction="outbound",
        from_="+914400000000",
        to="+918012345678",
        created_at=T0,
        account_sid="acct",
        custom_parameters={"CustomField": "order=7"},
        stream_sid="MZ1",
        bot_url="ws://127.0.0.1:8765/",
    )
    for name, value in changes.items():
        setattr(base, name, value)
    return base


def test_times() -> None:
    assert iso_ms(T0) == "2026-11-30T00:53:20.250Z"
    assert exotel_time(T0) == "2026-11-30 00:53:20"
    assert iso_ms(None) is None and exotel_time(None) is None


@pytest.mark.parametrize(
    ("code", "status", "reason"),
    [
        (486, "busy", "busy"),
        (600, "busy", "busy"),
        (408, "no-answer", "no_answer"),
        (480, "no-answer", "no_answer"),
        (487, "no-answer", "no_answer"),
        (503, "failed", "sip_error"),
        (404, "failed", "sip_error"),
        (403, "failed", "sip_error"),
    ],
)
def test_final_answers(code: int, status: str, reason: str) -> None:
    assert status_after_final_response(code) == (status, reason)


def test_the_native_resource() -> None:
    done = record(
        status="completed",
        sip_status=200,
        answered_at=T0 + 2,
        ended_at=T0 + 14.5,
        end_reason="hangup",
        disconnected_by="callee",
    )
    assert done.native() == {
        "call_sid": "CA1",
        "direction": "outbound",
        "from": "+914400000000",
        "to": "+918012345678",
        "status": "completed",
        "sip_status": 200,
        "created_at": "2026-11-30T00:53:20.250Z",
        "answered_at": "2026-11-30T00:53:22.250Z",
        "ended_at": "2026-11-30T00:53:34.750Z",
        "duration": 12.5,
        "end_reason": "hangup",
        "disconnected_by": "callee",
        "stream_sid": "MZ1",
        "bot_url": "ws://127.0.0.1:8765/",
        "custom_parameters": {"CustomField": "order=7"},
        "answered_by": None,
    }
    assert record().native()["duration"] == 0.0 and record().native()["sip_status"] is None


def test_the_exotel_resource() -> None:
    call = record(status="canceled", updated_at=T0 + 3).exotel("/v1/Accounts/acct")["Call"]
    assert isinstance(call, dict)
    assert call["From"] == "+918012345678" and call["To"] == call["PhoneNumberSid"] == "+914400000000"
    assert call["Status"] == "failed" and call["Direction"] == "outbound-api"
    assert (
        call["DateUpdated"] == "2026-11-30 00:53:23" and call["StartTime"] is None and call["Duration"] == 0
    )
    assert call["Uri"] == "/v1/Accounts/acct/Calls/CA1.json"


def test_the_native_status_event() -> None:
    body = json.loads(status_event_body(record(status="ringing", sip_status=None), "ringing", 2, T0 + 1))
    assert list(body) == [
        "event",
        "call_sid",
        "status",
        "sequence",
        "timestamp",
        "direction",
        "from",
        "to",
        "sip_status",
        "duration",
        "end_reason",
        "disconnected_by",
        "answered_by",
        "custom_parameters",
    ]
    assert (
        body["event"] == "ringing"
        and body["sequence"] == 2
        and body["timestamp"] == "2026-11-30T00:53:21.250Z"
    )


def test_exotel_callbacks_multipart_and_json() -> None:
    done = record(status="busy", sip_status=486, ended_at=T0 + 5, end_reason="busy")
    fields = exotel_callback_fields(done, "terminal")
    body, content_type = multipart_body(fields, "b0undary")
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body
    )
    parsed = {
        part.get_param("name", header="content-disposition"): part.get_content()
        for part in message.iter_parts()
    }
    assert parsed["CallSid"] == "CA1" and parsed["Status"] == "busy" and parsed["EventType"] == "terminal"
    assert parsed["From"] == "+918012345678" and parsed["To"] == "+914400000000"
    assert parsed["CustomField"] == "order=7" and parsed["Legs[0][Status]"] == "busy"
    assert parsed["Legs[0][AnsweredBy]"] == "NA" and parsed["ConversationDuration"] == "0"
    as_json = json.loads(exotel_callback_json(fields))
    assert as_json["Legs"] == [{"Status": "busy", "OnCallDuration": "0", "AnsweredBy": "NA"}]
    ringing = dict(exotel_callback_fields(record(status="ringing"), "ringing"))
    assert ringing["Status"] == "ringing" and ringing["Legs[0][Status]"] == ""


def test_multipart_is_the_same_bytes_every_time() -> None:
    fields = [("a", "1"), ('we"ird', "ü\r\n")]
    assert multipart_body(fields, "x")[0] == multipart_body(fields, "x")[0]
