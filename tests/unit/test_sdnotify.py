"""sd_notify over a real unix datagram socket the test owns (path and abstract namespace), and the
watchdog's place on the event loop: a blocked loop sends no pings."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
import uuid
from pathlib import Path

import pytest

from bridge.ops.sdnotify import Notifier, watchdog_interval


def receiver(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + path[1:] if path.startswith("@") else path)
    sock.settimeout(2)
    return sock


def messages(sock: socket.socket, timeout: float = 0.05) -> list[dict[str, str]]:
    out = []
    sock.settimeout(timeout)
    while True:
        try:
            data = sock.recv(4096)
        except TimeoutError:
            return out
        out.append(dict(line.split("=", 1) for line in data.decode().splitlines() if line))


@pytest.mark.parametrize("kind", ["path", "abstract"])
def test_ready_status_stopping_and_reloading_reach_the_socket(tmp_path: Path, kind: str) -> None:
    address = str(tmp_path / "notify") if kind == "path" else f"@sipwsb-test-{uuid.uuid4().hex}"
    with receiver(address) as sock:
        notifier = Notifier({"NOTIFY_SOCKET": address})
        assert notifier.enabled
        assert notifier.ready("0 active calls")
        assert notifier.status("1 active call")
        assert not notifier.status("1 active call")  # unchanged: not re-sent
        assert notifier.reloading()
        assert notifier.watchdog()
        assert notifier.stopping("draining 1 call(s)")
        got = messages(sock)
        notifier.close()
    assert got[0] == {"READY": "1", "STATUS": "0 active calls", "MAINPID": str(os.getpid())}
    assert got[1] == {"STATUS": "1 active call"}
    assert got[2]["RELOADING"] == "1" and int(got[2]["MONOTONIC_USEC"]) > 0
    assert got[3] == {"WATCHDOG": "1"}
    assert got[4] == {"STOPPING": "1", "STATUS": "draining 1 call(s)"}
    assert len(got) == 5


def test_without_notify_socket_nothing_is_sent() -> None:
    notifier = Notifier({})
    assert not notifier.enabled
    assert not notifier.ready("x") and not notifier.watchdog()


def test_a_missing_socket_is_counted_not_raised(tmp_path: Path) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "nobody-listens")})
    assert not notifier.watchdog()
    assert not notifier.watchdog()
    assert notifier.send_errors == 2


def test_watchdog_interval() -> None:
    assert watchdog_interval({}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}) == pytest.approx(10.0)
    assert watchdog_interval({"WATCHDOG_USEC": "0"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "soon"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": str(os.getpid())}) == 1.0
    assert watchdog_interval({"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": "1"}, pid=2) is None


def test_pings_come_from_the_loop_so_a_blocked_loop_stops_them(tmp_path: Path) -> None:
    """The Operations watchdog task in miniature (ping, then sleep on the loop). While a callback
    blocks the loop for 0.6 s no ping arrives; afterwards they resume."""
    address = str(tmp_path / "notify")
    arrivals: list[float] = []
    with receiver(address) as sock:
        sock.settimeout(0.1)
        done = threading.Event()

        def listen() -> None:
            while not done.is_set():
                try:
                    sock.recv(64)
                except TimeoutError:
                    continue
                arrivals.append(time.monotonic())

        thread = threading.Thread(target=listen)
        thread.start()
        notifier = Notifier({"NOTIFY_SOCKET": address})
        blocked: list[float] = []

        async def main() -> None:
            async def pinger() -> None:
                while True:
                    notifier.watchdog()
                    await asyncio.sleep(0.05)

            def hang() -> None:
                blocked.append(time.monotonic())
                time.sleep(0.6)
                blocked.append(time.monotonic())

            task = asyncio.ensure_future(pinger())
            await asyncio.sleep(0.3)
            asyncio.get_running_loop().call_soon(hang)
            await asyncio.sleep(0.9)
            task.cancel()

        asyncio.run(main())
        time.sleep(0.1)
        done.set()
        thread.join()
        notifier.close()
    during = [t for t in arrivals if blocked[0] + 0.01 < t < blocked[1] - 0.01]
    before = [t for t in arrivals if t < blocked[0]]
    after = [t for t in arrivals if t > blocked[1]]
    assert not during, during
    assert len(before) >= 3 and len(after) >= 3, (len(before), len(after))
