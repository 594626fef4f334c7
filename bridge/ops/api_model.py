"""The call API's requests, answers and errors, free of I/O (the server is bridge/ops/api.py).

A request body becomes a `CallRequest` or an `ApiError` that knows its HTTP status and its
machine-readable code; nothing else escapes, whatever the bytes (a fuzz test holds this). Two
dialects reach the same request: the native JSON `POST /v1/calls`, and Exotel's Connect Voice AI
form (`POST /v1/Accounts/{sid}/Calls/connect`), so that a backend written for Exotel works by
changing its base URL.

The order of the checks is a contract: authentication (401), body size (413), content type (415),
syntax (400 `invalid_json`), fields (400 `invalid_field`), allow-lists (403/400), limits (429),
state (503). This module holds the ones that need only the request: size to fields, and the
allow-list matchers the server applies with the profile's lists.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import json
import math
import re
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from bridge.config.outbound import STATUS_EVENTS

__all__ = [
    "ERROR_STATUS",
    "EXOTEL_EVENTS",
    "MAX_BODY_BYTES",
    "STATUS_EVENTS",
    "ApiError",
    "CallRequest",
    "callback_host_allowed",
    "destination_allowed",
    "parse_call_request",
    "parse_exotel_connect",
]

MAX_BODY_BYTES = 65_536

# Every error code the API answers with, and its HTTP status.
ERROR_STATUS: Mapping[str, int] = {
    "unauthorized": 401,
    "body_too_large": 413,
    "unsupported_media_type": 415,
    "invalid_json": 400,
    "invalid_field": 400,
    "destination_not_allowed": 403,
    "bot_url_not_allowed": 400,
    "callback_not_allowed": 400,
    "too_many_calls": 429,
    "rate_limited": 429,
    "draining": 503,
    "not_registered": 503,
    "not_found": 404,
    "call_not_active": 409,
    "idempotency_key_reused": 409,
}

EXOTEL_EVENTS = ("ringing", "answered", "terminal")
CallbackContentType = Literal["application/json", "multipart/form-data"]

_NUMBER = re.compile(r"\+?[0-9*#]{1,32}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_HEADER_NAME = re.compile(r"X-[A-Za-z0-9!#$%&'*+.^_`|~-]+", re.IGNORECASE)
_DEFAULT_RING_S = 30.0
_DEFAULT_LIMIT_S = 3600.0
_MAX_SECONDS = 86_400.0


class ApiError(Exception):
    """An answer other than success: its code names it for machines, its message says what to fix."""

    def __init__(
        self, code: str, message: str, field: str | None = None, retry_after: int | None = None
    ) -> None:
        super().__init__(message)
        if code not in ERROR_STATUS:
            raise ValueError(f"unknown API error code {code!r}")
        self.code = code
        self.message = message
        self.field = field
        self.retry_after = retry_after

    @property
    def status(self) -> int:
        return ERROR_STATUS[self.code]

    def body(self) -> dict[str, object]:
        """The native API's error document."""
        error: dict[str, object] = {"code": self.code, "message": self.message}
        if self.field is not None:
            error["field"] = self.field
        return {"error": error}

    def exotel_body(self) -> dict[str, object]:
        """Exotel's error document (its `Code` is the HTTP status: Exotel's own codes are not public)."""
        return {"RestException": {"Status": self.status, "Code": self.status, "Message": self.message}}


@dataclass(frozen=True, slots=True)
class CallRequest:
    """One outbound call as asked for, checked field by field (not yet against the profile)."""

    to: str
    from_: str | None = None
    bot_url: str | None = None
    custom_parameters: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)
    ring_timeout: float = _DEFAULT_RING_S
    time_limit: float = _DEFAULT_LIMIT_S
    record: bool = False
    early_media: bool = False
    status_callback: str | None = None
    status_callback_events: tuple[str, ...] = STATUS_EVENTS
    callback_content_type: CallbackContentType = "application/json"
    exotel: bool = False  # asked through the Exotel-compatible path (its resources and callbacks)


# --------------------------------------------------------------------------- the native API


_NATIVE_FIELDS = (
    "to",
    "from",
    "bot_url",
    "custom_parameters",
    "headers",
    "ring_timeout",
    "time_limit",
    "record",
    "early_media",
    "status_callback",
    "status_callback_events",
)


