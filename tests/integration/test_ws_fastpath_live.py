"""The bot socket's fast path against a real websockets server on 127.0.0.1.

Whole data frames reach the call's handler straight from `data_received`; everything else
(pings, pongs, keepalive, fragments, oversized or invalid frames, the close handshake) is still
websockets' job, and no message is lost, duplicated or reordered when the fast path ends.
"""

from __future__ import annotations

import asyncio
import base64
import gc
import hashlib
import time
import weakref
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode

from bridge.ws.client import BotLink, BotLinkSettings, open_bot_link

pytestmark = pytest.mark.timeout(30)

T = TypeVar("T")
Script = Callable[[ServerConnection], Awaitable[None]]


def quick(**changes: Any) -> BotLinkSettings:
    """One attempt with a short timeout (the test's bot is local)."""
    return BotLinkSettings.of(connect_retries=0, connect_timeout=5, **changes)


def run(main: Callable[[], Coroutine[Any, Any, T]], timeout: float = 10.0) -> T:
    """One test's event loop; a hang fails the test instead of blocking the run."""

    async def bounded() -> T:
        async with asyncio.timeout(timeout):
            return await main()

    return asyncio.run(bounded())


@dataclass
class Bot:
    url: str
    close_codes: list[int | None] = field(default_factory=list)  # as the server saw them
    errors: list[BaseException] = field(default_factory=list)  # raised by the server's script


@asynccontextmanager
async def bot_server(script: Script) -> AsyncIterator[Bot]:
    """A websockets server running `script` per connection, then waiting for the close handshake."""
    bot = Bot(url="")

    async def handler(ws: ServerConnection) -> None:
        try:
            await script(ws)
        except ConnectionClosed:
            pass
        except Exception as exc:  # surfaced by the test through bot.errors
            bot.errors.append(exc)
            raise
        try:
            async with asyncio.timeout(5):
                await ws.wait_closed()
        finally:
            bot.close_codes.append(ws.close_code)

    async with serve(handler, "127.0.0.1", 0, compression=None) as server:
        port = server.sockets[0].getsockname()[1]
        bot.url = f"ws://127.0.0.1:{port}/stream"
        yield bot
    assert not bot.errors, bot.errors


@dataclass
class Received:
    """What the call got, in the order it got it, and through which path."""

    items: list[tuple[str, str | bytes]] = field(default_factory=list)

    def handler(self, message: str | bytes) -> None:
        self.items.append(("handler", message))

    @property
    def messages(self) -> list[str | bytes]:
        return [message for _, message in self.items]

    def via(self, path: str) -> list[str | bytes]:
        return [message for where, message in self.items if where == path]

    async def drain(self, link: BotLink) -> None:
        async for message in link.messages():
            self.items.append(("messages", message))


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.005)


async def wait_for_go(ws: ServerConnection) -> None:
    """The client says when its handler is in place, so messages take the fast path."""
    assert await ws.recv() == "go"


def expected_stream(n_text: int = 200) -> list[str | bytes]:
    stream: list[str | bytes] = []
    for i in range(n_text):
        stream.append(f'{{"event":"media","seq":{i},"x":"\U0001f600{"é" * (i % 7)}"}}' + "a" * (i * 3))
        if i % 20 == 0:
            stream.append(bytes([i % 256]) * (i * 40 + 1))  # up to 16-bit lengths
    stream.append("b" * 70000)  # a 64-bit length
    return stream



async def open_with_handler(url: str) -> tuple[BotLink, Received]:
    """The bridge's way: open, take the fast path's messages, then tell the server to start."""
    link = await open_bot_link(url, quick())
    got = Received()
    link.set_message_handler(got.handler)
    assert link.send_nowait("go")
    return link, got

def test_fast_messages_reach_the_handler_in_order_and_not_the_iterator() -> None:
    stream = expected_stream()

    async def script(ws: ServerConnection) -> None:
        await wait_for_go(ws)
        for message in stream:
            await ws.send(message)
        assert await ws.recv() == "close now"
        await ws.close(1000, "bye")

    async def main() -> None:
        async with bot_server(script) as bot:
            link, got = await open_with_handler(bot.url)
            await until(lambda: len(got.items) == len(stream))
            assert got.messages == stream
            assert link._conn.fast_path
            drain = asyncio.create_task(got.drain(link))
            await asyncio.sleep(0.2)
            assert got.via("messages") == []  # nothing for the iterator while the bot talks
            assert not drain.done()
            assert link._conn.fast_path  # iterating with a handler set does not end it
            assert link.send_nowait("close now")
            await drain  # ends when the bot closes
            assert got.via("messages") == [] and got.messages == stream
            assert not link._conn.fast_path  # the close frame ended it
            assert link.close_code == 1000 and link.close_reason == "bye"
        assert bot.close_codes == [1000]

    run(main)


