"""How a tapped conversation's tracks become sockets and channels, pure.

- `separate`: one socket per track, each carrying that track's audio (mono).
- `mixed`: one socket, one channel: every track summed, clipped to 16 bits.
- `stereo`: one socket, two channels, PCM16LE interleaved (L R L R ...): the customer on the
  left, the agent on the right (tracks of the same role summed); `media_format.channels` is "2".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final, Literal

import numpy as np

from bridge.tap.tracks import Role

__all__ = ["LAYOUTS", "Layout", "deinterleave", "interleave", "mix", "sink_signals"]

Layout = Literal["separate", "mixed", "stereo"]
LAYOUTS: Final[tuple[Layout, ...]] = ("separate", "mixed", "stereo")


def mix(signals: Sequence[bytes], n_bytes: int) -> bytes:
    """The sample-wise sum of PCM16LE signals of `n_bytes` each, clipped to the 16-bit range."""
    if not signals:
        return bytes(n_bytes)
    if len(signals) == 1:
        return bytes(signals[0])
    total = np.zeros(n_bytes // 2, dtype=np.int32)
    for signal in signals:
        total += np.frombuffer(signal, dtype="<i2")
    return np.clip(total, -32768, 32767).astype("<i2").tobytes()


def interleave(left: bytes, right: bytes) -> bytes:
    """Two PCM16LE signals of equal length as one stereo signal (L R L R ...)."""
    if len(left) != len(right):
        raise ValueError(f"channels differ in length: {len(left)} and {len(right)} bytes")
    out = np.empty(len(left), dtype="<i2")
    out[0::2] = np.frombuffer(left, dtype="<i2")
    out[1::2] = np.frombuffer(right, dtype="<i2")
    return out.tobytes()


def deinterleave(stereo: bytes) -> tuple[bytes, bytes]:
    samples = np.frombuffer(stereo, dtype="<i2")
    return samples[0::2].tobytes(), samples[1::2].tobytes()


def sink_signals(layout: Layout, tracks: Mapping[str, bytes], roles: Mapping[str, Role], n_bytes: int,
                 only: str | None = None) -> list[bytes]:
    """The channels (at the clock rate) of one socket for one aligned block of `n_bytes` per track.

    `only` is the track of a `separate` socket; tracks missing from `tracks` are silent."""
    if layout == "separate":
        return [tracks.get(only or "", bytes(n_bytes))]
    if layout == "mixed":
        return [mix(list(tracks.values()), n_bytes)]
    customer = [pcm for key, pcm in tracks.items() if roles.get(key) == "customer"]
    agent = [pcm for key, pcm in tracks.items() if roles.get(key) == "agent"]
    return [mix(customer, n_bytes), mix(agent, n_bytes)]
