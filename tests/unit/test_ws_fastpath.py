"""FrameSplitter: the bot socket's fast path cuts exactly the frames websockets itself serializes.

Whole unfragmented unmasked text and binary frames come out as MESSAGE items, control frames as
FORWARD items with their exact bytes, in stream order, whatever the read boundaries. The first
frame the fast path does not take ends it: that frame and everything after it come out as REST,
byte for byte, so websockets can parse them from a frame boundary.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from websockets.frames import Close, CloseCode, Frame, Opcode

from bridge.ws.fastpath import FORWARD, MESSAGE, REST, FrameSplitter

Item = tuple[int, Any]


def server_frame(opcode: Opcode, data: bytes, *, fin: bool = True) -> bytes:
    """A frame exactly as a websockets server writes it (unmasked)."""
    return Frame(opcode, data, fin=fin).serialize(mask=False)


def encode(message: str | bytes) -> bytes:
    if isinstance(message, str):
        return server_frame(Opcode.TEXT, message.encode())
    return server_frame(Opcode.BINARY, message)


def feed_in_chunks(splitter: FrameSplitter, stream: bytes, sizes: Sequence[int]) -> list[Item]:
    """Feed `stream` cut into pieces of the given sizes (cycled); all items, in order."""
    out: list[Item] = []
    pos = 0
    i = 0
    while pos < len(stream):
        size = sizes[i % len(sizes)]
        out += splitter.feed(stream[pos : pos + size])
        pos += size
        i += 1
    return out


def rest_bytes(items: Iterable[Item]) -> bytes:
    return b"".join(payload for kind, payload in items if kind == REST)


# --- what the fast path takes -------------------------------------------------------------------

# One step of a server's stream: a message (str or bytes) or a control frame (opcode, payload).
Step = str | bytes | tuple[Opcode, bytes]

LONG = 70000  # a 64-bit length field
MEDIUM = 126  # the smallest 16-bit length field


def sized_text(size: int) -> str:
    """Exactly `size` UTF-8 bytes, mostly non-BMP (4 bytes each) with a 2-byte and 1-byte tail."""
    quads, tail = divmod(size, 4)
    return "\U0001f600" * quads + {0: "", 1: "a", 2: "é", 3: "é!"}[tail]


steps: st.SearchStrategy[Step] = st.one_of(
    st.text(max_size=40),  # any unicode but surrogates, non-BMP included
    st.binary(max_size=40),
    st.sampled_from([MEDIUM, 1000, 65535, 65536, LONG]).map(sized_text),
    st.sampled_from([MEDIUM, 65535, 65536, LONG]).map(lambda n: bytes(i % 256 for i in range(n))),
    st.tuples(st.sampled_from([Opcode.PING, Opcode.PONG]), st.binary(max_size=125)),
)


def expected_items(stream_steps: Sequence[Step]) -> tuple[bytes, list[Item]]:
    wire = b""
    items: list[Item] = []
    for step in stream_steps:
        if isinstance(step, tuple):
            frame = server_frame(step[0], step[1])
            items.append((FORWARD, frame))
        else:
            frame = encode(step)
            items.append((MESSAGE, step))
        wire += frame
    return wire, items


@settings(max_examples=300, deadline=None)
@given(
    stream_steps=st.lists(steps, max_size=12),
    sizes=st.lists(st.integers(min_value=1, max_value=3000), min_size=1, max_size=8),
)
@example(stream_steps=["a" * MEDIUM, b"\x00" * LONG, (Opcode.PING, b"hi"), "\U00010348"], sizes=[1])
@example(stream_steps=[sized_text(LONG), (Opcode.PONG, b""), b"", ""], sizes=[1, 2, 3])
@example(stream_steps=[b"z" * MEDIUM, sized_text(MEDIUM)], sizes=[100000])
def test_any_stream_in_any_chunks_yields_its_messages_and_control_frames_in_order(
    stream_steps: list[Step], sizes: list[int]
) -> None:
    wire, want = expected_items(stream_steps)
    splitter = FrameSplitter(None)
    got = feed_in_chunks(splitter, wire, sizes)
    assert got == want  # in order, nothing REST
    assert all(type(payload) is type(step) for (_, payload), step in zip(got, stream_steps, strict=True)
               if not isinstance(step, tuple))  # text as str, binary as bytes
    assert not splitter.ended
    assert splitter.take_rest() == b""  # it ended at a frame boundary


@pytest.mark.parametrize(("length", "length_byte"), [(125, 125), (MEDIUM, 126), (65535, 126),
                                                     (65536, 127), (LONG, 127)])
def test_every_length_encoding_byte_by_byte(length: int, length_byte: int) -> None:
    text = sized_text(length)
    for frame, message in ((encode(text), text), (encode(text.encode()), text.encode())):
        assert frame[1] == length_byte
        splitter = FrameSplitter(LONG)  # at the limit is still allowed
        got = feed_in_chunks(splitter, frame, [1])
        assert got == [(MESSAGE, message)] and not splitter.ended


def test_items_come_only_when_the_whole_frame_is_there() -> None:
    frame = encode(b"abcdef" * 50)  # 16-bit length
    splitter = FrameSplitter(None)
    assert splitter.feed(frame[:1]) == []
    assert splitter.feed(frame[1:3]) == []  # the 16-bit length is not complete yet
    assert splitter.feed(frame[3:-1]) == []
    assert splitter.feed(frame[-1:] + frame) == [(MESSAGE, b"abcdef" * 50)] * 2


# --- what ends it ---------------------------------------------------------------------------------

BEFORE: list[Step] = ["one", b"\x00two", (Opcode.PING, b"p"), "\U0001f600"]
AFTER = encode("later") + server_frame(Opcode.PING, b"q") + encode(b"later too")


def with_rsv1(frame: bytes) -> bytes:
    return bytes([frame[0] | 0x40]) + frame[1:]


ENDERS = {
    "non-final text (fragment start)": server_frame(Opcode.TEXT, b"frag", fin=False),
    "non-final binary": server_frame(Opcode.BINARY, b"frag", fin=False),
    "continuation": server_frame(Opcode.CONT, b"cont"),
    "final empty continuation": server_frame(Opcode.CONT, b""),
    "rsv1 text": with_rsv1(encode("compressed?")),
    "rsv2 binary": bytes([0x82 | 0x20, 3]) + b"abc",
    "rsv3 ping": bytes([0x89 | 0x10, 0]),
    "masked text": Frame(Opcode.TEXT, b"masked").serialize(mask=True),
    "masked ping": Frame(Opcode.PING, b"").serialize(mask=True),
    "invalid UTF-8": bytes([0x81, 2]) + b"\xff\xfe",
    "truncated UTF-8": bytes([0x81, 3]) + "\U0001f600".encode()[:3],
    "UTF-8 surrogate": bytes([0x81, 3]) + b"\xed\xa0\x80",
    "reserved opcode 3": bytes([0x83, 1]) + b"A",
    "reserved opcode 7": bytes([0x87, 0]),
    "ping of 126 bytes": bytes([0x89, 126]) + (126).to_bytes(2, "big") + b"p" * 126,
    "pong of 200 bytes, 64-bit length": bytes([0x8A, 127]) + (200).to_bytes(8, "big") + b"p" * 200,
    "non-final ping": bytes([0x09, 1]) + b"p",
    "non-final close": bytes([0x08, 2]) + (1000).to_bytes(2, "big"),
}


@pytest.mark.parametrize("sizes", [[1 << 20], [1], [3, 7, 1]], ids=["whole", "bytewise", "mixed"])
@pytest.mark.parametrize("bad", ENDERS.values(), ids=ENDERS.keys())
def test_the_first_frame_it_does_not_take_ends_it_with_exactly_the_rest(bad: bytes, sizes: list[int]) -> None:
    wire, want = expected_items(BEFORE)
    splitter = FrameSplitter(1000)
    got = feed_in_chunks(splitter, wire + bad + AFTER, sizes)
    assert got[: len(want)] == want  # the frames before it still delivered
    assert all(kind == REST for kind, _ in got[len(want) :])
    assert rest_bytes(got) == bad + AFTER  # from the start of that frame, to the last byte
    assert splitter.ended
    assert splitter.feed(b"\x81\x01x") == [(REST, b"\x81\x01x")]  # no more frames, ever
    assert splitter.take_rest() == b""


@pytest.mark.parametrize("opcode", [Opcode.TEXT, Opcode.BINARY])
@pytest.mark.parametrize("length", [101, 65536, 1 << 40])
def test_an_oversized_message_ends_it_as_soon_as_its_header_is_known(opcode: Opcode, length: int) -> None:
    splitter = FrameSplitter(100)
    first = server_frame(Opcode.TEXT, b"x" * 100)  # exactly max_size: taken
    if length < 126:
        header = bytes([0x80 | opcode, length])
    elif length < 65536:
        header = bytes([0x80 | opcode, 126]) + length.to_bytes(2, "big")
    else:
        header = bytes([0x80 | opcode, 127]) + length.to_bytes(8, "big")
    # Everything but the last byte of the length field: it must still wait.
    assert splitter.feed(first + header[:-1]) == [(MESSAGE, "x" * 100)]
    assert not splitter.ended
    # The whole header, no payload at all: that is enough to know.
    assert splitter.feed(header[-1:]) == [(REST, header)]
    assert splitter.ended
    assert splitter.feed(b"payload") == [(REST, b"payload")]


def test_no_limit_means_no_limit() -> None:
    assert FrameSplitter(None).feed(encode(b"y" * LONG)) == [(MESSAGE, b"y" * LONG)]


@pytest.mark.parametrize("sizes", [[1 << 20], [1], [5, 2]], ids=["whole", "bytewise", "mixed"])
@pytest.mark.parametrize("close", [Close(CloseCode.NORMAL_CLOSURE, "bye").serialize(), b""],
                         ids=["1000", "empty"])
def test_a_close_is_forwarded_and_everything_after_it_is_rest(close: bytes, sizes: list[int]) -> None:
    close_frame = server_frame(Opcode.CLOSE, close)
    wire, want = expected_items(BEFORE)
    splitter = FrameSplitter(1000)
    got = feed_in_chunks(splitter, wire + close_frame + AFTER, sizes)
    assert got[: len(want) + 1] == [*want, (FORWARD, close_frame)]
    assert all(kind == REST for kind, _ in got[len(want) + 1 :])
    assert rest_bytes(got) == AFTER
    assert splitter.ended


def test_a_close_at_the_end_of_a_read_gives_no_empty_rest() -> None:
    close_frame = server_frame(Opcode.CLOSE, Close(CloseCode.GOING_AWAY, "").serialize())
    splitter = FrameSplitter(None)
    assert splitter.feed(encode("last") + close_frame) == [(MESSAGE, "last"), (FORWARD, close_frame)]
    assert splitter.ended
    assert splitter.feed(b"\x88\x00") == [(REST, b"\x88\x00")]


@pytest.mark.parametrize("cut", [1, 2, 3, 4, 50])
def test_take_rest_returns_the_bytes_of_a_partial_frame(cut: int) -> None:
    frame = encode(b"q" * 300)
    splitter = FrameSplitter(None)
    assert splitter.feed(encode("whole") + frame[:cut]) == [(MESSAGE, "whole")]
    assert splitter.take_rest() == frame[:cut]
    assert splitter.ended
    assert splitter.take_rest() == b""
    assert splitter.feed(frame[cut:]) == [(REST, frame[cut:])]


def test_take_rest_at_a_frame_boundary_is_empty() -> None:
    splitter = FrameSplitter(None)
    assert splitter.feed(encode("a") + encode(b"b")) == [(MESSAGE, "a"), (MESSAGE, b"b")]
    assert splitter.take_rest() == b""
    assert splitter.ended


@pytest.mark.parametrize("opcode", [0xB, 0xF])
def test_a_reserved_control_opcode_ends_it(opcode: int) -> None:
    bad = bytes([0x80 | opcode, 0])
    assert FrameSplitter(None).feed(bad + AFTER) == [(REST, bad + AFTER)]


# --- the server side (the load bot reads clients' frames, which are always masked) ----------------


@given(messages=st.lists(st.one_of(st.text(max_size=300), st.binary(max_size=300)), max_size=20),
       cut=st.integers(min_value=1, max_value=64))
@settings(max_examples=100, deadline=None)
def test_masked_client_frames_come_out_unmasked_in_order(messages: list[str | bytes], cut: int) -> None:
    wire = b"".join(
        Frame(Opcode.TEXT if isinstance(m, str) else Opcode.BINARY,
              m.encode() if isinstance(m, str) else m).serialize(mask=True)
        for m in messages)
    splitter = FrameSplitter(None, masked=True)
    items = [item for i in range(0, len(wire), cut) for item in splitter.feed(wire[i : i + cut])]
    assert items == [(MESSAGE, m) for m in messages] and not splitter.ended


def test_an_unmasked_frame_from_a_client_ends_the_servers_fast_path() -> None:
    splitter = FrameSplitter(None, masked=True)
    masked = Frame(Opcode.TEXT, b"ok").serialize(mask=True)
    assert splitter.feed(masked + encode("bare")) == [(MESSAGE, "ok"), (REST, encode("bare"))]