def parse_call_request(body: bytes, content_type: str | None) -> CallRequest:
    """`POST /v1/calls`: a JSON object, checked in the contract's order."""
    _check_size(body)
    if _media_type(content_type) != "application/json":
        raise ApiError(
            "unsupported_media_type",
            f"send the call as JSON (Content-Type: application/json), not {content_type or 'nothing'}",
        )
    try:
        doc = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ApiError("invalid_json", f"the body is not JSON: {_short(exc)}") from None
    if not isinstance(doc, dict):
        raise ApiError("invalid_json", "the body must be a JSON object")
    unknown = sorted(str(k) for k in doc if k not in _NATIVE_FIELDS)
    if unknown:
        raise ApiError(
            "invalid_field",
            f"unknown field {unknown[0]!r}; the fields are {', '.join(_NATIVE_FIELDS)}",
            unknown[0],
        )
    events = doc.get("status_callback_events")
    return CallRequest(
        to=_destination(doc.get("to"), "to"),
        from_=_optional_text(doc.get("from"), "from"),
        bot_url=_optional_ws_url(doc.get("bot_url"), "bot_url"),
        custom_parameters=_string_map(doc.get("custom_parameters"), "custom_parameters"),
        headers=_headers(doc.get("headers")),
        ring_timeout=_seconds(doc.get("ring_timeout"), "ring_timeout", _DEFAULT_RING_S),
        time_limit=_seconds(doc.get("time_limit"), "time_limit", _DEFAULT_LIMIT_S),
        record=_flag(doc.get("record"), "record"),
        early_media=_flag(doc.get("early_media"), "early_media"),
        status_callback=_optional_http_url(doc.get("status_callback"), "status_callback"),
        status_callback_events=STATUS_EVENTS
        if events is None
        else _events(events, "status_callback_events", STATUS_EVENTS),
    )


# --------------------------------------------------------------------------- Exotel's Connect Voice AI


def parse_exotel_connect(fields: Sequence[tuple[str, str]]) -> CallRequest:
    """Exotel's connect form (already decoded from urlencoded or multipart). Field names are taken
    case-insensitively, as Exotel's own guides write them both ways; fields this bridge has no use
    for (StreamName, RecordingChannels, CallType) are accepted and ignored, as Exotel would."""
    values: dict[str, str] = {}
    events: list[str] = []
    for name, value in fields:
        key = name.strip().lower()
        if key == "statuscallbackevents" or key.startswith("statuscallbackevents["):
            events.append(value)
        else:
            values.setdefault(key, value)
    if "to" in values:
        raise ApiError(
            "invalid_field",
            "To is Exotel's connect-two-numbers call, which this bridge does not place; "
            "send From (the number to dial) and StreamUrl",
            "To",
        )
    stream_type = values.get("streamtype", "bidirectional").strip().lower()
    if stream_type != "bidirectional":
        raise ApiError(
            "invalid_field", f"StreamType {stream_type!r} is not supported; use bidirectional", "StreamType"
        )
    custom = values.get("customfield")
    content_type = values.get("statuscallbackcontenttype", "multipart/form-data").strip().lower()
    if content_type not in ("multipart/form-data", "application/json"):
        raise ApiError(
            "invalid_field",
            "StatusCallbackContentType must be multipart/form-data or application/json",
            "StatusCallbackContentType",
        )
    return CallRequest(
        to=_destination(values.get("from"), "From"),
        from_=_optional_text(values.get("callerid"), "CallerId"),
        bot_url=_optional_ws_url(values.get("streamurl"), "StreamUrl"),
        custom_parameters={} if custom is None else {"CustomField": _text(custom, "CustomField")},
        ring_timeout=_seconds(_number_text(values.get("timeout"), "TimeOut"), "TimeOut", _DEFAULT_RING_S),
        time_limit=_seconds(
            _number_text(values.get("timelimit"), "TimeLimit"), "TimeLimit", _DEFAULT_LIMIT_S
        ),
        record=_flag(_bool_text(values.get("record"), "Record"), "Record"),
        status_callback=_optional_http_url(values.get("statuscallback"), "StatusCallback"),
        # `terminal` is always sent; the others only when asked for.
        status_callback_events=_events([*events, "terminal"], "StatusCallbackEvents", EXOTEL_EVENTS),
        callback_content_type="application/json"
        if content_type == "application/json"
        else "multipart/form-data",
        exotel=True,
    )


# --------------------------------------------------------------------------- allow-lists


def destination_allowed(to: str, patterns: Sequence[str]) -> bool:
    """`outbound.allow_to`: globs matched case-insensitively against the number as given, or the
    whole URI for a `sip:` destination. No patterns: nothing is allowed (calls cost money)."""
    lowered = to.lower()
    return any(fnmatch.fnmatchcase(lowered, p.lower()) for p in patterns)


_LOOPBACK_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost")


def callback_host_allowed(url: str, patterns: Sequence[str] | None) -> bool:
    """`api.callback_allowed_hosts`: host globs; None (absent) allows loopback names and addresses only."""
    host = (urllib.parse.urlsplit(url).hostname or "").lower().rstrip(".")
    if not host:
        return False
    if patterns is None:
        if host in _LOOPBACK_NAMES:
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False
    return any(fnmatch.fnmatchcase(host, p.lower().rstrip(".")) for p in patterns)


# --------------------------------------------------------------------------- field checks


def _check_size(body: bytes) -> None:
    if len(body) > MAX_BODY_BYTES:
        raise ApiError("body_too_large", f"the body is {len(body)} bytes; the limit is {MAX_BODY_BYTES}")


