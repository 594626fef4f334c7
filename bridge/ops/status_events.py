"""From a call's status changes to the webhooks that report them.

Each call has up to two callbacks: its own (`status_callback` of the request) and the profile's
(`api.status_callback`, for every call, inbound ones included), each with the events it asked for.
Per call and callback, `sequence` counts 1, 2, 3 ... in the order sent; `completed` (Exotel's
`terminal`, which Exotel's path always asks for) comes last for every call whatever its outcome,
its `status` carrying the outcome. The bodies are made here once and stored by
the webhook sender, so every retry carries the same bytes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from bridge.call.record import (
    CallRecord,
    exotel_callback_fields,
    exotel_callback_json,
    multipart_body,
    status_event_body,
)

__all__ = ["Callback", "StatusReporter", "WebhookQueue"]

StatusEvent = Literal["initiated", "ringing", "answered", "completed"]
# Exotel's event names for ours (it has no `initiated`).
_EXOTEL_EVENT: dict[str, str] = {"ringing": "ringing", "answered": "answered", "completed": "terminal"}


class WebhookQueue(Protocol):
    def enqueue(self, url: str, body: bytes, content_type: str, key: str) -> str: ...


@dataclass(slots=True)
class Callback:
    url: str
    events: tuple[str, ...]  # native names, or Exotel's (ringing, answered, terminal) when exotel
    exotel: bool = False
    content_type: str = "application/json"  # Exotel's may be multipart/form-data
    sequence: int = 0
    sent: set[str] = field(default_factory=set)


class StatusReporter:
    """Turns status events of calls into queued webhooks."""

    def __init__(
        self, queue: WebhookQueue, default: Callback | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        self._queue = queue
        self._default = default
        self._clock = clock
        self._callbacks: dict[str, list[Callback]] = {}

    def watch(self, call_sid: str, own: Callback | None) -> None:
        """Register a call's callbacks (its own, and the profile's for every call)."""
        callbacks = [c for c in (own,) if c is not None]
        if self._default is not None:
            d = self._default
            callbacks.append(Callback(d.url, d.events, d.exotel, d.content_type))
        if callbacks:
            self._callbacks[call_sid] = callbacks

    def report(self, record: CallRecord, event: StatusEvent) -> None:
        """One status event of a call; `completed` also forgets the call."""
        callbacks = self._callbacks.get(record.call_sid, ())
        at = self._clock()
        for callback in callbacks:
            name = _EXOTEL_EVENT.get(event) if callback.exotel else event
            if name is None or name in callback.sent:
                continue
            if name not in callback.events:
                continue
            callback.sent.add(name)
            callback.sequence += 1
            body, content_type = self._body(record, callback, name, at)
            self._queue.enqueue(callback.url, body, content_type, f"{record.call_sid} {callback.url}")
        if event == "completed":
            self._callbacks.pop(record.call_sid, None)

    def _body(self, record: CallRecord, callback: Callback, name: str, at: float) -> tuple[bytes, str]:
        if not callback.exotel:
            return status_event_body(record, name, callback.sequence, at), "application/json"
        fields = exotel_callback_fields(record, name)
        if callback.content_type == "application/json":
            return exotel_callback_json(fields), "application/json"
        return multipart_body(fields, f"bridge-{record.call_sid}-{callback.sequence}")

    def watching(self) -> Sequence[str]:
        return list(self._callbacks)
