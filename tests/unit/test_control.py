"""The control listener's HTTP handling, over real loopback sockets."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from bridge.ops.control import ControlListenError, ControlServer, Response


def boom() -> Response:
    raise RuntimeError("handler bug")


async def request(port: int, raw: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    return data


def serve(test: Callable[[ControlServer], Awaitable[None]]) -> None:
    async def main() -> None:
        server = ControlServer("127.0.0.1", 0, {"/ok": lambda: Response(200, b"fine\n"), "/boom": boom})
        await server.start()
        try:
            await test(server)
        finally:
            await server.close()

    asyncio.run(main())


def test_get_head_404_405_and_errors() -> None:
    async def test(server: ControlServer) -> None:
        ok = await request(server.port, b"GET /ok?x=1 HTTP/1.1\r\nHost: x\r\n\r\n")
        assert ok.startswith(b"HTTP/1.1 200 OK\r\n") and ok.endswith(b"\r\n\r\nfine\n")
        assert b"Content-Length: 5\r\n" in ok and b"Connection: close\r\n" in ok
        head = await request(server.port, b"HEAD /ok HTTP/1.1\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") and head.endswith(b"\r\n\r\n")
        missing = await request(server.port, b"GET /nope HTTP/1.1\r\n\r\n")
        assert missing.startswith(b"HTTP/1.1 404") and b"/ok\n" in missing
        post = await request(server.port, b"POST /ok HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
        assert post.startswith(b"HTTP/1.1 405")
        bad = await request(server.port, b"NONSENSE\r\n\r\n")
        assert bad.startswith(b"HTTP/1.1 400")
        huge = await request(server.port, b"GET /ok HTTP/1.1\r\nX: " + b"a" * 20000 + b"\r\n\r\n")
        assert huge.startswith(b"HTTP/1.1 431")
        failed = await request(server.port, b"GET /boom HTTP/1.1\r\n\r\n")
        assert failed.startswith(b"HTTP/1.1 500") and server.errors == 1
        # After all that the listener still serves.
        assert (await request(server.port, b"GET /ok HTTP/1.0\r\n\r\n")).startswith(b"HTTP/1.1 200")

    serve(test)


def test_a_silent_client_does_not_hold_others_up() -> None:
    async def test(server: ControlServer) -> None:
        _, idle = await asyncio.open_connection("127.0.0.1", server.port)  # says nothing
        ok = await request(server.port, b"GET /ok HTTP/1.1\r\n\r\n")
        assert ok.startswith(b"HTTP/1.1 200")
        idle.close()

    serve(test)


def test_a_taken_port_is_a_clear_error() -> None:
    async def main() -> None:
        first = ControlServer("127.0.0.1", 0, {})
        await first.start()
        try:
            with pytest.raises(ControlListenError) as info:
                await ControlServer("127.0.0.1", first.port, {}).start()
            assert info.value.exit_code == 69
            assert f"127.0.0.1:{first.port}" in str(info.value) and "control.listen" in str(info.value)
        finally:
            await first.close()

    asyncio.run(main())
