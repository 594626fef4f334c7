"""The media path's own client text frames: exactly what websockets parses back, keys never reused."""

from __future__ import annotations

from collections.abc import Generator

import pytest
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

from bridge.ws.frames import MaskKeys, masked_text_frame


def parse(wire: bytes) -> Frame:
    reader = StreamReader()
    reader.feed_data(wire)
    reader.feed_eof()
    parser: Generator[None, None, Frame] = Frame.parse(reader.read_exact, mask=True)
    try:
        next(parser)
    except StopIteration as done:
        frame: Frame = done.value
        return frame
    raise AssertionError("incomplete frame")


@pytest.mark.parametrize("length", [0, 1, 125, 126, 127, 65535, 65536, 70000])
def test_every_length_encoding_parses_back_as_one_final_text_frame(length: int) -> None:
    data = bytes(range(256)) * (length // 256) + bytes(range(length % 256))
    frame = parse(masked_text_frame(data, b"\x01\x02\x03\x04"))
    assert frame.opcode is Opcode.TEXT and frame.fin and frame.data == data


def test_same_bytes_as_websockets_with_the_same_key(monkeypatch: pytest.MonkeyPatch) -> None:
    import secrets  # websockets draws its keys through this module

    monkeypatch.setattr(secrets, "token_bytes", lambda n: b"\x9a\x0b\xfe\x42")
    data = b'{"event":"media","payload":"' + b"A" * 2000 + b'"}'
    assert masked_text_frame(data, b"\x9a\x0b\xfe\x42") == Frame(Opcode.TEXT, data).serialize(mask=True)


def test_keys_are_four_bytes_and_do_not_repeat_across_pool_refills() -> None:
    keys = MaskKeys()
    drawn = [keys.next() for _ in range(5000)]  # almost five pools of 4 KiB
    assert all(len(key) == 4 for key in drawn)
    assert len(set(drawn)) > 4990  # random 32-bit keys: a handful of collisions at most
