"""systemd's notification protocol (sd_notify) over its unix datagram socket, without libsystemd.

Under `Type=notify` systemd passes `NOTIFY_SOCKET` (a path, or `@name` for the abstract
namespace) and, with `WatchdogSec=`, `WATCHDOG_USEC` (and maybe `WATCHDOG_PID`). The bridge
sends `READY=1` once it takes calls, `STATUS=...` when its state changes, `RELOADING=1` /
`READY=1` around a SIGHUP reload, `STOPPING=1` when it drains, and `WATCHDOG=1` from a task on
the asyncio loop: a loop that hangs stops the pings and systemd restarts the process.

Outside systemd (no `NOTIFY_SOCKET`) every call is a no-op. Sending never blocks and never
raises: a datagram the manager does not take is counted in `send_errors` and logged once.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping

log = logging.getLogger("bridge.sdnotify")

__all__ = ["Notifier", "watchdog_interval"]


def watchdog_interval(env: Mapping[str, str] | None = None, pid: int | None = None) -> float | None:
    """Seconds between WATCHDOG=1 pings (a third of WatchdogSec), or None when no watchdog is asked.

    Follows sd_watchdog_enabled(): WATCHDOG_USEC must be a positive integer, and WATCHDOG_PID,
    when set, must be this process.
    """
    env = os.environ if env is None else env
    usec_text = env.get("WATCHDOG_USEC", "")
    if not (usec_text.isascii() and usec_text.isdigit()) or int(usec_text) <= 0:
        return None
    owner = env.get("WATCHDOG_PID", "")
    if owner and owner != str(os.getpid() if pid is None else pid):
        return None
    return int(usec_text) / 1e6 / 3


class Notifier:
    """Sends sd_notify messages to NOTIFY_SOCKET (nothing happens when it is not set)."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        path = env.get("NOTIFY_SOCKET", "")
        self.path = path
        self.address: str | bytes | None = None
        if path.startswith("@"):
            self.address = b"\0" + path[1:].encode()  # the abstract namespace
        elif path.startswith("/"):
            self.address = path
        elif path:
            log.warning("NOTIFY_SOCKET %r is neither a path nor @abstract; not notifying systemd", path)
        self._sock: socket.socket | None = None
        self.sent = 0
        self.send_errors = 0
        self.last_status = ""

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, **fields: str | int) -> bool:
        """One datagram of KEY=value lines, e.g. ``send(READY=1, STATUS="3 calls")``."""
        if self.address is None:
            return False
        text = "\n".join(f"{key}={value}" for key, value in fields.items()) + "\n"
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)
            self._sock.sendto(text.encode(), self.address)
        except OSError as exc:
            self.send_errors += 1
            if self.send_errors == 1 or self.send_errors % 1000 == 0:
                log.warning("cannot notify systemd at %s: %s (%d failures so far)",
                            self.path, exc.strerror or exc, self.send_errors)
            return False
        self.sent += 1
        return True

    def ready(self, status: str) -> bool:
        self.last_status = status
        return self.send(READY=1, STATUS=status, MAINPID=os.getpid())

    def status(self, status: str) -> bool:
        """STATUS=..., only when it differs from the last one sent."""
        if status == self.last_status:
            return False
        self.last_status = status
        return self.send(STATUS=status)

    def reloading(self) -> bool:
        return self.send(RELOADING=1, MONOTONIC_USEC=time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000)

    def stopping(self, status: str) -> bool:
        self.last_status = status
        return self.send(STOPPING=1, STATUS=status)

    def watchdog(self) -> bool:
        return self.send(WATCHDOG=1)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
