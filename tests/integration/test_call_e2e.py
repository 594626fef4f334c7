"""End to end with real processes: the bridge (`python -m bridge run`), a real WebSocket bot
server, and a real pjsua2 caller process. Assertions are on content: the PCM and events the bot
receives, and the audio the caller hears."""

from __future__ import annotations

import asyncio
import base64
import time
import wave
from pathlib import Path

import numpy as np
import pytest

from bridge.audio.g711 import ulaw_decode, ulaw_encode
from bridge.tools.testcaller import echo_match, sample_utterance
from tests.botlib import Stream, TestBot, tone
from tests.bridgelib import BridgeProcess, run_test_caller

pytestmark = pytest.mark.timeout(120)


def read_wav(path: str | Path) -> np.ndarray:
    with wave.open(str(path)) as wav:
        return np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").astype(np.float64)


def tone_seconds(samples: np.ndarray, freq: float, rate: int = 8000, window_ms: int = 20) -> float:
    """How long `freq` dominates the signal (sum of 20 ms windows where it does)."""
    n = rate * window_ms // 1000
    count = 0
    for i in range(0, len(samples) - n + 1, n):
        w = samples[i : i + n]
        if np.sqrt(np.mean(w**2)) < 300:
            continue
        spectrum = np.abs(np.fft.rfft(w * np.hanning(n)))
        if abs(np.argmax(spectrum) * rate / n - freq) <= rate / n:
            count += 1
    return count * window_ms / 1000


def exact_fraction(received: bytes, reference: bytes, window: int = 320) -> float:
    """Fraction of voiced 20 ms windows of `received` that occur bit-exactly in `reference`."""
    ref = reference + reference  # the sender may loop its file
    voiced = exact = 0
    for i in range(0, len(received) - window + 1, window):
        piece = received[i : i + window]
        samples = np.frombuffer(piece, dtype="<i2")
        if np.abs(samples.astype(np.int32)).max() < 200:
            continue
        voiced += 1
        exact += ref.find(piece) >= 0
    return exact / voiced if voiced else 0.0


def test_pcm_to_bot_is_the_exact_g711_decode_and_echo_comes_back(tmp_path: Path) -> None:
    """Caller audio reaches the bot bit-exact (8 kHz PCMU -> 8 kHz socket) and the bot's echo
    reaches the caller."""
    utterance = sample_utterance()
    with TestBot(echo=True) as bot, BridgeProcess(tmp_path, bot.url) as bridge:
        result = run_test_caller(bridge.uri, tmp_path, hold=0.5)
        stream = bot.wait_closed()
    assert result["answered"] and result["codec"] == "PCMU"
    # What went on the wire is the mu-law encoding of the utterance; its decode is the reference.
    reference = ulaw_decode(ulaw_encode(utterance))
    assert exact_fraction(stream.pcm(), reference) >= 0.95
    heard = Path(result["heard_path"]).read_bytes()[44:]
    echo = echo_match(utterance, heard, int(result["said_at_s"] * 16000))
    assert echo.matched >= 0.8, echo
    assert 20 <= echo.delay_ms <= 400, echo


