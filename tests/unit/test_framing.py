"""Chunker and frame_bytes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.audio.framing import Chunker, frame_bytes


@pytest.mark.parametrize(
    ("rate", "ms", "expected"),
    [(8000, 20, 320), (16000, 20, 640), (24000, 20, 960), (8000, 100, 1600), (24000, 100, 4800)],
)
def test_frame_bytes(rate: int, ms: int, expected: int) -> None:
    assert frame_bytes(rate, ms) == expected


@given(
    chunk_bytes=st.integers(min_value=1, max_value=64),
    pushes=st.lists(st.binary(max_size=200), max_size=30),
)
def test_chunks_are_exact_and_concatenate_to_the_input(chunk_bytes: int, pushes: list[bytes]) -> None:
    chunker = Chunker(chunk_bytes)
    out: list[bytes] = []
    fed = b""
    for data in pushes:
        chunks = chunker.push(data)
        fed += data
        assert all(type(c) is bytes and len(c) == chunk_bytes for c in chunks)
        out.extend(chunks)
        assert chunker.pending_bytes < chunk_bytes
        assert b"".join(out) == fed[: len(fed) - chunker.pending_bytes]
    rest = chunker.flush()
    assert len(rest) < chunk_bytes
    assert b"".join(out) + rest == fed
    assert chunker.pending_bytes == 0
    assert chunker.flush() == b""


def test_remainder_is_kept_across_pushes() -> None:
    chunker = Chunker(4)
    assert chunker.push(b"abc") == []
    assert chunker.pending_bytes == 3
    assert chunker.push(b"defghij") == [b"abcd", b"efgh"]
    assert chunker.pending_bytes == 2
    assert chunker.flush() == b"ij"


def test_aligned_input_is_not_copied() -> None:
    chunker = Chunker(320)
    frame = bytes(range(256)) + bytes(64)
    assert chunker.push(frame)[0] is frame


@pytest.mark.parametrize("size", [0, -1])
def test_rejects_non_positive_chunk(size: int) -> None:
    with pytest.raises(ValueError, match="positive"):
        Chunker(size)
