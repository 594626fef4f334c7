"""The benchmark command works (the full capacity runs are not for CI: see docs/performance.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.bridgelib import REPO

pytestmark = pytest.mark.timeout(180)


def test_a_short_benchmark_run_reports_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    result = subprocess.run([sys.executable, "-m", "bridge", "bench", "--calls", "10", "--duration", "8",
                             "--rate", "5", "--clear-every", "3", "--json", str(out)],
                            capture_output=True, text=True, cwd=REPO, timeout=150, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    figures = json.loads(out.read_text())
    for key in ("attempted", "completed", "cpu_per_call_pct", "rss_per_call_mb", "late_frame_pct_to_bot",
                "late_frame_pct_to_caller", "added_latency_ms"):
        assert key in figures
    assert figures["attempted"] == figures["completed"] == 10
    assert figures["dtmf_received"] == 10
    assert figures["streams_stopped"] == 10
    assert figures["cpu_per_call_pct"] > 0
    assert figures["rtp_sampled_packets"] > 1000
    assert figures["ws_sampled_events"] > 600  # 10 calls: every bot stream, 10 events a second
    assert figures["marks_answered"] > 0  # the load bot's echo and marks went through
    for direction in ("rtp_to_ws", "ws_to_rtp"):
        latency = figures["added_latency_ms"][direction]
        assert latency["count"] > 0 and 0 <= latency["p50"] <= latency["p99"]
    assert figures["invite_to_200_ms"]["count"] == 10
    # Every stream cleared at 3 and 6 s: each clear timed to the first tick without its audio.
    clears = figures["clear_to_silence_ms"]
    assert clears["count"] >= 10 and 0 <= clears["p50"] <= 21 and clears["p50"] <= clears["p99"]
    assert "added latency rtp->ws" in result.stdout  # the table