def test_event_order_fields_and_counters(tmp_path: Path) -> None:
    with TestBot() as bot, BridgeProcess(tmp_path, bot.url + "?sample-rate=8000&campaign=spring") as bridge:
        run_test_caller(bridge.uri, tmp_path, hold=0.2,
                        headers={"X-Customer-Id": "c-42", "X-Other": "o", "Y-Hidden": "no"})
        stream = bot.wait_closed()
        summary = bridge.wait_summaries()[0]
    names = stream.names
    assert names[0] == "connected" and names[1] == "start" and names[-1] == "stop"
    assert set(names[2:-1]) <= {"media", "dtmf", "mark"}
    assert stream.close_code == 1000
    start = stream.start
    assert start["sequence_number"] == "1"
    info = start["start"]
    for key in ("stream_sid", "call_sid", "account_sid"):
        assert isinstance(info[key], str) and info[key]
    assert info["stream_sid"] == start["stream_sid"]
    assert info["call_sid"] and "@" not in info["from"]
    assert info["media_format"] == {"encoding": "base64", "sample_rate": "8000", "bit_rate": "128kbps"}
    params = info["custom_parameters"]
    assert params["campaign"] == "spring"
    assert params["X-Customer-Id"] == "c-42" and params["X-Other"] == "o"
    assert "Y-Hidden" not in params
    # One sequence over every message after connected; chunk counts media; timestamp = ms so far.
    seqs = [int(e.msg["sequence_number"]) for e in stream.events[1:]]
    assert seqs == list(range(1, len(seqs) + 1))
    media = stream.of("media")
    assert [int(m["media"]["chunk"]) for m in media] == list(range(1, len(media) + 1))
    full = [m for m in media if len(base64.b64decode(m["media"]["payload"])) == 1600]
    assert len(full) >= len(media) - 1  # only the last chunk may be short (flushed at the end)
    assert [int(m["media"]["timestamp"]) for m in full] == [100 * (i + 1) for i in range(len(full))]
    for event in stream.events:
        for value in _scalars(event.msg):
            assert isinstance(value, str)
    assert stream.of("stop")[0]["stop"]["reason"] == "callended"
    assert stream.of("stop")[0]["stop"]["call_sid"] == info["call_sid"]
    assert summary["ended_by"] == "remote" and summary["stop_reason"] == "callended"


def _scalars(obj: object) -> list[object]:
    if isinstance(obj, dict):
        return [v for value in obj.values() for v in _scalars(value)]
    if isinstance(obj, list):
        return [v for value in obj for v in _scalars(value)]
    return [obj]


def test_bot_audio_plays_to_caller_and_marks_follow_playback(tmp_path: Path) -> None:
    """2 s of tone sent as a fast burst: the caller hears 2 s of tone; the mark after it comes
    back only once the tone has been played (not when queued); a mark with nothing queued comes
    back at once."""
    marks: dict[str, float] = {}

    async def script(stream: Stream) -> None:
        await asyncio.sleep(0.3)
        marks["sent-idle"] = time.monotonic()
        await stream.mark("idle")
        await asyncio.sleep(0.3)
        await stream.send_audio(tone(1000, 2.0), chunk_bytes=3200)
        marks["sent-tone"] = time.monotonic()
        await stream.mark("after-tone")

    with TestBot(script) as bot, BridgeProcess(tmp_path, bot.url) as bridge:
        result = run_test_caller(bridge.uri, tmp_path, silent=True, hold=4.0)
        stream = bot.wait_closed()
    got = stream.mark_times()
    assert list(got) == ["idle", "after-tone"]  # only answers, in order
    assert got["idle"] - marks["sent-idle"] < 0.1
    lag = got["after-tone"] - marks["sent-tone"]
    assert 1.9 <= lag <= 2.0 + 0.06 + 0.25, lag  # tone length + prebuffer + slack
    heard = read_wav(result["heard_path"])
    assert 1.8 <= tone_seconds(heard, 1000) <= 2.2


def test_clear_drops_queued_audio_and_answers_pending_marks(tmp_path: Path) -> None:
    sent: dict[str, float] = {}

    async def script(stream: Stream) -> None:
        await asyncio.sleep(0.3)
        await stream.send_audio(tone(1000, 5.0), chunk_bytes=16000)
        await stream.mark("end-of-tone")
        await asyncio.sleep(1.0)
        sent["clear"] = time.monotonic()
        await stream.clear()

    with TestBot(script) as bot, BridgeProcess(tmp_path, bot.url) as bridge:
        result = run_test_caller(bridge.uri, tmp_path, silent=True, hold=4.0)
        stream = bot.wait_closed()
    got = stream.mark_times()
    assert "end-of-tone" in got
    assert got["end-of-tone"] - sent["clear"] < 0.1  # answered at the clear, not after 5 s
    heard = read_wav(result["heard_path"])
    played = tone_seconds(heard, 1000)
    assert 0.8 <= played <= 1.2, played  # about 1 s played, then silence


@pytest.mark.parametrize("method", ["rfc4733", "info"])
def test_dtmf_reaches_bot_in_order(tmp_path: Path, method: str) -> None:
    with TestBot() as bot, BridgeProcess(tmp_path, bot.url) as bridge:
        run_test_caller(bridge.uri, tmp_path, silent=True, digits="19*#0", dtmf_method=method, hold=1.5)
        stream = bot.wait_closed()
    assert stream.dtmf() == "19*#0"
    for msg in stream.of("dtmf"):
        assert msg["dtmf"]["duration"].isdigit()


