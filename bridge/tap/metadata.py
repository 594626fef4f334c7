"""SIPREC bodies, pure: the multipart INVITE body, its SDP streams and labels, and rs-metadata.

A recording client (RFC 7866) sends one INVITE whose body is `multipart/mixed`: an SDP with one
audio stream per recorded participant, each with `a=label`, and an `application/rs-metadata+xml`
document (RFC 7865) naming the participants and which stream each one sends. Re-INVITEs (or
UPDATEs) carry updates: `complete` documents replace what is known, `partial` ones change it.

Everything here is tolerant (a peer's body is untrusted input): what cannot be read is reported
as an error value or left out, never raised past the module's functions, except `MetadataError`
from `parse_metadata`, which says what is wrong with the document.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from bridge.sip.message import parse_headers, uri_user

__all__ = [
    "MAX_METADATA_BYTES",
    "BodyPart",
    "MetadataError",
    "Participant",
    "RecordingMetadata",
    "SdpStream",
    "body_parts",
    "content_type",
    "is_siprec",
    "message_parts",
    "metadata_of",
    "parse_metadata",
    "parse_sdp_streams",
    "sdp_of",
]

# A metadata document larger than this is not read (RFC 7865 documents are a few KiB).
MAX_METADATA_BYTES = 64 * 1024
METADATA_TYPES = ("application/rs-metadata+xml", "application/rs-metadata")

_BOUNDARY = re.compile(r';\s*boundary\s*=\s*(?:"([^"]+)"|([^;\s]+))', re.IGNORECASE)
_DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")


class MetadataError(ValueError):
    """An rs-metadata document that cannot be used; the message says why."""


@dataclass(frozen=True, slots=True)
class BodyPart:
    content_type: str  # lower case, without parameters ("application/sdp")
    headers: tuple[tuple[str, str], ...]
    body: str


@dataclass(frozen=True, slots=True)
class SdpStream:
    """One m= line of an SDP offer."""

    index: int  # position among the m= lines (PJSIP's media index)
    media: str  # "audio", "video", ...
    port: int  # 0: disabled
    label: str = ""  # a=label (RFC 4574), "" when absent
    direction: str = "sendrecv"


@dataclass(frozen=True, slots=True)
class Participant:
    participant_id: str
    name: str = ""
    aor: str = ""  # sip:, sips: or tel: URI

    @property
    def number(self) -> str:
        """The user part of the AOR (usually the phone number or extension)."""
        return uri_user(self.aor) if self.aor else ""


@dataclass(frozen=True, slots=True)
class RecordingMetadata:
    """What is known about a recording session: participants and who sends which stream.

    Built with `parse_metadata` and kept up to date with `merge`. Mappings keep document order.
    """

    complete: bool = True  # <datamode>: complete documents replace, partial ones update
    session_id: str = ""
    sip_session_id: str = ""  # <sipSessionID> of the recorded call (RFC 7989), if given
    participants: Mapping[str, Participant] = field(default_factory=dict)
    stream_labels: Mapping[str, str] = field(default_factory=dict)  # stream_id -> SDP label
    sends: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # participant_id -> stream_ids
    left: frozenset[str] = frozenset()  # participants disassociated in this document

    def __post_init__(self) -> None:
        for name in ("participants", "stream_labels", "sends"):
            object.__setattr__(self, name, MappingProxyType(dict(getattr(self, name))))

    def merge(self, update: RecordingMetadata) -> RecordingMetadata:
        """The state after `update`: a complete document replaces this one; a partial one adds or
        changes participants, streams and send associations, and removes participants it
        disassociates."""
        if update.complete:
            return replace(update, left=frozenset())
        participants = {k: v for k, v in self.participants.items() if k not in update.left}
        participants.update(update.participants)
        sends = {k: v for k, v in self.sends.items() if k not in update.left}
        sends.update(update.sends)
        labels = dict(self.stream_labels)
        labels.update(update.stream_labels)
        return RecordingMetadata(
            complete=True,
            session_id=update.session_id or self.session_id,
            sip_session_id=update.sip_session_id or self.sip_session_id,
            participants=participants,
            stream_labels=labels,
            sends=sends,
        )

    def senders(self, label: str) -> list[Participant]:
        """The participants sending the stream with this SDP label, in document order."""
        stream_ids = {sid for sid, lab in self.stream_labels.items() if lab == label}
        if not stream_ids:
            return []
        return [p for pid, p in self.participants.items()
                if stream_ids.intersection(self.sends.get(pid, ()))]


# ---------------------------------------------------------------------------- bodies


def content_type(value: str) -> str:
    """`type/subtype` of a Content-Type value, lower case."""
    return value.split(";", 1)[0].strip().lower()


def _split_head(text: str) -> tuple[str, str]:
    for separator in ("\r\n\r\n", "\n\n"):
        head, found, rest = text.partition(separator)
        if found:
            return head, rest
    return text, ""


def body_parts(type_value: str, body: str) -> list[BodyPart]:
    """The parts of a SIP body with Content-Type `type_value`: a multipart body split at its
    boundary (RFC 2046; parts without a Content-Type are text/plain), any other body as one part."""
    kind = content_type(type_value)
    if not kind.startswith("multipart/"):
        return [BodyPart(kind, (), body)] if body else []
    match = _BOUNDARY.search(type_value)
    if match is None:
        return []
    delimiter = "--" + (match.group(1) or match.group(2))
    parts: list[BodyPart] = []
    chunks = body.split(delimiter)
    for chunk in chunks[1:]:  # what precedes the first delimiter is the preamble
        if chunk.startswith("--"):
            break  # the close delimiter
        # The delimiter line ends with CRLF (or LF); the CRLF before the next one belongs to it.
        chunk = chunk.split("\n", 1)[1] if "\n" in chunk else ""
        if chunk.endswith("\r\n"):
            chunk = chunk[:-2]
        elif chunk.endswith("\n"):
            chunk = chunk[:-1]
        if chunk.startswith(("\r\n", "\n")):
            head, content = "", chunk.split("\n", 1)[1]  # a part without headers
        else:
            head, content = _split_head(chunk)
        # parse_headers drops its first line (a request line); part headers have none.
        headers = tuple(parse_headers("\n" + head)) if head.strip() else ()
        part_type = next((v for k, v in headers if k.lower() == "content-type"), "text/plain")
        parts.append(BodyPart(content_type(part_type), headers, content))
    return parts


def message_parts(message: str) -> tuple[list[tuple[str, str]], list[BodyPart]]:
    """(headers, body parts) of a whole SIP message."""
    head, body = _split_head(message)
    headers = parse_headers(head)
    type_value = next((v for k, v in headers if k.lower() == "content-type"), "")
    return headers, body_parts(type_value, body) if type_value else []


def sdp_of(parts: Sequence[BodyPart]) -> str | None:
    return next((p.body for p in parts if p.content_type == "application/sdp"), None)


def metadata_of(parts: Sequence[BodyPart]) -> str | None:
    return next((p.body for p in parts if p.content_type in METADATA_TYPES), None)


def is_siprec(headers: Sequence[tuple[str, str]], parts: Sequence[BodyPart]) -> bool:
    """A recording session: `Require: siprec`, or a body that carries rs-metadata (some SRCs
    leave the option tag out; PJSIP then passes the INVITE on as an ordinary one)."""
    for name, value in headers:
        if name.lower() == "require" and "siprec" in (t.strip().lower() for t in value.split(",")):
            return True
    return metadata_of(parts) is not None


# ---------------------------------------------------------------------------- SDP


def parse_sdp_streams(sdp: str) -> list[SdpStream]:
    """The m= lines of an SDP with their label and direction (session-level direction inherited)."""
    streams: list[SdpStream] = []
    session_direction = "sendrecv"
    current: dict[str, str] | None = None

    def close() -> None:
        if current is not None:
            streams.append(SdpStream(
                index=len(streams), media=current["media"], port=int(current["port"]),
                label=current.get("label", ""), direction=current.get("direction", session_direction),
            ))

    for raw in sdp.splitlines():
        line = raw.strip()
        if line.startswith("m="):
            close()
            fields = line[2:].split()
            port = fields[1].split("/", 1)[0] if len(fields) > 1 else "0"
            digits = port.isascii() and port.isdigit()
            current = {"media": fields[0].lower() if fields else "", "port": port if digits else "0"}
        elif line.startswith("a="):
            attr, _, value = line[2:].partition(":")
            attr = attr.strip().lower()
            if attr in _DIRECTIONS:
                if current is None:
                    session_direction = attr
                else:
                    current["direction"] = attr
            elif attr == "label" and current is not None:
                current["label"] = value.strip()
    close()
    return streams


# ---------------------------------------------------------------------------- rs-metadata


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _children(element: ET.Element, name: str) -> list[ET.Element]:
    return [child for child in element if _local(child.tag) == name]


def _text(element: ET.Element, name: str) -> str:
    for child in element:
        if _local(child.tag) == name:
            return (child.text or "").strip()
    return ""


def _attr(element: ET.Element, *names: str) -> str:
    for key, value in element.attrib.items():
        if _local(key) in names:
            return value.strip()
    return ""


def _participant(element: ET.Element, pid: str) -> Participant:
    name = aor = ""
    for name_id in _children(element, "nameID"):
        aor = aor or _attr(name_id, "aor")
        name = name or _text(name_id, "name")
    return Participant(participant_id=pid, name=name, aor=aor)


def parse_metadata(xml: str) -> RecordingMetadata:
    """Read an rs-metadata document (RFC 7865, and the older draft form with `id` attributes and
    `send` inside `participant`). Raises MetadataError when it cannot be used."""
    if len(xml.encode("utf-8", "replace")) > MAX_METADATA_BYTES:
        raise MetadataError(f"rs-metadata is larger than {MAX_METADATA_BYTES} bytes")
    if re.search(r"<!(?:DOCTYPE|ENTITY)", xml, re.IGNORECASE):
        # Entity expansion is the one XML feature that can hurt a parser; metadata never needs it.
        raise MetadataError("rs-metadata with a DOCTYPE or ENTITY declaration is not accepted")
    try:
        # Bytes that were not UTF-8 on the wire reach Python as lone surrogates (surrogateescape);
        # they go back to the same bytes here, and the XML parser refuses them as it should.
        root = ET.fromstring(xml.strip().encode("utf-8", "surrogateescape"))
    except ET.ParseError as exc:
        raise MetadataError(f"rs-metadata is not well-formed XML: {exc}") from None
    if _local(root.tag) != "recording":
        raise MetadataError(f"rs-metadata root element is <{_local(root.tag)}>, expected <recording>")
    complete = _text(root, "datamode").lower() != "partial"
    session_id = sip_session_id = ""
    for session in _children(root, "session"):
        session_id = session_id or _attr(session, "session_id", "id")
        sip_session_id = sip_session_id or _text(session, "sipSessionID")
    participants: dict[str, Participant] = {}
    sends: dict[str, list[str]] = {}
    for element in _children(root, "participant"):
        pid = _attr(element, "participant_id", "id")
        if not pid:
            continue
        participants[pid] = _participant(element, pid)
        direct = [(s.text or "").strip() for s in _children(element, "send") if (s.text or "").strip()]
        if direct:
            sends.setdefault(pid, []).extend(direct)
    labels: dict[str, str] = {}
    for element in _children(root, "stream"):
        sid = _attr(element, "stream_id", "id")
        label = _text(element, "label")
        if sid and label:
            labels[sid] = label
    for element in _children(root, "participantstreamassoc"):
        pid = _attr(element, "participant_id", "id")
        if pid:
            sent = [(s.text or "").strip() for s in _children(element, "send") if (s.text or "").strip()]
            sends[pid] = sent
    left = frozenset(
        _attr(element, "participant_id") for element in _children(root, "participantsessionassoc")
        if _children(element, "disassociate-time")
    )
    return RecordingMetadata(
        complete=complete,
        session_id=session_id,
        sip_session_id=sip_session_id,
        participants=participants,
        stream_labels=labels,
        sends={pid: tuple(ids) for pid, ids in sends.items()},
        left=left,
    )
