"""Re-framing a byte stream into fixed-size chunks (e.g. 20 ms RTP frames into 100 ms WS messages)."""

from __future__ import annotations

__all__ = ["FRAME_MS", "RING_FRAMES", "TICK_S", "Chunker", "frame_bytes"]

# The conference clock's frame: every call's and every tap's audio moves in these steps.
FRAME_MS = 20
TICK_S = FRAME_MS / 1000
# Caller frames a clock-thread -> loop ring holds: 64 frames = 1.28 s of slack before caller
# audio is overwritten when the loop stalls.
RING_FRAMES = 64


def frame_bytes(rate: int, ms: int) -> int:
    """Bytes in `ms` milliseconds of 16-bit mono PCM at `rate` Hz."""
    return rate * ms // 1000 * 2


class Chunker:
    """Cuts whatever arrives into chunks of exactly `chunk_bytes`, keeping the remainder for later."""

    __slots__ = ("_buf", "_size")

    def __init__(self, chunk_bytes: int) -> None:
        if chunk_bytes <= 0:
            raise ValueError(f"chunk_bytes must be positive, got {chunk_bytes}")
        self._size = chunk_bytes
        self._buf = bytearray()

    @property
    def chunk_bytes(self) -> int:
        return self._size

    @property
    def pending_bytes(self) -> int:
        return len(self._buf)

    def push(self, pcm: bytes) -> list[bytes]:
        size = self._size
        buf = self._buf
        if not buf:
            # Common case (input already aligned, e.g. 320-byte frames into 320-byte chunks): slice the
            # input directly instead of copying it through the buffer.
            n = len(pcm)
            if n == size:
                return [bytes(pcm)]
            whole = n - n % size
            if whole:
                chunks = [bytes(pcm[i : i + size]) for i in range(0, whole, size)]
                buf += pcm[whole:]
                return chunks
            buf += pcm
            return []
        buf += pcm
        n = len(buf)
        if n < size:
            return []
        whole = n - n % size
        chunks = [bytes(buf[i : i + size]) for i in range(0, whole, size)]
        # Deleting from the front of a bytearray only moves its start pointer in CPython (no memmove).
        del buf[:whole]
        return chunks

    def flush(self) -> bytes:
        """Return the remainder (shorter than a chunk, possibly empty) and empty the chunker."""
        rest = bytes(self._buf)
        self._buf.clear()
        return rest
