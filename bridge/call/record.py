"""A call as the API shows it: the call resource, its status words, and the status webhooks' bodies,
native and Exotel-shaped. Free of I/O: the server and the webhook sender carry what this makes.

Times are unix seconds inside and ISO 8601 UTC with milliseconds outside (Exotel's shape uses its
own "YYYY-MM-DD HH:MM:SS"). A status moves queued -> initiated -> ringing -> in-progress and ends
in completed, busy, no-answer, failed or canceled; `end_reason` and `disconnected_by` say why and
who.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "ENDED_STATUSES",
    "CallRecord",
    "exotel_callback_fields",
    "exotel_time",
    "iso_ms",
    "multipart_body",
    "status_after_final_response",
    "status_event_body",
]

CallStatus = Literal[
    "queued", "initiated", "ringing", "in-progress", "completed", "busy", "no-answer", "failed", "canceled"
]
EndReason = Literal[
    "hangup",
    "bot_hangup",
    "api_hangup",
    "time_limit",
    "bot_unreachable",
    "busy",
    "no_answer",
    "sip_error",
    "canceled",
    "drain",
    "rtp_timeout",
    "stall",
]
DisconnectedBy = Literal["caller", "callee", "bot", "api", "bridge"]
Direction = Literal["inbound", "outbound"]

ENDED_STATUSES: frozenset[str] = frozenset({"completed", "busy", "no-answer", "failed", "canceled"})


def status_after_final_response(code: int) -> tuple[CallStatus, EndReason]:
    """What an outbound INVITE's final answer other than 2xx means for the call."""
    if code in (486, 600):
        return "busy", "busy"
    if code in (408, 480, 487):
        return "no-answer", "no_answer"
    return "failed", "sip_error"


def iso_utc(epoch: float) -> str:
    """ISO 8601 UTC with milliseconds: 2026-11-30T00:53:20.250Z."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch)) + f".{int(epoch % 1 * 1000):03d}Z"


def iso_ms(at: float | None) -> str | None:
    return None if at is None else iso_utc(at)


def exotel_time(at: float | None) -> str | None:
    return None if at is None else time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(int(at)))


@dataclass(slots=True)
class CallRecord:
    """One call, inbound or outbound, as the API reports it."""

    call_sid: str
    direction: Direction
    from_: str
    to: str
    created_at: float
    account_sid: str = ""
    status: CallStatus = "queued"
    sip_status: int | None = None  # the INVITE's final answer (487 after our CANCEL)
    answered_at: float | None = None
    ended_at: float | None = None
    end_reason: EndReason | None = None
    disconnected_by: DisconnectedBy | None = None
    stream_sid: str | None = None
    bot_url: str = ""  # userinfo already redacted
    custom_parameters: Mapping[str, str] = field(default_factory=dict)
    answered_by: str | None = None
    recording_url: str | None = None
    updated_at: float = 0.0

    @property
    def ended(self) -> bool:
        return self.status in ENDED_STATUSES

    @property
    def duration(self) -> float:
        """Seconds from the answer to the end (or now, while it lasts); 0 when never answered."""
        if self.answered_at is None:
            return 0.0
        end = self.ended_at if self.ended_at is not None else time.time()
        return round(max(0.0, end - self.answered_at), 3)

    def native(self) -> dict[str, object]:
        return {
            "call_sid": self.call_sid,
            "direction": self.direction,
            "from": self.from_,
            "to": self.to,
            "status": self.status,
            "sip_status": self.sip_status,
            "created_at": iso_ms(self.created_at),
            "answered_at": iso_ms(self.answered_at),
            "ended_at": iso_ms(self.ended_at),
            "duration": self.duration,
            "end_reason": self.end_reason,
            "disconnected_by": self.disconnected_by,
            "stream_sid": self.stream_sid,
            "bot_url": self.bot_url,
            "custom_parameters": dict(self.custom_parameters),
            "answered_by": self.answered_by,
        }

    def exotel(self, base_path: str) -> dict[str, object]:
        """Exotel's `{"Call": {...}}`: From is the number dialled, To and PhoneNumberSid the caller id."""
        return {
            "Call": {
                "Sid": self.call_sid,
                "ParentCallSid": None,
                "AccountSid": self.account_sid,
                "To": self.from_,
                "From": self.to,
                "PhoneNumberSid": self.from_,
                "Status": exotel_status(self.status),
                "Direction": "outbound-api" if self.direction == "outbound" else "inbound",
                "DateCreated": exotel_time(self.created_at),
                "DateUpdated": exotel_time(self.updated_at or self.created_at),
                "StartTime": exotel_time(self.answered_at),
                "EndTime": exotel_time(self.ended_at),
                "Duration": int(self.duration),
                "RecordingUrl": self.recording_url,
                "Uri": f"{base_path}/Calls/{self.call_sid}.json",
            }
        }


