"""A fast receive path for the bot's socket: whole data frames go straight to the call.

With websockets alone, every bot message goes through its sans-I/O parser (a generator per
frame), its message assembler and a task switch into the call's `async for` loop; at hundreds of
calls that was most of the event loop's time. Here `FrameSplitter` (pure, no I/O) cuts the byte
stream into frames itself, and `BotConnection` hands each complete, unfragmented, unmasked text or
binary frame to the call's handler synchronously, inside `data_received`.

websockets keeps everything else, and its own state stays exact because it only ever sees whole
frames at frame boundaries: control frames (ping, pong, close) are passed to it as they come, in
order. The first frame the fast path does not take (a fragment, a reserved bit, a masked or
oversized frame, invalid UTF-8, a close) ends the fast path for good: it and all later bytes go to
websockets, which answers them as before (1002, 1007, 1009, the close handshake), and messages it
assembles reach the call through the usual `async for` after everything delivered earlier.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.connection import Connection
from websockets.asyncio.server import ServerConnection
from websockets.frames import DATA_OPCODES, Frame
from websockets.protocol import CLIENT, State

from bridge.ws.frames import apply_mask

__all__ = ["BotConnection", "FastServerConnection", "FrameSplitter", "SocketWriter"]

_OP_TEXT = 1
_OP_BINARY = 2
_OP_CLOSE = 8
_OP_PING = 9
_OP_PONG = 10

# What FrameSplitter.feed() yields: a message for the call, or bytes for websockets.
MESSAGE = 0  # payload: str (text frame) or bytes (binary frame)
FORWARD = 1  # payload: one whole control frame, in order
REST = 2  # payload: everything from here on (the fast path has ended)


class FrameSplitter:
    """Cuts a WebSocket byte stream into frames (RFC 6455 section 5.2): a server's frames as a
    client reads them (never masked), or with `masked`, a client's as a server reads them (always
    masked; payloads come out unmasked)."""

    __slots__ = ("_buf", "_mask_bit", "_max_size", "ended")

    def __init__(self, max_size: int | None, *, masked: bool = False) -> None:
        self._buf = bytearray()
        self._max_size = max_size
        self._mask_bit = 0x80 if masked else 0
        self.ended = False

    def feed(self, data: bytes) -> list[tuple[int, Any]]:
        if self.ended:
            return [(REST, data)]
        buf = self._buf
        buf += data
        out: list[tuple[int, Any]] = []
        pos = 0
        size = len(buf)
        end_fast = False
        max_size = self._max_size
        mask_bit = self._mask_bit
        while size - pos >= 2:
            b0 = buf[pos]
            b1 = buf[pos + 1]
            if b0 & 0x70 or b1 & 0x80 != mask_bit:  # reserved bits, or masking the wrong way round
                end_fast = True
                break
            final = b0 & 0x80
            opcode = b0 & 0x0F
            length = b1 & 0x7F
            head = 2
            if length == 126:
                if size - pos < 4:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 4], "big")
                head = 4
            elif length == 127:
                if size - pos < 10:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                head = 10
            if mask_bit:
                head += 4  # the masking key
            if opcode == _OP_TEXT or opcode == _OP_BINARY:
                if not final or (max_size is not None and length > max_size):
                    end_fast = True  # a fragmented message, or one over the limit (1009)
                    break
                end = pos + head + length
                if end > size:
                    break
                payload = bytes(buf[pos + head : end])
                if mask_bit:
                    payload = apply_mask(payload, bytes(buf[pos + head - 4 : pos + head]))
                if opcode == _OP_TEXT:
                    try:
                        message: str | bytes = payload.decode()
                    except UnicodeDecodeError:
                        end_fast = True  # websockets fails the connection with 1007
                        break
                else:
                    message = payload
                out.append((MESSAGE, message))
                pos = end
            elif opcode == _OP_CLOSE or opcode == _OP_PING or opcode == _OP_PONG:
                if not final or length > 125:
                    end_fast = True  # an invalid control frame: websockets fails it (1002)
                    break
                end = pos + head + length
                if end > size:
                    break
                out.append((FORWARD, bytes(buf[pos:end])))
                pos = end
                if opcode == _OP_CLOSE:
                    end_fast = True  # what follows a close is websockets' business
                    break
            else:  # a continuation without a start, or a reserved opcode (websockets fails it)
                end_fast = True
                break
        if end_fast:
            self.ended = True
            rest = bytes(buf[pos:])
            buf.clear()
            if rest:
                out.append((REST, rest))
        else:
            del buf[:pos]
        return out

    def take_rest(self) -> bytes:
        """End the fast path: the bytes of an incomplete frame it was holding, for websockets."""
        self.ended = True
        rest = bytes(self._buf)
        self._buf.clear()
        return rest


class SocketWriter(Protocol):
    """Something else writing to the connection's socket (the native sender): while it is
    attached, every frame goes through it so that frames are never interleaved."""

    def write_text(self, text: str) -> bool: ...
    def write_frame(self, frame: bytes) -> bool: ...
    def sent(self) -> tuple[int, int]: ...  # (messages, text bytes) it wrote
    def release(self) -> bytes: ...  # detach; returns the bytes it had not written yet


class _FastPath(Connection):
    """The fast path in front of a websockets connection's parser (mixed into its class)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._splitter: FrameSplitter | None = None
        self._handler: Callable[[str | bytes], None] | None = None
        self._early: deque[str | bytes] = deque()  # fast messages before the call took over
        self._fast = True
        self._response = b""  # the handshake response read so far
        self.writer: SocketWriter | None = None

    def set_message_handler(self, handler: Callable[[str | bytes], None]) -> None:
        """From now on, messages taken by the fast path go to `handler` (those that came before,
        first). Call it before reading the connection's messages with `async for`."""
        early = self._early
        while early:
            handler(early.popleft())
        self._handler = handler

    @property
    def has_message_handler(self) -> bool:
        return self._handler is not None

    def end_fast_path(self) -> list[str | bytes]:
        """Leave every later message to websockets; returns the fast messages not yet handled."""
        self._fast = False
        held = self._release_held()
        if held:
            super().data_received(held)
        early = list(self._early)
        self._early.clear()
        return early

    @property
    def fast_path(self) -> bool:
        """Whether bot messages still bypass websockets' parser (for tests and metrics)."""
        return self._fast

    def data_received(self, data: bytes) -> None:
        if self._fast and self.protocol.state is State.CONNECTING:
            self._handshake_read(data)
            return
        if not self._fast or self.protocol.state is not State.OPEN:
            super().data_received(self._release_held() + data)
            return
        splitter = self._splitter
        if splitter is None:
            splitter = self._splitter = FrameSplitter(
                self.protocol.max_message_size, masked=self.protocol.side is not CLIENT)
        for kind, payload in splitter.feed(data):
            if kind == MESSAGE:
                handler = self._handler
                if handler is None:
                    self._early.append(payload)
                else:
                    handler(payload)
            else:
                super().data_received(payload)
        if splitter.ended:
            self._fast = False

    def attach_writer(self, writer: SocketWriter) -> None:
        """From now on frames for the socket go through `writer` (see SocketWriter)."""
        self.writer = writer

    def release_writer(self) -> None:
        """Write to the socket ourselves again; what the writer had queued goes first."""
        writer = self.writer
        if writer is None:
            return
        self.writer = None
        rest = writer.release()
        if rest and self.transport is not None and not self.transport.is_closing():
            self.transport.write(rest)

    def send_data(self) -> None:
        writer = self.writer
        if writer is not None:
            if self.protocol.state is State.OPEN:
                # Pings and pongs, queued behind whatever the writer holds.
                for data in self.protocol.data_to_send():
                    if data:
                        writer.write_frame(data)
                return
            # Closing: the close frame, and the end of the stream after it, are websockets'.
            self.release_writer()
        super().send_data()

    def connection_lost(self, exc: Exception | None) -> None:
        self.release_writer()
        super().connection_lost(exc)
        # The handler is usually a bound method of the connection's owner, which holds the
        # connection: dropped here, the pair is freed by reference counting when the owner lets
        # go, not left for a full garbage collection (a call's buffers with it: ~57 KB a call).
        self._handler = None
        self._early.clear()

    def _release_held(self) -> bytes:
        """The start of a frame the splitter was holding (b"" if none), now websockets' to parse."""
        return self._splitter.take_rest() if self._splitter is not None else b""

    def _handshake_read(self, data: bytes) -> None:
        """Until the 101 response is complete, websockets reads. If the bot's first frames came
        in the same read, its parser may be holding part of one: the fast path cannot start in
        the middle of a frame, so it does not start at all (everything stays with websockets)."""
        self._response += data
        super().data_received(data)
        if self.protocol.state is State.OPEN:
            end = self._response.find(b"\r\n\r\n")
            if end < 0 or len(self._response) > end + 4:
                self._fast = False
            self._response = b""

    def process_event(self, event: Any) -> None:
        if isinstance(event, Frame) and event.opcode in DATA_OPCODES:
            # A message websockets assembles itself: later ones must not overtake it.
            self._fast = False
        super().process_event(event)


class BotConnection(_FastPath, ClientConnection):
    """websockets' client connection with the fast path in front of its parser."""


class FastServerConnection(_FastPath, ServerConnection):
    """The same for a server (the benchmark's load bot reads hundreds of streams)."""
