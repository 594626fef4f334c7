"""Who each tapped stream is: SIPREC streams by label and metadata, roles by profile globs or by
order; forked calls by their track header and From."""

from __future__ import annotations

import pytest

from bridge.tap.metadata import SdpStream, parse_metadata
from bridge.tap.tracks import display_name, forked_track, siprec_tracks
from tests.unit.test_tap_metadata import RFC7865

# Offer order: label 97 (Bob, sip:bob@biloxi.com) first, then label 96 (Alice, sip:alice@atlanta.com).
STREAMS = [SdpStream(0, "audio", 20000, "97", "sendonly"), SdpStream(1, "audio", 20002, "96", "sendonly")]


def test_participants_come_from_the_labels_not_the_order() -> None:
    tracks = siprec_tracks(list(reversed(STREAMS)), parse_metadata(RFC7865))
    assert [(t.media_index, t.label, t.name) for t in tracks] == [(1, "96", "Alice"), (0, "97", "Bob")]


def test_without_agent_match_the_first_stream_is_the_customer() -> None:
    tracks = siprec_tracks(STREAMS, parse_metadata(RFC7865))
    assert [(t.name, t.role) for t in tracks] == [("Bob", "customer"), ("Alice", "agent")]


def test_agent_match_picks_the_agent_whatever_the_order() -> None:
    tracks = siprec_tracks(STREAMS, parse_metadata(RFC7865), ["sip:alice@*"])
    assert [(t.name, t.role) for t in tracks] == [("Bob", "customer"), ("Alice", "agent")]
    tracks = siprec_tracks(STREAMS, parse_metadata(RFC7865), ["BOB"])  # the number, case-insensitive
    assert [(t.name, t.role) for t in tracks] == [("Bob", "agent"), ("Alice", "customer")]


@pytest.mark.parametrize("patterns", [["nobody*"], ["sip:*"]])
def test_agent_match_that_does_not_split_the_streams_falls_back_to_order(patterns: list[str]) -> None:
    tracks = siprec_tracks(STREAMS, parse_metadata(RFC7865), patterns)
    assert [t.role for t in tracks] == ["customer", "agent"]


def test_without_metadata_or_labels_streams_are_unnamed_and_ordered() -> None:
    unlabelled = [SdpStream(0, "audio", 1000), SdpStream(1, "audio", 0), SdpStream(2, "video", 1002),
                  SdpStream(3, "audio", 1004)]
    tracks = siprec_tracks(unlabelled, parse_metadata(RFC7865))
    assert [(t.media_index, t.role, t.name) for t in tracks] == [(0, "customer", ""), (3, "agent", "")]
    assert [t.role for t in siprec_tracks(STREAMS, None)] == ["customer", "agent"]


def test_forked_tracks_from_header_and_from() -> None:
    track, warning = forked_track("Agent", '"Bob \\"B\\" Smith" <sip:2001@pbx.example.com>;tag=1')
    assert (track.role, track.name, track.number, track.aor, warning) == (
        "agent", 'Bob "B" Smith', "2001", "sip:2001@pbx.example.com", "")
    track, warning = forked_track(None, "<tel:+15551230001>")
    assert (track.role, track.number, warning) == ("customer", "+15551230001", "")
    track, warning = forked_track("caller", "sip:x@y", taken=["customer"])
    assert track.role == "agent" and "neither customer nor agent" in warning


@pytest.mark.parametrize("value, name", [
    ('"Alice" <sip:a@b>', "Alice"),
    ("Alice Smith <sip:a@b>", "Alice Smith"),
    ("<sip:a@b>", ""),
    ("sip:a@b", ""),
])
def test_display_names(value: str, name: str) -> None:
    assert display_name(value) == name