def exotel_status(status: CallStatus) -> str:
    """Exotel has no `canceled` (a call cancelled before the answer shows as failed) and no `initiated`."""
    if status == "canceled":
        return "failed"
    if status == "initiated":
        return "queued"
    return status


def status_event_body(record: CallRecord, event: str, sequence: int, at: float) -> bytes:
    """The native webhook for one status event (the bytes are stored and resent unchanged)."""
    return json.dumps(
        {
            "event": event,
            "call_sid": record.call_sid,
            "status": record.status,
            "sequence": sequence,
            "timestamp": iso_ms(at),
            "direction": record.direction,
            "from": record.from_,
            "to": record.to,
            "sip_status": record.sip_status,
            "duration": record.duration,
            "end_reason": record.end_reason,
            "disconnected_by": record.disconnected_by,
            "answered_by": record.answered_by,
            "custom_parameters": dict(record.custom_parameters),
        },
        separators=(",", ":"),
        ensure_ascii=False,
    ).encode()


_EXOTEL_EVENT_STATUS = {"ringing": "ringing", "answered": "in-progress"}


def exotel_callback_fields(record: CallRecord, event_type: str) -> list[tuple[str, str]]:
    """Exotel's StatusCallback fields for `event_type` (ringing, answered or terminal), in the order
    Exotel sends them; None values are sent empty, as Exotel's form callbacks do."""
    status = _EXOTEL_EVENT_STATUS.get(event_type) or exotel_status(record.status)
    duration = int(record.duration)

    def text(value: str | None) -> str:
        return value or ""

    return [
        ("CallSid", record.call_sid),
        ("Status", status),
        ("EventType", event_type),
        ("DateCreated", text(exotel_time(record.created_at))),
        ("DateUpdated", text(exotel_time(record.updated_at or record.created_at))),
        ("StartTime", text(exotel_time(record.answered_at))),
        ("EndTime", text(exotel_time(record.ended_at))),
        ("ConversationDuration", str(duration)),
        ("Direction", "outbound-api"),
        ("From", record.to),
        ("To", record.from_),
        ("PhoneNumberSid", record.from_),
        ("CustomField", record.custom_parameters.get("CustomField", "")),
        ("RecordingUrl", text(record.recording_url)),
        ("Legs[0][Status]", status if event_type == "terminal" else ""),
        ("Legs[0][OnCallDuration]", str(duration)),
        ("Legs[0][AnsweredBy]", _answered_by(record.answered_by)),
    ]


def exotel_callback_json(fields: Sequence[tuple[str, str]]) -> bytes:
    """The same callback as JSON (StatusCallbackContentType application/json): Legs as an array."""
    doc: dict[str, object] = {}
    leg: dict[str, str] = {}
    for name, value in fields:
        if name.startswith("Legs[0]["):
            leg[name[len("Legs[0][") : -1]] = value
        else:
            doc[name] = value
    doc["Legs"] = [leg]
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


def _answered_by(answered_by: str | None) -> str:
    return {"human": "Human", "machine": "Machine", "unknown": "NotSure"}.get(answered_by or "", "NA")


def multipart_body(fields: Sequence[tuple[str, str]], boundary: str) -> tuple[bytes, str]:
    """multipart/form-data for `fields` (RFC 7578), and its Content-Type. The boundary is given so the
    same event always makes the same bytes."""
    parts = []
    for name, value in fields:
        quoted = name.replace("\\", "\\\\").replace('"', '\\"')
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{quoted}"\r\n\r\n'.encode()
            + value.encode()
            + b"\r\n"
        )
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"
