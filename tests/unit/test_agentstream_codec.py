"""AgentStream codec: golden vectors both ways, and every codec line of docs' agentstream contract."""

from __future__ import annotations

import base64
import binascii
import json
import re
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.bot.agentstream.codec import (
    UNNUMBERED,
    MediaEncoder,
    decode_bot_message,
    encode_connected,
    encode_dtmf,
    encode_mark,
    encode_media,
    encode_start,
    encode_stop,
    number_slot,
)
from bridge.bot.agentstream.events import (
    BotClear,
    BotIgnored,
    BotMark,
    BotMedia,
    ProtocolError,
    StartInfo,
)
from bridge.bot.template import render

GOLDEN = Path(__file__).parent / "golden" / "agentstream"

SID = "MZ18ad3ab5a668481ce02b83e7395059f0"
CALL = "CA5f2a9c7e1b4d4e0f8a3b6c2d1e0f9a8b"
ACCOUNT = "bridge"
# The PCM carried by the golden media vectors: extremes and sign changes, so byte order shows.
PCM = struct.pack("<8h", 0, 1000, -1000, 32767, -32768, 1, -1, 256)
PCM_1234 = struct.pack("<4h", 1, 2, 3, 4)

# Key order of every outbound message, as written in the contract.
CONTRACT_KEY_ORDER: dict[str, list[str]] = {
    "connected": ["event"],
    "start": ["event", "sequence_number", "stream_sid", "start"],
    "start.start": [
        "stream_sid",
        "call_sid",
        "account_sid",
        "from",
        "to",
        "custom_parameters",
        "media_format",
    ],
    "start.start.media_format": ["encoding", "sample_rate", "bit_rate"],
    "media": ["event", "sequence_number", "stream_sid", "media"],
    "media.media": ["chunk", "timestamp", "payload"],
    "dtmf": ["event", "sequence_number", "stream_sid", "dtmf"],
    "dtmf.dtmf": ["digit", "duration"],
    "mark": ["event", "sequence_number", "stream_sid", "mark"],
    "mark.mark": ["name"],
    "stop": ["event", "sequence_number", "stream_sid", "stop"],
    "stop.stop": ["call_sid", "account_sid", "reason"],
}

_CAMEL = re.compile(r"[a-z][A-Z]")


def load_golden(name: str) -> Any:
    return json.loads((GOLDEN / name).read_text(encoding="utf-8"))


def golden_frame(name: str) -> str:
    """The exact text a bot sends: the file's content, trailing newline included (valid JSON)."""
    return (GOLDEN / name).read_text(encoding="utf-8")


def _walk(obj: Any, path: str = "") -> Iterator[tuple[str, str, Any]]:
    """(path, key, value) for every key of every object, outside user-supplied custom_parameters."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield path, key, value
            if key != "custom_parameters":
                yield from _walk(value, f"{path}.{key}" if path else key)


def assert_wire_form(encoded: str, golden: dict[str, Any]) -> None:
    """Parses equal to the golden message, with the contract's key order and types, compact JSON."""
    assert json.loads(encoded) == golden
    # Exact text equality pins key order, separators and escaping (ensure_ascii) at once.
    assert encoded == json.dumps(golden, separators=(",", ":"))
    assert encoded.isascii()

    event = golden["event"]
    assert list(golden) == CONTRACT_KEY_ORDER[event]
    for path, key, value in _walk(golden):
        assert not _CAMEL.search(key), f"camelCase key {key!r} at {path}"
        if isinstance(value, dict):
            if key == "custom_parameters":
                assert all(isinstance(v, str) for v in value.values())
            else:
                assert list(value) == CONTRACT_KEY_ORDER[".".join(filter(None, (event, path, key)))]
        else:
            assert isinstance(value, str), f"{path}.{key} is {type(value).__name__}, not a string"


def start_info(sample_rate: int = 8000, custom: dict[str, str] | None = None) -> StartInfo:
    return StartInfo(
        stream_sid=SID,
        call_sid=CALL,
        account_sid=ACCOUNT,
        from_="+919876543210",
        to="08047112345",
        custom_parameters=custom if custom is not None else {},
        sample_rate=sample_rate,
    )


