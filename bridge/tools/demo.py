"""`sip-ws-bridge demo`: a complete local call with no configuration.

It starts the echo bot in this process, the bridge as a child process (exactly as `run`
starts it, from a generated profile), and the built-in test caller, which dials the bridge,
says a sample utterance, sends DTMF, hears its echo and hangs up. Then it prints what each
side saw and exits 0 only if the whole round trip worked.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path

from bridge.tools.echobot import EchoBot, start_echo_bot
from bridge.tools.testcaller import CallResult, echo_match, place_call, sample_utterance

DIGITS = "1234#"


def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (SIP listens on both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = int(tcp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free port on 127.0.0.1")


def demo_profile_yaml(sip_port: int, bot_port: int, rtp_port: int) -> str:
    return f"""\
name: demo
sip:
  listen: "127.0.0.1:{sip_port}"
  rtp_port_start: {rtp_port}
  rtp_port_range: 200
  max_calls: 8
bot:
  url: "ws://127.0.0.1:{bot_port}/demo?sample-rate=8000&greeting=hello"
  chunk_ms: 20
logging:
  level: info
  format: text
control:
  listen: null
"""


async def _wait_ready(log_path: Path, proc: asyncio.subprocess.Process, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.returncode is not None:
            return False
        if "ready:" in log_path.read_text(errors="replace"):
            return True
        await asyncio.sleep(0.1)
    return False


def say(line: str) -> None:
    print(line, flush=True)


async def run_demo(workdir: Path) -> int:
    bot_port, sip_port, caller_port = free_port(), free_port(), free_port()
    server, bot = await start_echo_bot("127.0.0.1", bot_port, EchoBot(mark_every=10))
    profile = workdir / "demo.yaml"
    profile.write_text(demo_profile_yaml(sip_port, bot_port, 21000 + (sip_port % 1000) * 4))
    bridge_log = workdir / "bridge.log"
    say(f"demo: echo bot on ws://127.0.0.1:{bot_port}, bridge on sip:127.0.0.1:{sip_port} "
        f"(logs: {bridge_log})")
    with bridge_log.open("w") as log_file:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bridge", "run", "--profile", str(profile),
            stdout=log_file, stderr=log_file, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        if not await _wait_ready(bridge_log, proc, 30):
            say("demo: FAILED - the bridge did not start; its log:")
            say(bridge_log.read_text(errors="replace")[-4000:])
            return 1
        utterance = sample_utterance()
        say(f"demo: calling sip:demo@127.0.0.1:{sip_port}; saying {len(utterance) / 16000:.1f} s "
            f"of speech, then DTMF {DIGITS}")
        result = await place_call(f"sip:demo@127.0.0.1:{sip_port}", local_port=caller_port,
                                  utterance=utterance, digits=DIGITS, hold_after_s=2.0,
                                  rtp_port_start=31000 + (caller_port % 1000) * 4)
        try:
            await asyncio.wait_for(bot.stream_done.wait(), 10)
        except TimeoutError:
            pass
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 15)
            except TimeoutError:
                proc.kill()
        server.close()
    return report(result, bot, utterance)


def report(result: CallResult, bot: EchoBot, utterance: bytes) -> int:
    ok = True

    def check(cond: bool, text: str) -> None:
        nonlocal ok
        ok = ok and cond
        say(f"  [{'ok' if cond else 'FAIL'}] {text}")

    say("demo: results")
    check(result.answered, f"call answered in {result.setup_ms:.0f} ms"
          + (f", codec {result.media.codec}" if result.media else ""))
    stream = bot.streams[0] if bot.streams else None
    check(stream is not None, "the bot got a WebSocket stream")
    if stream is None:
        return 1
    order_ok = stream.events[:2] == ["connected", "start"] and stream.events[-1:] == ["stop"]
    check(order_ok, f"event order: connected, start, {stream.media_messages} media"
          f"{', dtmf' if stream.dtmf else ''}, marks, stop")
    check(bool(stream.start.get("call_sid")) and bool(stream.start.get("stream_sid")),
          f"start: from {stream.start.get('from')!r} to {stream.start.get('to')!r}, "
          f"custom_parameters {stream.start.get('custom_parameters')}")
    check(stream.dtmf == DIGITS, f"DTMF sent {DIGITS!r}, bot received {stream.dtmf!r}")
    lags = sorted(stream.mark_lag_ms.values())
    check(bool(lags), f"marks answered after playback: {len(lags)}/{len(stream.marks_sent)}"
          + (f", lag p50 {lags[len(lags) // 2]:.0f} ms" if lags else ""))
    echo = echo_match(utterance, bytes(result.heard), result.said_at_byte)
    check(echo.matched >= 0.8, f"caller heard its echo: round trip {echo.delay_ms:.0f} ms, "
          f"{echo.matched:.0%} of {echo.segments} speech segments match (median correlation "
          f"{echo.median_corr:.2f})")
    check(stream.stop_reason == "callended" and stream.close_code == 1000,
          f"stop reason {stream.stop_reason!r}, socket closed with {stream.close_code}")
    check(result.end is not None and result.end.ended_by == "local",
          "the caller hung up with BYE" + (f" ({result.end.code} {result.end.reason})" if result.end else ""))
    say("demo: " + ("SUCCESS" if ok else "FAILED"))
    return 0 if ok else 1


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="sip-ws-bridge-demo-") as tmp:
        code = asyncio.run(run_demo(Path(tmp)))
        if code != 0:
            log = Path(tmp) / "bridge.log"
            if log.exists():
                say("demo: bridge log (tail):")
                say(log.read_text(errors="replace")[-6000:])
        return code
