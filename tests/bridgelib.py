"""Runs the bridge under test as users run it: `python -m bridge run --profile FILE`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from bridge.tools.demo import free_port

__all__ = ["REPO", "BridgeProcess", "free_port", "run_test_caller"]

REPO = Path(__file__).resolve().parent.parent


_rtp_base = [22000 + (os.getpid() % 100) * 200]


def rtp_range() -> int:
    """A fresh RTP port block per bridge so parallel processes do not collide."""
    _rtp_base[0] += 200
    if _rtp_base[0] > 60000:
        _rtp_base[0] = 22000
    return _rtp_base[0]


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


class BridgeProcess:
    def __init__(self, workdir: Path, bot_url: str, overrides: dict[str, Any] | None = None,
                 env: dict[str, str] | None = None, exec_prefix: list[str] | None = None) -> None:
        self.workdir = workdir
        self.exec_prefix = exec_prefix or []  # e.g. ip netns exec NAME: run on a test host
        self.sip_port = free_port()
        self.control_port = free_port()  # each bridge its own control listener (/metrics, /status)
        profile: dict[str, Any] = {
            "name": "test",
            "sip": {"listen": f"127.0.0.1:{self.sip_port}", "rtp_port_start": rtp_range(),
                    "rtp_port_range": 200, "max_calls": 20},
            # The fault and service tests measure streams in 100 ms chunks; the 20 ms default
            # has tests of its own (tests/faults/test_bot_framing.py).
            "bot": {"url": bot_url, "connect_timeout": 5, "chunk_ms": 100},
            "logging": {"level": "info", "format": "json"},
            "control": {"listen": f"127.0.0.1:{self.control_port}"},
        }
        self.profile = deep_merge(profile, overrides or {})
        self.profile_path = workdir / f"profile-{self.sip_port}.yaml"
        self.profile_path.write_text(yaml.safe_dump(self.profile))
        self.log_path = workdir / f"bridge-{self.sip_port}.log"
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.returncode: int | None = None

    @property
    def uri(self) -> str:
        return f"sip:bot@127.0.0.1:{self.sip_port}"

    def start(self, timeout: float = 20.0) -> BridgeProcess:
        log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [*self.exec_prefix, sys.executable, "-m", "bridge", "run", "--profile", str(self.profile_path)],
            stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=self.env,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"bridge exited with {self.proc.returncode}:\n{self.log_text()}")
            if any("ready:" in r.get("msg", "") for r in self.records()):
                return self
            time.sleep(0.05)
        raise RuntimeError(f"bridge not ready within {timeout} s:\n{self.log_text()}")

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def records(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log_text().splitlines():
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass
        return out

    def summaries(self) -> list[dict[str, Any]]:
        return [r for r in self.records() if r.get("event") == "call_summary"]

    def wait_summaries(self, count: int = 1, timeout: float = 20.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.summaries()
            if len(found) >= count:
                return found
            time.sleep(0.05)
        raise TimeoutError(
            f"{len(self.summaries())} call summaries, wanted {count}:\n{self.log_text()[-3000:]}")

    def wait_log(self, text: str, timeout: float = 20.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for record in self.records():
                if text in record.get("msg", ""):
                    return record
            time.sleep(0.05)
        raise TimeoutError(f"no log line with {text!r}:\n{self.log_text()[-3000:]}")

    def stop(self, timeout: float = 20.0) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.returncode = self.proc.returncode
        return self.returncode

    def __enter__(self) -> BridgeProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def run_test_caller(target: str, workdir: Path, *, wav: Path | None = None, digits: str = "",
                    hold: float = 1.0, dtmf_method: str = "rfc4733", headers: dict[str, str] | None = None,
                    timeout: float = 60.0, silent: bool = False) -> dict[str, Any]:
    """The built-in pjsua2 test caller as a separate process (one pjsua2 endpoint per process)."""
    port = free_port()
    heard = workdir / f"heard-{port}.wav"
    cmd = [sys.executable, "-m", "bridge.tools.testcaller", target, "--local-port", str(port),
           "--heard", str(heard), "--hold", str(hold), "--rtp-port", str(rtp_range())]
    if wav is not None:
        cmd += ["--wav", str(wav)]
    if silent:
        cmd += ["--silent"]
    if digits:
        cmd += ["--digits", digits, "--dtmf-method", dtmf_method]
    for name, value in (headers or {}).items():
        cmd += ["--header", f"{name}: {value}"]
    proc = subprocess.run(cmd, capture_output=True, cwd=REPO, timeout=timeout, check=False)
    out = proc.stdout.decode(errors="replace").strip().splitlines()
    if proc.returncode != 0 or not out:
        raise RuntimeError(f"test caller failed ({proc.returncode}):\n"
                           f"{proc.stdout.decode()}\n{proc.stderr.decode()}")
    result: dict[str, Any] = json.loads(out[-1])
    result["heard_path"] = str(heard)
    return result
