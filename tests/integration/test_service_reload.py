"""SIGHUP reloads the profile of a running bridge process: new calls use the new settings, the call
in progress goes on untouched, settings bound at start-up wait for a restart, and an invalid
profile is rejected with a clear log line while the previous one keeps running."""

from __future__ import annotations

import copy
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.botlib import TestBot
from tests.bridgelib import BridgeProcess, free_port, run_test_caller
from tests.integration.test_service_metrics import get, scrape

pytestmark = pytest.mark.timeout(120)


def reload(bridge: BridgeProcess, profile: dict[str, Any], wait_for: str) -> dict[str, Any]:
    seen = len(bridge.records())
    bridge.profile_path.write_text(yaml.safe_dump(profile))
    assert bridge.proc is not None
    bridge.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for record in bridge.records()[seen:]:
            if wait_for in record.get("msg", ""):
                return record
        time.sleep(0.05)
    raise TimeoutError(f"no {wait_for!r} after SIGHUP:\n{bridge.log_text()[-2000:]}")


def test_sighup_reload_keeps_calls_and_rejects_a_bad_profile(tmp_path: Path) -> None:
    with TestBot(echo=True) as bot_a, TestBot() as bot_b, BridgeProcess(tmp_path, bot_a.url) as bridge:
        first: dict[str, Any] = {}
        caller = threading.Thread(
            target=lambda: first.update(run_test_caller(bridge.uri, tmp_path, hold=5.0, silent=True)))
        caller.start()
        stream_a = bot_a.wait_stream()
        time.sleep(1.0)

        # 1. A new bot URL (applies to new calls) and a new SIP address (needs a restart).
        new = copy.deepcopy(bridge.profile)
        new["bot"]["url"] = bot_b.url
        new["sip"]["listen"] = f"127.0.0.1:{free_port()}"
        applied = reload(bridge, new, "profile reloaded")
        restart = bridge.wait_log("only a restart applies")
        assert applied["level"] == "info" and applied["changed"] == ["bot.url"]
        assert restart["level"] == "warning" and restart["needs_restart"] == ["sip.listen"]
        assert "1 call(s) in progress keep theirs" in applied["msg"]

        # A call placed now, at the old address, goes to the new bot; the first call goes on.
        run_test_caller(bridge.uri, tmp_path, hold=0.3, silent=True)
        stream_b = bot_b.wait_closed()
        assert not stream_a.closed.is_set()
        caller.join(60)
        stream_a = bot_a.wait_closed()

        # 2. A live admission limit.
        new["sip"]["max_calls"] = 1
        reload(bridge, new, "profile reloaded")
        assert scrape(bridge)("max_calls") == 1

        # 3. An invalid profile: rejected, named, and the running profile kept.
        bad = copy.deepcopy(new)
        bad["bot"]["url"] = "http://not-a-websocket/"
        rejected = reload(bridge, bad, "reload rejected")
        run_test_caller(bridge.uri, tmp_path, hold=0.3, silent=True)
        third = bot_b.wait_closed(1)
        metrics = scrape(bridge)
        status = get(bridge, "/readyz")[0]
        summaries = bridge.summaries()

    # The first call was neither cut nor moved: it streamed to bot A to its natural end.
    assert first["answered"] and first["ended_by"] == "local"  # the caller hung up
    assert stream_a.of("stop")[0]["stop"]["reason"] == "callended"
    assert len(stream_a.of("media")) >= 50  # about 6 s of 100 ms chunks: the whole call
    assert stream_b.start["start"]["call_sid"] != stream_a.start["start"]["call_sid"]
    assert third.start["start"]["call_sid"] not in (stream_a.start["start"]["call_sid"],)
    assert [s["end_cause"] for s in summaries] == ["caller_hangup"] * 3
    assert rejected["level"] == "error"
    assert "(key bot.url)" in rejected["msg"] and "still running the previous profile" in rejected["msg"]
    assert metrics("reloads_total", result="applied") == 2
    assert metrics("reloads_total", result="rejected") == 1
    assert status == 200