def test_messages_sent_right_after_the_handshake_still_come_first_and_in_order() -> None:
    early: list[str | bytes] = [f"early {i}" for i in range(10)] + [b"\x00\x01early binary"]
    late: list[str | bytes] = [f"late {i}" for i in range(10)]

    async def script(ws: ServerConnection) -> None:
        for message in early:  # before the client could set its handler
            await ws.send(message)
        await wait_for_go(ws)
        for message in late:
            await ws.send(message)
        await ws.close()

    async def main() -> None:
        async with bot_server(script) as bot:
            link = await open_bot_link(bot.url, quick())
            await asyncio.sleep(0.2)  # the early messages are in by now
            got = Received()
            link.set_message_handler(got.handler)
            assert link.send_nowait("go")
            await got.drain(link)
            assert got.messages == early + late
            assert link.close_code == 1000

    run(main)


async def _fragmented(parts: list[str]) -> AsyncIterator[str]:
    for part in parts:
        yield part
        await asyncio.sleep(0.01)  # the fragments come in separate reads


@pytest.mark.parametrize("fragments", ["sync", "async"])
def test_a_fragmented_message_ends_the_fast_path_without_reordering(fragments: str) -> None:
    before: list[str | bytes] = [f"before {i}" for i in range(10)]
    after: list[str | bytes] = [f"after {i}" if i % 3 else f"after {i}".encode() for i in range(10)]

    async def script(ws: ServerConnection) -> None:
        await wait_for_go(ws)
        for message in before:
            await ws.send(message)
        if fragments == "sync":
            await ws.send(iter(["a", "b", "c"]))
        else:
            await ws.send(_fragmented(["a", "b", "c"]))
        for message in after:
            await ws.send(message)
        await ws.close()

    async def main() -> None:
        async with bot_server(script) as bot:
            link, got = await open_with_handler(bot.url)
            assert link._conn.fast_path
            await got.drain(link)
            assert got.messages == [*before, "abc", *after]
            assert got.via("handler") == before  # and the rest through the iterator
            assert not link._conn.fast_path
            assert link.close_code == 1000

    run(main)


def test_server_pings_are_answered_while_fast_messages_flow() -> None:
    sent: list[str | bytes] = []
    latencies: list[float] = []

    async def script(ws: ServerConnection) -> None:
        await wait_for_go(ws)
        for i in range(30):
            for j in range(10):
                message = f"m{i}.{j}"
                sent.append(message)
                await ws.send(message)
            pong = await ws.ping(f"ping {i}")
            async with asyncio.timeout(2):
                latencies.append(await pong)
        assert await ws.recv() == "pongs seen"
        await ws.close()

    async def main() -> None:
        async with bot_server(script) as bot:
            link, got = await open_with_handler(bot.url)
            await until(lambda: len(latencies) == 30)
            assert got.via("handler") == sent
            assert link._conn.fast_path  # pings and pongs do not end it
            assert link.send_nowait("pongs seen")
            await got.drain(link)
            assert got.via("handler") == sent and got.via("messages") == []
            assert link.close_code == 1000

    run(main)


def test_client_keepalive_still_works_on_the_fast_path() -> None:
    async def script(ws: ServerConnection) -> None:
        await wait_for_go(ws)
        await ws.send("hello")
        await ws.send("still here")
        async for message in ws:  # idle and reading: websockets answers the client's pings
            if message == "bye":
                await ws.close()

    async def main() -> None:
        async with bot_server(script) as bot:
            link = await open_bot_link(bot.url, quick(ping_interval=0.2, ping_timeout=1))
            got = Received()
            link.set_message_handler(got.handler)
            assert link.send_nowait("go")
            await asyncio.sleep(1.5)  # seven pings, each needing its pong within 1 s
            assert link.is_open
            assert link._conn.latency > 0  # pongs were measured: they reached websockets
            assert link._conn.fast_path
            assert got.messages == ["hello", "still here"]
            assert link.send_nowait("bye")
            await got.drain(link)
            assert link.close_code == 1000

    run(main)


