"""The benchmark's bot: echoes audio like a real bot, marks and clears now and then, and times it all.

Runs as its own process (`python -m bridge.tools.bench.loadbot --listen HOST:PORT --out FILE`) so its
CPU is not the bridge's. For every stream it checks the media clock: each `media` event should
arrive `chunk` durations after the first one; one arriving more than a frame (20 ms) later than
the stream's typical lag is late, a gap in `timestamp` is missing audio. Mark round trips are
timed against the audio queued before them. On SIGTERM it writes its figures as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import signal
import time
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from bridge.tools.bench.wire import LATE_MS
from bridge.ws.fastpath import FastServerConnection

_MEDIA_PREFIX = '{"event":"media",'


@dataclass
class StreamFigures:
    media: int = 0
    late: int = 0
    missing_ms: int = 0
    lags: list[float] = field(default_factory=list)  # arrival - audio clock, ms (per media event)
    mark_excess_ms: list[float] = field(default_factory=list)  # mark lag beyond its queued audio
    dtmf: int = 0
    stops: int = 0
    closed_cleanly: bool = False


class LoadBot:
    def __init__(self, *, mark_every_s: float, clear_every_s: float) -> None:
        self.mark_every_s = mark_every_s
        self.clear_every_s = clear_every_s
        self.streams: list[StreamFigures] = []
        self.active = 0
        self.max_active = 0

    async def handler(self, ws: ServerConnection) -> None:
        assert isinstance(ws, FastServerConnection)  # serve(create_connection=...) below
        fig = StreamFigures()
        self.streams.append(fig)
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        stream = _Stream(self, ws, fig)
        # Most messages arrive through the socket's fast path, straight into on_message; the
        # loop below sees the rest, and ends when the bridge closes.
        ws.set_message_handler(stream.on_message)
        try:
            async for message in ws:
                stream.on_message(message)
        except ConnectionClosed:
            pass
        finally:
            fig.closed_cleanly = ws.close_code == 1000
            self.active -= 1

    def figures(self) -> dict[str, Any]:
        late = 0
        total = 0
        lags_over: list[float] = []
        for fig in self.streams:
            if not fig.lags:
                continue
            base = sorted(fig.lags)[len(fig.lags) // 2]
            for lag in fig.lags:
                total += 1
                if lag - base > LATE_MS:
                    late += 1
                lags_over.append(lag - base)
        return {
            "streams": len(self.streams),
            "max_active": self.max_active,
            "media_events": total,
            "late_events": late,
            "missing_ms": sum(f.missing_ms for f in self.streams),
            "jitter_ms": _percentiles(lags_over),
            "mark_excess_ms": _percentiles([x for f in self.streams for x in f.mark_excess_ms]),
            "marks_answered": sum(len(f.mark_excess_ms) for f in self.streams),
            "dtmf": sum(f.dtmf for f in self.streams),
            "stops": sum(f.stops for f in self.streams),
            "closed_cleanly": sum(f.closed_cleanly for f in self.streams),
        }


class _Stream:
    """One bridge stream: echoes its audio, marks and clears now and then, times everything."""

    def __init__(self, bot: LoadBot, ws: FastServerConnection, fig: StreamFigures) -> None:
        self.bot = bot
        self.ws = ws
        self.fig = fig
        self.sid = ""
        self.echo_prefix = ""  # an echoed media event up to its "media" object
        self.first_arrival: float | None = None
        self.last_ts = 0
        self.echoed_ms = 0.0  # audio sent back to the bridge, ms (8 kHz assumed for mark timing)
        now = time.monotonic()
        self.next_mark = now + bot.mark_every_s
        self.next_clear = now + bot.clear_every_s
        self.marks: dict[str, tuple[float, float]] = {}  # name -> (sent at, audio queued ahead ms)
        self.play_started: float | None = None

    def on_message(self, message: str | bytes) -> None:
        now = time.monotonic()
        if isinstance(message, str) and message.startswith(_MEDIA_PREFIX) and self.sid:
            self._on_media(now, message)
        else:
            self._on_event(now, json.loads(message))

    def _on_event(self, now: float, msg: dict[str, Any]) -> None:
        event = msg.get("event")
        fig = self.fig
        if event == "start":
            self.sid = msg["stream_sid"]
            self.echo_prefix = '{"event":"media","stream_sid":' + json.dumps(self.sid) + ","
        elif event == "media":
            media = msg["media"]
            payload_ms = _b64_len(media["payload"]) / 16.0
            self._media_arrived(now, int(media["timestamp"]), payload_ms)
            self._send({"event": "media", "stream_sid": self.sid, "media": media})
            self._media_sent(now, payload_ms)
        elif event == "mark":
            sent = self.marks.pop(msg["mark"]["name"], None)
            if sent is not None:
                fig.mark_excess_ms.append((now - sent[0]) * 1000.0 - sent[1])
        elif event == "dtmf":
            fig.dtmf += 1
        elif event == "stop":
            fig.stops += 1

    def _media_arrived(self, now: float, ts: int, payload_ms: float) -> None:
        fig = self.fig
        fig.media += 1
        if self.first_arrival is None:
            self.first_arrival = now - ts / 1000.0
        elif ts - self.last_ts > payload_ms + 1:
            fig.missing_ms += int(ts - self.last_ts - payload_ms)
        self.last_ts = ts
        fig.lags.append((now - self.first_arrival) * 1000.0 - ts)

    def _media_sent(self, now: float, payload_ms: float) -> None:
        """After echoing: a mark or a clear now and then."""
        if self.play_started is None:
            self.play_started = now
        self.echoed_ms += payload_ms
        bot = self.bot
        if now >= self.next_mark:
            self.next_mark = now + bot.mark_every_s
            name = f"m{self.fig.media}"
            ahead = max(0.0, self.echoed_ms - (now - self.play_started) * 1000.0)
            self.marks[name] = (now, ahead)
            self._send({"event": "mark", "stream_sid": self.sid, "mark": {"name": name}})
        if bot.clear_every_s and now >= self.next_clear:
            self.next_clear = now + bot.clear_every_s
            self._send({"event": "clear", "stream_sid": self.sid})
            self.play_started, self.echoed_ms = now, 0.0

    def _on_media(self, now: float, message: str) -> None:
        """A `media` event, read and echoed without a JSON round trip: at hundreds of streams the
        bot's own processing would otherwise be a large share of the machine (and of the delays
        the bot sees). The bridge writes media events in one fixed layout (MediaEncoder)."""
        at = message.find('"timestamp":"')
        start = message.find('"media":')
        payload_at = message.find('"payload":"', at)
        if at < 0 or start < 0 or payload_at < 0:
            self._on_event(now, json.loads(message))
            return
        ts = int(message[at + 13 : message.index('"', at + 13)])
        payload_ms = _b64_len(message[payload_at + 11 : -3]) / 16.0
        self._media_arrived(now, ts, payload_ms)
        self._send_text(self.echo_prefix + message[start:])
        self._media_sent(now, payload_ms)

    def _send_text(self, text: str) -> None:
        """One server text frame, written straight to the socket (unmasked, as servers send)."""
        ws = self.ws
        if ws.protocol.state is State.OPEN:
            if ws.protocol.writes:
                ws.send_data()  # what websockets queued itself (a pong) goes first, in order
            data = text.encode()
            ws.transport.write(_text_frame_head(len(data)) + data)

    def _send(self, message: dict[str, Any]) -> None:
        """Write now (no await per message); after the bridge closed, just keep reading."""
        self._send_text(json.dumps(message, separators=(",", ":")))


def _text_frame_head(length: int) -> bytes:
    """The header of a final, unmasked text frame (RFC 6455 section 5.2)."""
    if length < 126:
        return bytes((0x81, length))
    if length < 65536:
        return bytes((0x81, 126)) + length.to_bytes(2, "big")
    return bytes((0x81, 127)) + length.to_bytes(8, "big")


def _b64_len(text: str) -> int:
    """Bytes a base64 text decodes to (without decoding it)."""
    return len(text) * 3 // 4 - (2 if text.endswith("==") else 1 if text.endswith("=") else 0)


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50": 0.0, "p95": 0.0, "p99": 0.0, "max": 0.0}
    ordered = sorted(values)

    def pick(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)

    return {"p50": pick(0.50), "p95": pick(0.95), "p99": pick(0.99), "max": round(ordered[-1], 2)}


async def main_async(host: str, port: int, out: str, mark_every_s: float, clear_every_s: float) -> None:
    bot = LoadBot(mark_every_s=mark_every_s, clear_every_s=clear_every_s)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with serve(bot.handler, host, port, compression=None, max_size=1 << 20,
                     create_connection=FastServerConnection):
        gc.collect()
        gc.freeze()  # as the bridge does: full collections skip what lives as long as the process
        print("loadbot ready", flush=True)
        await stop.wait()
    with open(out, "w") as fh:
        json.dump(bot.figures(), fh)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bridge.tools.bench.loadbot")
    parser.add_argument("--listen", default="127.0.0.1:8766")
    parser.add_argument("--out", required=True)
    parser.add_argument("--mark-every", type=float, default=2.0)
    parser.add_argument("--clear-every", type=float, default=15.0)
    args = parser.parse_args()
    host, _, port = args.listen.rpartition(":")
    asyncio.run(main_async(host, int(port), args.out, args.mark_every, args.clear_every))


if __name__ == "__main__":
    main()