def test_unreachable_bot_can_redirect_to_a_fallback(tmp_path: Path) -> None:
    fallback = {"action": "transfer", "transfer_to": "sip:agents@127.0.0.1:5999"}
    overrides = {"bot": {"connect_timeout": 1, "connect_retries": 0, "on_unreachable": fallback}}
    with BridgeProcess(tmp_path, "ws://127.0.0.1:9/bot", overrides) as bridge:
        result = run_test_caller(bridge.uri, tmp_path, silent=True, hold=0.1)
        summary = bridge.wait_summaries()[0]
    assert result["end_code"] == 302
    assert summary["outcome"] == "redirected"


def test_bot_url_from_an_invite_header_when_its_host_is_allowed(tmp_path: Path) -> None:
    with TestBot() as default_bot, TestBot() as chosen_bot:
        overrides = {"bot": {"url_header": "X-Bot-Url", "url_header_allowed_hosts": ["127.0.0.1"]}}
        with BridgeProcess(tmp_path, default_bot.url, overrides) as bridge:
            run_test_caller(bridge.uri, tmp_path, silent=True, hold=0.2,
                            headers={"X-Bot-Url": chosen_bot.url + "?lang=de"})
            stream = chosen_bot.wait_closed()
            assert stream.start["start"]["custom_parameters"]["lang"] == "de"
            assert not default_bot.streams
        overrides = {"bot": {"url_header": "X-Bot-Url", "url_header_allowed_hosts": ["bots.example.com"]}}
        with BridgeProcess(tmp_path, default_bot.url, overrides) as bridge:
            run_test_caller(bridge.uri, tmp_path, silent=True, hold=0.2,
                            headers={"X-Bot-Url": chosen_bot.url + "?lang=fr"})
            default_bot.wait_closed()
            assert len(chosen_bot.streams) == 1  # the disallowed host was not contacted


def test_16k_socket_resamples_both_ways(tmp_path: Path) -> None:
    utterance = sample_utterance()
    with TestBot(echo=True) as bot, BridgeProcess(tmp_path, bot.url + "?sample-rate=16000") as bridge:
        result = run_test_caller(bridge.uri, tmp_path, hold=0.5)
        stream = bot.wait_closed()
    info = stream.start["start"]
    assert info["media_format"]["sample_rate"] == "16000" and info["media_format"]["bit_rate"] == "256kbps"
    sizes = {len(base64.b64decode(m["media"]["payload"])) for m in stream.of("media")[:-1]}
    assert sizes == {3200}  # 100 ms at 16 kHz
    heard = Path(result["heard_path"]).read_bytes()[44:]
    echo = echo_match(utterance, heard, int(result["said_at_s"] * 16000))
    assert echo.median_corr >= 0.9, echo


def test_big_messages_are_accepted_with_a_warning_and_oversize_ones_close_with_1009(tmp_path: Path) -> None:
    """A 200 KB media message plays (with a warning); one over the hard limit (1 MiB) closes the
    socket with 1009, and the call ends per profile (hang-up)."""
    async def script(stream: Stream) -> None:
        await asyncio.sleep(0.3)
        await stream.send_audio(tone(440, 12.5), chunk_bytes=200_000)  # 200 KB: 12.5 s in one message
        await asyncio.sleep(0.5)
        await stream.send_audio(bytes(800_000), chunk_bytes=800_000)  # base64: ~1.07 MB of JSON

    with TestBot(script) as bot, BridgeProcess(tmp_path, bot.url) as bridge:
        result = run_test_caller(bridge.uri, tmp_path, silent=True, hold=10.0)
        stream = bot.wait_closed()
        summary = bridge.wait_summaries()[0]
        warnings = [r["msg"] for r in bridge.records() if r["level"] == "warning"]
    assert stream.close_code == 1009
    assert any("over 102400 bytes (accepted" in w for w in warnings)
    assert result["ended_by"] == "remote"  # the bridge hung up
    assert summary["bot_media_messages"] == 1