# -- bridge -> bot -----------------------------------------------------------------------------

OUTBOUND: list[tuple[str, Callable[[], str]]] = [
    ("out_connected.json", encode_connected),
    ("out_start_8k.json", lambda: encode_start(1, start_info(8000, {"k": "v", "lang": "hi-IN"}))),
    ("out_start_16k.json", lambda: encode_start(1, start_info(16000))),
    ("out_start_24k.json", lambda: encode_start(1, start_info(24000, {"caller name": 'Zoë "Z" Ångström'}))),
    ("out_media.json", lambda: encode_media(2, SID, 1, 100, PCM)),
    ("out_media.json", lambda: MediaEncoder(SID)(2, 1, 100, PCM)),
    ("out_dtmf.json", lambda: encode_dtmf(9, SID, "5", 100)),
    ("out_mark.json", lambda: encode_mark(12, SID, "turn-3-end")),
    ("out_stop_callended.json", lambda: encode_stop(40, SID, CALL, ACCOUNT, "callended")),
    ("out_stop_stopped.json", lambda: encode_stop(41, SID, CALL, ACCOUNT, "stopped")),
]


@pytest.mark.parametrize(("name", "encode"), OUTBOUND, ids=[f"{n}-{i}" for i, (n, _) in enumerate(OUTBOUND)])
def test_outbound_golden(name: str, encode: Callable[[], str]) -> None:
    assert_wire_form(encode(), load_golden(name))


def test_every_outbound_golden_file_is_covered() -> None:
    assert {p.name for p in GOLDEN.glob("out_*.json")} == {name for name, _ in OUTBOUND}


def test_connected_is_exactly_the_contract_line() -> None:
    assert encode_connected() == '{"event":"connected"}'


def test_start_matches_contract_line_verbatim() -> None:
    # The contract's example with its placeholders filled in, character for character.
    info = StartInfo("<sid>", "<call>", "<account>", "<caller>", "<called>", {"k": "v"}, 8000)
    assert encode_start(1, info) == (
        '{"event":"start","sequence_number":"1","stream_sid":"<sid>","start":{"stream_sid":"<sid>",'
        '"call_sid":"<call>","account_sid":"<account>","from":"<caller>","to":"<called>",'
        '"custom_parameters":{"k":"v"},"media_format":{"encoding":"base64","sample_rate":"8000",'
        '"bit_rate":"128kbps"}}}'
    )


def test_other_contract_lines_verbatim() -> None:
    pcm_b64 = base64.b64encode(PCM).decode()
    assert encode_media(2, "<sid>", 1, 100, PCM) == (
        '{"event":"media","sequence_number":"2","stream_sid":"<sid>","media":{"chunk":"1",'
        f'"timestamp":"100","payload":"{pcm_b64}"}}}}'
    )
    assert encode_dtmf(9, "<sid>", "5", 100) == (
        '{"event":"dtmf","sequence_number":"9","stream_sid":"<sid>","dtmf":{"digit":"5","duration":"100"}}'
    )
    assert encode_mark(12, "<sid>", "n") == (
        '{"event":"mark","sequence_number":"12","stream_sid":"<sid>","mark":{"name":"n"}}'
    )
    assert encode_stop(40, "<sid>", "<call>", "<account>", "callended") == (
        '{"event":"stop","sequence_number":"40","stream_sid":"<sid>","stop":{"call_sid":"<call>",'
        '"account_sid":"<account>","reason":"callended"}}'
    )


@pytest.mark.parametrize(("rate", "bit_rate"), [(8000, "128kbps"), (16000, "256kbps"), (24000, "384kbps")])
def test_bit_rate_follows_sample_rate(rate: int, bit_rate: str) -> None:
    info = start_info(rate)
    assert info.bit_rate == bit_rate
    fmt = json.loads(encode_start(1, info))["start"]["media_format"]
    assert fmt == {"encoding": "base64", "sample_rate": str(rate), "bit_rate": bit_rate}


