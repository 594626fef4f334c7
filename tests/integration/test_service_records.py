"""Logs and call records of real calls: the one summary record per call, the ids on every line of
a call, and WAV recordings whose channels hold what each side sent."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
import wave
from pathlib import Path

import numpy as np
import pytest

from bridge.audio.g711 import ulaw_decode, ulaw_encode
from bridge.tools.testcaller import sample_utterance
from tests.botlib import Stream, TestBot, tone
from tests.bridgelib import BridgeProcess, run_test_caller
from tests.integration.test_call_e2e import exact_fraction, tone_seconds

pytestmark = pytest.mark.timeout(120)


def read_channels(path: str | Path) -> tuple[int, int, np.ndarray]:
    with wave.open(str(path)) as wav:
        rate, channels = wav.getframerate(), wav.getnchannels()
        samples = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
    return rate, channels, samples.reshape(-1, channels)


def test_one_summary_record_per_call_with_every_field(tmp_path: Path) -> None:
    with TestBot(echo=True) as bot, BridgeProcess(tmp_path, bot.url) as bridge:
        started = time.time()
        result = run_test_caller(bridge.uri, tmp_path, hold=0.5, digits="42", wav=speech(tmp_path, 2.0)[0])
        stream = bot.wait_closed()
        summary = bridge.wait_summaries()[0]
        time.sleep(0.3)
        records = bridge.records()
    info = stream.start["start"]
    assert summary["call_sid"] == info["call_sid"] and summary["stream_sid"] == stream.stream_sid
    assert summary["level"] == "info" and summary["logger"] == "bridge.call"
    assert (summary["from"], summary["to"]) == (info["from"], info["to"])
    start = time.mktime(time.strptime(summary["start"][:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone
    assert abs(start - started) < 3
    assert summary["duration_s"] == pytest.approx(result["heard_s"], abs=0.5)
    assert summary["hung_up_by"] == "caller" and summary["end_cause"] == "caller_hangup"
    assert summary["end_reason"] == "caller hung up" and summary["sip_status"] == 200
    assert summary["codec"] == "PCMU" and summary["dtmf"] == "42"
    frames = summary["duration_s"] * 50
    assert frames * 0.9 <= summary["frames_from_caller"] <= frames * 1.1
    assert summary["frames_to_caller"] > frames * 0.7  # the echo, played back
    assert summary["underruns"] == 0 and summary["media_drops"] == 0
    assert summary["rtp_rx_packets"] > frames * 0.9 and summary["rtp_rx_lost"] == 0
    assert summary["rtp_loss_pct"] == 0 and 0 <= summary["jitter_ms"] < 20
    assert summary["bytes_to_bot"] > summary["bytes_from_bot"] > 0
    assert 0 < summary["setup_ms"] < 2000 and 0 <= summary["bot_connect_ms"] < 1000
    assert summary["recording"] == ""
    # Exactly one summary, and every line about this call carries both ids.
    call_lines = [r for r in records if r.get("call_sid") == info["call_sid"]]
    assert [r.get("event") for r in call_lines].count("call_summary") == 1
    assert len(call_lines) >= 5
    assert all(r.get("stream_sid") == stream.stream_sid for r in call_lines), \
        [r["msg"] for r in call_lines if r.get("stream_sid") != stream.stream_sid]
    assert any(r["msg"].startswith("INVITE from") for r in call_lines)


def speech(tmp_path: Path, seconds: float) -> tuple[Path, bytes]:
    """The first `seconds` of the sample sentence, as a WAV for the test caller and as PCM."""
    pcm = sample_utterance()[: int(seconds * 8000) * 2]
    path = tmp_path / f"speech-{seconds:g}.wav"
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(8000)
        wav.writeframes(pcm)
    return path, pcm


def test_stereo_recording_holds_the_caller_left_and_the_bot_right(tmp_path: Path) -> None:
    """The caller speaks for 3 s; the bot answers with 1.5 s of 1 kHz tone. The left channel is
    the caller's decoded audio bit for bit and no tone; the right is the tone only."""
    async def script(stream: Stream) -> None:
        await asyncio.sleep(1.0)
        await stream.send_audio(tone(1000, 1.5))

    recordings = tmp_path / "rec"
    overrides = {"recording": {"enabled": True, "dir": str(recordings)}}
    wav, utterance = speech(tmp_path, 3.0)
    with TestBot(script) as bot, BridgeProcess(tmp_path, bot.url, overrides) as bridge:
        run_test_caller(bridge.uri, tmp_path, hold=0.3, wav=wav)
        stream = bot.wait_closed()
        summary = bridge.wait_summaries()[0]
        saved = bridge.wait_log("recording saved")
        time.sleep(0.3)
        with urllib.request.urlopen(f"http://127.0.0.1:{bridge.control_port}/status", timeout=5) as response:
            in_memory = json.loads(response.read())["calls_in_memory"]
    assert in_memory == 0  # the recorded call, its recorder and channel are freed at once
    path = Path(summary["recording"])
    assert path.parent == recordings and path.suffix == ".wav" and path.exists()
    assert summary["call_sid"].replace("@", "_") in path.name and summary["stream_sid"] in path.name
    assert saved["stream_sid"] == summary["stream_sid"]
    assert not list(recordings.glob("*.part"))
    rate, channels, samples = read_channels(path)
    assert (rate, channels) == (8000, 2)
    seconds = len(samples) / rate
    assert summary["duration_s"] - 0.5 <= seconds <= summary["duration_s"] + 0.5
    caller = samples[:, 0].astype(np.float64)
    bot_side = samples[:, 1].astype(np.float64)
    # Left: exactly the caller audio the bot was sent (8 kHz socket: no resampling), and that is
    # the caller's speech.
    sent_to_bot = stream.pcm()
    assert len(sent_to_bot) > 2 * 8000 * 3
    assert samples[: len(sent_to_bot) // 2, 0].tobytes() == sent_to_bot
    reference = ulaw_decode(ulaw_encode(utterance))
    assert exact_fraction(samples[:, 0].tobytes(), reference) >= 0.9
    assert tone_seconds(caller, 1000) < 0.3
    assert 1.3 <= tone_seconds(bot_side, 1000) <= 1.7
    loud = np.abs(samples[:, 1].astype(np.int32)) > 300
    in_tone = np.flatnonzero(loud)
    assert (in_tone[-1] - in_tone[0]) / rate == pytest.approx(1.5, abs=0.1)  # nothing but the tone


def test_recording_channels_are_aligned_and_mixed_layout_is_mono(tmp_path: Path) -> None:
    """With an echo bot the right channel is the left one played back: the same samples, one
    chunk plus the playout delay later (both tracks run on the same 20 ms clock)."""
    recordings = tmp_path / "rec"
    overrides = {"recording": {"enabled": True, "dir": str(recordings)}}
    wav, _ = speech(tmp_path, 3.0)
    with TestBot(echo=True) as bot, BridgeProcess(tmp_path, bot.url, overrides) as bridge:
        run_test_caller(bridge.uri, tmp_path, hold=0.5, wav=wav)
        bot.wait_closed()
        stereo = Path(bridge.wait_summaries()[0]["recording"])
    _, _, samples = read_channels(stereo)
    left, right = samples[:, 0], samples[:, 1]
    assert np.abs(left[: 8000 * 3]).max() > 1000  # speech, so only the right lag can match
    span = 8000 * 3
    lags = [lag for lag in range(0, 4000, 160) if np.array_equal(left[:span], right[lag : lag + span])]
    assert len(lags) == 1, lags  # bit-exact, at a whole number of 20 ms frames
    assert 0.1 <= lags[0] / 8000 <= 0.3, lags  # chunk_ms 100 + prebuffer 60 + a tick or two



def test_mixed_layout_is_one_channel_with_both_sides(tmp_path: Path) -> None:
    async def script(stream: Stream) -> None:
        await asyncio.sleep(0.3)
        await stream.send_audio(tone(1000, 1.0))

    recordings = tmp_path / "rec"
    overrides = {"recording": {"enabled": True, "dir": str(recordings), "layout": "mixed"}}
    wav, _ = speech(tmp_path, 3.0)
    with TestBot(script) as bot, BridgeProcess(tmp_path, bot.url, overrides) as bridge:
        run_test_caller(bridge.uri, tmp_path, hold=0.3, wav=wav)
        bot.wait_closed()
        summary = bridge.wait_summaries()[0]
    rate, channels, samples = read_channels(summary["recording"])
    mono = samples[:, 0].astype(np.float64)
    assert (rate, channels) == (8000, 1)
    assert len(mono) / rate == pytest.approx(summary["duration_s"], abs=0.5)
    assert 0.5 <= tone_seconds(mono, 1000) <= 1.1  # the bot's tone (speech may mask a few windows)
    after_tone = mono[int(2.0 * rate) : int(3.5 * rate)]
    assert np.sqrt(np.mean(after_tone**2)) > 300  # and the caller's speech