def test_a_message_over_the_limit_closes_with_1009() -> None:
    async def script(ws: ServerConnection) -> None:
        await wait_for_go(ws)
        await ws.send("x" * 1000)  # at the limit: fine
        await ws.send(b"y" * 5000)
        await ws.send("never delivered")

    async def main() -> None:
        async with bot_server(script) as bot:
            link = await open_bot_link(bot.url, quick(max_message_bytes=1000))
            got = Received()
            link.set_message_handler(got.handler)
            assert link.send_nowait("go")
            await got.drain(link)
            assert got.messages == ["x" * 1000]
            assert not link.is_open
            close_sent = link._conn.protocol.close_sent
            assert close_sent is not None and close_sent.code == 1009
            assert link.close_code in (1009, 1006)  # websockets does not wait for the echo of a failure
            assert link.close_reason is not None and "limit of 1000 bytes" in link.close_reason
        assert bot.close_codes == [1009]

    run(main)


def test_invalid_utf8_closes_with_1007() -> None:
    async def script(ws: ServerConnection) -> None:
        await wait_for_go(ws)
        await ws.send("valid")
        ws.transport.write(b"\x81\x02\xff\xfe" + Frame(Opcode.TEXT, b"after").serialize(mask=False))

    async def main() -> None:
        async with bot_server(script) as bot:
            link, got = await open_with_handler(bot.url)
            await got.drain(link)
            assert got.messages == ["valid"]  # and not "after"
            assert not link._conn.fast_path
            close_sent = link._conn.protocol.close_sent
            assert close_sent is not None and close_sent.code == 1007
        assert bot.close_codes == [1007]

    run(main)


def test_the_tap_reads_every_message_through_the_iterator() -> None:
    early: list[str | bytes] = [f"early {i}" for i in range(5)] + [b"\xffearly"]
    late: list[str | bytes] = [f"late {i}" for i in range(20)] + [b"\x82\x00late"]

    async def script(ws: ServerConnection) -> None:
        for message in early:
            await ws.send(message)
        await wait_for_go(ws)
        for message in late:
            await ws.send(message)
        await ws.close(1000)

    async def main() -> None:
        async with bot_server(script) as bot:
            link = await open_bot_link(bot.url, quick())
            await asyncio.sleep(0.2)  # the early messages are in, with nobody to take them
            assert link.send_nowait("go")
            got = Received()
            await got.drain(link)  # no handler: messages() ends the fast path
            assert got.via("messages") == early + late
            assert not link._conn.fast_path
            assert link.close_code == 1000

    run(main)


def test_ending_the_fast_path_mid_frame_hands_websockets_the_start_of_that_frame() -> None:
    frame = Frame(Opcode.TEXT, ("z" * 300).encode()).serialize(mask=False)

    async def script(ws: ServerConnection) -> None:
        assert await ws.recv() == "ready"  # not in the handshake's read: on the fast path
        await ws.send("whole")
        ws.transport.write(frame[:5])  # the header and a little of the payload
        await wait_for_go(ws)
        ws.transport.write(frame[5:])
        await ws.send("next")
        await ws.close()

    async def main() -> None:
        async with bot_server(script) as bot:
            link = await open_bot_link(bot.url, quick())
            assert link.send_nowait("ready")
            conn = link._conn

            def held() -> int:
                return 0 if conn._splitter is None else len(conn._splitter._buf)

            await until(lambda: held() == 5)  # "whole" and the 5 bytes are in, on the fast path
            assert conn.fast_path and conn._early == deque(["whole"])
            got = Received()
            drain = asyncio.create_task(got.drain(link))
            await until(lambda: got.messages == ["whole"])
            assert not link._conn.fast_path
            assert link.send_nowait("go")
            await drain
            assert got.messages == ["whole", "z" * 300, "next"]
            assert link.close_code == 1000

    run(main)


def test_a_server_close_after_messages() -> None:
    stream: list[str | bytes] = [f"m{i}" for i in range(50)] + [b"bin"]

    async def script(ws: ServerConnection) -> None:
        await wait_for_go(ws)
        for message in stream:
            await ws.send(message)
        await ws.close(1000, "done")

    async def main() -> None:
        async with bot_server(script) as bot:
            link, got = await open_with_handler(bot.url)
            started = time.monotonic()
            await got.drain(link)
            assert time.monotonic() - started < 3  # the close handshake, not a timeout
            assert got.via("handler") == stream and got.via("messages") == []
            assert link.close_code == 1000 and link.close_reason == "done"
            assert not link.is_open
        assert bot.close_codes == [1000]

    run(main)


