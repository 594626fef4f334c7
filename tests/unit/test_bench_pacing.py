"""The benchmark's RTP pacing check: late and missing packets, also across the sequence wrap."""

from __future__ import annotations

from bridge.tools.bench.wire import pacing


def stream(count: int, *, first_seq: int = 0, late: frozenset[int] = frozenset(),
           lost: frozenset[int] = frozenset()) -> list[tuple[float, int]]:
    packets = []
    for i in range(count):
        if i in lost:
            continue
        at = i * 0.020 + (0.050 if i in late else 0.0)
        packets.append((1000.0 + at, (first_seq + i) % 65536))
    return packets


def test_a_steady_stream_has_nothing_late_or_missing() -> None:
    assert pacing({4000: stream(500)}) == {"packets": 500, "late": 0, "missing": 0, "late_pct": 0.0}


def test_late_and_lost_packets_are_counted() -> None:
    figures = pacing({4000: stream(500, late=frozenset({100, 200}), lost=frozenset({300, 301}))})
    assert figures["late"] == 2 and figures["missing"] == 2


def test_the_sequence_wrap_is_not_a_jump_in_time() -> None:
    """A 30-minute run wraps the 16-bit sequence (every 21.8 minutes of 20 ms packets); before this
    was unwrapped, every packet after the wrap counted as late (27 % of a 30-minute soak)."""
    figures = pacing({4000: stream(90_000, first_seq=60_000, late=frozenset({80_000}))})
    assert figures["late"] == 1 and figures["missing"] == 0


def test_a_reordered_packet_is_not_counted_as_lost() -> None:
    packets = stream(100)
    packets[50], packets[51] = (packets[50][0], packets[51][1]), (packets[51][0], packets[50][1])
    assert pacing({4000: packets})["missing"] == 0
