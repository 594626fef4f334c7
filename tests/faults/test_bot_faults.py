"""Bots that fail: unreachable, closing, stalling, flooding, talking nonsense, deaf to pings.

Each fault is created for real (a refusing port, an HTTP error on the upgrade, a server that
never answers the handshake, a TCP abort, a socket nobody reads, ...) while, where it matters,
a second call to a healthy bot runs through the same bridge and must not notice anything.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import time
from pathlib import Path

import pytest

from bridge.tools.testcaller import echo_match, sample_utterance
from tests.botlib import Stream, TestBot, tone
from tests.bridgelib import run_test_caller
from tests.faults.faultlib import (
    Baseline,
    RawBot,
    background,
    joined,
    media_gaps,
    record,
    start_bridge,
    undisturbed,
)
from tests.integration.test_call_e2e import read_wav, tone_seconds

pytestmark = pytest.mark.timeout(180)

ROUTED = {"bot": {"url_header": "X-Bot-Url", "url_header_allowed_hosts": ["127.0.0.1"]}}


def routed(extra: dict[str, object] | None = None) -> dict[str, object]:
    """Profile overrides that let each call pick its bot with X-Bot-Url (host 127.0.0.1 only)."""
    out: dict[str, object] = {"bot": dict(ROUTED["bot"])}
    for key, value in (extra or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = {**out[key], **value}  # type: ignore[dict-item]
        else:
            out[key] = value
    return out


def healthy_call(bridge_uri: str, tmp_path: Path, hold: float) -> dict[str, object]:
    """A call that says the sample utterance to the echo bot and stays `hold` seconds more."""
    return run_test_caller(bridge_uri, tmp_path, hold=hold)


def check_healthy(result: dict[str, object], stream: Stream, seconds: float, chunk_ms: int = 100) -> int:
    """0 if the healthy call was undisturbed: every chunk in time, its echo heard, ended normally."""
    heard = Path(str(result["heard_path"])).read_bytes()[44:]
    echo = echo_match(sample_utterance(), heard, int(float(str(result["said_at_s"])) * 16000))
    checks = {
        "answered": bool(result["answered"]),
        "stream": undisturbed(stream, seconds=seconds, chunk_ms=chunk_ms),
        "echo": echo.matched >= 0.8,
        "stop": stream.of("stop")[0]["stop"]["reason"] == "callended",
    }
    if not all(checks.values()):
        print(f"healthy call disturbed: {checks} {media_gaps(stream, chunk_ms)} {echo}")
        return 1
    return 0


def test_unreachable_bots_are_rejected_while_another_call_goes_on(tmp_path: Path) -> None:
    """Refused, HTTP 403, HTTP 500 and a handshake that never completes: each attempt is retried
    once, then the INVITE is rejected with 503 (the caller never waits in dead air), while a
    call to a healthy bot on the same bridge carries on untouched."""
    with (
        TestBot(echo=True) as good,
        TestBot(reject_status=403) as b403,
        TestBot(reject_status=500) as b500,
        TestBot(hang_handshake=True) as hung,
    ):
        bridge = start_bridge(tmp_path, good.url, routed({"bot": {"connect_timeout": 1}}))
        try:
            baseline = Baseline(bridge)
            thread, out = background(healthy_call, bridge.uri, tmp_path, 8.0)
            good.wait_stream()
            faults = {
                "refused": ("ws://127.0.0.1:9/bot", None),
                "http-403": (b403.url, b403),
                "http-500": (b500.url, b500),
                "handshake-hangs": (hung.url, hung),
            }

            def timed(url: str) -> tuple[dict[str, object], float]:
                started = time.monotonic()
                result = run_test_caller(
                    bridge.uri, tmp_path, silent=True, hold=0.1, headers={"X-Bot-Url": url}
                )
                return result, time.monotonic() - started

            attempts = {name: background(timed, url) for name, (url, _) in faults.items()}  # all at once
            for name, (_, bot) in faults.items():
                result, elapsed = joined(*attempts[name])
                assert not result["answered"] and result["end_code"] == 503, (name, result)
                if bot is not None:
                    assert bot.connections == 2, (name, bot.connections)  # one retry
                if name == "handshake-hangs":
                    assert 1.9 <= elapsed <= 6, elapsed  # 2 attempts of connect_timeout (1 s)
            disturbed = check_healthy(joined(thread, out), good.wait_closed(), seconds=8)
            summaries = bridge.wait_summaries(5)
            assert sorted(s["outcome"] for s in summaries) == ["answered"] + ["rejected"] * 4
            back = baseline.back()
        finally:
            bridge.stop()
    assert disturbed == 0
    for name in faults:
        record("bot", f"bot unreachable: {name} (retry once, 503)", injected=2, others=1, baseline=back)


@pytest.mark.parametrize("how", ["close-1000", "abort-1006"])
def test_bot_closing_mid_call_ends_it_with_bye(tmp_path: Path, how: str) -> None:
    async def close_normally(stream: Stream) -> None:
        await asyncio.sleep(1.5)
        await stream.ws.close(1000)

    with TestBot(close_normally) as normal, RawBot("abort", after_s=1.5) as aborting:
        url = normal.url if how == "close-1000" else aborting.url
        bridge = start_bridge(tmp_path, url)
        try:
            started = time.monotonic()
            result = run_test_caller(bridge.uri, tmp_path, silent=True, hold=15.0)
            elapsed = time.monotonic() - started
            summary = bridge.wait_summaries()[0]
        finally:
            bridge.stop()
    assert result["answered"] and result["ended_by"] == "remote"  # the bridge sent BYE
    assert elapsed < 8
    code = "1000" if how == "close-1000" else "1006"
    assert summary["end_reason"] == f"bot closed ({code})", summary
    record("bot", f"bot closes mid-call ({code}) -> BYE to the caller")


def test_stalled_bot_costs_bounded_memory_and_its_call_is_ended(tmp_path: Path) -> None:
    """A bot that stops reading: caller audio for it is dropped and counted once its socket's
    backlog is full (bounded memory), its caller keeps hearing what the bot had queued, the call
    ends after bot.stall_timeout, and a call to a healthy bot is not disturbed."""
    queued = tone(1000, 3.0, rate=24000)
    first = json.dumps({"event": "media", "media": {"payload": base64.b64encode(queued).decode()}})
    with TestBot(echo=True) as good, RawBot("stall", first_message=first) as stalled:
        overrides = routed({"bot": {"stall_timeout": 4, "chunk_ms": 20}})
        bridge = start_bridge(tmp_path, good.url + "?sample-rate=24000", overrides)
        try:
            run_test_caller(bridge.uri, tmp_path, silent=True, hold=0.2)  # warm-up
            good.wait_closed(0)
            baseline = Baseline(bridge)
            thread, out = background(healthy_call, bridge.uri, tmp_path, 14.0)
            good.wait_stream(1)
            stalled_thread, stalled_out = background(
                run_test_caller,
                bridge.uri,
                tmp_path,
                silent=True,
                hold=40.0,
                headers={"X-Bot-Url": stalled.url + "?sample-rate=24000"},
            )
            while stalled_thread.is_alive():
                baseline.sample()
                time.sleep(0.2)
            stalled_result = joined(stalled_thread, stalled_out)
            disturbed = check_healthy(joined(thread, out), good.wait_closed(1), seconds=14, chunk_ms=20)
            summaries = bridge.wait_summaries(3)
            back = baseline.back()
        finally:
            bridge.stop()
    stall = next(s for s in summaries if "stopped reading" in s["end_reason"])
    assert stall["media_drops"] > 0 and stall["stop_reason"] == "stopped"
    assert stalled_result["answered"] and stalled_result["ended_by"] == "remote"
    heard = read_wav(stalled_result["heard_path"])
    assert tone_seconds(heard, 1000) >= 2.5  # what the bot queued before it stalled was played
    growth = baseline.peak - baseline.rss
    assert growth < 20, f"a stalled bot cost {growth:.1f} MB"
    assert disturbed == 0
    warnings = [r["msg"] for r in bridge.records() if r["level"] == "warning"]
    assert sum("is not reading its socket" in w for w in warnings) == 1  # warned once, not per drop
    record(
        "bot",
        f"bot stops reading: {stall['media_drops']} chunks dropped, peak +{growth:.0f} MB, ended",
        others=1,
        baseline=back,
    )


def test_flooding_bot_is_capped_and_counted(tmp_path: Path) -> None:
    """A bot that sends 3 minutes of audio in a burst: the playout buffer keeps its cap
    (bot.buffer_seconds), the rest is dropped and counted, memory stays bounded, the caller
    hears the first bot.buffer_seconds of it and a call to a healthy bot is not disturbed."""

    async def flood(stream: Stream) -> None:
        await asyncio.sleep(0.2)
        await stream.send_audio(tone(500, 180.0), chunk_bytes=16000)  # 1 s per message, unpaced

    with TestBot(echo=True) as good, TestBot(flood) as flooder:
        bridge = start_bridge(tmp_path, good.url, routed({"bot": {"buffer_seconds": 5}}))
        try:
            run_test_caller(bridge.uri, tmp_path, silent=True, hold=0.2)  # warm-up
            good.wait_closed(0)
            baseline = Baseline(bridge)
            thread, out = background(healthy_call, bridge.uri, tmp_path, 9.0)
            good.wait_stream(1)
            flood_thread, flood_out = background(
                run_test_caller,
                bridge.uri,
                tmp_path,
                silent=True,
                hold=6.0,
                headers={"X-Bot-Url": flooder.url},
            )
            while flood_thread.is_alive():
                baseline.sample()
                time.sleep(0.2)
            flood_result = joined(flood_thread, flood_out)
            disturbed = check_healthy(joined(thread, out), good.wait_closed(1), seconds=9)
            summaries = bridge.wait_summaries(3)
            back = baseline.back()
        finally:
            bridge.stop()
    flood_summary = next(s for s in summaries if s["bytes_from_bot"] > 1_000_000)
    assert flood_summary["bytes_from_bot"] == 180 * 16000
    dropped_s = flood_summary["playout_dropped_bytes"] / 16000
    assert dropped_s >= 150, flood_summary  # about 180 s sent, at most 5 s queued + the call's length played
    heard = read_wav(flood_result["heard_path"])
    assert 4.5 <= tone_seconds(heard, 500) <= 5.5  # the cap's worth, played without a gap
    growth = baseline.peak - baseline.rss
    assert growth < 30, growth
    assert disturbed == 0
    record(
        "bot",
        f"bot floods 180 s of audio at once: {dropped_s:.0f} s dropped and counted",
        others=1,
        baseline=back,
    )


def test_nonsense_from_the_bot_is_counted_and_the_call_goes_on(tmp_path: Path) -> None:
    """Binary frames, invalid JSON, wrong types, bad base64, unknown events: each is dropped
    and counted, the call and its audio go on; then one message over the hard limit closes the
    socket with 1009 and the call ends per profile."""
    junk: list[str | bytes] = [
        b"\x00\x01binary",
        b"",
        "not json",
        "{",
        "[]",
        "null",
        '"media"',
        "{}",
        '{"event": 5}',
        '{"event": "media"}',
        '{"event": "media", "media": {"payload": "%%%not-base64"}}',
        '{"event": "media", "media": {"payload": "AAE"}}',
        '{"event": "media", "media": {"payload": 7}}',
        '{"event": "mark", "mark": {}}',
        '{"event": "mark"}',
        '{"event": "dance"}',
        '{"event": "clear", "stream_sid": "someone-else"}',
        "\ud800".encode("utf-8", "surrogatepass"),
        json.dumps({"event": "media", "media": {"payload": "A" * 5}}),
        '{"event": "media"' + " " * 5000 + "}",
    ]

    async def script(stream: Stream) -> None:
        await asyncio.sleep(0.5)
        for message in junk:
            await stream.ws.send(message)
        await stream.send_audio(tone(700, 2.0), chunk_bytes=3200)  # still played after all that
        await asyncio.sleep(3.0)
        await stream.ws.send(json.dumps({"event": "media", "media": {"payload": "A" * (1 << 20)}}))

    with TestBot(script) as bot:
        bridge = start_bridge(tmp_path, bot.url)
        try:
            result = run_test_caller(bridge.uri, tmp_path, silent=True, hold=20.0)
            stream = bot.wait_closed()
            summary = bridge.wait_summaries()[0]
        finally:
            bridge.stop()
    assert stream.close_code == 1009
    assert result["ended_by"] == "remote"
    assert summary["protocol_errors"] >= 10, summary
    assert tone_seconds(read_wav(result["heard_path"]), 700) >= 1.8
    arrivals = [e.t for e in stream.events if e.msg.get("event") == "media"]
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    assert gaps and max(gaps) < 0.6  # the caller's audio kept flowing to the bot throughout
    record(
        "bot", "bot sends binary, invalid JSON, wrong types, then > 1 MiB (1009)", bad_inputs=len(junk) + 1
    )


def test_unanswered_pings_end_the_call(tmp_path: Path) -> None:
    """A bot that reads but never answers a ping: the keepalive closes the socket (1011) after
    ping_interval + ping_timeout and the call ends per profile (BYE)."""
    with RawBot("deaf") as deaf:
        bridge = start_bridge(tmp_path, deaf.url, {"bot": {"ping_interval": 1, "ping_timeout": 1}})
        try:
            started = time.monotonic()
            result = run_test_caller(bridge.uri, tmp_path, silent=True, hold=20.0)
            elapsed = time.monotonic() - started
            summary = bridge.wait_summaries()[0]
        finally:
            bridge.stop()
    assert result["answered"] and result["ended_by"] == "remote"
    assert elapsed < 10, elapsed
    assert summary["end_reason"] == "bot closed (1006)", summary  # no close frame came back
    assert any("keepalive ping timeout" in r["msg"] for r in bridge.records())
    assert deaf.bytes_read > 0
    record("bot", "bot never answers keepalive pings -> socket closed, BYE")
