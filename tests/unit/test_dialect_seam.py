"""The bot dialect seam: a second dialect (tests/dialectlib.py, another JSON shape, mu-law audio)
registered from here runs through the same native sender and call-side writer as AgentStream.

The native sender knows no dialect: it renders the dialect's templates (bridge/bot/template.py,
native/media_template.hpp). These tests drive it with the test dialect over a real socket pair and
hold its bytes to the dialect's own Python encoding, then carry on in Python from its counters.
"""

from __future__ import annotations

import json
import socket
import struct
import time
from binascii import a2b_base64
from collections.abc import Iterator
from typing import Any

import pjsua2 as pj
import pytest

from bridge.audio.g711 import ulaw_encode
from bridge.audio.pipe_channel import PipeChannel
from bridge.bot.agentstream.codec import MediaEncoder
from bridge.bot.dialect import DEFAULT_DIALECT, dialect_names, get_dialect, register, unregister
from bridge.bot.events import BotHangup, BotMark, StartInfo
from bridge.bot.template import MARK, Slot, check, literal, render, slot
from bridge.call.native_send import hand_off
from bridge.ws.fastpath import MESSAGE, FrameSplitter
from tests.dialectlib import NAME, SeamDialect, SeamSession, media_text

FRAME = 320
SID = "seam-\u00e9\"1"


@pytest.fixture
def dialect() -> Iterator[SeamDialect]:
    registered = SeamDialect()
    register(registered)
    yield registered
    unregister(NAME)


def started(chunk_ms: int = 100) -> SeamSession:
    session = get_dialect(NAME).session(StartInfo(SID, "call", "acct", "a", "b"), chunk_ms=chunk_ms)
    assert isinstance(session, SeamSession)
    session.connected()
    session.start()
    return session


class Bot:
    """The far end of a socket pair, reading masked client frames as a bot would."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        sock.setblocking(False)
        self.splitter = FrameSplitter(None, masked=True)

    def read(self, want: int, timeout: float = 5.0) -> list[str]:
        out: list[str] = []
        deadline = time.monotonic() + timeout
        while len(out) < want:
            assert time.monotonic() < deadline, f"got {len(out)} of {want} messages"
            try:
                data = self.sock.recv(1 << 20)
            except BlockingIOError:
                time.sleep(0.002)
                continue
            for kind, payload in self.splitter.feed(data):
                assert kind == MESSAGE
                out.append(payload)
        return out


class FakeLink:
    """What native_send.hand_off needs of a BotLink: a plain socket to hand over."""

    backlog_limit = 1 << 20

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.writer: Any = None

    def plain_socket_fd(self) -> int:
        return self.fd

    def hand_writes_to(self, writer: Any) -> None:
        self.writer = writer


@pytest.fixture
def wire() -> Iterator[tuple[PipeChannel, socket.socket, Bot]]:
    sender = pj.MediaSender()
    pipe = pj.MediaPipe(1, pj.MediaWakeup(), FRAME, 64, 5, 0, FRAME * 100, 10)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    channel = PipeChannel(pipe, FRAME, sender)
    yield channel, ours, Bot(theirs)
    channel.stop_sending()
    ours.close()
    theirs.close()
    del sender


def pcm(seed: int, frames: int) -> bytes:
    rng = __import__("random").Random(seed)
    return bytes(rng.getrandbits(8) for _ in range(FRAME * frames))


# -- the registry ---------------------------------------------------------------------------------


def test_agentstream_is_the_default_and_a_dialect_registers_by_name(dialect: SeamDialect) -> None:
    assert DEFAULT_DIALECT == "agentstream" and get_dialect(DEFAULT_DIALECT).name == "agentstream"
    assert get_dialect(NAME) is dialect and NAME in dialect_names()
    with pytest.raises(ValueError, match="registered already"):
        register(SeamDialect())
    unregister(NAME)
    with pytest.raises(ValueError, match="known: agentstream"):
        get_dialect(NAME)
    register(dialect)


# -- the native sender, with the test dialect -----------------------------------------------------


def test_the_native_sender_writes_the_test_dialects_media_events_and_hands_back(
    dialect: SeamDialect, wire: tuple[PipeChannel, socket.socket, Bot]
) -> None:
    channel, ours, bot = wire
    session = started()
    first = session.media(pcm(0, 5))  # one chunk from Python before the hand-off
    assert first == media_text(101, SID, 1, 800, 8000, pcm(0, 5))
    link = FakeLink(ours.fileno())
    assert hand_off(channel, session, link, 8000)  # type: ignore[arg-type]
    assert session.handed_off
    audio = pcm(1, 10)
    for i in range(10):
        channel.pipe.pushFrame(audio[i * FRAME : (i + 1) * FRAME])
    got = bot.read(2)
    # Byte for byte what the dialect's Python encoder makes, numbered on from the session.
    assert got == [media_text(102, SID, 2, 1600, 8000, audio[: 5 * FRAME]),
                   media_text(103, SID, 3, 2400, 8000, audio[5 * FRAME :])]
    # An event while handed off is a template with the slot for its number: the pipe numbers it.
    event = session.dtmf("7", 120)
    assert event == '{"type":"key","seq":' + slot(Slot.SEQ) + ',"key":"7","ms":120}'
    assert link.writer.write_text(event)
    session.receive('{"type":"checkpoint","name":"a\\u0000b\\"c"}')
    mark = session.mark('a\x00b"c')
    assert mark is not None and link.writer.write_text(mark)
    assert bot.read(2) == ['{"type":"key","seq":104,"key":"7","ms":120}',
                           '{"type":"played","seq":105,"name":"a\\u0000b\\"c"}']
    # Taken back: Python carries on from the pipe's counters.
    assert link.writer.release() == b""
    assert not session.handed_off
    after = session.media(pcm(3, 5))
    assert after == media_text(106, SID, 4, 3200, 8000, pcm(3, 5))
    assert session.stop("callended") == '{"type":"end","seq":107,"why":"callended"}'


def test_mu_law_of_every_sample_value_is_bit_exact(dialect: SeamDialect) -> None:
    """All 65536 PCM16 values in one chunk: the C++ encoder is audioop's (bridge/audio/g711.py)."""
    frame = 65536 * 2
    sender = pj.MediaSender()
    pipe = pj.MediaPipe(1, pj.MediaWakeup(), frame, 4, 1, 0, frame, 10)
    channel = PipeChannel(pipe, frame, sender)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        session = started()
        template = session.sender_template().encode()
        assert channel.start_sending(ours.fileno(), template, 5, 0, 0, 8000, 1 << 24)
        every = struct.pack("<65536h", *range(-32768, 32768))
        pipe.pushFrame(every)
        (message,) = Bot(theirs).read(1)
        assert a2b_base64(json.loads(message)["ulaw"]) == ulaw_encode(every)
        assert message == media_text(5, SID, 1, 65536, 8000, every)
    finally:
        channel.stop_sending()
        ours.close()
        theirs.close()