@pytest.mark.parametrize("rate", [0, 11025, 22050, 44100, 48000, -8000])
def test_start_info_rejects_other_rates(rate: int) -> None:
    with pytest.raises(ValueError, match="sample_rate"):
        start_info(rate)


def test_start_info_requires_strings() -> None:
    with pytest.raises(TypeError):
        StartInfo(SID, 123, ACCOUNT, "a", "b")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        StartInfo(SID, CALL, ACCOUNT, "a", "b", {"n": 1})  # type: ignore[dict-item]


def test_start_info_snapshots_custom_parameters() -> None:
    params = {"k": "v"}
    info = start_info(custom=params)
    params["k"] = "changed"
    params["x"] = "y"
    assert dict(info.custom_parameters) == {"k": "v"}
    assert json.loads(encode_start(1, info))["start"]["custom_parameters"] == {"k": "v"}
    with pytest.raises(TypeError):
        info.custom_parameters["k"] = "w"  # type: ignore[index]


def test_start_ids_always_present_even_when_empty() -> None:
    start = json.loads(encode_start(1, StartInfo("", "", "", "", "")))["start"]
    for key in ("stream_sid", "call_sid", "account_sid"):
        assert start[key] == ""


def test_no_camel_case_even_with_camel_case_custom_parameter_values() -> None:
    text = encode_start(1, start_info(custom={"streamSid": "x"}))
    parsed = json.loads(text)
    assert "streamSid" not in parsed and "callSid" not in parsed["start"]
    assert "sequenceNumber" not in text and "mediaFormat" not in text and "customParameters" not in text


