"""A programmable AgentStream bot server for tests: a real websockets server on 127.0.0.1.

It runs its own asyncio loop on a thread, so a plain (sync) test can start the bridge and SIP
peers as processes while the bot records everything with timestamps. A test scripts the bot's
behaviour with an async `script(stream)` coroutine started after `start` arrives.
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Response


@dataclass
class Event:
    t: float  # time.monotonic() at receipt
    wall: float  # time.time() at receipt (to compare with packet captures)
    msg: dict[str, Any]


@dataclass
class Stream:
    ws: ServerConnection
    loop: asyncio.AbstractEventLoop
    path: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    raw: list[str] = field(default_factory=list)
    started: threading.Event = field(default_factory=threading.Event)
    closed: threading.Event = field(default_factory=threading.Event)
    close_code: int | None = None
    sent: list[tuple[float, float, dict[str, Any]]] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        return [e.msg.get("event", "?") for e in self.events]

    def of(self, name: str) -> list[dict[str, Any]]:
        return [e.msg for e in self.events if e.msg.get("event") == name]

    @property
    def start(self) -> dict[str, Any]:
        return self.of("start")[0]

    @property
    def stream_sid(self) -> str:
        return str(self.start["stream_sid"])

    def pcm(self) -> bytes:
        return b"".join(base64.b64decode(m["media"]["payload"]) for m in self.of("media"))

    def dtmf(self) -> str:
        return "".join(m["dtmf"]["digit"] for m in self.of("dtmf"))

    def mark_times(self) -> dict[str, float]:
        return {e.msg["mark"]["name"]: e.t for e in self.events if e.msg.get("event") == "mark"}

    # --- used from scripts (bot loop) ---
    async def send(self, msg: dict[str, Any]) -> None:
        self.sent.append((time.monotonic(), time.time(), msg))
        await self.ws.send(json.dumps(msg))

    async def send_audio(self, pcm: bytes, *, chunk_bytes: int = 3200, paced: bool = False,
                         rate: int = 8000) -> None:
        for i in range(0, len(pcm), chunk_bytes):
            piece = pcm[i : i + chunk_bytes]
            await self.send({"event": "media", "stream_sid": self.stream_sid,
                             "media": {"payload": base64.b64encode(piece).decode()}})
            if paced:
                await asyncio.sleep(len(piece) / (2 * rate))

    async def mark(self, name: str) -> None:
        await self.send({"event": "mark", "stream_sid": self.stream_sid, "mark": {"name": name}})

    async def clear(self) -> None:
        await self.send({"event": "clear", "stream_sid": self.stream_sid})

    async def wait_for(self, name: str, timeout: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.of(name)
            if found:
                return found[-1]
            await asyncio.sleep(0.01)
        raise TimeoutError(f"no {name} event within {timeout} s")


Script = Callable[[Stream], Awaitable[None]]


class TestBot:
    """Start with `with TestBot(script=...) as bot:`; `bot.url` is its ws:// URL."""

    __test__ = False  # not a pytest test class

    def __init__(self, script: Script | None = None, *, echo: bool = False,
                 reject_status: int | None = None, hang_handshake: bool = False,
                 host: str = "127.0.0.1") -> None:
        self.host = host
        self.script = script
        self.echo = echo
        self.reject_status = reject_status
        self.hang_handshake = hang_handshake
        self.streams: list[Stream] = []
        self.connections = 0  # TCP connections seen (counts handshake attempts)
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: Any = None
        self._raw_server: socket.socket | None = None
        self._stream_ready = threading.Event()

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}/bot"

    def __enter__(self) -> TestBot:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        async def stop() -> None:
            if self._server is not None:
                self._server.close()
            if self._raw_server is not None:
                self._raw_server.close()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    async def _start(self) -> None:
        if self.hang_handshake:
            # Accepts TCP, never answers the HTTP upgrade.
            async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                self.connections += 1
                await asyncio.sleep(3600)

            self._server = await asyncio.start_server(hang, self.host, 0)
            self.port = self._server.sockets[0].getsockname()[1]
            return

        def process_request(conn: ServerConnection, request: Any) -> Response | None:
            self.connections += 1
            if self.reject_status is not None:
                return Response(self.reject_status, "Rejected", Headers(), b"no\n")
            return None

        self._server = await serve(self._handler, self.host, 0, compression=None,
                                   max_size=8 << 20, process_request=process_request)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _handler(self, ws: ServerConnection) -> None:
        stream = Stream(ws=ws, loop=self._loop, path=ws.request.path if ws.request else "",
                        headers=dict(ws.request.headers) if ws.request else {})
        self.streams.append(stream)
        self._stream_ready.set()
        script_task: asyncio.Task[None] | None = None
        try:
            async for message in ws:
                stream.raw.append(message if isinstance(message, str) else "<binary>")
                msg = json.loads(message)
                stream.events.append(Event(time.monotonic(), time.time(), msg))
                event = msg.get("event")
                if event == "start":
                    stream.started.set()
                    if self.script is not None:
                        script_task = asyncio.ensure_future(self.script(stream))
                elif event == "media" and self.echo:
                    try:
                        await ws.send(json.dumps({"event": "media", "stream_sid": msg["stream_sid"],
                                                  "media": msg["media"]}))
                    except ConnectionClosed:
                        pass  # the bridge closed after stop: keep reading what already arrived
        except ConnectionClosed:
            pass
        finally:
            stream.close_code = ws.close_code
            stream.closed.set()
            if script_task is not None and not script_task.done():
                script_task.cancel()

    def wait_stream(self, index: int = 0, timeout: float = 15.0) -> Stream:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.streams) > index and self.streams[index].started.is_set():
                return self.streams[index]
            time.sleep(0.01)
        raise TimeoutError(f"the bridge opened no stream #{index} within {timeout} s")

    def wait_closed(self, index: int = 0, timeout: float = 15.0) -> Stream:
        stream = self.wait_stream(index, timeout)
        if not stream.closed.wait(timeout):
            raise TimeoutError("the stream did not close")
        return stream


def tone(freq: float, seconds: float, rate: int = 8000, amplitude: float = 8000.0) -> bytes:
    import numpy as np

    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype("<i2").tobytes()
