"""One report per key press from PJSIP's per-packet DTMF callbacks, with loss and reordering."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.sip.dtmf import DtmfTracker


def packets(digit: str, ts: int, durations: list[int], ends: int = 3) -> list[tuple[str, int, int, bool]]:
    """An RFC 4733 key press as (digit, timestamp, duration, end) packets."""
    return [(digit, ts, d, False) for d in durations] + [(digit, ts, durations[-1] + 20, True)] * ends


def feed(tracker: DtmfTracker, stream: list[tuple[str, int, int, bool]]) -> str:
    """What PJSIP would call us with: it knows an update only by a growing duration."""
    out = []
    last: tuple[str, int, bool] | None = None
    for t, (digit, ts, duration, end) in enumerate(stream):
        is_update = last is not None and last[0] == digit and duration >= last[1]
        if is_update and end and last is not None and last[2]:
            continue  # PJSIP hides repeated end packets
        last = (digit, duration, end)
        for d, _, _ in tracker.event(digit, "rfc4733", ts, duration, is_update=is_update, is_end=end, now=t):
            out.append(d)
    out += [d for d, _, _ in tracker.flush()]
    return "".join(out)


def key_presses(text: str) -> list[tuple[str, int, int, bool]]:
    stream = []
    for i, digit in enumerate(text):
        stream += packets(digit, 1000 * (i + 1), [40, 80, 120, 160])
    return stream


def test_in_order_packets_give_each_key_once() -> None:
    assert feed(DtmfTracker(), key_presses("123#")) == "123#"
    assert feed(DtmfTracker(), key_presses("1111")) == "1111"  # repeated keys are separate presses


def test_a_reordered_packet_is_not_a_new_key_press() -> None:
    stream = key_presses("12")
    stream.insert(3, stream[1])  # the 80 ms packet of "1" arrives again after the 120 ms one
    stream.insert(8, stream[2])  # and one after the end
    assert feed(DtmfTracker(), stream) == "12"


def test_lost_end_packets_are_reported_by_flush() -> None:
    tracker = DtmfTracker()
    for d in (40, 80):
        tracker.event("5", "rfc4733", 7, d, is_update=d > 40, is_end=False, now=0.0)
    assert tracker.pending_since == 0.0
    assert tracker.flush() == [("5", 80, "rfc4733")]
    assert tracker.event("5", "rfc4733", 7, 120, is_update=False, is_end=True, now=1.0) == []  # too late


def test_info_digits_have_no_timestamp_and_keep_plain_behaviour() -> None:
    tracker = DtmfTracker()
    assert tracker.event("5", "info", 0, 160, is_update=False, is_end=True, now=0.0) == [("5", 160, "info")]
    assert tracker.event("5", "info", 0, 160, is_update=False, is_end=True, now=1.0) == [("5", 160, "info")]


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="0123456789*#", min_size=1, max_size=8), st.integers(0, 2**32), st.floats(0, 0.5))
def test_any_shuffle_within_a_key_press_reports_it_once(text: str, seed: int, swap_rate: float) -> None:
    rng = random.Random(seed)
    stream = key_presses(text)
    # Reorder neighbours within each key press (what 40 +- 20 ms of jitter does to 20 ms packets)
    # and duplicate some packets; never move one key press across another.
    out: list[tuple[str, int, int, bool]] = []
    for i in range(len(text)):
        press = [p for p in stream if p[1] == 1000 * (i + 1)]
        for j in range(len(press) - 1):
            if rng.random() < swap_rate:
                press[j], press[j + 1] = press[j + 1], press[j]
        press += [p for p in press if rng.random() < swap_rate / 2]
        out += press
    assert feed(DtmfTracker(), out) == text