def _media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def _short(exc: Exception) -> str:
    text = str(exc)
    return text if len(text) <= 120 else text[:117] + "..."


def _text(value: object, name: str, *, limit: int = 1024) -> str:
    if not isinstance(value, str):
        raise ApiError("invalid_field", f"{name} must be a string, not {_kind(value)}", name)
    if not value.strip() or _CONTROL.search(value) or len(value) > limit:
        raise ApiError(
            "invalid_field",
            f"{name} must be non-empty text of at most {limit} characters without control characters",
            name,
        )
    return value


def _optional_text(value: object, name: str) -> str | None:
    return None if value is None else _text(value, name, limit=256)


def _destination(value: object, name: str) -> str:
    if value is None:
        raise ApiError(
            "invalid_field", f"{name} is required: the number (digits, a leading +) or sip: URI to dial", name
        )
    text = _text(value, name, limit=512).strip()
    if text.lower().startswith(("sip:", "sips:")):
        if " " in text or "@" not in text:
            raise ApiError("invalid_field", f"{name} {text!r} is not a sip:user@host URI", name)
        return text
    if not _NUMBER.fullmatch(text):
        raise ApiError(
            "invalid_field",
            f"{name} {text!r} is neither a number (digits, *, #, a leading +) nor a sip: URI",
            name,
        )
    return text


def _url(value: object, name: str, schemes: tuple[str, ...]) -> str:
    text = _text(value, name, limit=2048).strip()
    try:
        parts = urllib.parse.urlsplit(text)
        port = parts.port  # raises on a port that is not a number
    except ValueError:
        parts, port = None, None
    if parts is None or parts.scheme.lower() not in schemes or not parts.hostname or " " in text:
        raise ApiError(
            "invalid_field", f"{name} must be a {' or '.join(s + '://' for s in schemes)} URL", name
        )
    del port
    return text


def _optional_ws_url(value: object, name: str) -> str | None:
    return None if value is None else _url(value, name, ("ws", "wss"))


def _optional_http_url(value: object, name: str) -> str | None:
    return None if value is None else _url(value, name, ("http", "https"))


def _string_map(value: object, name: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ApiError("invalid_field", f"{name} must be an object of strings, not {_kind(value)}", name)
    out: dict[str, str] = {}
    for key, item in value.items():
        if not isinstance(item, str):
            raise ApiError(
                "invalid_field", f"{name}.{key} must be a string, not {_kind(item)}", f"{name}.{key}"
            )
        if len(item) > 4096 or len(str(key)) > 256:
            raise ApiError("invalid_field", f"{name}.{str(key)[:64]} is too long", name)
        out[str(key)] = item
    if len(out) > 64:
        raise ApiError("invalid_field", f"{name} has {len(out)} entries; the limit is 64", name)
    return out


def _headers(value: object) -> dict[str, str]:
    headers = _string_map(value, "headers")
    for key, item in headers.items():
        if not _HEADER_NAME.fullmatch(key):
            raise ApiError(
                "invalid_field",
                f"header {key[:64]!r}: only X- headers may be added to the INVITE",
                f"headers.{key}",
            )
        if _CONTROL.search(item.replace("\t", " ")):
            raise ApiError(
                "invalid_field", f"header {key}: the value has control characters", f"headers.{key}"
            )
    return headers


def _seconds(value: object, name: str, default: float) -> float:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ApiError("invalid_field", f"{name} must be a number of seconds, not {_kind(value)}", name)
    if value <= 0 or value > _MAX_SECONDS:
        raise ApiError(
            "invalid_field", f"{name} must be more than 0 and at most {_MAX_SECONDS:g} seconds", name
        )
    return float(value)


def _number_text(value: str | None, name: str) -> float | None:
    if value is None or not value.strip():
        return None
    try:
        return float(value)
    except ValueError:
        raise ApiError(
            "invalid_field", f"{name} must be a number of seconds, not {value[:32]!r}", name
        ) from None


def _bool_text(value: str | None, name: str) -> bool | None:
    if value is None or not value.strip():
        return None
    lowered = value.strip().lower()
    if lowered not in ("true", "false"):
        raise ApiError("invalid_field", f"{name} must be true or false", name)
    return lowered == "true"


def _flag(value: object, name: str) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise ApiError("invalid_field", f"{name} must be true or false, not {_kind(value)}", name)
    return value


def _events(value: object, name: str, allowed: tuple[str, ...]) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ApiError("invalid_field", f"{name} must be a list of {', '.join(allowed)}", name)
    wrong = [v for v in value if v.strip().lower() not in allowed]
    if wrong:
        raise ApiError("invalid_field", f"{name}: {wrong[0][:32]!r} is not one of {', '.join(allowed)}", name)
    chosen = {v.strip().lower() for v in value}
    return tuple(e for e in allowed if e in chosen)


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
