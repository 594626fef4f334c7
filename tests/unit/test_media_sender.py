"""pjsua2.MediaSender and the pipe's sender side: caller audio written to the bot's socket by a
native thread (native/media_pipe_send.hpp).

Every test uses a real sender thread and a real socket pair; the far end reads what a bot would
and cuts it into frames with the bridge's own FrameSplitter (masked, as a server reads them). The
`media` messages must be byte for byte what the Python encoder makes, numbered in wire order with
the events queued through the pipe, and a bot that stops reading must cost media, never events.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from typing import Any

import pjsua2 as pj
import pytest

from bridge.audio.pipe_channel import PipeChannel
from bridge.bot.agentstream.codec import MediaEncoder, number_slot
from bridge.ws.fastpath import MESSAGE, FrameSplitter

FRAME = 320
SID = "stream-\u00e9\"1"  # escaped by json.dumps: the template carries it as the encoder does


def chunk_pcm(seed: int, frames: int) -> list[bytes]:
    rng = __import__("random").Random(seed)
    return [bytes(rng.getrandbits(8) for _ in range(FRAME)) for _ in range(frames)]


class Rig:
    """A pipe attached to one end of a socket pair; the test reads the other end as the bot."""

    def __init__(self, *, chunk: int = 1, backlog: int = 1 << 20, seq: int = 2, chunks: int = 0,
                 samples: int = 0, rate: int = 8000, sndbuf: int | None = None) -> None:
        self.wakeup = pj.MediaWakeup()
        self.sender = pj.MediaSender()
        self.pipe = pj.MediaPipe(1, self.wakeup, FRAME, 64, chunk, 0, FRAME * 100, 10)
        self.channel = PipeChannel(self.pipe, FRAME, self.sender)
        self.ours, self.bot = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        if sndbuf is not None:
            self.ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
            self.bot.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, sndbuf)
        self.bot.setblocking(False)
        self.splitter = FrameSplitter(None, masked=True)
        self.raw = bytearray()
        self.encoder = MediaEncoder(SID)
        template = self.encoder.template().encode()
        assert self.channel.start_sending(self.ours.fileno(), template, seq, chunks, samples, rate, backlog)

    def read(self, want: int, timeout: float = 5.0) -> list[str]:
        """The next `want` messages the bot receives."""
        out: list[str] = []
        deadline = time.monotonic() + timeout
        while len(out) < want:
            assert time.monotonic() < deadline, f"got {len(out)} of {want} messages"
            try:
                data = self.bot.recv(1 << 20)
            except BlockingIOError:
                time.sleep(0.002)
                continue
            self.raw += data
            for kind, payload in self.splitter.feed(data):
                assert kind == MESSAGE
                out.append(payload)
        return out

    def close(self) -> None:
        self.channel.stop_sending()
        self.ours.close()
        self.bot.close()


@pytest.fixture
def rig() -> Any:
    made: list[Rig] = []

    def make(**kwargs: Any) -> Rig:
        made.append(Rig(**kwargs))
        return made[-1]

    yield make
    for r in made:
        r.close()


def test_media_messages_are_byte_for_byte_the_python_encoders(rig: Any) -> None:
    r = rig(chunk=5, seq=7, chunks=3, samples=2400)
    frames = chunk_pcm(1, 10)
    for f in frames:
        r.pipe.pushFrame(f)  # the clock thread's own code; the sender thread does the rest
    got = r.read(2)
    want = [r.encoder(7, 4, (2400 + 800) * 1000 // 8000, b"".join(frames[:5])),
            r.encoder(8, 5, (2400 + 1600) * 1000 // 8000, b"".join(frames[5:]))]
    assert got == want
    # Masked client frames, each with its own key.
    first_key = bytes(r.raw[4:8])  # 0x81, 0xFE, 16-bit length, then the key
    assert r.raw[0] == 0x81 and r.raw[1] == 0x80 | 126
    assert first_key != bytes(r.raw[4 + 4 + len(want[0]) + 4 : 4 + 4 + len(want[0]) + 8])


@pytest.mark.parametrize("frames", [1, 2, 3, 4])
def test_base64_of_every_tail_length(rig: Any, frames: int) -> None:
    # 320-byte frames leave a remainder of 2 bytes mod 3; 1..4 frames cover both padding cases.
    r = rig(chunk=frames, rate=16000)
    pcm = chunk_pcm(frames, frames)
    for f in pcm:
        r.pipe.pushFrame(f)
    (got,) = r.read(1)
    assert got == r.encoder(2, 1, frames * 160 * 1000 // 16000, b"".join(pcm))
    assert json.loads(got)["media"]["payload"]


def test_events_are_numbered_in_wire_order_with_the_media(rig: Any) -> None:
    r = rig(seq=5)
    r.pipe.pushFrame(chunk_pcm(2, 1)[0])
    (first,) = r.read(1)
    event = '{"event":"dtmf","sequence_number":"0","stream_sid":"s","dtmf":{"digit":"5","duration":"100"}}'
    assert r.channel.send_event(number_slot(event).encode()) == 6
    r.pipe.pushFrame(chunk_pcm(3, 1)[0])
    got = r.read(2)
    assert got[0] == event.replace('"sequence_number":"0"', '"sequence_number":"6"')
    assert json.loads(got[1])["sequence_number"] == "7"
    status = r.channel.send_status()
    assert status.messages == 3 and status.error == 0 and status.backlog_bytes == 0
    assert status.text_bytes == sum(len(m.encode()) for m in (first, *got))


def test_detach_hands_back_the_counters_and_the_unwritten_bytes(rig: Any) -> None:
    r = rig(seq=10, chunks=2, samples=320, sndbuf=4096)
    for f in chunk_pcm(4, 40):
        r.pipe.pushFrame(f)
        r.channel.send_due()  # on this thread: no race with the detach below
    assert r.channel.send_status().backlog_bytes > 0  # the bot has not read: the socket is full
    rest, seq, chunks, samples = r.channel.stop_sending()
    assert (seq, chunks, samples) == (50, 42, 320 + 40 * 160)
    assert rest
    # What the socket took plus what came back is every message, whole and in order.
    r.bot.setblocking(True)
    r.bot.settimeout(1)
    got = []
    while True:
        try:
            data = r.bot.recv(1 << 20)
        except TimeoutError:
            break
        got += r.splitter.feed(data)
        if sum(1 for _ in got) >= 40:
            break
    got += r.splitter.feed(rest)
    numbers = [int(json.loads(p)["sequence_number"]) for _, p in got]
    assert numbers == list(range(10, 50))
    # Detached: nothing more is sent or queued.
    r.pipe.pushFrame(chunk_pcm(5, 1)[0])
    assert r.channel.send_event(b'{"event":"x","sequence_number":"\0s"}') == 0
    assert not r.channel.send_raw(b"\x89\x80abcd")


def test_a_bot_that_stops_reading_loses_media_not_events(rig: Any) -> None:
    r = rig(backlog=8000, sndbuf=4096)
    for f in chunk_pcm(6, 200):
        r.pipe.pushFrame(f)
    deadline = time.monotonic() + 5
    while r.channel.send_status().media_dropped == 0:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    status = r.channel.send_status()
    assert status.stalled_since > 0 and status.backlog_bytes > 8000 - 1000
    mark = number_slot('{"event":"mark","sequence_number":"0","mark":{"name":"m"}}')
    seq = r.channel.send_event(mark.encode())  # over the backlog limit, and still queued
    assert seq > 0
    time.sleep(0.05)
    # The bot reads again: the sender thread writes the rest as the socket drains (poll).
    messages = r.read(seq - 1)
    numbers = [int(json.loads(m)["sequence_number"]) for m in messages]
    assert numbers == list(range(2, seq + 1))  # no gap: dropped media were never numbered
    assert json.loads(messages[-1])["event"] == "mark"
    # Every chunk is on the wire, or counted: dropped by the sender, or overrun in the ring (the
    # test pushes faster than a clock would).
    dropped = r.channel.send_status().media_dropped
    assert (seq - 2) + dropped + r.pipe.rxOverruns() == 200
    r.pipe.pushFrame(chunk_pcm(7, 1)[0])
    r.read(1)
    assert r.channel.send_status().stalled_since == 0.0  # reading again: not stalled


def test_a_broken_socket_is_reported_and_wakes_the_loop(rig: Any) -> None:
    r = rig()
    r.bot.close()
    r.wakeup.take()
    r.pipe.pushFrame(chunk_pcm(8, 1)[0])
    deadline = time.monotonic() + 5
    while not r.channel.send_status().error:
        assert time.monotonic() < deadline
        time.sleep(0.005)
    assert r.channel.send_status().error in (errno.EPIPE, errno.ECONNRESET)
    assert list(r.wakeup.take()) == [1]
    r.bot = socket.socket()  # for close()


def test_latencies_are_measured_and_wake_the_loop_every_32_chunks(rig: Any) -> None:
    r = rig()
    for f in chunk_pcm(9, 31):
        r.pipe.pushFrame(f)
    r.read(31)
    assert list(r.wakeup.take()) == []  # 31 chunks: not yet worth a wake-up
    r.pipe.pushFrame(chunk_pcm(10, 1)[0])
    r.read(1)
    deadline = time.monotonic() + 5
    while not list(r.wakeup.take()):
        assert time.monotonic() < deadline
        time.sleep(0.005)
    latencies = r.channel.send_latencies()
    assert len(latencies) == 32 and all(0 <= ms < 1000 for ms in latencies)
    assert r.channel.send_latencies() == []


def test_pings_queue_behind_the_media_not_inside_a_frame(rig: Any) -> None:
    r = rig(sndbuf=4096)
    for f in chunk_pcm(11, 30):
        r.pipe.pushFrame(f)
        r.channel.send_due()
    assert r.channel.send_status().backlog_bytes > 0  # a frame is half written
    key = b"\x01\x02\x03\x04"
    ping = b"\x89\x84" + key + bytes(a ^ b for a, b in zip(b"ping", key, strict=True))
    assert r.channel.send_raw(ping)
    kinds = []
    splitter = FrameSplitter(None, masked=True)
    r.bot.setblocking(True)
    r.bot.settimeout(2)
    while len(kinds) < 31:
        for kind, payload in splitter.feed(r.bot.recv(1 << 16)):
            kinds.append((kind, payload[:1] if kind != MESSAGE else "m"))
    assert kinds[:30] == [(MESSAGE, "m")] * 30 and kinds[30][0] != MESSAGE  # the ping, whole, last


def test_no_sender_means_no_hand_off() -> None:
    pipe = pj.MediaPipe(1, pj.MediaWakeup(), FRAME, 8, 1, 0, FRAME * 10, 10)
    channel = PipeChannel(pipe, FRAME)
    a, b = socket.socketpair()
    try:
        template = MediaEncoder("s").template().encode()
        assert not channel.start_sending(a.fileno(), template, 2, 0, 0, 8000, 1000)
        assert not channel.sending
        assert channel.stop_sending() == (b"", 0, 0, 0)
    finally:
        a.close()
        b.close()


def test_a_bad_descriptor_is_refused() -> None:
    sender = pj.MediaSender()
    pipe = pj.MediaPipe(1, pj.MediaWakeup(), FRAME, 8, 1, 0, FRAME * 10, 10)
    channel = PipeChannel(pipe, FRAME, sender)
    fd = os.open("/dev/null", os.O_RDONLY)
    os.close(fd)
    assert not channel.start_sending(fd, MediaEncoder("s").template().encode(), 2, 0, 0, 8000, 1000)
    assert not channel.sending


LIFETIME = {
    # The pipe goes first while the sender thread is busy with it.
    "pipe_first": """
        for i in range(50):
            pipe = pj.MediaPipe(i, wakeup, 320, 64, 1, 0, 32000, 10)
            a, b = socket.socketpair()
            pipe.senderAttach(sender, a.fileno(), TEMPLATE, 2, 0, 0, 8000, 1 << 20)
            for _ in range(20):
                pipe.pushFrame(bytes(320))
            del pipe
            a.close(); b.close()
        del sender
    """,
    # The sender goes first: its thread stops; the pipes still attached outlive it.
    "sender_first": """
        pipes = []
        for i in range(20):
            pipe = pj.MediaPipe(i, wakeup, 320, 64, 1, 0, 32000, 10)
            a, b = socket.socketpair()
            pipe.senderAttach(sender, a.fileno(), TEMPLATE, 2, 0, 0, 8000, 1 << 20)
            pipes.append((pipe, a, b))
        del sender
        for pipe, a, b in pipes:
            pipe.pushFrame(bytes(320))
            pipe.senderWriteRaw(b"x")
        del pipes
    """,
    # Left to interpreter exit, attached and with bytes waiting.
    "exit": """
        pipe = pj.MediaPipe(1, wakeup, 320, 64, 1, 0, 32000, 10)
        a, b = socket.socketpair()
        a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        pipe.senderAttach(sender, a.fileno(), TEMPLATE, 2, 0, 0, 8000, 1 << 20)
        for _ in range(100):
            pipe.pushFrame(bytes(320))
    """,
}


@pytest.mark.parametrize("name", sorted(LIFETIME))
def test_lifetime_does_not_crash_or_hang(name: str) -> None:
    code = ("import socket\nimport pjsua2 as pj\nwakeup = pj.MediaWakeup()\nsender = pj.MediaSender()\n"
            f"TEMPLATE = {MediaEncoder('s').template().encode()!r}\n")
    code += textwrap.dedent(LIFETIME[name]) + "\nprint('ok')\n"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "ok"
