"""One tap socket's messages: audio kept until the socket opens, the conversation's timeline kept
with silence, stereo framing and timestamps, one-way semantics."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from bridge.bot.agentstream.events import StartInfo
from bridge.bot.agentstream.session import StreamSession
from bridge.tap.stream import TapStream

FRAME = 320  # 20 ms at 8 kHz


def info(channels: int = 1, rate: int = 8000) -> StartInfo:
    return StartInfo(stream_sid="s1", call_sid="c1", account_sid="a1", from_="1", to="2",
                     custom_parameters={"track": "customer"}, sample_rate=rate, channels=channels)


def audio(value: int, frames: int) -> bytes:
    return np.full(frames * FRAME // 2, value, dtype="<i2").tobytes()


def media(messages: list[str]) -> list[dict[str, dict[str, str]]]:
    return [m["media"] for m in map(json.loads, messages) if m["event"] == "media"]


def test_audio_before_open_is_sent_right_after_start() -> None:
    stream = TapStream(channels=1, clock_rate=8000)
    assert stream.push(50, [audio(1, 5)]) == []
    assert stream.push(55, [audio(2, 3)]) == []
    messages = stream.open(info(), chunk_ms=100)
    assert [json.loads(m)["event"] for m in messages] == ["connected", "start", "media"]
    assert media(messages)[0]["timestamp"] == "100"
    more = stream.push(58, [audio(3, 2)])
    assert [m["timestamp"] for m in media(more)] == ["200"]
    assert stream.first_tick == 50 and stream.frames == 10


def test_a_stream_that_starts_later_than_its_timeline_is_padded_with_silence() -> None:
    stream = TapStream(channels=1, clock_rate=8000, first_tick=100)
    stream.open(info(), chunk_ms=20)
    out = media(stream.push(103, [audio(9, 1)]))
    assert len(out) == 4 and stream.padded_frames == 3
    payloads = [np.frombuffer(base64.b64decode(m["payload"]), dtype="<i2") for m in out]
    assert all((p == 0).all() for p in payloads[:3]) and (payloads[3] == 9).all()
    assert [m["timestamp"] for m in out] == ["20", "40", "60", "80"]


def test_ticks_already_covered_are_not_sent_twice() -> None:
    stream = TapStream(channels=1, clock_rate=8000)
    stream.open(info(), chunk_ms=20)
    stream.push(10, [audio(1, 2)])
    out = media(stream.push(11, [audio(2, 2)]))  # tick 11 was sent; only 12 is new
    assert len(out) == 1 and stream.frames == 3


def test_stereo_is_interleaved_and_says_so_in_start() -> None:
    stream = TapStream(channels=2, clock_rate=8000)
    messages = stream.open(info(channels=2), chunk_ms=20)
    start = json.loads(messages[1])["start"]
    assert start["media_format"] == {"encoding": "base64", "sample_rate": "8000", "bit_rate": "256kbps",
                                     "channels": "2"}
    out = media(stream.push(0, [audio(1, 2), audio(-1, 2)]))
    payload = np.frombuffer(base64.b64decode(out[0]["payload"]), dtype="<i2")
    assert len(payload) == 2 * 160
    assert payload[0::2].tolist() == [1] * 160 and payload[1::2].tolist() == [-1] * 160
    assert [m["timestamp"] for m in out] == ["20", "40"]  # per channel, not per interleaved sample


def test_16k_socket_gets_resampled_audio_of_the_right_length() -> None:
    stream = TapStream(channels=2, clock_rate=8000)
    stream.open(info(channels=2, rate=16000), chunk_ms=100)
    out = media(stream.push(0, [audio(1000, 10), audio(0, 10)]))
    assert len(out) == 2 and all(len(base64.b64decode(m["payload"])) == 2 * 2 * 1600 for m in out)


def test_close_sends_the_rest_and_stop_once() -> None:
    stream = TapStream(channels=1, clock_rate=8000)
    assert stream.close("callended") == []  # never opened: nothing to say
    stream.open(info(), chunk_ms=100)
    stream.push(0, [audio(1, 3)])
    tail = [json.loads(m) for m in stream.close("callended")]
    assert [m["event"] for m in tail] == ["media", "stop"]
    assert tail[0]["media"]["timestamp"] == "60" and tail[1]["stop"]["reason"] == "callended"
    assert stream.close("callended") == []


def test_pending_audio_is_bounded_and_the_timeline_moves_with_what_is_dropped() -> None:
    stream = TapStream(channels=1, clock_rate=8000, max_pending_s=0.1)
    stream.push(0, [audio(1, 8)])
    assert stream.dropped_frames == 3 and stream.first_tick == 3


def test_one_way_session_ignores_the_service_and_rejects_wrong_shapes() -> None:
    stream = TapStream(channels=1, clock_rate=8000)
    stream.open(info(), chunk_ms=20)
    session = stream.session
    assert isinstance(session, StreamSession)
    assert session.receive('{"event":"media","media":{"payload":"AAAA"}}') is None
    assert session.receive('{"event":"clear"}') is None and session.ignored["one_way"] == 2
    with pytest.raises(ValueError, match="channel"):
        stream.push(0, [audio(1, 1), audio(1, 1)])
    with pytest.raises(ValueError, match="channel"):
        TapStream(channels=1, clock_rate=8000).open(info(channels=2), chunk_ms=20)
