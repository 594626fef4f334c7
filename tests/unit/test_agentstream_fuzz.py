"""Property tests: nothing a bot sends makes the codec or the session raise anything but ProtocolError."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.bot.agentstream.codec import decode_bot_message
from bridge.bot.agentstream.events import (
    PROTOCOL_ERROR_KINDS,
    BotClear,
    BotIgnored,
    BotMark,
    BotMedia,
    ProtocolError,
    StartInfo,
)
from bridge.bot.agentstream.session import SessionStateError, StreamSession

SID = "MZ18ad3ab5a668481ce02b83e7395059f0"

# Enough examples to reach every decoder branch many times while keeping the unit run short; raise
# max_examples locally (or with a Hypothesis profile) for a longer hunt.
FUZZ = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SESSION_FUZZ = settings(FUZZ, max_examples=120)

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
# Weighted towards real event names so the media/mark/clear paths get most of the examples.
event_names = st.sampled_from(
    ["media"] * 6
    + ["mark"] * 3
    + ["clear"] * 2
    + ["dtmf", "connected", "start", "stop", "MEDIA", "", " media"]
) | st.text(max_size=12)
even_pcm = st.binary(max_size=600).map(lambda b: b[: len(b) & ~1])
payloads = (
    even_pcm.map(lambda b: base64.b64encode(b).decode())
    | even_pcm.map(lambda b: base64.b64encode(b).decode().rstrip("="))
    | st.binary(max_size=60).map(lambda b: base64.b64encode(b).decode())
    | st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=-_ \n", max_size=40)
    | st.text(max_size=20)
    | json_values
)
stream_ids = st.none() | st.just(SID) | st.text(max_size=10) | json_scalars


@st.composite
def bot_dicts(draw: st.DrawFn) -> dict[str, Any]:
    """Objects shaped like bot messages, with every field liable to be missing or the wrong type."""
    msg: dict[str, Any] = {}
    if draw(st.integers(0, 9)):
        msg["event"] = draw(event_names) if draw(st.integers(0, 9)) else draw(json_values)
    for key in ("stream_sid", "streamSid"):
        if draw(st.booleans()):
            msg[key] = draw(stream_ids)
    if msg.get("event") == "media" or draw(st.booleans()):
        media: dict[str, Any] = draw(
            st.dictionaries(st.sampled_from(["chunk", "timestamp", "track"]), json_scalars, max_size=3)
        )
        if draw(st.integers(0, 9)):
            media["payload"] = draw(payloads)
        msg["media"] = media if draw(st.integers(0, 9)) else draw(json_values)
    if msg.get("event") == "mark" or draw(st.booleans()):
        msg["mark"] = draw(st.fixed_dictionaries({}, optional={"name": json_scalars}) | json_values)
    if draw(st.booleans()):
        msg[draw(st.sampled_from(["sequence_number", "sequenceNumber", "extra"]))] = draw(json_values)
    return msg


def bot_frames() -> st.SearchStrategy[str | bytes]:
    dumped = bot_dicts().flatmap(
        lambda d: st.sampled_from([json.dumps(d), json.dumps(d, ensure_ascii=False), json.dumps(d, indent=1)])
    )
    # Cut-off JSON exercises every decoder error position.
    truncated = bot_dicts().flatmap(
        lambda d: st.integers(0, len(json.dumps(d))).map(lambda n: json.dumps(d)[:n])
    )
    return st.one_of(
        dumped,
        dumped,
        dumped,
        truncated,
        st.text(),
        json_values.map(json.dumps),
        st.binary(max_size=200),
        dumped.map(str.encode),
    )


def check_decoded(result: object) -> None:
    assert isinstance(result, BotMedia | BotMark | BotClear | BotIgnored)
    if isinstance(result, BotMedia):
        assert isinstance(result.payload, bytes) and len(result.payload) % 2 == 0
    if isinstance(result, BotMedia | BotMark | BotClear):
        assert result.stream_sid is None or isinstance(result.stream_sid, str)
    if isinstance(result, BotMark):
        assert isinstance(result.name, str)
    if isinstance(result, BotIgnored):
        assert result.event not in ("media", "mark", "clear") and len(result.event) <= 64


def decode_or_kind(frame: str | bytes, max_bytes: int = 1 << 20) -> object:
    try:
        result = decode_bot_message(frame, max_bytes=max_bytes)
    except ProtocolError as exc:
        assert exc.kind in PROTOCOL_ERROR_KINDS
        return exc.kind
    check_decoded(result)
    return result


@FUZZ
@given(st.text())
def test_decode_arbitrary_text(frame: str) -> None:
    decode_or_kind(frame)


@FUZZ
@given(st.binary())
def test_decode_arbitrary_binary(frame: bytes) -> None:
    assert decode_or_kind(frame) == "not_text"


@FUZZ
@given(json_values)
def test_decode_arbitrary_json(value: Any) -> None:
    kind = decode_or_kind(json.dumps(value))
    if not isinstance(value, dict):
        assert kind == "not_object"


@FUZZ
@given(bot_frames())
def test_decode_arbitrary_bot_shaped_frames(frame: str | bytes) -> None:
    decode_or_kind(frame)


@FUZZ
@given(bot_frames(), st.integers(min_value=0, max_value=300))
def test_decode_size_limit(frame: str | bytes, max_bytes: int) -> None:
    size = len(frame.encode("utf-8", "surrogatepass")) if isinstance(frame, str) else len(frame)
    outcome = decode_or_kind(frame, max_bytes)
    assert (outcome == "too_large") == (size > max_bytes)


@FUZZ
@given(bot_dicts())
def test_decode_dispatches_on_event(msg: dict[str, Any]) -> None:
    outcome = decode_or_kind(json.dumps(msg))
    event = msg.get("event")
    if not isinstance(event, str):
        assert outcome == "missing_event"
    elif event == "clear":
        assert isinstance(outcome, BotClear)
    elif event == "media":
        assert isinstance(outcome, BotMedia) or outcome in ("bad_media", "bad_base64", "odd_length")
    elif event == "mark":
        assert isinstance(outcome, BotMark) or outcome == "bad_mark"
    else:
        assert isinstance(outcome, BotIgnored)
    if isinstance(outcome, BotMedia | BotMark | BotClear):
        expected = msg.get("stream_sid")
        if expected is None:
            expected = msg.get("streamSid")
        assert outcome.stream_sid == (expected if isinstance(expected, str) else None)


@FUZZ
@given(even_pcm, stream_ids, st.booleans())
def test_valid_media_always_decodes_to_its_pcm(pcm: bytes, sid: Any, strip_padding: bool) -> None:
    payload = base64.b64encode(pcm).decode()
    if strip_padding:
        payload = payload.rstrip("=")
    msg = {"event": "media", "stream_sid": sid, "media": {"payload": payload}}
    result = decode_bot_message(json.dumps(msg))
    assert isinstance(result, BotMedia)
    assert result.payload == pcm


def started(**kwargs: Any) -> StreamSession:
    session = StreamSession(StartInfo(SID, "c", "a", "f", "t"), **kwargs)
    session.connected()
    session.start()
    return session


@SESSION_FUZZ
@given(st.lists(bot_frames(), max_size=12), st.booleans())
def test_session_receive_never_raises(frames: list[str | bytes], two_way: bool) -> None:
    session = started(two_way=two_way, max_message_bytes=120, warn_message_bytes=60)
    delivered = 0
    too_large = 0
    for frame in frames:
        try:
            result = session.receive(frame)
        except ProtocolError as exc:
            # The only error that escapes: the caller must close with 1009.
            assert exc.kind == "too_large"
            too_large += 1
            continue
        if result is not None:
            assert two_way
            check_decoded(result)
            delivered += 1
    assert session.state == "started"
    # Every frame is accounted for exactly once: delivered, counted as an error, ignored or too large.
    assert delivered + sum(session.errors.values()) + sum(session.ignored.values()) + too_large == len(frames)
    assert set(session.errors) <= PROTOCOL_ERROR_KINDS - {"too_large"}
    assert set(session.ignored) <= {
        "connected",
        "start",
        "dtmf",
        "stop",
        "unknown",
        "one_way",
        "mark_overflow",
    }


@SESSION_FUZZ
@given(st.lists(st.text() | st.binary() | bot_dicts().map(json.dumps), max_size=6))
def test_session_receive_after_stop_drops_everything(frames: list[str | bytes]) -> None:
    session = started(max_message_bytes=50, warn_message_bytes=10)
    session.stop("callended")
    for frame in frames:
        assert session.receive(frame) is None
    assert session.ignored["after_stop"] == len(frames)


OPS = st.sampled_from(["connected", "start", "media", "dtmf", "mark", "bot_mark", "stop", "receive"])


@FUZZ
@given(st.lists(OPS, max_size=40), st.booleans(), st.sampled_from([8000, 16000, 24000]))
def test_session_outbound_invariants(ops: list[str], two_way: bool, rate: int) -> None:
    """Random call sequences: order holds, one sequence counter, nothing after stop."""
    session = StreamSession(StartInfo(SID, "c", "a", "f", "t", sample_rate=rate), two_way=two_way)
    sent: list[dict[str, Any]] = []
    marks_asked: list[str] = []
    for i, op in enumerate(ops):
        before = session.state
        try:
            if op == "connected":
                out: str | None = session.connected()
            elif op == "start":
                out = session.start()
            elif op == "media":
                out = session.media(bytes(rate // 50 * 2))
            elif op == "dtmf":
                out = session.dtmf("#", 60)
            elif op == "mark":
                out = session.mark(marks_asked[0] if marks_asked else "unprompted")
            elif op == "bot_mark":
                out = None
                if session.receive(json.dumps({"event": "mark", "mark": {"name": f"m{i}"}})) is not None:
                    marks_asked.append(f"m{i}")
            elif op == "stop":
                out = session.stop("stopped")
            else:
                out = None
                session.receive(json.dumps({"event": "media", "media": {"payload": "AAAA"}}))
        except SessionStateError:
            assert before in ("new", "connected") or op in ("connected", "start")
            assert session.state == before
            continue
        except ValueError:
            assert op == "mark" and not marks_asked
            continue
        if op == "mark" and out is not None:
            marks_asked.pop(0)
        if out is not None:
            assert before != "stopped"
            sent.append(json.loads(out))
    events = [m["event"] for m in sent]
    if events:
        assert events[0] == "connected"
        assert events.count("connected") == 1
        assert events.count("start") <= 1
        assert events.count("stop") <= 1
    if "stop" in events:
        assert events[-1] == "stop"
    numbered = sent[1:]
    assert [m["sequence_number"] for m in numbered] == [str(n) for n in range(1, len(numbered) + 1)]
    if numbered:
        assert numbered[0]["event"] == "start"
    media = [m["media"] for m in sent if m["event"] == "media"]
    assert [m["chunk"] for m in media] == [str(n) for n in range(1, len(media) + 1)]
    assert [m["timestamp"] for m in media] == [str(20 * n) for n in range(1, len(media) + 1)]
    if not two_way:
        assert set(events) <= {"connected", "start", "media", "stop"}
    for msg in sent:
        for value in _scalars(msg):
            assert isinstance(value, str)


def _scalars(obj: Any) -> list[Any]:
    if isinstance(obj, dict):
        return [v for value in obj.values() for v in _scalars(value)]
    return [obj]


@pytest.mark.parametrize("depth", [10, 1000, 100_000])
def test_deeply_nested_json_is_invalid_or_ignored(depth: int) -> None:
    frame = '{"event":"x","n":' + "[" * depth + "]" * depth + "}"
    outcome = decode_or_kind(frame, max_bytes=1 << 22)
    assert outcome in ("invalid_json", BotIgnored("x", "unknown event"))
