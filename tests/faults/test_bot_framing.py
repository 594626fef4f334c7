"""What real bots expect of the stream: 20 ms `media` messages by default, a grace after `stop`
in which the bot may still send (its last echo) before the bridge closes, and out-of-place
messages logged once per call and kind and counted in the call summary and the metrics."""

from __future__ import annotations

import base64
import itertools
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from websockets.exceptions import ConnectionClosed

from tests.botlib import Stream, TestBot
from tests.bridgelib import BridgeProcess, run_test_caller
from tests.faults.faultlib import record

pytestmark = [pytest.mark.timeout(120)]


def bridge_with_defaults(tmp_path: Path, bot_url: str,
                         overrides: dict[str, Any] | None = None) -> BridgeProcess:
    """A bridge whose bot section leaves chunk_ms to the product's default."""
    bridge = BridgeProcess(tmp_path, bot_url, overrides)
    bridge.profile["bot"].pop("chunk_ms", None)
    bridge.profile_path.write_text(yaml.safe_dump(bridge.profile))
    return bridge.start()


def test_media_messages_are_20_ms_by_default(tmp_path: Path) -> None:
    """Exotel's integrations forward one message as one 20 ms frame to their model; with 100 ms
    chunks a model heard a fifth of the call, seconds late."""
    with TestBot(echo=True) as bot:
        bridge = bridge_with_defaults(tmp_path, bot.url)
        try:
            result = run_test_caller(bridge.uri, tmp_path, hold=1.0)
            stream = bot.wait_closed()
        finally:
            bridge.stop()
    assert result["answered"]
    media = stream.of("media")
    sizes = {len(base64.b64decode(m["media"]["payload"])) for m in media}
    stamps = [int(m["media"]["timestamp"]) for m in media]
    assert len(media) >= 50 and sizes == {320}, (len(media), sizes)
    assert all(b - a == 20 for a, b in itertools.pairwise(stamps)), stamps[:10]
    record("bot", "default framing: 20 ms media messages (320 bytes at 8 kHz)", injected=1)


def test_a_bot_may_send_its_last_echo_after_stop_then_the_bridge_closes_1000(tmp_path: Path) -> None:
    sent_after_stop: list[bool] = []

    async def echo_after_stop(stream: Stream) -> None:
        await stream.wait_for("stop", timeout=30)
        try:
            await stream.send({"event": "media", "stream_sid": stream.stream_sid,
                               "media": {"payload": base64.b64encode(b"\0" * 320).decode()}})
            sent_after_stop.append(True)
        except ConnectionClosed:
            sent_after_stop.append(False)

    with TestBot(echo_after_stop) as bot:
        bridge = bridge_with_defaults(tmp_path, bot.url)
        try:
            result = run_test_caller(bridge.uri, tmp_path, hold=0.5)
            stream = bot.wait_closed()
            summary = bridge.wait_summaries()[0]
        finally:
            bridge.stop()
    assert result["answered"]
    assert sent_after_stop == [True]
    assert stream.close_code == 1000
    assert summary["bot_ignored"] == {"after_stop": 1}, summary
    assert not [r for r in bridge.records() if r.get("levelname") in ("ERROR", "WARNING")
                and "after_stop" in r.get("msg", "")]


def test_out_of_place_bot_messages_are_logged_once_per_kind_and_counted(tmp_path: Path) -> None:
    async def odd_bot(stream: Stream) -> None:
        for _ in range(3):
            await stream.send({"event": "media", "stream_sid": "not-this-stream",
                               "media": {"payload": base64.b64encode(b"\0" * 320).decode()}})
            await stream.send({"event": "banana", "stream_sid": stream.stream_sid})
            await stream.send({"event": "start", "stream_sid": stream.stream_sid})

    with TestBot(odd_bot) as bot:
        bridge = bridge_with_defaults(tmp_path, bot.url)
        try:
            result = run_test_caller(bridge.uri, tmp_path, hold=1.0)
            bot.wait_closed()
            summary = bridge.wait_summaries()[0]
            with urllib.request.urlopen(f"http://127.0.0.1:{bridge.control_port}/metrics", timeout=5) as r:
                metrics = r.read().decode()
        finally:
            bridge.stop()
    assert result["answered"]
    assert summary["stream_sid_mismatches"] == 3, summary
    assert summary["bot_ignored"] == {"unknown": 3, "start": 3}, summary
    lines = [r["msg"] for r in bridge.records() if "streamSid that is not" in r.get("msg", "")
             or "bot message ignored" in r.get("msg", "")]
    assert len(lines) == 3, lines  # one per kind: mismatch, unknown, start
    assert "sip_ws_bridge_bot_stream_sid_mismatches_total 3.0" in metrics
    assert "sip_ws_bridge_bot_messages_ignored_total 6.0" in metrics
