from __future__ import annotations

import io
import json
import logging

from bridge.logs import CallLog, JsonFormatter, TextFormatter, record
from bridge.ws.client import redact_url


def test_redact_url_hides_only_the_password() -> None:
    assert redact_url("wss://user:s3cret@bots.example.com:8443/a?x=1") == \
        "wss://user:***@bots.example.com:8443/a?x=1"
    assert redact_url("ws://127.0.0.1:8765/stream") == "ws://127.0.0.1:8765/stream"


def _capture(formatter: logging.Formatter) -> tuple[logging.Logger, io.StringIO]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    logger = logging.getLogger(f"t{id(out)}")
    logger.handlers = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger, out


def test_every_call_line_carries_its_ids_in_json() -> None:
    logger, out = _capture(JsonFormatter())
    call = CallLog(logger, call_sid="abc@host", stream_sid="s1")
    call.info("hello %s", "world")
    record(call, "call_summary", {"from": "100", "duration_s": 1.5})
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert first["msg"] == "hello world" and first["call_sid"] == "abc@host" and first["stream_sid"] == "s1"
    assert second["event"] == "call_summary" and second["from"] == "100" and second["duration_s"] == 1.5
    assert second["call_sid"] == "abc@host"


def test_text_lines_show_the_ids() -> None:
    logger, out = _capture(TextFormatter())
    CallLog(logger, call_sid="abc", stream_sid="s1").warning("x")
    assert "[abc s1] x" in out.getvalue()
