"""Client text frames for the media path, built without the websockets library's per-frame work.

websockets' `send_text` builds a `Frame`, checks it, serializes it through an `io.BytesIO`, and
draws each 4-byte masking key with `secrets.token_bytes` (one getrandom system call per frame).
At hundreds of calls that was a fifth of the event loop's time. Here a frame is one header
`struct.pack`, a key sliced from a pool filled from `os.urandom` (the same CSPRNG, fetched 4 KiB at
a time, which RFC 6455 section 5.3 allows: keys must be unpredictable, not separately drawn), and
the library's own C `apply_mask`. Only unfragmented text frames, which is all the media path sends.
"""

from __future__ import annotations

import os
import struct

try:
    from websockets.speedups import apply_mask
except ImportError:  # websockets built without its C extension
    from websockets.utils import apply_mask

__all__ = ["MaskKeys", "apply_mask", "masked_text_frame"]

_POOL_BYTES = 4096
_HEAD_SHORT = struct.Struct("!BB")
_HEAD_MEDIUM = struct.Struct("!BBH")
_HEAD_LONG = struct.Struct("!BBQ")
_FIN_TEXT = 0x81  # FIN + opcode 1 (text)
_MASKED = 0x80


class MaskKeys:
    """Masking keys from a pool of OS randomness, each 4 bytes used once."""

    __slots__ = ("_pool", "_pos")

    def __init__(self) -> None:
        self._pool = b""
        self._pos = _POOL_BYTES

    def next(self) -> bytes:
        pos = self._pos
        if pos >= _POOL_BYTES:
            self._pool = os.urandom(_POOL_BYTES)
            pos = 0
        self._pos = pos + 4
        return self._pool[pos : pos + 4]


def masked_text_frame(data: bytes, key: bytes) -> bytes:
    """One final, masked text frame carrying `data` (UTF-8), as a client sends it."""
    length = len(data)
    if length < 126:
        head = _HEAD_SHORT.pack(_FIN_TEXT, _MASKED | length)
    elif length < 65536:
        head = _HEAD_MEDIUM.pack(_FIN_TEXT, _MASKED | 126, length)
    else:
        head = _HEAD_LONG.pack(_FIN_TEXT, _MASKED | 127, length)
    return b"".join((head, key, apply_mask(data, key)))
