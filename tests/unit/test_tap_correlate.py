"""Which INVITEs are taps and which tap calls are one conversation."""

from __future__ import annotations

import pytest

from bridge.config.tap import TapSettings
from bridge.tap.correlate import MAX_TRACKS, Pairing, classify
from tests.unit.test_tap_metadata import RFC7865, SDP, multipart

TAP = TapSettings()


def test_siprec_is_always_a_tap_with_its_streams_and_metadata() -> None:
    ctype, body = multipart("b", [("application/sdp", SDP), ("application/rs-metadata+xml", RFC7865)])
    plan = classify([("Content-Type", ctype), ("Require", "siprec")], body, mode="bot", tap=TAP)
    assert plan is not None and plan.kind == "siprec" and len(plan.streams) == 3
    assert plan.metadata is not None and plan.metadata.session_id and not plan.metadata_error


def test_siprec_without_or_with_broken_metadata_says_why() -> None:
    plan = classify([("Content-Type", "application/sdp"), ("Require", "siprec")], SDP, mode="bot", tap=TAP)
    assert plan is not None and plan.metadata is None and "no rs-metadata" in plan.metadata_error
    ctype, body = multipart("b", [("application/sdp", SDP), ("application/rs-metadata+xml", "<oops")])
    plan = classify([("Content-Type", ctype)], body, mode="bot", tap=TAP)
    assert plan is not None and plan.kind == "siprec" and "well-formed" in plan.metadata_error


@pytest.mark.parametrize("mode, header, kind", [
    ("bot", None, None),
    ("bot", "tap", "forked"),
    ("bot", "TAP", "forked"),
    ("tap", None, "forked"),
    ("tap", "bot", None),  # the header overrides the profile both ways
    ("tap", "nonsense", "forked"),
])
def test_plain_calls_become_taps_by_profile_or_header(mode: str, header: str | None,
                                                      kind: str | None) -> None:
    headers = [("Content-Type", "application/sdp"), ("X-Tap-Id", " conv-1 "), ("x-tap-track", "agent")]
    if header is not None:
        headers.append(("X-Stream-Mode", header))
    plan = classify(headers, SDP, mode=mode, tap=TAP)  # type: ignore[arg-type]
    assert (plan.kind if plan else None) == kind
    if plan is not None:
        assert (plan.correlation, plan.track_value) == ("conv-1", "agent")


def test_the_header_can_be_turned_off() -> None:
    tap = TapSettings(enabled_by_header=None)
    assert classify([("X-Stream-Mode", "tap")], "", mode="bot", tap=tap) is None


def test_pairing_joins_within_the_timeout_and_starts_anew_after_it() -> None:
    pairing = Pairing()
    assert pairing.place("c1", 100.0, 10.0) == ("c1", False)
    assert pairing.place("c1", 105.0, 10.0) == ("c1", True)
    assert pairing.place("c1", 111.0, 10.0) == ("c1-2", False)  # too late for c1: a new conversation
    assert pairing.place("c1", 112.0, 10.0) == ("c1-2", True)
    pairing.done("c1")
    pairing.done("c1-2")
    assert pairing.place("c1", 113.0, 10.0) == ("c1", False)  # ended conversations free their id


def test_a_conversation_takes_a_bounded_number_of_tracks() -> None:
    pairing = Pairing()
    pairing.place("c", 0.0, 10.0, tracks=MAX_TRACKS - 1)
    assert pairing.place("c", 0.0, 10.0) == ("c", True)
    assert pairing.place("c", 0.0, 10.0) == ("c-2", False)
