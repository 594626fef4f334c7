"""The benchmark's processes: starting the front, waiting for them, sampling their CPU, memory
and open files from /proc, and stopping them all at the end of a run."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass
class ProcSample:
    t: float
    cpu_s: float
    rss_mb: float
    fds: int


def free_port_block(count: int, avoid: list[range] | None = None) -> int:
    """The first port of `count` consecutive UDP ports free on 127.0.0.1 (RTP for many calls)."""
    import random
    import socket

    # Below Linux's ephemeral range (32768-60999 by default): ports the kernel hands to other
    # sockets while the run goes on would make some of the bridge's RTP binds fail (seen at 400 calls).
    for _ in range(200):
        base = random.randrange(10000, 32768 - count, 2)
        if any(base < r.stop and r.start < base + count for r in avoid or []):
            continue
        socks = []
        try:
            for port in range(base, base + count):
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(sock)
                sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
        return base
    raise SystemExit(f"bench: no block of {count} free UDP ports")


def start_front(work: Path, port: int, targets: list[str]) -> subprocess.Popen[bytes]:
    """kamailio's dispatcher in front of the bridge processes (the shipped front config)."""
    if shutil.which("kamailio") is None:
        raise SystemExit("bench: --workers needs kamailio as the front (apt-get install kamailio)")
    (work / "dispatcher.list").write_text("".join(f"1 {t}\n" for t in targets))
    cfg = resources.files("bridge").joinpath("data/kamailio-front.cfg").read_text()
    cfg = (cfg.replace("@@LISTEN@@", f"127.0.0.1:{port}").replace("@@ADVERTISE@@", f"127.0.0.1:{port}")
           .replace("@@DISPATCHER@@", str(work / "dispatcher.list")).replace("debug=2", "debug=1"))
    (work / "front.cfg").write_text(cfg)
    run_dir = work / "front-run"
    run_dir.mkdir(exist_ok=True)
    return subprocess.Popen(["kamailio", "-f", str(work / "front.cfg"), "-DD", "-E", "-Y", str(run_dir)],
                            stdout=(work / "front.log").open("wb"), stderr=subprocess.STDOUT)


def front_pids(front: subprocess.Popen[bytes] | None) -> list[int]:
    return bridge_pids(front.pid) if front is not None else []


def proc_sample(pids: list[int]) -> ProcSample:
    cpu = rss = 0.0
    fds = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            cpu += (int(fields[11]) + int(fields[12])) / CLK_TCK
            rss += int(fields[21]) * PAGE / 1e6
            fds += len(os.listdir(f"/proc/{pid}/fd"))
    return ProcSample(time.monotonic(), cpu, rss, fds)


def bridge_pids(main_pid: int) -> list[int]:
    """The bridge process and its workers (children), if any."""
    pids = [main_pid]
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{main_pid}/task"):
            children = Path(f"/proc/{main_pid}/task/{task}/children").read_text().split()
            pids += [int(c) for c in children]
    return pids


def wait_for_text(path: Path, text: str, proc: subprocess.Popen[bytes], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        if path.exists() and text in path.read_text(errors="replace"):
            return True
        time.sleep(0.1)
    return False


def stop_all(captures: list[subprocess.Popen[bytes] | None], bridges: list[subprocess.Popen[bytes]],
             front: subprocess.Popen[bytes] | None, bot: subprocess.Popen[bytes]) -> None:
    """The end of a run, whatever happened: the captures first (so they are whole), then the
    bridges (their shutdown records hold the latency figures), the front and the load bot (which
    writes its figures on SIGTERM)."""
    for dump in captures:
        if dump is not None:
            _signal_and_wait(dump, signal.SIGINT, 10)
    for bridge in bridges:
        if bridge.poll() is None:
            bridge.send_signal(signal.SIGTERM)
    for bridge in bridges:
        try:
            bridge.wait(60)
        except subprocess.TimeoutExpired:
            bridge.kill()
    if front is not None:
        _signal_and_wait(front, signal.SIGTERM, 10)
    _signal_and_wait(bot, signal.SIGTERM, 30)


def _signal_and_wait(proc: subprocess.Popen[bytes], sig: signal.Signals, timeout: float) -> None:
    """Signal a process still running and give it `timeout` s to end (and left running after that)."""
    if proc.poll() is None:
        proc.send_signal(sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout)