def test_the_sender_refuses_templates_that_are_not_what_it_renders(
    wire: tuple[PipeChannel, socket.socket, Bot]
) -> None:
    channel, ours, _ = wire
    no_payload = ("x" + slot(Slot.SEQ)).encode()
    two_payloads = (slot(Slot.ULAW_BASE64) + slot(Slot.PCM16_BASE64)).encode()
    for bad in (no_payload, two_payloads, b"x\0q", b"x\0"):
        with pytest.raises(ValueError):
            channel.start_sending(ours.fileno(), bad, 1, 0, 0, 8000, 1 << 20)
    assert not channel.sending
    assert channel.start_sending(ours.fileno(), MediaEncoder("s").template().encode(), 1, 0, 0, 8000, 1 << 20)
    with pytest.raises(ValueError):
        channel.send_event(slot(Slot.PCM16_BASE64).encode())  # an event carries no audio


# -- the Python side of the templates ------------------------------------------------------------


def test_render_is_what_the_native_sender_writes(wire: tuple[PipeChannel, socket.socket, Bot]) -> None:
    """template.render, the executable specification, against the C++ for every slot and a NUL."""
    channel, ours, bot = wire
    template = (literal("a\x00") + slot(Slot.SEQ) + "," + slot(Slot.CHUNK) + "," + slot(Slot.TIMESTAMP_MS)
                + "," + slot(Slot.SAMPLES) + "," + slot(Slot.PCM16_BASE64) + literal("\x00z"))
    check(template, media=True)
    assert channel.start_sending(ours.fileno(), template.encode(), 9, 2, 1000, 16000, 1 << 20)
    audio = pcm(4, 5)
    for i in range(5):
        channel.pipe.pushFrame(audio[i * FRAME : (i + 1) * FRAME])
    (got,) = bot.read(1)
    assert got == render(template, seq=9, chunk=3, samples=1800, rate=16000, pcm=audio)
    assert got.startswith("a\x009,3,112,1800,") and got.endswith("\x00z")


def test_agentstreams_template_renders_its_encoders_bytes() -> None:
    encoder = MediaEncoder(SID)
    audio = pcm(5, 3)
    assert render(encoder.template(), seq=4, chunk=2, samples=1200, rate=8000, pcm=audio) == encoder(
        4, 2, 150, audio)
    check(encoder.template(), media=True)


def test_literal_and_check() -> None:
    assert literal("plain") == "plain"
    assert literal("a\x00b") == "a" + MARK + "0b"
    assert render(literal("a\x00b"), seq=1) == "a\x00b"
    with pytest.raises(ValueError):
        check("x" + slot(Slot.PCM16_BASE64), media=False)
    with pytest.raises(ValueError):
        check("x" + MARK + "q", media=True)


def test_the_test_dialect_decodes_to_neutral_events(dialect: SeamDialect) -> None:
    session = started()
    assert session.receive('{"type":"checkpoint","name":"m"}') == BotMark("m")
    assert session.receive('{"type":"bye","why":"done"}') == BotHangup("done")
