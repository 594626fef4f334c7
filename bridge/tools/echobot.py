"""A reference AgentStream bot: echoes the caller's audio back and checks marks round-trip.

It behaves like Exotel's echobot (echo each `media` as it came, answer `clear` with `clear`)
and adds what an operator wants when testing a deployment: after each second of echoed audio
it sends a mark and logs how long the bridge took to answer it (the mark comes back when the
echoed audio before it has been played to the caller), and it logs every event it sees.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

log = logging.getLogger("bridge.tools.echobot")

MARK_EVERY_MESSAGES = 10


@dataclass
class StreamRecord:
    """What one stream showed the bot (the demo and the tests read these)."""

    stream_sid: str = ""
    path: str = ""
    events: list[str] = field(default_factory=list)
    start: dict[str, Any] = field(default_factory=dict)
    media_bytes: int = 0
    media_messages: int = 0
    dtmf: str = ""
    marks_sent: dict[str, float] = field(default_factory=dict)
    mark_lag_ms: dict[str, float] = field(default_factory=dict)
    stop_reason: str = ""
    close_code: int | None = None


class EchoBot:
    def __init__(self, *, mark_every: int = MARK_EVERY_MESSAGES) -> None:
        self.mark_every = mark_every
        self.streams: list[StreamRecord] = []
        self.stream_done = asyncio.Event()

    async def handler(self, ws: ServerConnection) -> None:
        rec = StreamRecord(path=ws.request.path if ws.request else "")
        self.streams.append(rec)
        echoed = 0
        try:
            async for message in ws:
                if isinstance(message, bytes):
                    log.warning("binary frame ignored")
                    continue
                msg = json.loads(message)
                event = msg.get("event")
                rec.events.append(event)
                if event == "start":
                    rec.start = msg["start"]
                    rec.stream_sid = msg["stream_sid"]
                    log.info("stream %s started: from %s to %s, %s Hz, params %s", rec.stream_sid,
                             rec.start.get("from"), rec.start.get("to"),
                             rec.start.get("media_format", {}).get("sample_rate"),
                             rec.start.get("custom_parameters"))
                elif event == "media":
                    media = msg["media"]
                    rec.media_messages += 1
                    rec.media_bytes += len(media["payload"]) * 3 // 4
                    if not await _send(ws, {"event": "media", "stream_sid": rec.stream_sid, "media": media}):
                        continue
                    echoed += 1
                    if self.mark_every and echoed % self.mark_every == 0:
                        name = f"echo-{echoed}"
                        rec.marks_sent[name] = time.monotonic()
                        await _send(ws, {"event": "mark", "stream_sid": rec.stream_sid,
                                         "mark": {"name": name}})
                elif event == "mark":
                    name = msg["mark"]["name"]
                    sent = rec.marks_sent.get(name)
                    if sent is not None:
                        rec.mark_lag_ms[name] = (time.monotonic() - sent) * 1000
                elif event == "dtmf":
                    rec.dtmf += msg["dtmf"]["digit"]
                    log.info("stream %s: DTMF %s", rec.stream_sid, msg["dtmf"]["digit"])
                elif event == "stop":
                    rec.stop_reason = msg["stop"].get("reason", "")
                    log.info("stream %s stopped (%s) after %d media messages", rec.stream_sid,
                             rec.stop_reason, rec.media_messages)
        except ConnectionClosed:
            pass
        finally:
            rec.close_code = ws.close_code
            self.stream_done.set()


async def _send(ws: ServerConnection, message: dict[str, Any]) -> bool:
    """Send unless the bridge has closed (after `stop`): then keep reading what already arrived."""
    try:
        await ws.send(json.dumps(message))
    except ConnectionClosed:
        return False
    return True


async def start_echo_bot(host: str, port: int, bot: EchoBot | None = None) -> tuple[Server, EchoBot]:
    bot = bot or EchoBot()
    server = await serve(bot.handler, host, port, compression=None, max_size=1 << 20)
    return server, bot


async def run_echo_bot(host: str, port: int) -> None:
    server, _ = await start_echo_bot(host, port)
    log.info("echo bot listening on ws://%s:%d/ (Ctrl-C to stop)", host, port)
    async with server:
        await server.serve_forever()
