"""StreamSession: order, counters, marks as answers only, stop then silence, one-way streams."""

from __future__ import annotations

import base64
import json
import struct
from pathlib import Path
from typing import Any

import pytest

from bridge.bot.agentstream.codec import decode_bot_message, number_slot
from bridge.bot.agentstream.events import (
    BotClear,
    BotIgnored,
    BotMark,
    BotMedia,
    ProtocolError,
    StartInfo,
)
from bridge.bot.agentstream.session import SessionStateError, StreamSession
from bridge.bot.template import Slot, render, slot

GOLDEN = Path(__file__).parent / "golden" / "agentstream"
INBOUND = sorted(p.name for p in GOLDEN.glob("in_*.json"))

SID = "MZ18ad3ab5a668481ce02b83e7395059f0"
CALL = "CA5f2a9c7e1b4d4e0f8a3b6c2d1e0f9a8b"
ACCOUNT = "bridge"
PCM = struct.pack("<8h", 0, 1000, -1000, 32767, -32768, 1, -1, 256)


def start_info(sample_rate: int = 8000, custom: dict[str, str] | None = None) -> StartInfo:
    return StartInfo(SID, CALL, ACCOUNT, "+919876543210", "08047112345", custom or {}, sample_rate)


def golden_frame(name: str) -> str:
    return (GOLDEN / name).read_text(encoding="utf-8")


def assert_golden(encoded: str | None, name: str) -> None:
    """Same message as the golden file, compact, same key order (the codec tests check types)."""
    golden = json.loads(golden_frame(name))
    assert encoded is not None
    assert json.loads(encoded) == golden
    assert encoded == json.dumps(golden, separators=(",", ":"))


def started(rate: int = 8000, **kwargs: Any) -> StreamSession:
    session = StreamSession(start_info(rate), **kwargs)
    session.connected()
    session.start()
    return session


def bot_media(pcm: bytes = PCM, sid: str | None = SID) -> str:
    msg: dict[str, Any] = {"event": "media", "media": {"payload": base64.b64encode(pcm).decode()}}
    if sid is not None:
        msg["stream_sid"] = sid
    return json.dumps(msg)


def bot_mark(name: str, sid: str = SID) -> str:
    return json.dumps({"event": "mark", "stream_sid": sid, "mark": {"name": name}})


def parsed(text: str | None) -> dict[str, Any]:
    assert text is not None
    result: dict[str, Any] = json.loads(text)
    return result


# -- order -------------------------------------------------------------------------------------


def test_connected_then_start_golden() -> None:
    session = StreamSession(start_info(8000, {"k": "v", "lang": "hi-IN"}))
    states = [session.state]
    assert_golden(session.connected(), "out_connected.json")
    states.append(session.state)
    assert session.next_seq == 1  # connected carries no sequence number
    assert_golden(session.start(), "out_start_8k.json")
    states.append(session.state)
    assert states == ["new", "connected", "started"]
    assert session.next_seq == 2


def test_contract_transcript() -> None:
    """The contract's example messages, in order, with the counters they show."""
    session = started(chunk_ms=100)
    chunk = bytes(session.chunk_bytes)
    first = parsed(session.media(chunk))
    assert (first["sequence_number"], first["media"]["chunk"], first["media"]["timestamp"]) == (
        "2",
        "1",
        "100",
    )
    for _ in range(6):  # sequence 3..8
        session.media(chunk)
    assert_golden(session.dtmf("5", 100), "out_dtmf.json")
    session.media(chunk)  # 10
    session.media(chunk)  # 11
    assert session.receive(bot_mark("turn-3-end")) == BotMark("turn-3-end", SID)
    assert_golden(session.mark("turn-3-end"), "out_mark.json")
    while session.next_seq < 40:
        session.media(chunk)
    assert_golden(session.stop("callended"), "out_stop_callended.json")
    assert session.state == "stopped"


