"""Long runs, for the benchmark command rather than CI (`pytest -m slow tests/integration/test_soak.py`).

SIP_WS_BRIDGE_SOAK_S sets the length (default 1800 s: the 30-minute soak at half of one
process's capacity, with calls replaced every minute so call setup and teardown are exercised).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.bridgelib import REPO

SOAK_S = int(os.environ.get("SIP_WS_BRIDGE_SOAK_S", "1800"))


@pytest.mark.slow
@pytest.mark.timeout(SOAK_S + 600)
def test_soak_memory_files_and_calls_return_to_baseline(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    result = subprocess.run(
        [sys.executable, "-m", "bridge", "bench", "--calls", "75", "--rate", "10", "--duration", str(SOAK_S),
         "--hold", "60", "--json", str(out)],
        capture_output=True, text=True, cwd=REPO, timeout=SOAK_S + 500, check=False)
    print(result.stdout)
    figures = json.loads(out.read_text())
    assert figures["completed"] == figures["attempted"] > 0
    assert figures["fds_end"] == figures["fds_start"]  # every call's sockets closed
    # After warm-up (the first calls replaced) RSS under load stays within 5 %.
    assert abs(figures["rss_last_load_mb"] - figures["rss_warm_mb"]) <= 0.05 * figures["rss_warm_mb"]
    assert figures["media_drops"] == 0
