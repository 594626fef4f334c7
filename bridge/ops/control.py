"""The control listener: a minimal HTTP/1.1 server for GET on the asyncio loop.

Why not aiohttp: the listener answers four GETs from Prometheus, a load balancer's health check
and `sip-ws-bridge status`, on loopback by default. asyncio's streams do that in a page of code
with no new dependency and nothing that could block the loop; a request is read with a size
limit and a timeout, answered, and the connection closed.

Handlers run on the loop and must be quick (they read in-memory state).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from bridge.errors import EXIT_UNAVAILABLE, BridgeError

log = logging.getLogger("bridge.control")

__all__ = ["ControlListenError", "ControlServer", "Response"]

_MAX_HEAD = 8192
_READ_TIMEOUT_S = 5.0
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            408: "Request Timeout", 431: "Request Header Fields Too Large", 500: "Internal Server Error",
            503: "Service Unavailable"}


class ControlListenError(BridgeError):
    """The control listener cannot listen on its address (in use, not local, not permitted)."""

    exit_code = EXIT_UNAVAILABLE


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"


Handler = Callable[[], Response]


class ControlServer:
    def __init__(self, host: str, port: int, routes: Mapping[str, Handler]) -> None:
        self.host = host
        self.port = port
        self.routes = dict(routes)
        self._server: asyncio.Server | None = None
        self.requests = 0
        self.errors = 0

    async def start(self) -> None:
        try:
            self._server = await asyncio.start_server(self._serve, self.host, self.port, reuse_address=True,
                                                      limit=_MAX_HEAD)
        except OSError as exc:
            raise ControlListenError(
                f"the control listener cannot listen on {self.host}:{self.port}: {exc.strerror or exc} "
                "(is another instance using it? set control.listen to a free port, or null to turn it off)"
            ) from None
        sockets = self._server.sockets
        if sockets and self.port == 0:
            self.port = int(sockets[0].getsockname()[1])
        log.info("control listener on http://%s:%d (%s)", self.host, self.port,
                 ", ".join(sorted(self.routes)))

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            response, head_only = await self._handle(reader)
            self.requests += 1
            reason = _REASONS.get(response.status, "")
            head = (f"HTTP/1.1 {response.status} {reason}\r\nContent-Type: {response.content_type}\r\n"
                    f"Content-Length: {len(response.body)}\r\nCache-Control: no-store\r\n"
                    "Connection: close\r\n\r\n").encode()
            writer.write(head if head_only else head + response.body)
            await asyncio.wait_for(writer.drain(), _READ_TIMEOUT_S)
        except (ConnectionError, TimeoutError):
            pass  # the client went away: nothing to answer
        finally:
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader) -> tuple[Response, bool]:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), _READ_TIMEOUT_S)
        except asyncio.LimitOverrunError:
            return Response(431, b"request head too large\n"), False
        except asyncio.IncompleteReadError:
            return Response(400, b"incomplete request\n"), False
        except TimeoutError:
            return Response(408, b"request timeout\n"), False
        if len(head) > _MAX_HEAD:
            return Response(431, b"request head too large\n"), False
        parts = head.split(b"\r\n", 1)[0].decode("latin-1").split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            return Response(400, b"bad request line\n"), False
        method, target = parts[0], parts[1]
        if method not in ("GET", "HEAD"):
            return Response(405, b"only GET and HEAD\n"), False
        handler = self.routes.get(target.split("?", 1)[0])
        if handler is None:
            listing = "".join(f"{path}\n" for path in sorted(self.routes))
            return Response(404, f"not found; try:\n{listing}".encode()), method == "HEAD"
        try:
            return handler(), method == "HEAD"
        except Exception:  # a bug in a handler: answered 500, counted and logged; the bridge goes on
            self.errors += 1
            log.exception("control handler for %s failed", target)
            return Response(500, b"internal error (logged)\n"), False