@pytest.mark.parametrize("method", ["start", "media", "dtmf", "mark", "receive"])
def test_nothing_before_connected(method: str) -> None:
    session = StreamSession(start_info())
    with pytest.raises(SessionStateError):
        _call(session, method)
    assert session.state == "new"


@pytest.mark.parametrize("method", ["connected", "media", "dtmf", "mark", "receive"])
def test_only_start_after_connected(method: str) -> None:
    session = StreamSession(start_info())
    session.connected()
    with pytest.raises(SessionStateError):
        _call(session, method)
    assert session.state == "connected"


@pytest.mark.parametrize("method", ["connected", "start"])
def test_connected_and_start_exactly_once(method: str) -> None:
    session = started()
    with pytest.raises(SessionStateError):
        _call(session, method)
    assert session.state == "started"


def _call(session: StreamSession, method: str) -> object:
    if method == "connected":
        return session.connected()
    if method == "start":
        return session.start()
    if method == "media":
        return session.media(bytes(160))
    if method == "dtmf":
        return session.dtmf("1", 100)
    if method == "mark":
        return session.mark("m")
    if method == "receive":
        return session.receive(bot_media())
    raise AssertionError(method)


def test_session_state_error_is_a_runtime_error() -> None:
    assert issubclass(SessionStateError, RuntimeError)


@pytest.mark.parametrize("chunk_ms", [0, 10, 19, 1001, -100])
def test_chunk_ms_range(chunk_ms: int) -> None:
    with pytest.raises(ValueError, match="chunk_ms"):
        StreamSession(start_info(), chunk_ms=chunk_ms)


def test_message_limits_validated() -> None:
    with pytest.raises(ValueError):
        StreamSession(start_info(), max_message_bytes=0)
    with pytest.raises(ValueError):
        StreamSession(start_info(), max_message_bytes=1000, warn_message_bytes=2000)


# -- counters ----------------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [8000, 16000, 24000])
@pytest.mark.parametrize("chunk_ms", [100, 20])
def test_seq_chunk_timestamp(rate: int, chunk_ms: int) -> None:
    session = started(rate, chunk_ms=chunk_ms)
    assert session.chunk_bytes == rate * chunk_ms // 1000 * 2
    assert session.chunk_bytes == {8000: 1600, 16000: 3200, 24000: 4800}[rate] * chunk_ms // 100
    for i in range(1, 51):
        msg = parsed(session.media(bytes(session.chunk_bytes)))
        assert msg["sequence_number"] == str(i + 1)
        assert msg["media"]["chunk"] == str(i)
        assert msg["media"]["timestamp"] == str(i * chunk_ms)
    assert session.chunks_sent == 50
    assert session.audio_ms_sent == 50 * chunk_ms


def test_one_sequence_counter_chunk_counts_media_only() -> None:
    session = started()
    session.receive(bot_mark("a"))
    kinds = []
    seqs = []
    for text in (
        session.media(bytes(1600)),
        session.dtmf("1", 80),
        session.media(bytes(1600)),
        session.mark("a"),
        session.media(bytes(1600)),
        session.stop("stopped"),
    ):
        msg = parsed(text)
        kinds.append(msg["event"])
        seqs.append(msg["sequence_number"])
        if msg["event"] == "media":
            assert msg["media"]["timestamp"] == str(100 * int(msg["media"]["chunk"]))
    assert kinds == ["media", "dtmf", "media", "mark", "media", "stop"]
    assert seqs == ["2", "3", "4", "5", "6", "7"]
    assert session.chunks_sent == 3