# --- frames in the handshake's read -----------------------------------------------------------------

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def test_a_frame_split_across_the_handshake_read_arrives_whole() -> None:
    """A raw server writes the 101 response and the first bytes of a frame in one write."""
    frame = Frame(Opcode.BINARY, b"\x82\x00" * 50).serialize(mask=False)  # one 100-byte message

    async def main() -> list[str | bytes]:
        async def serve_raw(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            request = await reader.readuntil(b"\r\n\r\n")
            key = next(line.split(b":", 1)[1].strip() for line in request.split(b"\r\n")
                       if line.lower().startswith(b"sec-websocket-key:"))
            accept = base64.b64encode(hashlib.sha1(key + _GUID).digest())
            writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                         b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n" + frame[:10])
            await asyncio.sleep(0.3)
            writer.write(frame[10:] + Frame(Opcode.CLOSE, b"\x03\xe8").serialize(mask=False))
            await asyncio.sleep(1)
            writer.close()

        server = await asyncio.start_server(serve_raw, "127.0.0.1", 0)
        async with server:
            port = server.sockets[0].getsockname()[1]
            link = await open_bot_link(f"ws://127.0.0.1:{port}/", quick())
            got = Received()
            link.set_message_handler(got.handler)
            await got.drain(link)
            return got.messages

    assert run(main) == [b"\x82\x00" * 50]


# --- freeing a finished call -------------------------------------------------------------------------


class Owner:
    """Holds its link and takes the fast path's messages with a bound method, as BridgeCall does:
    owner -> link -> connection -> handler -> owner is a reference cycle while the socket lives."""

    def __init__(self, link: BotLink) -> None:
        self.link = link
        self.buffers = bytearray(64 * 1024)  # stands for a call's audio buffers
        link.set_message_handler(self.on_message)

    def on_message(self, message: str | bytes) -> None:
        del message


def test_a_closed_connection_lets_its_owner_go_without_the_cycle_collector() -> None:
    async def script(ws: ServerConnection) -> None:
        await wait_for_go(ws)
        await ws.send("hello")
        await ws.close(1000, "done")

    async def main() -> None:
        async with bot_server(script) as bot:
            link = await open_bot_link(bot.url, quick())
            owner = Owner(link)
            gone = weakref.ref(owner)
            assert link.send_nowait("go")
            async for _ in link.messages():
                pass
            await link._conn.wait_closed()
            await asyncio.sleep(0.05)  # connection_lost runs after the close handshake
            del owner, link
            # Reference counting alone: a finished call's memory must not wait for a full
            # collection (rare once the bridge froze its start-up objects; 57 KB a call piled up).
            assert gone() is None

    gc.disable()
    try:
        run(main)
    finally:
        gc.enable()


# -- the native sender as the socket's writer --------------------------------------------------


def _piped_session() -> tuple[Any, Any, Any, str]:
    """A started session, and a native pipe with a sender (what a call has when it hands off)."""
    import pjsua2 as pj

    from bridge.audio.pipe_channel import PipeChannel
    from bridge.bot.agentstream.events import StartInfo
    from bridge.bot.agentstream.session import StreamSession

    sender = pj.MediaSender()
    pipe = pj.MediaPipe(1, pj.MediaWakeup(), 320, 64, 1, 0, 32000, 10)
    session = StreamSession(StartInfo("sid", "call", "acct", "a", "b", {}, 8000), chunk_ms=20)
    session.connected()
    start = session.start()
    return sender, PipeChannel(pipe, 320, sender), session, start


def test_handed_off_socket_carries_media_events_pings_and_the_close() -> None:
    """While the pipe writes, the bot sees the pipe's media and the call's events as one numbered
    stream, the client's keepalive pings still get their pongs, and the close handshake after the
    hand-back is websockets' as usual (code 1000), with everything queued before it delivered."""
    from bridge.call.native_send import hand_off

    got: list[dict[str, Any]] = []

    async def script(ws: ServerConnection) -> None:
        import json

        async for message in ws:
            got.append(json.loads(message))

    async def main() -> None:
        sender, channel, session, start = _piped_session()
        async with bot_server(script) as bot:
            link = await open_bot_link(bot.url, quick(ping_interval=0.1, ping_timeout=1))
            link.set_message_handler(lambda message: None)
            assert link.send_nowait(start)
            assert hand_off(channel, session, link, 8000)
            assert link.handed_off and session.handed_off
            for i in range(60):
                channel.pipe.pushFrame(bytes([i]) * 320)  # the clock's code; the sender sends
                if i == 30:
                    assert link.send_nowait(session.dtmf("5", 100) or "")
                await asyncio.sleep(0.01)
            await until(lambda: len(got) >= 62)
            assert link._conn.latency > 0  # pings went out through the pipe, whole, and were answered
            link.take_writes_back()
            assert not link.handed_off and not session.handed_off
            assert link.send_nowait(session.stop("callended") or "")
            await link.close(1000)
            assert link.close_code == 1000
        del sender
        numbers = [int(m["sequence_number"]) for m in got]
        assert numbers == list(range(1, 64))
        assert [m["event"] for m in got].count("media") == 60
        assert got[-1]["event"] == "stop"
        assert link.sent_messages == 63 and link.sent_bytes > 60 * 400

    run(main)


def test_the_pipe_lets_go_of_a_socket_the_bot_closes() -> None:
    """The bot closes while the pipe writes: websockets answers the close (the pipe hands the
    socket back first) and the session carries on from the pipe's counters."""
    from bridge.call.native_send import hand_off

    async def script(ws: ServerConnection) -> None:
        for _ in range(5):
            await ws.recv()
        await ws.close(4000, "done")

    async def main() -> None:
        sender, channel, session, _ = _piped_session()
        async with bot_server(script) as bot:
            link = await open_bot_link(bot.url, quick())
            link.set_message_handler(lambda message: None)
            assert hand_off(channel, session, link, 8000)
            for i in range(40):
                channel.pipe.pushFrame(bytes([i]) * 320)
                await asyncio.sleep(0.005)
                if not link.is_open:
                    break
            await until(lambda: not link.handed_off)
            assert not channel.sending and not session.handed_off
            assert session.next_seq >= 7  # 2 for the first media, on from the pipe's count
            async for _ in link.messages():
                pass
            assert link.close_code == 4000
        del sender

    run(main)


def test_a_second_dialect_goes_through_the_same_pipe_and_link() -> None:
    """The seam end to end: a test-only dialect (tests/dialectlib.py: other JSON, mu-law audio)
    registered by name, its session handed to the pipe through a real BotLink; the bot sees its
    media and its events numbered in one stream, then the session's own media after the hand-back."""
    import json

    import pjsua2 as pj

    from bridge.audio.pipe_channel import PipeChannel
    from bridge.bot.dialect import get_dialect, register, unregister
    from bridge.bot.events import StartInfo
    from bridge.call.native_send import hand_off
    from tests.dialectlib import NAME, SeamDialect, media_text

    got: list[str] = []

    async def script(ws: ServerConnection) -> None:
        async for message in ws:
            assert isinstance(message, str)
            got.append(message)

    async def main() -> None:
        sender = pj.MediaSender()
        channel = PipeChannel(pj.MediaPipe(1, pj.MediaWakeup(), 320, 64, 1, 0, 32000, 10), 320, sender)
        session = get_dialect(NAME).session(StartInfo("sid", "call", "acct", "a", "b"), chunk_ms=20)
        async with bot_server(script) as bot:
            link = await open_bot_link(bot.url, quick())
            link.set_message_handler(lambda message: None)
            assert link.send_nowait(session.connected()) and link.send_nowait(session.start())
            assert hand_off(channel, session, link, 8000)
            for i in range(10):
                channel.pipe.pushFrame(bytes([i]) * 320)
                if i == 4:
                    channel.send_due()  # the call's order: audio before the digit goes first
                    assert link.send_nowait(session.dtmf("5", 100) or "")
                await asyncio.sleep(0.01)
            await until(lambda: len(got) >= 13)
            link.take_writes_back()
            assert not session.handed_off
            assert link.send_nowait(session.media(bytes(320)) or "")
            assert link.send_nowait(session.stop("callended") or "")
            await until(lambda: len(got) >= 15)
            await link.close(1000)
        del sender
        numbers = [json.loads(m)["seq"] for m in got[1:]]
        assert numbers == list(range(100, 114))
        assert got[1 + 6] == '{"type":"key","seq":106,"key":"5","ms":100}'
        media = [m for m in got if '"audio"' in m]
        assert media[0] == media_text(101, "sid", 1, 160, 8000, bytes([0]) * 320)
        assert media[-1] == media_text(112, "sid", 11, 1760, 8000, bytes(320))

    register(SeamDialect())
    try:
        run(main)
    finally:
        unregister(NAME)
