"""G.711 against an independent implementation of the ITU-T G.711 tables, all codes and all PCM values."""

from __future__ import annotations

import struct
from collections.abc import Callable

import pytest

from bridge.audio.g711 import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode

ALL_CODES = bytes(range(256))
ALL_PCM = struct.pack("<65536h", *range(-32768, 32768))


def ref_ulaw_decode(code: int) -> int:
    # G.711 Table 2a: code bits are transmitted inverted; the magnitude of segment e, step m is the
    # midpoint (2m + 33) * 2^e - 33 in 14-bit units, scaled by 4 to 16 bits.
    u = ~code & 0xFF
    e = (u >> 4) & 7
    m = u & 0x0F
    magnitude = ((2 * m + 33) * (1 << e) - 33) * 4
    return -magnitude if u & 0x80 else magnitude


def ref_alaw_decode(code: int) -> int:
    # G.711 Table 1a: even bits are inverted (xor 0x55); segment 0 is linear with step 2, segment
    # e >= 1 has midpoints (2m + 33) * 2^(e-1), in 13-bit units scaled by 8 to 16 bits.
    a = code ^ 0x55
    e = (a >> 4) & 7
    m = a & 0x0F
    magnitude = (2 * m + 1) * 8 if e == 0 else (2 * m + 33) * (1 << (e - 1)) * 8
    return magnitude if a & 0x80 else -magnitude


def ref_ulaw_encode(sample: int) -> int:
    x = sample >> 2  # 14-bit, floor as in the reference C code's arithmetic shift
    if x < 0:
        magnitude, mask = -x, 0x7F
    else:
        magnitude, mask = x, 0xFF
    biased = min(magnitude, 8159) + 33
    e = biased.bit_length() - 6
    code = 0x7F if e > 7 else (e << 4) | ((biased >> (e + 1)) & 0x0F)
    return code ^ mask


def ref_alaw_encode(sample: int) -> int:
    x = sample >> 3  # 13-bit
    if x >= 0:
        magnitude, mask = x, 0xD5
    else:
        magnitude, mask = -x - 1, 0x55
    e = max(magnitude.bit_length() - 5, 0)
    code = 0x7F if e > 7 else (e << 4) | ((magnitude >> max(e, 1)) & 0x0F)
    return code ^ mask


def pcm_values(pcm: bytes) -> tuple[int, ...]:
    return struct.unpack(f"<{len(pcm) // 2}h", pcm)


def test_ulaw_decode_matches_reference_for_all_codes() -> None:
    assert pcm_values(ulaw_decode(ALL_CODES)) == tuple(ref_ulaw_decode(c) for c in range(256))


def test_alaw_decode_matches_reference_for_all_codes() -> None:
    assert pcm_values(alaw_decode(ALL_CODES)) == tuple(ref_alaw_decode(c) for c in range(256))


@pytest.mark.parametrize(("code", "value"), [(0xFF, 0), (0x7F, 0), (0x00, -32124), (0x80, 32124), (0x7E, -8)])
def test_ulaw_known_values(code: int, value: int) -> None:
    assert pcm_values(ulaw_decode(bytes([code]))) == (value,)


@pytest.mark.parametrize(("code", "value"), [(0xD5, 8), (0x55, -8), (0xAA, 32256), (0x2A, -32256)])
def test_alaw_known_values(code: int, value: int) -> None:
    assert pcm_values(alaw_decode(bytes([code]))) == (value,)


def test_decode_output_is_little_endian_pcm16() -> None:
    assert ulaw_decode(b"\x00") == struct.pack("<h", -32124)
    assert alaw_decode(b"\xaa") == struct.pack("<h", 32256)


def test_ulaw_encode_matches_reference_for_all_pcm_values() -> None:
    assert ulaw_encode(ALL_PCM) == bytes(ref_ulaw_encode(s) for s in range(-32768, 32768))


def test_alaw_encode_matches_reference_for_all_pcm_values() -> None:
    assert alaw_encode(ALL_PCM) == bytes(ref_alaw_encode(s) for s in range(-32768, 32768))


def test_ulaw_round_trip_all_codes() -> None:
    again = ulaw_encode(ulaw_decode(ALL_CODES))
    for code in range(256):
        # 0x7F is "negative zero"; it decodes to 0, which encodes as positive zero 0xFF.
        expected = 0xFF if code == 0x7F else code
        assert again[code] == expected, hex(code)


def test_alaw_round_trip_all_codes() -> None:
    assert alaw_encode(alaw_decode(ALL_CODES)) == ALL_CODES


def test_lengths() -> None:
    assert ulaw_decode(b"") == b""
    assert len(alaw_decode(bytes(160))) == 320
    assert len(ulaw_encode(bytes(320))) == 160


@pytest.mark.parametrize("encode", [ulaw_encode, alaw_encode])
def test_encode_rejects_odd_length(encode: Callable[[bytes], bytes]) -> None:
    with pytest.raises(ValueError, match="even"):
        encode(b"\x00\x00\x00")