@pytest.mark.parametrize(("rate", "samples"), [(8000, 7), (16000, 3), (24000, 10), (8000, 1), (24000, 1)])
def test_odd_chunk_sizes_never_drift(rate: int, samples: int) -> None:
    session = started(rate)
    total = 0
    for _ in range(3000):
        msg = parsed(session.media(bytes(samples * 2)))
        total += samples
        # Rounded down from the running sample count: never more than 1 ms behind the truth.
        assert msg["media"]["timestamp"] == str(total * 1000 // rate)
    assert session.audio_ms_sent == total * 1000 // rate


def test_mixed_chunk_sizes() -> None:
    session = started(8000)
    sizes = [320, 1600, 2, 3198, 640, 1600]  # 20 + 100 + 0.125 + 199.875 + 40 + 100 ms
    stamps = [parsed(session.media(bytes(n)))["media"]["timestamp"] for n in sizes]
    assert stamps == ["20", "120", "120", "320", "360", "460"]


def test_an_hour_of_20ms_chunks_is_exact() -> None:
    session = started(8000, chunk_ms=20)
    chunk = bytes(320)
    for _ in range(180_000 - 1):
        session.media(chunk)
    last = parsed(session.media(chunk))
    assert last["media"] == {"chunk": "180000", "timestamp": "3600000", "payload": last["media"]["payload"]}
    assert last["sequence_number"] == "180001"


def test_media_payload_is_the_pcm() -> None:
    session = started()
    pcm = bytes(range(256)) * 6 + bytes(64)
    msg = parsed(session.media(pcm))
    assert base64.b64decode(msg["media"]["payload"], validate=True) == pcm
    assert msg["stream_sid"] == SID
    assert list(msg) == ["event", "sequence_number", "stream_sid", "media"]


@pytest.mark.parametrize("size", [0, 1, 3, 1599])
def test_media_needs_whole_samples(size: int) -> None:
    session = started()
    with pytest.raises(ValueError):
        session.media(bytes(size))
    assert session.next_seq == 2
    assert session.chunks_sent == 0


# -- dtmf ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("digit", list("0123456789*#ABCD"))
def test_dtmf_digits(digit: str) -> None:
    session = started()
    msg = parsed(session.dtmf(digit, 250))
    assert msg == {
        "event": "dtmf",
        "sequence_number": "2",
        "stream_sid": SID,
        "dtmf": {"digit": digit, "duration": "250"},
    }


@pytest.mark.parametrize("digit", ["", "a", "d", "E", "55", " ", "+", "\uff11"])
def test_dtmf_rejects_other_digits(digit: str) -> None:
    session = started()
    with pytest.raises(ValueError):
        session.dtmf(digit, 100)
    assert session.next_seq == 2


def test_dtmf_rejects_negative_duration() -> None:
    with pytest.raises(ValueError):
        started().dtmf("1", -1)


# -- marks ---------------------------------------------------------------------------------------


def test_marks_are_answers_in_fifo_order() -> None:
    session = started()
    for name in ("a", "b", "a", "c"):
        assert session.receive(bot_mark(name)) == BotMark(name, SID)
    assert session.pending_marks == ("a", "b", "a", "c")
    with pytest.raises(ValueError, match="oldest"):
        session.mark("b")  # not the oldest
    with pytest.raises(ValueError, match="oldest"):
        session.mark("c")
    answered = [parsed(session.mark(name))["mark"]["name"] for name in ("a", "b", "a", "c")]
    assert answered == ["a", "b", "a", "c"]
    assert not session.pending_marks


def test_unprompted_mark_is_refused() -> None:
    session = started()
    with pytest.raises(ValueError, match="no unanswered mark"):
        session.mark("bridge-made-this-up")
    session.receive(bot_mark("x"))
    session.mark("x")
    with pytest.raises(ValueError):
        session.mark("x")  # answered once, not twice
    assert session.next_seq == 3  # only the one real answer consumed a sequence number


def test_refused_mark_keeps_the_queue() -> None:
    session = started()
    session.receive(bot_mark("first"))
    with pytest.raises(ValueError):
        session.mark("second")
    assert session.pending_marks == ("first",)


def test_mark_answer_golden_and_unicode_name() -> None:
    session = started()
    session.receive(bot_mark('ターン "3"'))
    msg = session.mark('ターン "3"')
    assert msg is not None and msg.isascii()
    assert parsed(msg)["mark"] == {"name": 'ターン "3"'}


def test_invalid_mark_is_not_queued() -> None:
    session = started()
    assert session.receive(golden_frame("in_mark_no_name.json")) is None
    assert session.pending_marks == ()
    assert session.errors["bad_mark"] == 1


def test_pending_marks_are_bounded() -> None:
    session = started()
    for i in range(StreamSession.MAX_PENDING_MARKS):
        assert session.receive(bot_mark(str(i))) is not None
    assert session.receive(bot_mark("one too many")) is None
    assert session.ignored["mark_overflow"] == 1
    assert len(session.pending_marks) == StreamSession.MAX_PENDING_MARKS


# -- stop ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("reason", ["callended", "stopped"])
def test_stop_once_then_silence(reason: str) -> None:
    session = started()
    session.receive(bot_mark("pending"))
    session.media(bytes(1600))
    msg = parsed(session.stop(reason))  # type: ignore[arg-type]
    assert msg == {
        "event": "stop",
        "sequence_number": "3",
        "stream_sid": SID,
        "stop": {"call_sid": CALL, "account_sid": ACCOUNT, "reason": reason},
    }
    assert session.state == "stopped"
    assert session.stop_reason == reason
    seq = session.next_seq
    assert session.stop("callended") is None
    assert session.stop("stopped") is None
    assert session.media(bytes(1600)) is None
    assert session.media(b"odd") is None  # not even validated: nothing goes out after stop
    assert session.dtmf("1", 100) is None
    assert session.dtmf("not a digit", 100) is None
    assert session.mark("pending") is None
    assert session.mark("never sent") is None
    assert session.pending_marks == ()
    assert session.next_seq == seq
    assert session.stop_reason == reason
    with pytest.raises(SessionStateError):
        session.connected()
    with pytest.raises(SessionStateError):
        session.start()


def test_bot_is_ignored_after_stop() -> None:
    session = started(max_message_bytes=1000, warn_message_bytes=500)
    session.stop("stopped")
    frames: list[str | bytes] = [
        bot_media(),
        bot_mark("late"),
        golden_frame("in_exotel_clear.json"),
        "not json",
        b"\x00binary",
        "x" * 5000,  # over the hard limit: no 1009 either, the stream is already over
    ]
    for frame in frames:
        assert session.receive(frame) is None
    assert session.ignored["after_stop"] == len(frames)
    assert sum(session.errors.values()) == 0
    assert session.pending_marks == ()
    assert session.large_messages == 0


@pytest.mark.parametrize("before", ["new", "connected"])
def test_stop_before_start_sends_nothing(before: str) -> None:
    session = StreamSession(start_info())
    if before == "connected":
        session.connected()
    assert session.stop("callended") is None
    assert session.state == "stopped"
    assert session.media(bytes(2)) is None
    assert session.receive(bot_media()) is None
    with pytest.raises(SessionStateError):
        session.start()


def test_stop_reason_is_validated() -> None:
    session = started()
    with pytest.raises(ValueError):
        session.stop("hangup")  # type: ignore[arg-type]
    assert session.state == "started"


# -- receive -------------------------------------------------------------------------------------


def test_receive_passes_commands_through() -> None:
    session = started()
    assert session.receive(golden_frame("in_exotel_media.json")) == BotMedia(PCM, SID)
    assert session.receive(golden_frame("in_exotel_mark.json")) == BotMark("turn-3-end", SID)
    assert session.receive(golden_frame("in_exotel_clear.json")) == BotClear(SID)
    assert session.receive(golden_frame("in_pipecat_17_media_streamSid.json")) is not None
    assert session.stream_sid_mismatch == 0
    assert sum(session.errors.values()) == 0


@pytest.mark.parametrize("name", INBOUND)
def test_receive_agrees_with_the_decoder_on_every_golden_vector(name: str) -> None:
    session = started()
    frame = golden_frame(name)
    try:
        decoded = decode_bot_message(frame)
    except ProtocolError as exc:
        assert session.receive(frame) is None
        assert session.errors == {exc.kind: 1}
        assert session.last_error is not None and session.last_error.kind == exc.kind
        return
    result = session.receive(frame)
    if isinstance(decoded, BotIgnored):
        assert result is None
        assert sum(session.ignored.values()) == 1
        assert session.last_ignored == decoded
    else:
        assert result == decoded
        assert not session.ignored
    assert not session.errors


@pytest.mark.parametrize(
    ("frame", "key"),
    [
        ('{"event":"dtmf","dtmf":{"digit":"1"}}', "dtmf"),
        ('{"event":"connected"}', "connected"),
        ('{"event":"start"}', "start"),
        ('{"event":"stop"}', "stop"),
        ('{"event":"hangup"}', "unknown"),
        ('{"event":"' + "z" * 500 + '"}', "unknown"),
    ],
)
def test_ignored_counter_keys_are_bounded(frame: str, key: str) -> None:
    session = started()
    assert session.receive(frame) is None
    assert session.ignored == {key: 1}


@pytest.mark.parametrize(
    ("frame", "kind"),
    [
        ("{", "invalid_json"),
        (b'{"event":"clear"}', "not_text"),
        ("[]", "not_object"),
        ('{"stream_sid":"x"}', "missing_event"),
        ('{"event":"media","media":{}}', "bad_media"),
        ('{"event":"media","media":{"payload":"!!!!"}}', "bad_base64"),
        ('{"event":"media","media":{"payload":"AQID"}}', "odd_length"),
        ('{"event":"mark","mark":{}}', "bad_mark"),
    ],
)
def test_protocol_errors_are_counted_and_the_call_goes_on(frame: str | bytes, kind: str) -> None:
    session = started()
    for _ in range(3):
        assert session.receive(frame) is None
    assert session.errors == {kind: 3}
    assert session.last_error is not None and session.last_error.kind == kind
    assert session.state == "started"
    assert session.receive(bot_media()) == BotMedia(PCM, SID)  # still working


def test_stream_sid_mismatch_is_counted_not_fatal() -> None:
    session = started()
    assert session.receive(bot_media(sid="someone-else")) == BotMedia(PCM, "someone-else")
    assert session.receive(bot_mark("m", sid="someone-else")) == BotMark("m", "someone-else")
    assert session.receive('{"event":"clear","streamSid":"other"}') == BotClear("other")
    assert session.receive(bot_media(sid=None)) == BotMedia(PCM, None)  # missing is fine
    assert session.receive(bot_media(sid=SID)) == BotMedia(PCM, SID)
    assert session.stream_sid_mismatch == 3


def test_large_message_is_accepted_and_counted() -> None:
    session = started()
    pcm = bytes(100 * 1024)  # base64 makes the message > 100 KiB
    assert session.receive(bot_media(pcm)) == BotMedia(pcm, SID)
    assert session.large_messages == 1
    assert session.receive(bot_media(bytes(3200))) is not None
    assert session.large_messages == 1


def test_message_over_the_hard_limit_raises_too_large() -> None:
    session = started()
    frame = bot_media(bytes(800 * 1024))  # about 1.07 MB of JSON
    assert len(frame) > 1 << 20
    with pytest.raises(ProtocolError) as info:
        session.receive(frame)
    assert info.value.kind == "too_large"
    # Not swallowed into the counters: the caller closes with 1009.
    assert not session.errors
    assert session.large_messages == 0


def test_limits_are_configurable() -> None:
    session = started(max_message_bytes=2000, warn_message_bytes=1000)
    assert session.receive(bot_media(bytes(600))) is not None  # ~870 chars
    assert session.large_messages == 0
    assert session.receive(bot_media(bytes(1200))) is not None  # ~1670 chars
    assert session.large_messages == 1
    with pytest.raises(ProtocolError, match="too_large"):
        session.receive(bot_media(bytes(1600)))
    with pytest.raises(ProtocolError, match="too_large"):
        session.receive(b"\x00" * 2001)


def test_large_invalid_message_is_counted_as_both() -> None:
    session = started(max_message_bytes=2000, warn_message_bytes=100)
    assert session.receive("x" * 500) is None
    assert session.large_messages == 1
    assert session.errors == {"invalid_json": 1}


# -- one-way (tap) streams -----------------------------------------------------------------------


def test_one_way_sends_connected_start_media_stop_only() -> None:
    session = StreamSession(start_info(), two_way=False)
    events = [parsed(session.connected())["event"], parsed(session.start())["event"]]
    events.append(parsed(session.media(bytes(1600)))["event"])
    assert session.dtmf("5", 100) is None
    assert session.next_seq == 3  # the skipped dtmf consumed nothing
    with pytest.raises(ValueError):
        session.dtmf("x", 100)  # still a caller bug
    events.append(parsed(session.media(bytes(1600)))["event"])
    events.append(parsed(session.stop("stopped"))["event"])
    assert events == ["connected", "start", "media", "media", "stop"]


def test_one_way_ignores_every_bot_message() -> None:
    session = started(two_way=False)
    frames: list[str | bytes] = [golden_frame(name) for name in INBOUND]
    frames += ["{", b"binary"]
    for frame in frames:
        assert session.receive(frame) is None
    assert session.ignored == {"one_way": len(frames)}
    assert not session.errors
    assert session.pending_marks == ()
    assert session.stream_sid_mismatch == 0
    with pytest.raises(ValueError):
        session.mark("turn-3-end")  # the tap never answers marks


def test_one_way_still_enforces_the_hard_limit() -> None:
    session = started(two_way=False, max_message_bytes=1000, warn_message_bytes=500)
    with pytest.raises(ProtocolError, match="too_large"):
        session.receive("x" * 1001)


def test_start_info_is_kept() -> None:
    info = StartInfo(SID, CALL, ACCOUNT, "a", "b", sample_rate=16000)
    session = StreamSession(info, chunk_ms=20)
    assert session.info is info
    assert session.chunk_ms == 20
    assert session.two_way is True
    assert session.chunk_bytes == 640


# -- another writer numbers the messages (the native sender) -------------------------------------


def test_hand_off_numbering_and_take_back() -> None:
    session = started()
    session.media(bytes(1600))
    assert session.hand_off_numbering() == (3, 1, 800)
    assert session.handed_off
    with pytest.raises(SessionStateError):
        session.media(bytes(1600))
    with pytest.raises(SessionStateError):
        session.hand_off_numbering()
    session.receive(bot_mark("a"))
    for text in (session.dtmf("5", 100), session.mark("a")):
        assert render(text or "", seq=41) == (text or "").replace('"sequence_number":"\x00s"',
                                                                  '"sequence_number":"41"')
    # The writer sent media 2..9 and the two events: the session carries on from its counters.
    session.take_back_numbering(12, 9, 7200)
    assert not session.handed_off
    msg = parsed(session.media(bytes(1600)))
    assert (msg["sequence_number"], msg["media"]["chunk"], msg["media"]["timestamp"]) == ("12", "10", "1000")
    assert parsed(session.stop("callended"))["sequence_number"] == "13"


def test_take_back_refuses_counters_that_went_backwards() -> None:
    session = started()
    with pytest.raises(SessionStateError):
        session.take_back_numbering(2, 0, 0)
    session.hand_off_numbering()
    with pytest.raises(ValueError):
        session.take_back_numbering(1, 0, 0)


def test_hand_off_needs_a_started_stream() -> None:
    session = StreamSession(start_info())
    with pytest.raises(SessionStateError):
        session.hand_off_numbering()


def test_an_unnumbered_stop_is_split_at_its_number_not_inside_a_value() -> None:
    session = started()
    session.hand_off_numbering()
    text = session.stop("stopped") or ""
    head, _, tail = text.partition(slot(Slot.SEQ))
    assert head.endswith('"sequence_number":"') and tail.startswith('","stream_sid"')
    with pytest.raises(ValueError):
        number_slot('{"event":"media","sequence_number":"7"}')
