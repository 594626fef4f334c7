"""The command line as operators use it: exit codes, messages, redaction, the demo."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.bridgelib import REPO, free_port

pytestmark = pytest.mark.timeout(180)


def cli(*args: str, env: dict[str, str] | None = None,
        timeout: float = 60) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run([sys.executable, "-m", "bridge", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=timeout, env={**os.environ, **(env or {})}, check=False)


def test_check_prints_the_resolved_profile_with_secrets_redacted(tmp_path: Path) -> None:
    profile = tmp_path / "p.yaml"
    profile.write_text(
        "sip:\n  listen: 127.0.0.1:5080\n"
        "  register: {registrar: 'sip:pbx.example.com', username: bridge, password: '${PW}'}\n"
        "bot:\n  url: 'wss://u:urlsecret@bots.example.com/s?sample-rate=16000'\n"
        "  headers: {Authorization: 'Bearer ${TOKEN}'}\n"
    )
    result = cli("check", "--profile", str(profile), env={"PW": "pw-secret-1", "TOKEN": "tok-secret-2"})
    assert result.returncode == 0, result.stderr
    everything = result.stdout + result.stderr
    for secret in ("pw-secret-1", "tok-secret-2", "urlsecret"):
        assert secret not in everything
    assert "***" in result.stdout
    assert "chunk_ms: 20" in result.stdout  # defaults filled in


@pytest.mark.parametrize("body, key", [
    ("sip: {listen: 'nope'}\nbot: {url: 'ws://x/'}\n", "sip.listen"),
    ("sip: {listen: '127.0.0.1:5080'}\nbot: {url: 'http://x/'}\n", "bot.url"),
    ("sip: {listen: '127.0.0.1:5080', lisen: 1}\nbot: {url: 'ws://x/'}\n", "sip.lisen"),
    ("sip: {listen: '127.0.0.1:5080'}\nbot: {url: 'ws://x/', chunk_ms: 30}\n", "bot.chunk_ms"),
    ("sip: {listen: '127.0.0.1:5080', register: {registrar: 'sip:x', username: u,"
     " password: '${MISSING_VAR_X}'}}\n"
     "bot: {url: 'ws://x/'}\n", "sip.register.password"),
])
def test_a_bad_profile_exits_78_naming_the_key(tmp_path: Path, body: str, key: str) -> None:
    profile = tmp_path / "bad.yaml"
    profile.write_text(body)
    for command in ("check", "run"):
        result = cli(command, "--profile", str(profile))
        assert result.returncode == 78, (command, result.stdout, result.stderr)
        assert key in result.stderr


def test_missing_profile_file_exits_78(tmp_path: Path) -> None:
    result = cli("check", "--profile", str(tmp_path / "nope.yaml"))
    assert result.returncode == 78 and "nope.yaml" in result.stderr


def test_usage_errors_exit_2() -> None:
    assert cli("frobnicate").returncode == 2
    assert cli("run").returncode == 2


def test_echo_bot_command_serves_websockets() -> None:
    import asyncio
    import json

    from websockets.asyncio.client import connect

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "bridge", "echo-bot", "--listen", f"127.0.0.1:{port}"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        async def talk() -> list[dict[str, object]]:
            for _ in range(50):
                try:
                    ws = await connect(f"ws://127.0.0.1:{port}/")
                    break
                except OSError:
                    await asyncio.sleep(0.1)
            async with ws:
                await ws.send(json.dumps({"event": "connected"}))
                await ws.send(json.dumps({"event": "start", "sequence_number": "1", "stream_sid": "s",
                                          "start": {"stream_sid": "s", "call_sid": "c", "account_sid": "a"}}))
                await ws.send(json.dumps({"event": "media", "sequence_number": "2", "stream_sid": "s",
                                          "media": {"chunk": "1", "timestamp": "100", "payload": "AAA="}}))
                return [json.loads(await ws.recv())]

        got = asyncio.run(talk())
        assert got[0]["event"] == "media" and got[0]["media"]["payload"] == "AAA="
    finally:
        proc.terminate()
        proc.wait(10)


def test_demo_runs_a_complete_call() -> None:
    started = time.monotonic()
    result = cli("demo", timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "demo: SUCCESS" in result.stdout
    assert "DTMF sent '1234#', bot received '1234#'" in result.stdout
    assert time.monotonic() - started < 60
