"""The bridge under a systemd-like supervisor: `python -m bridge run` with a NOTIFY_SOCKET the test
owns. READY once it takes calls, STATUS as calls come and go, WATCHDOG pings from the event
loop (a hung loop stops them), RELOADING/READY around SIGHUP, STOPPING on SIGTERM."""

from __future__ import annotations

import itertools
import os
import signal
import socket
import threading
import time
import uuid
from pathlib import Path

import pytest

from tests.botlib import TestBot
from tests.bridgelib import REPO, BridgeProcess, run_test_caller

pytestmark = pytest.mark.timeout(120)


class NotifySocket:
    """A datagram socket in the abstract namespace, recording (time, fields) of every message."""

    def __init__(self) -> None:
        self.address = f"@sipwsb-test-{uuid.uuid4().hex}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + self.address[1:])
        self.sock.settimeout(0.1)
        self.messages: list[tuple[float, dict[str, str]]] = []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._listen, daemon=True)

    def _listen(self) -> None:
        while not self._done.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            self.messages.append((time.monotonic(), fields))

    def __enter__(self) -> NotifySocket:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join(2)
        self.sock.close()

    def with_key(self, key: str) -> list[tuple[float, dict[str, str]]]:
        return [(t, m) for t, m in self.messages if key in m]

    def statuses(self) -> list[str]:
        return [m["STATUS"] for _, m in self.messages if "STATUS" in m]

    def wait(self, key: str, value: str | None = None, timeout: float = 15.0, after: float = 0.0) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for t, m in list(self.messages):
                if t >= after and key in m and (value is None or value in m[key]):
                    return t
            time.sleep(0.02)
        raise TimeoutError(f"no {key}={value or '*'} within {timeout} s: {self.messages[-10:]}")


def test_ready_status_watchdog_reload_and_stopping(tmp_path: Path) -> None:
    with NotifySocket() as notify, TestBot(echo=True) as bot:
        env = {"NOTIFY_SOCKET": notify.address, "WATCHDOG_USEC": "900000"}
        bridge = BridgeProcess(tmp_path, bot.url, env=env).start()
        try:
            ready_at = notify.wait("READY")
            ready = next(m for _, m in notify.messages if "READY" in m)
            assert ready["STATUS"] == "0 active calls (max 20); trunk mode (not registering)"
            assert bridge.proc is not None and ready["MAINPID"] == str(bridge.proc.pid)

            run_test_caller(bridge.uri, tmp_path, hold=1.0, silent=True)
            notify.wait("STATUS", "1 active call (max 20)", after=ready_at)
            back = notify.wait("STATUS", "0 active calls", after=notify.wait("STATUS", "1 active call"))

            bridge.proc.send_signal(signal.SIGHUP)
            reloading = notify.wait("RELOADING", after=back)
            notify.wait("READY", after=reloading)
            bridge.wait_log("profile reloaded")
        finally:
            rc = bridge.stop()
        stopping = notify.wait("STOPPING", timeout=5)
    assert rc == 0
    pings = [t for t, _ in notify.with_key("WATCHDOG") if ready_at <= t <= stopping]
    assert len(pings) >= 5
    gaps = [b - a for a, b in itertools.pairwise(pings)]
    assert max(gaps) < 0.9, gaps  # every WatchdogSec/3 = 0.3 s, well inside WatchdogSec
    assert sum(gaps) / len(gaps) == pytest.approx(0.3, abs=0.1)


def test_a_hung_event_loop_stops_the_watchdog_pings(tmp_path: Path) -> None:
    """tests/faultinject blocks the bridge's loop for 2.5 s, 3 s after start (every other thread,
    SIP and media included, runs on): no WATCHDOG=1 in that time, so systemd would restart it."""
    with NotifySocket() as notify, TestBot() as bot:
        env = {"NOTIFY_SOCKET": notify.address, "WATCHDOG_USEC": "600000",
               "PYTHONPATH": os.pathsep.join([str(REPO / "tests" / "faultinject"), str(REPO)]),
               "SIPWSB_TEST_HANG_LOOP": "3:2.5"}
        bridge = BridgeProcess(tmp_path, bot.url, env=env).start()
        try:
            ready_at = notify.wait("READY")
            time.sleep(6.5)
        finally:
            bridge.stop()
    pings = [t for t, _ in notify.with_key("WATCHDOG") if t >= ready_at]
    gaps = [b - a for a, b in itertools.pairwise(pings)]
    hang = max(gaps)
    assert 2.2 <= hang <= 3.2, gaps
    longest = gaps.index(hang)
    assert longest >= 2 and len(gaps) - longest >= 3  # pings before the hang, and after it again
    others = gaps[:longest] + gaps[longest + 1 :]
    assert max(others) < 0.6, others  # WatchdogSec = 0.6 s would have been met otherwise
