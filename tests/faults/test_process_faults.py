"""The bridge process itself: SIGTERM with calls up, SIGKILL and restart, a second instance."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.botlib import TestBot
from tests.bridgelib import REPO, run_test_caller
from tests.faults.faultlib import Baseline, RawBot, background, joined, open_calls, record, start_bridge
from tests.faults.rawsip import RawSip, status_of
from tests.faults.test_bot_faults import check_healthy, healthy_call, routed
from tests.peerlib import run_sipp

pytestmark = pytest.mark.timeout(180)


def test_sigterm_with_calls_up_drains_refuses_new_calls_and_exits(tmp_path: Path) -> None:
    """Three calls up, one of them to a bot that never answers a close frame (so the drain takes
    a while): SIGTERM -> every bot gets `stop` (stopped) and a close, every caller a BYE; an
    INVITE during the drain gets 503; the process exits 0 within the bounded drain time."""
    with TestBot() as bot, RawBot("deaf") as slow_to_close:
        bridge = start_bridge(tmp_path, bot.url, routed())
        calls = [background(run_test_caller, bridge.uri, tmp_path, silent=True, hold=30.0) for _ in range(2)]
        calls.append(
            background(
                run_test_caller,
                bridge.uri,
                tmp_path,
                silent=True,
                hold=30.0,
                headers={"X-Bot-Url": slow_to_close.url},
            )
        )
        bot.wait_stream(1)
        assert slow_to_close.handshakes.wait(10)
        time.sleep(0.5)
        assert bridge.proc is not None
        signalled = time.monotonic()
        bridge.proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        refused = run_sipp(tmp_path, f"127.0.0.1:{bridge.sip_port}", "uac_rejected", timeout=10)
        rc = bridge.proc.wait(30)
        exited_after = time.monotonic() - signalled
        results = [joined(*call) for call in calls]
        streams = [bot.wait_closed(0), bot.wait_closed(1)]
    assert rc == 0
    assert exited_after < 15, exited_after  # drain (10 s at most) + SIP stack shutdown
    assert refused.rc == 0 and "SIP/2.0 503" in refused.messages, refused.messages[-1500:]
    for stream in streams:
        assert stream.of("stop")[0]["stop"]["reason"] == "stopped" and stream.close_code == 1000
    assert all(r["answered"] and r["ended_by"] == "remote" for r in results), results
    assert slow_to_close.closed.wait(5)
    record(
        "process",
        f"SIGTERM with 3 calls up: stop+close+BYE each, 503 while draining, exit in {exited_after:.1f} s",
        injected=1,
    )


def test_sigkill_and_restart_leave_no_stale_state(tmp_path: Path) -> None:
    """SIGKILL with a call up: the bot's socket is closed (1006); a new process starts on the
    same ports at once, answers the dead call's BYE with 481 (it knows nothing of it) and takes
    new calls."""
    with TestBot() as bot, RawSip(0) as old_caller:
        bridge = start_bridge(tmp_path, bot.url)
        old_caller.bridge = ("127.0.0.1", bridge.sip_port)
        dialog, answer = old_caller.invite()
        assert status_of(answer) == 200
        stream = bot.wait_stream()
        assert bridge.proc is not None
        bridge.proc.send_signal(signal.SIGKILL)
        bridge.proc.wait(10)
        assert stream.closed.wait(10)
        restarted_at = time.monotonic()
        bridge.start()
        restart_s = time.monotonic() - restarted_at
        try:
            bye = old_caller.in_dialog(dialog, "BYE")
            result = run_test_caller(bridge.uri, tmp_path, silent=True, hold=0.5)
            new_stream = bot.wait_closed(1)
            summaries = bridge.wait_summaries(1)
            assert open_calls(bridge) == 0
        finally:
            bridge.stop()
    assert stream.close_code == 1006
    assert status_of(bye) == 481, bye
    assert result["answered"] and new_stream.of("stop")[0]["stop"]["reason"] == "callended"
    assert len(summaries) == 1
    assert restart_s < 10
    record("process", f"SIGKILL with a call up, restart ({restart_s:.1f} s): old dialog 481, new calls ok")


def test_a_second_instance_fails_clearly_and_the_first_keeps_its_call(tmp_path: Path) -> None:
    with TestBot(echo=True) as bot:
        first = start_bridge(tmp_path, bot.url)
        try:
            baseline = Baseline(first)
            thread, out = background(healthy_call, first.uri, tmp_path, 6.0)
            bot.wait_stream()
            second = subprocess.run(
                [sys.executable, "-m", "bridge", "run", "--profile", str(first.profile_path)],
                capture_output=True,
                text=True,
                cwd=REPO,
                timeout=30,
                check=False,
            )
            disturbed = check_healthy(joined(thread, out), bot.wait_closed(), seconds=6)
            back = baseline.back()
        finally:
            first.stop()
    assert second.returncode == 69, second.stderr
    assert "another instance" in second.stderr, second.stderr
    assert disturbed == 0
    record(
        "process",
        "second instance on the same port: exit 69, first one's call goes on",
        disturbed=disturbed,
        others=1,
        baseline=back,
    )