@pytest.mark.parametrize(
    "sid",
    [SID, "", 'a"b', "back\\slash", "tab\tnl\n", "ünïcødé", "emoji \U0001f600", "\x00\x1f", "\ud800"],
)
@pytest.mark.parametrize("size", [0, 2, 320, 1600, 3200, 4800])
def test_fast_media_equals_json_dumps(sid: str, size: int) -> None:
    pcm = bytes(range(256)) * (size // 256) + bytes(size % 256)
    expected = json.dumps(
        {
            "event": "media",
            "sequence_number": "123456",
            "stream_sid": sid,
            "media": {
                "chunk": "123455",
                "timestamp": "12345500",
                "payload": base64.b64encode(pcm).decode("ascii"),
            },
        },
        separators=(",", ":"),
    )
    assert encode_media(123456, sid, 123455, 12345500, pcm) == expected
    assert MediaEncoder(sid)(123456, 123455, 12345500, pcm) == expected


@given(
    sid=st.text(),
    seq=st.integers(min_value=0, max_value=2**63),
    chunk=st.integers(min_value=0, max_value=2**63),
    ts=st.integers(min_value=0, max_value=2**63),
    pcm=st.binary(max_size=4000),
)
def test_fast_media_equals_json_dumps_property(sid: str, seq: int, chunk: int, ts: int, pcm: bytes) -> None:
    golden = {
        "event": "media",
        "sequence_number": str(seq),
        "stream_sid": sid,
        "media": {"chunk": str(chunk), "timestamp": str(ts), "payload": base64.b64encode(pcm).decode()},
    }
    encoded = encode_media(seq, sid, chunk, ts, pcm)
    assert encoded == json.dumps(golden, separators=(",", ":"))
    assert json.loads(encoded) == golden


@given(pcm=st.binary(max_size=2000).filter(lambda b: len(b) % 2 == 0), sid=st.text(max_size=40))
def test_media_round_trips_through_the_bot_decoder(pcm: bytes, sid: str) -> None:
    # An echo bot sends our own media object back; it must decode to the same PCM.
    assert decode_bot_message(encode_media(7, sid, 3, 300, pcm)) == BotMedia(pcm, sid)


# -- bot -> bridge -----------------------------------------------------------------------------

Expected = BotMedia | BotMark | BotClear | BotIgnored | str  # a str is a ProtocolError kind

INBOUND: dict[str, Expected] = {
    # Exotel: the contract's three bot messages, and the echobot's echo of our media object.
    "in_exotel_media.json": BotMedia(PCM, SID),
    "in_exotel_echobot_media.json": BotMedia(PCM, SID),
    "in_exotel_mark.json": BotMark("turn-3-end", SID),
    "in_exotel_clear.json": BotClear(SID),
    # The echobot answers each event with the same event; a clear from a bot is always a command
    # (the bridge never sends clear, so it cannot be an echo of ours) and a mark is queued.
    "in_echobot_clear_echo.json": BotClear(SID),
    "in_echobot_mark_echo.json": BotMark("turn-3-end", SID),
    "in_echobot_dtmf_echo.json": BotIgnored("dtmf", "bridge-to-bot event sent by the bot"),
    "in_bot_connected.json": BotIgnored("connected", "bridge-to-bot event sent by the bot"),
    "in_bot_start.json": BotIgnored("start", "bridge-to-bot event sent by the bot"),
    "in_bot_stop.json": BotIgnored("stop", "bridge-to-bot event sent by the bot"),
    "in_unknown_event.json": BotIgnored("transfer", "unknown event"),
    # Pipecat's ExotelFrameSerializer: streamSid up to 1.7.0, stream_sid after.
    "in_pipecat_17_media_streamSid.json": BotMedia(PCM_1234, SID),
    "in_pipecat_17_clear_streamSid.json": BotClear(SID),
    "in_pipecat_18_media_stream_sid.json": BotMedia(PCM_1234, SID),
    "in_pipecat_18_clear_stream_sid.json": BotClear(SID),
    # Twilio-like: camelCase, integer counters, extra track; all extras ignored.
    "in_twilio_like_media_int_counters.json": BotMedia(PCM, SID),
    "in_twilio_like_mark.json": BotMark("m1", SID),
    "in_media_no_stream_sid.json": BotMedia(PCM, None),
    "in_media_other_stream_sid.json": BotMedia(PCM, "MZ-someone-else"),
    "in_media_empty_payload.json": BotMedia(b"", SID),
    "in_media_unpadded_base64.json": BotMedia(b"\x10\x00\x20\x00", SID),
    "in_media_extra_keys.json": BotMedia(PCM, SID),
    # Valid JSON that breaks the contract: counted and dropped by the session.
    "in_missing_event.json": "missing_event",
    "in_event_not_string.json": "missing_event",
    "in_not_object.json": "not_object",
    "in_bad_base64.json": "bad_base64",
    "in_bad_base64_urlsafe.json": "bad_base64",
    "in_odd_payload.json": "odd_length",
    "in_media_no_payload.json": "bad_media",
    "in_media_payload_not_string.json": "bad_media",
    "in_media_not_object.json": "bad_media",
    "in_mark_no_name.json": "bad_mark",
    "in_mark_name_not_string.json": "bad_mark",
}


def _check_decode(frame: str | bytes, expected: Expected) -> None:
    if isinstance(expected, str):
        with pytest.raises(ProtocolError) as info:
            decode_bot_message(frame)
        assert info.value.kind == expected
    else:
        assert decode_bot_message(frame) == expected


@pytest.mark.parametrize(("name", "expected"), INBOUND.items(), ids=list(INBOUND))
def test_inbound_golden(name: str, expected: Expected) -> None:
    frame = golden_frame(name)
    _check_decode(frame, expected)
    # Whitespace and key spelling aside, the same message compacted decodes the same way.
    _check_decode(json.dumps(json.loads(frame), separators=(",", ":")), expected)


def test_every_inbound_golden_file_is_covered() -> None:
    assert {p.name for p in GOLDEN.glob("in_*.json")} == set(INBOUND)


def test_stream_sid_spelling_precedence() -> None:
    both = json.dumps({"event": "clear", "stream_sid": "snake", "streamSid": "camel"})
    assert decode_bot_message(both) == BotClear("snake")
    not_str = json.dumps({"event": "clear", "stream_sid": 5})
    assert decode_bot_message(not_str) == BotClear(None)
    null_snake = json.dumps({"event": "clear", "stream_sid": None, "streamSid": "camel"})
    assert decode_bot_message(null_snake) == BotClear("camel")


@pytest.mark.parametrize(
    "frame",
    [
        "",
        " ",
        "{",
        '{"event":"media"',
        "{'event': 'media'}",
        '{"event":"clear"} trailing',
        '{"event":"clear"}{"event":"clear"}',
        "nul",
        "\ufeff{}",
        '{"event":"media","media":{"payload":"AAAA"},}',
        "[" * 100_000 + "]" * 100_000,  # deep nesting: RecursionError inside json
        '{"event":"media","n":' + "9" * 5000 + "}",  # int longer than Python's digit limit
    ],
    ids=lambda f: repr(f[:30]),
)
def test_invalid_json(frame: str) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_bot_message(frame)
    assert info.value.kind == "invalid_json"
    assert isinstance(info.value.__cause__, ValueError | RecursionError)


@pytest.mark.parametrize("frame", ["null", "1", '"media"', "true", "[]", '[{"event":"clear"}]'])
def test_json_that_is_not_an_object(frame: str) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_bot_message(frame)
    assert info.value.kind == "not_object"


@pytest.mark.parametrize(
    "frame",
    [
        golden_frame("in_exotel_media.json").encode(),
        b'{"event":"clear"}',
        b"",
        b"\x00\xff\xfe",
        bytearray(b'{"event":"clear"}'),
    ],
)
def test_binary_frame_is_not_text(frame: bytes) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_bot_message(frame)
    assert info.value.kind == "not_text"


def _media_frame_of_size(size: int) -> str:
    """A valid media message of exactly `size` characters (padding goes into an ignored key)."""
    head = '{"event":"media","stream_sid":"s","media":{"payload":"AAAAAA=="},"pad":"'
    return head + "x" * (size - len(head) - 2) + '"}'


def test_huge_payload_is_too_large() -> None:
    limit = 1 << 20
    at_limit = _media_frame_of_size(limit)
    assert len(at_limit) == limit
    assert decode_bot_message(at_limit) == BotMedia(bytes(4), "s")
    over = _media_frame_of_size(limit + 1)
    with pytest.raises(ProtocolError) as info:
        decode_bot_message(over)
    assert info.value.kind == "too_large"
    # A huge genuine payload (4 MiB of audio) is refused before any parsing or base64 work.
    huge = json.dumps({"event": "media", "media": {"payload": base64.b64encode(bytes(4 << 20)).decode()}})
    with pytest.raises(ProtocolError) as info:
        decode_bot_message(huge)
    assert info.value.kind == "too_large"
    with pytest.raises(ProtocolError) as info:
        decode_bot_message(huge.encode())
    assert info.value.kind == "too_large"


def test_size_limit_is_inclusive_and_configurable() -> None:
    frame = json.dumps({"event": "media", "media": {"payload": base64.b64encode(bytes(3200)).decode()}})
    assert decode_bot_message(frame, max_bytes=len(frame)) == BotMedia(bytes(3200))
    with pytest.raises(ProtocolError) as info:
        decode_bot_message(frame, max_bytes=len(frame) - 1)
    assert info.value.kind == "too_large"


def test_size_limit_counts_utf8_bytes_not_characters() -> None:
    frame = json.dumps({"event": "clear", "note": "é" * 100}, ensure_ascii=False)
    assert len(frame) < 200 < len(frame.encode())
    with pytest.raises(ProtocolError) as info:
        decode_bot_message(frame, max_bytes=200)
    assert info.value.kind == "too_large"
    assert decode_bot_message(frame, max_bytes=len(frame.encode())) == BotClear(None)


@pytest.mark.parametrize("size", [0, 2, 160, 320, 640, 1600, 3200, 32000, 100 * 1024])
def test_media_accepts_any_even_length(size: int) -> None:
    pcm = bytes(i & 0xFF for i in range(size))
    frame = json.dumps(
        {"event": "media", "stream_sid": SID, "media": {"payload": base64.b64encode(pcm).decode()}}
    )
    assert decode_bot_message(frame) == BotMedia(pcm, SID)


@pytest.mark.parametrize("size", [1, 3, 641, 3201])
def test_media_rejects_odd_length(size: int) -> None:
    frame = json.dumps({"event": "media", "media": {"payload": base64.b64encode(bytes(size)).decode()}})
    with pytest.raises(ProtocolError) as info:
        decode_bot_message(frame)
    assert info.value.kind == "odd_length"


@pytest.mark.parametrize("pcm", [b"\x10\x00", b"\x10\x00\x20\x00", bytes(6), PCM])
def test_media_accepts_missing_padding(pcm: bytes) -> None:
    unpadded = base64.b64encode(pcm).decode().rstrip("=")
    frame = json.dumps({"event": "media", "media": {"payload": unpadded}})
    assert decode_bot_message(frame) == BotMedia(pcm)


@pytest.mark.parametrize(
    "payload",
    [
        "A",  # 4n+1 characters can never be base64
        "AAAAA",
        "AA AA",  # whitespace
        "AAAA\nAAAA",
        "AA==AA==",  # data after padding
        "=AAA",
        "A=AA",
        "-_-_",  # URL-safe alphabet
        "AAA*",
        "ÄÄÄÄ",  # non-ASCII
        "AAAA\x00",
    ],
)
def test_media_rejects_bad_base64(payload: str) -> None:
    frame = json.dumps({"event": "media", "media": {"payload": payload}})
    with pytest.raises(ProtocolError) as info:
        decode_bot_message(frame)
    assert info.value.kind == "bad_base64"
    assert isinstance(info.value.__cause__, ValueError)


def test_bad_base64_cause_is_binascii_error() -> None:
    with pytest.raises(ProtocolError) as info:
        decode_bot_message(golden_frame("in_bad_base64.json"))
    assert isinstance(info.value.__cause__, binascii.Error)


def test_ignored_event_name_is_bounded() -> None:
    result = decode_bot_message(json.dumps({"event": "x" * 10_000}))
    assert isinstance(result, BotIgnored)
    assert result.event == "x" * 64


def test_event_names_are_case_sensitive() -> None:
    assert decode_bot_message('{"event":"MEDIA"}') == BotIgnored("MEDIA", "unknown event")
    assert decode_bot_message('{"event":"Clear"}') == BotIgnored("Clear", "unknown event")


def test_mark_name_may_be_empty_or_unicode() -> None:
    assert decode_bot_message('{"event":"mark","mark":{"name":""}}') == BotMark("")
    assert decode_bot_message('{"event":"mark","mark":{"name":"ターン"}}') == BotMark("ターン")


def test_protocol_error_is_a_value_error_with_kind() -> None:
    err = ProtocolError("too_large", "2 MiB")
    assert isinstance(err, ValueError)
    assert err.kind == "too_large"
    assert str(err) == "too_large: 2 MiB"
    assert str(ProtocolError("not_text")) == "not_text"


def test_decoded_events_are_frozen() -> None:
    media = BotMedia(b"\x00\x00", SID)
    with pytest.raises(AttributeError):
        media.payload = b""  # type: ignore[misc]
    assert not hasattr(media, "__dict__")


@given(name=st.text(), sid=st.text(min_size=1), seq=st.integers(min_value=1, max_value=2**40))
def test_an_unnumbered_message_takes_its_number_where_the_encoder_puts_it(
    name: str, sid: str, seq: int,
) -> None:
    """The native sender numbers the call's events through number_slot's template: whatever a
    bot put in a mark's name (quotes, the field's own text), the template rendered with a number
    is exactly what the encoder makes with that number."""
    for unnumbered, numbered in (
        (encode_mark(UNNUMBERED, sid, name), encode_mark(seq, sid, name)),
        (encode_dtmf(UNNUMBERED, sid, "5", 100), encode_dtmf(seq, sid, "5", 100)),
        (encode_stop(UNNUMBERED, sid, name, name, "stopped"), encode_stop(seq, sid, name, name, "stopped")),
    ):
        assert render(number_slot(unnumbered), seq=seq) == numbered


def test_a_mark_named_like_the_field_is_still_cut_at_the_field() -> None:
    text = encode_mark(UNNUMBERED, "s", '"sequence_number":"0"')
    assert render(number_slot(text), seq=9) == encode_mark(9, "s", '"sequence_number":"0"')
