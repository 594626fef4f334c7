"""Which INVITEs are taps, and which tap calls are one conversation, pure.

- A SIPREC INVITE (`Require: siprec`, or an rs-metadata body) is always a tap: one call carries
  the whole conversation, one audio stream per participant.
- Otherwise an INVITE is a tap when the profile's `mode` is `tap`, or when it carries the
  profile's `tap.enabled_by_header` (default `X-Stream-Mode`) with the value `tap` (`bot` there
  makes it a bot call even in a tap profile).
- Forked tap calls with the same `tap.correlation_header` value (default `X-Tap-Id`) are one
  conversation when the later one arrives within `tap.pair_timeout_s` of the first; the track
  header (`X-Tap-Track: customer|agent`) says which side each call carries. A call that comes
  later, or to a conversation that already ended, starts a new one (`<id>-2`, ...).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from bridge.config.tap import StreamMode, TapSettings
from bridge.tap.metadata import (
    MetadataError,
    RecordingMetadata,
    SdpStream,
    body_parts,
    is_siprec,
    metadata_of,
    parse_metadata,
    parse_sdp_streams,
    sdp_of,
)

__all__ = ["MAX_TRACKS", "Pairing", "TapPlan", "classify"]

TapKind = Literal["siprec", "forked"]
# Tracks (audio streams) one conversation takes at most: a bound on per-call work and sockets.
MAX_TRACKS = 8


@dataclass(frozen=True, slots=True)
class TapPlan:
    """What an INVITE that is a tap asks for."""

    kind: TapKind
    streams: tuple[SdpStream, ...]  # the offer's m= lines
    metadata: RecordingMetadata | None = None
    metadata_error: str = ""  # why the INVITE's rs-metadata could not be read
    correlation: str = ""  # the correlation header's value (forked calls)
    track_value: str | None = None  # the track header's value (forked calls)


def _header(headers: Sequence[tuple[str, str]], name: str | None) -> str | None:
    if not name:
        return None
    lname = name.lower()
    for key, value in headers:
        if key.lower() == lname:
            return value.strip()
    return None


def classify(headers: Sequence[tuple[str, str]], body: str, *, mode: StreamMode,
             tap: TapSettings) -> TapPlan | None:
    """The tap an INVITE asks for, or None for a bot call."""
    type_value = _header(headers, "Content-Type") or ""
    parts = body_parts(type_value, body) if type_value else []
    sdp = sdp_of(parts)
    streams = tuple(parse_sdp_streams(sdp)) if sdp else ()
    if is_siprec(headers, parts):
        xml = metadata_of(parts)
        metadata = None
        error = "" if xml is not None else "the INVITE has no rs-metadata"
        if xml is not None:
            try:
                metadata = parse_metadata(xml)
            except MetadataError as exc:
                error = str(exc)
        return TapPlan("siprec", streams, metadata, error)
    asked = (_header(headers, tap.enabled_by_header) or "").lower()
    if asked == "tap" or (mode == "tap" and asked != "bot"):
        return TapPlan("forked", streams, correlation=_header(headers, tap.correlation_header) or "",
                       track_value=_header(headers, tap.track_header))
    return None


@dataclass(slots=True)
class _Open:
    conversation_id: str
    created: float
    tracks: int


class Pairing:
    """Places forked tap calls into conversations by correlation value (loop thread only)."""

    def __init__(self) -> None:
        self._open: dict[str, _Open] = {}  # correlation value -> its newest conversation
        self._used: set[str] = set()  # conversation ids in use

    def place(self, correlation: str, now: float, timeout_s: float, tracks: int = 1) -> tuple[str, bool]:
        """(conversation id, True if it joins an existing one) for a call with this correlation
        value that brings `tracks` tracks."""
        entry = self._open.get(correlation)
        if entry is not None and entry.conversation_id in self._used and now - entry.created <= timeout_s \
                and entry.tracks + tracks <= MAX_TRACKS:
            entry.tracks += tracks
            return entry.conversation_id, True
        conversation_id = correlation
        n = 1
        while conversation_id in self._used:
            n += 1
            conversation_id = f"{correlation}-{n}"
        self._used.add(conversation_id)
        self._open[correlation] = _Open(conversation_id, now, tracks)
        return conversation_id, False

    def done(self, conversation_id: str) -> None:
        """The conversation ended: its id may be used again, and nothing joins it any more."""
        self._used.discard(conversation_id)
        for correlation, entry in list(self._open.items()):
            if entry.conversation_id == conversation_id:
                del self._open[correlation]
