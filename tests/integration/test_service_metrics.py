"""The control listener of a real bridge process: /healthz, /readyz, /metrics (values move when
real calls happen), /status and `sip-ws-bridge status`."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bridge.tools.testcaller import echo_match, sample_utterance
from tests.botlib import Stream, TestBot, tone
from tests.bridgelib import REPO, BridgeProcess, free_port, run_test_caller

pytestmark = pytest.mark.timeout(120)

P = "sip_ws_bridge_"


def get(bridge: BridgeProcess, path: str) -> tuple[int, str, str]:
    url = f"http://127.0.0.1:{bridge.control_port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


class Metrics:
    def __init__(self, text: str) -> None:
        self.samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                self.samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value

    def __call__(self, name: str, **labels: str) -> float:
        key = (P + name, tuple(sorted(labels.items())))
        if key not in self.samples:
            raise KeyError(f"no sample {key}; have {sorted(k for k in self.samples if k[0] == P + name)}")
        return self.samples[key]


def scrape(bridge: BridgeProcess) -> Metrics:
    status, content_type, body = get(bridge, "/metrics")
    assert status == 200 and content_type.startswith("text/plain; version=0.0.4")
    return Metrics(body)


def in_thread(fn: Any) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: out.update(fn()))
    thread.start()
    return thread, out


def test_metrics_move_with_a_real_call(tmp_path: Path) -> None:
    """Before, during and after one echoed call with DTMF: every family the dashboard uses."""
    with TestBot(echo=True) as bot, BridgeProcess(tmp_path, bot.url) as bridge:
        before = scrape(bridge)
        assert before("active_calls", state="answered") == 0
        assert before("calls_total", outcome="answered", end_cause="caller_hangup") == 0
        assert before("max_calls") == 20 and before("accepting_calls") == 1
        assert before("registration_enabled") == 0
        thread, result = in_thread(
            lambda: run_test_caller(bridge.uri, tmp_path, hold=1.5, digits="12#", silent=True))
        bot.wait_stream()
        time.sleep(1.0)
        during = scrape(bridge)
        status = json.loads(get(bridge, "/status")[2])
        thread.join(60)
        summary = bridge.wait_summaries()[0]
        after = scrape(bridge)
        time.sleep(0.3)  # the call's task ends just after its summary record
        status_after = json.loads(get(bridge, "/status")[2])
    assert result["answered"]
    assert during("active_calls", state="answered") == 1
    assert during("caller_frames_total") > 0
    assert during("media_messages_total", direction="to_bot") > 0
    assert status["active_calls"] == 1 and status["calls"][0]["state"] == "answered"
    assert status["calls"][0]["call_sid"] == summary["call_sid"]
    assert status["calls"][0]["stream_sid"] == summary["stream_sid"]
    # The default media path: the clock thread hands frames to the C++ MediaPipe, not to Python.
    assert status["calls"][0]["media_path"] == "native"
    assert status["calls"][0]["caller_audio_via"] == "sender"
    assert status["calls_in_memory"] == 1
    # The finished call is freed at once, not left for a full garbage collection.
    assert status_after["active_calls"] == 0 and status_after["calls_in_memory"] == 0

    assert after("active_calls", state="answered") == 0
    assert after("invites_total") == 1
    assert after("calls_total", outcome="answered", end_cause="caller_hangup") == 1
    # Counters keep what the finished call did, and equal its summary record.
    assert after("caller_frames_total") == summary["frames_from_caller"] >= during("caller_frames_total")
    assert after("bot_frames_played_total") == summary["frames_to_caller"] > 0
    assert after("media_messages_total", direction="from_bot") == summary["bot_media_messages"] > 0
    assert after("websocket_sent_bytes_total") == summary["bytes_to_bot"] > 0
    assert after("bot_audio_received_bytes_total") == summary["bytes_from_bot"] > 0
    assert after("dtmf_digits_total", method="rfc4733") == 3
    assert after("call_setup_seconds_count") == 1
    assert 0 < after("call_setup_seconds_sum") < 2
    assert after("bot_connect_seconds_count") == 1
    assert after("call_duration_seconds_count") == 1
    assert after("rtp_received_packets_total") == summary["rtp_rx_packets"] > 50
    assert after("rtp_lost_packets_total") == 0
    assert after("rtp_jitter_seconds_count") == 1
    assert after("added_latency_seconds_count", direction="caller_to_bot") > 0
    assert after("playout_underruns_total") == summary["underruns"]


def test_underruns_overflow_and_playout_depth_are_counted(tmp_path: Path) -> None:
    """A bot that leaves a short gap (an underrun) and then floods a 1 s buffer (drops)."""
    depth: dict[str, float] = {}

    async def script(stream: Stream) -> None:
        await asyncio.sleep(0.3)
        await stream.send_audio(tone(500, 0.3))
        await asyncio.sleep(0.45)  # ran dry at ~0.36 s: audio again 90 ms later is an underrun
        await stream.send_audio(tone(500, 0.3))
        await asyncio.sleep(0.6)
        await stream.send_audio(tone(700, 3.0), chunk_bytes=8000)  # 3 s into a 1 s buffer

    overrides = {"bot": {"buffer_seconds": 1}}
    with TestBot(script) as bot, BridgeProcess(tmp_path, bot.url, overrides) as bridge:
        thread, _ = in_thread(lambda: run_test_caller(bridge.uri, tmp_path, hold=3.0, silent=True))
        bot.wait_stream()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not depth:
            metrics = scrape(bridge)
            if metrics("playout_buffered_seconds") > 0.5:
                depth["max"] = metrics("playout_buffered_seconds_max")
            time.sleep(0.05)
        thread.join(60)
        summary = bridge.wait_summaries()[0]
        after = scrape(bridge)
    assert 0.5 < depth["max"] <= 1.0
    assert after("playout_underruns_total") == summary["underruns"] >= 1
    assert after("playout_dropped_bytes_total") == summary["playout_dropped_bytes"] > 16000  # > 1 s


def test_rejections_by_reason_and_readiness_at_capacity(tmp_path: Path) -> None:
    """max_calls 1: a second INVITE gets 503 (over_capacity) and /readyz says why; a bot that
    cannot be reached counts as bot_unreachable."""
    with TestBot() as bot, BridgeProcess(tmp_path, bot.url, {"sip": {"max_calls": 1}}) as bridge:
        assert get(bridge, "/readyz")[:3:2] == (200, "ready\n")
        thread, _ = in_thread(lambda: run_test_caller(bridge.uri, tmp_path, hold=2.0, silent=True))
        bot.wait_stream()
        status, _, body = get(bridge, "/readyz")
        assert status == 503 and "at capacity (1/1 calls)" in body
        second = run_test_caller(bridge.uri, tmp_path, hold=0.1, silent=True)
        thread.join(60)
        metrics = scrape(bridge)
    assert second["end_code"] == 503
    assert metrics("rejected_invites_total", reason="over_capacity") == 1
    assert metrics("invites_total") == 1

    unreachable = {"bot": {"connect_timeout": 1, "connect_retries": 0}}
    with BridgeProcess(tmp_path, "ws://127.0.0.1:9/bot", unreachable) as bridge:
        run_test_caller(bridge.uri, tmp_path, hold=0.1, silent=True)
        bridge.wait_summaries()
        metrics = scrape(bridge)
        time.sleep(0.3)
        in_memory = json.loads(get(bridge, "/status")[2])["calls_in_memory"]
    assert metrics("rejected_invites_total", reason="bot_unreachable") == 1
    assert in_memory == 0  # the rejected call is freed at once, its connect error's traceback too
    assert metrics("calls_total", outcome="rejected", end_cause="bot_unreachable") == 1
    assert metrics("bot_connect_seconds_count") == 0


def test_health_and_readiness_while_registration_fails(tmp_path: Path) -> None:
    """Registering with a registrar that never answers: alive (/healthz 200) but not ready."""
    registrar = free_port()
    overrides = {"sip": {"register": {"registrar": f"sip:127.0.0.1:{registrar}", "username": "u",
                                      "password": "p"}}}
    with TestBot() as bot, BridgeProcess(tmp_path, bot.url, overrides) as bridge:
        assert get(bridge, "/healthz")[:3:2] == (200, "ok\n")
        status, _, body = get(bridge, "/readyz")
        metrics = scrape(bridge)
    assert status == 503 and ("registering with" in body or "not registered" in body), body
    assert metrics("registration_enabled") == 1 and metrics("registered") == 0


def test_control_listener_answers_only_what_it_knows(tmp_path: Path) -> None:
    with TestBot() as bot, BridgeProcess(tmp_path, bot.url) as bridge:
        assert get(bridge, "/nope")[0] == 404
        request = urllib.request.Request(f"http://127.0.0.1:{bridge.control_port}/metrics", method="POST")
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(request, timeout=5)
        assert info.value.code == 405
        head = urllib.request.Request(f"http://127.0.0.1:{bridge.control_port}/healthz", method="HEAD")
        with urllib.request.urlopen(head, timeout=5) as response:
            assert response.status == 200 and response.read() == b""


def test_control_listen_null_turns_it_off_and_a_taken_port_fails_clearly(tmp_path: Path) -> None:
    with TestBot() as bot:
        with BridgeProcess(tmp_path, bot.url, {"control": {"listen": None}}) as bridge:
            with pytest.raises(urllib.error.URLError):
                urllib.request.urlopen(f"http://127.0.0.1:{bridge.control_port}/healthz", timeout=2)
        with BridgeProcess(tmp_path, bot.url) as first:
            taken = {"control": {"listen": f"127.0.0.1:{first.control_port}"}}
            second = BridgeProcess(tmp_path, bot.url, taken)
            with pytest.raises(RuntimeError) as info:
                second.start()
    assert "exited with 69" in str(info.value)
    assert f"control listener cannot listen on 127.0.0.1:{first.control_port}" in str(info.value)


def test_status_command_shows_live_calls(tmp_path: Path) -> None:
    with TestBot(echo=True) as bot, BridgeProcess(tmp_path, bot.url) as bridge:
        thread, _ = in_thread(lambda: run_test_caller(bridge.uri, tmp_path, hold=3.0, silent=True))
        stream = bot.wait_stream()
        time.sleep(0.8)
        shown = subprocess.run(
            [sys.executable, "-m", "bridge", "status", "--profile", str(bridge.profile_path), "--once"],
            capture_output=True, text=True, cwd=REPO, timeout=30, check=False)
        raw = subprocess.run(
            [sys.executable, "-m", "bridge", "status", "--control", f"127.0.0.1:{bridge.control_port}",
             "--once", "--json"], capture_output=True, text=True, cwd=REPO, timeout=30, check=False)
        thread.join(60)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0].startswith("sip-ws-bridge ") and "profile test" in lines[0] and "ready" in lines[0]
    assert "1 active of 20" in lines[1]
    call_sid = stream.start["start"]["call_sid"]
    row = next(line for line in lines if line.startswith(call_sid[:24]))
    assert "answered" in row and "PCMU" in row
    assert json.loads(raw.stdout)["calls"][0]["stream_sid"] == stream.stream_sid


def test_status_command_without_a_bridge_says_what_to_check() -> None:
    port = free_port()
    command = [sys.executable, "-m", "bridge", "status", "--control", f"127.0.0.1:{port}", "--once"]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=30, check=False)
    assert result.returncode == 69
    assert f"cannot reach the bridge's control listener at 127.0.0.1:{port}" in result.stderr


def test_the_python_media_path_still_carries_a_call_when_forced(tmp_path: Path) -> None:
    """SIP_WS_BRIDGE_PY_MEDIA=1 (for comparisons) puts every call back on the Python port: the
    echo still comes back and marks still follow playback, and /status says which path it took."""
    forced = {"SIP_WS_BRIDGE_PY_MEDIA": "1"}
    with TestBot(echo=True) as bot, BridgeProcess(tmp_path, bot.url, env=forced) as bridge:
        thread, result = in_thread(lambda: run_test_caller(bridge.uri, tmp_path, hold=1.5))
        bot.wait_stream()
        time.sleep(1.0)
        status = json.loads(get(bridge, "/status")[2])
        thread.join(60)
        summary = bridge.wait_summaries()[0]
    assert status["calls"][0]["media_path"] == "python"
    assert status["calls"][0]["caller_audio_via"] == "loop"
    assert result["answered"]
    heard = Path(result["heard_path"]).read_bytes()[44:]
    echo = echo_match(sample_utterance(), heard, int(result["said_at_s"] * 16000))
    assert echo.matched >= 0.8, echo
    assert summary["frames_to_caller"] > 0


@pytest.mark.parametrize("writer", ["sender", "loop"])
def test_caller_audio_from_either_writer_is_one_ordered_stream(tmp_path: Path, writer: str) -> None:
    """With 20 ms chunks, caller audio goes to the bot from the native sender thread (or, with
    SIP_WS_BRIDGE_PY_SEND=1, from the loop). Either way the bot sees one sequence over media,
    DTMF and the stop, consecutive chunks with timestamps of 20 ms steps, and the bytes counted."""
    env = {"SIP_WS_BRIDGE_PY_SEND": "1"} if writer == "loop" else {}
    with TestBot() as bot, BridgeProcess(tmp_path, bot.url, {"bot": {"chunk_ms": 20}}, env=env) as bridge:
        thread, _ = in_thread(lambda: run_test_caller(bridge.uri, tmp_path, digits="12#", hold=1.5))
        bot.wait_stream()
        time.sleep(0.5)
        status = json.loads(get(bridge, "/status")[2])
        thread.join(60)
        stream = bot.wait_closed()
        summary = bridge.wait_summaries()[0]
    assert status["calls"][0]["caller_audio_via"] == writer
    names = stream.names
    assert names[:2] == ["connected", "start"] and names[-1] == "stop"
    seqs = [int(e.msg["sequence_number"]) for e in stream.events[1:]]
    assert seqs == list(range(1, len(seqs) + 1))
    assert stream.dtmf() == "12#"
    media = stream.of("media")
    assert len(media) >= 100  # over 2 s of audio in 20 ms chunks
    assert [int(m["media"]["chunk"]) for m in media] == list(range(1, len(media) + 1))
    assert [int(m["media"]["timestamp"]) for m in media] == [20 * (i + 1) for i in range(len(media))]
    assert all(len(base64.b64decode(m["media"]["payload"])) == 320 for m in media)
    assert summary["bytes_to_bot"] == sum(len(text.encode()) for text in stream.raw)
    assert summary["media_drops"] == 0
