"""Who each tapped stream is: its role (customer or agent) and participant, pure.

SIPREC: every audio stream of the offer is a track; the rs-metadata says which participant sends
the stream with each `a=label`. Metadata has no notion of "customer" or "agent", so roles come
from the profile's `tap.agent_match` globs (matched against each participant's AOR and number,
e.g. `sip:agent-*` or `1???`) when they tell the streams apart, and otherwise from stream order:
the first audio stream is the customer's, the others the agent side's (how SBCs commonly order
an inbound call: caller first).

Forked calls: one track per call; the role is the track header's value (`X-Tap-Track: customer`
or `agent`), the participant the call's From (display name and user part).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

from bridge.sip.message import uri_user
from bridge.tap.metadata import RecordingMetadata, SdpStream

__all__ = ["ROLES", "Role", "TrackInfo", "display_name", "forked_track", "siprec_tracks"]

Role = Literal["customer", "agent"]
ROLES: Final[tuple[Role, Role]] = ("customer", "agent")

_DISPLAY = re.compile(r'^\s*(?:"((?:[^"\\]|\\.)*)"|([^<"]*?))\s*<')


@dataclass(frozen=True, slots=True)
class TrackInfo:
    media_index: int  # the SDP media line that carries it (0 for a forked call's one stream)
    role: Role
    label: str = ""  # SIPREC a=label
    participant_id: str = ""  # SIPREC metadata id
    name: str = ""
    number: str = ""
    aor: str = ""

    def same_participant(self, other: TrackInfo) -> bool:
        return (self.participant_id, self.name, self.number, self.aor, self.role) == (
            other.participant_id, other.name, other.number, other.aor, other.role)


def _is_agent(aor: str, number: str, patterns: Sequence[str]) -> bool:
    values = [v.lower() for v in (aor, number) if v]
    return any(fnmatch.fnmatchcase(v, p.lower()) for v in values for p in patterns)


def siprec_tracks(streams: Sequence[SdpStream], metadata: RecordingMetadata | None,
                  agent_match: Sequence[str] = ()) -> list[TrackInfo]:
    """One track per enabled audio stream, in SDP order, with its participant and role."""
    audio = [s for s in streams if s.media == "audio" and s.port != 0]
    found: list[tuple[SdpStream, str, str, str, str]] = []  # stream, id, name, number, aor
    for stream in audio:
        senders = metadata.senders(stream.label) if metadata is not None and stream.label else []
        if senders:
            first = senders[0]
            name = ", ".join(p.name for p in senders if p.name) if len(senders) > 1 else first.name
            found.append((stream, first.participant_id, name, first.number, first.aor))
        else:
            found.append((stream, "", "", "", ""))
    agents = [_is_agent(aor, number, agent_match) for _, _, _, number, aor in found] if agent_match else []
    use_match = bool(agents) and any(agents) and not all(agents)
    tracks = []
    for position, (stream, pid, name, number, aor) in enumerate(found):
        agent = agents[position] if use_match else position > 0
        tracks.append(TrackInfo(media_index=stream.index, role="agent" if agent else "customer",
                                label=stream.label, participant_id=pid, name=name, number=number, aor=aor))
    return tracks


def display_name(name_addr: str) -> str:
    """The display name of a From/To value (`"Alice" <sip:...>` -> `Alice`), "" when none."""
    match = _DISPLAY.match(name_addr)
    if match is None:
        return ""
    quoted, plain = match.groups()
    if quoted is not None:
        return re.sub(r"\\(.)", r"\1", quoted)
    return (plain or "").strip()


def forked_track(track_value: str | None, from_uri: str, taken: Sequence[Role] = ()) -> tuple[TrackInfo, str]:
    """The track of a forked tap call from its track header and From; (track, warning or "").

    Without a usable header value the call takes the role not yet taken in its conversation
    (the first call is the customer's)."""
    value = (track_value or "").strip().lower()
    warning = ""
    role: Role
    if value in ROLES:
        role = "customer" if value == "customer" else "agent"
    else:
        role = "agent" if "customer" in taken else "customer"
        if track_value is not None:
            warning = f"track {track_value!r} is neither customer nor agent; taken as {role}"
    aor = _uri_of(from_uri)
    number = uri_user(aor) if aor else ""
    return TrackInfo(media_index=0, role=role, name=display_name(from_uri), number=number, aor=aor), warning


def _uri_of(name_addr: str) -> str:
    if "<" in name_addr and ">" in name_addr:
        return name_addr.split("<", 1)[1].split(">", 1)[0].strip()
    return name_addr.split(";", 1)[0].strip()
