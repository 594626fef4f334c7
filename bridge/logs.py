"""Logging set-up: JSON lines for machines, plain text on a terminal; every call line carries its ids.

Per-call context travels as `extra` fields (`call_sid`, `stream_sid`) through a CallLog adapter,
so a log search for one Call-ID finds every line of that call.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Mapping, MutableMapping
from typing import Any

CONTEXT_FIELDS = ("call_sid", "stream_sid")
_RESERVED = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class CallLog(logging.LoggerAdapter[logging.Logger]):
    """A logger bound to one call: adds its ids to every record."""

    def __init__(self, logger: logging.Logger, **context: str) -> None:
        super().__init__(logger, dict(context))

    def bind(self, **context: str) -> CallLog:
        assert self.extra is not None
        return CallLog(self.logger, **{**self.extra, **context})  # type: ignore[arg-type]

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        extra = dict(self.extra or {})
        extra.update(kwargs.get("extra") or {})
        kwargs["extra"] = extra
        return msg, kwargs


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RESERVED and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s%(context)s %(message)s", "%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        ids = [str(getattr(record, f)) for f in CONTEXT_FIELDS if getattr(record, f, None)]
        record.context = f" [{' '.join(ids)}]" if ids else ""
        return super().format(record)


def setup_logging(level: str = "info", fmt: str = "auto", stream: Any = None) -> None:
    stream = stream if stream is not None else sys.stderr
    if fmt == "auto":
        fmt = "text" if hasattr(stream, "isatty") and stream.isatty() else "json"
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # websockets logs every connection at INFO; the bridge logs what matters per call itself.
    logging.getLogger("websockets").setLevel(logging.WARNING)


def record(logger: logging.Logger | CallLog, event: str, fields: Mapping[str, Any]) -> None:
    """One structured record (e.g. the call summary): the fields become JSON keys."""
    logger.info("%s %s", event, " ".join(f"{k}={v}" for k, v in fields.items()),
                extra={"event": event, **fields})
