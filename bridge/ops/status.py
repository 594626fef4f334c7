"""`sip-ws-bridge status`: live calls and counters of a running bridge, redrawn like `top`.

It reads GET /status (JSON) from the bridge's control listener (`control.listen`, by default
127.0.0.1:8780; `--profile` reads the address from a profile). `--once` prints one snapshot
and exits (for scripts and tests); `--json` prints the raw JSON.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
import urllib.error
import urllib.request
from typing import Any, TextIO

from bridge.errors import EXIT_OK, EXIT_UNAVAILABLE

__all__ = ["fetch_status", "render_status", "run_status"]

_CLEAR = "\x1b[H\x1b[2J"


class StatusUnavailable(Exception):
    pass


def fetch_status(host: str, port: int, timeout: float = 3.0) -> dict[str, Any]:
    url = f"http://{host}:{port}/status"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            data: dict[str, Any] = json.loads(response.read())
            return data
    except urllib.error.URLError as exc:
        reason = getattr(exc, "reason", exc)
        raise StatusUnavailable(
            f"cannot reach the bridge's control listener at {host}:{port} ({reason}); is the bridge "
            "running, and is control.listen set to that address? (--control HOST:PORT or --profile FILE)"
        ) from None
    except (OSError, ValueError) as exc:
        raise StatusUnavailable(f"bad answer from {url}: {exc}") from None


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}:{seconds % 60:02d}"


def _count(n: int) -> str:
    for unit, size in (("G", 1 << 30), ("M", 1 << 20), ("k", 1 << 10)):
        if n >= 10 * size:
            return f"{n // size}{unit}"
    return str(n)


def render_status(data: dict[str, Any], width: int = 120) -> str:
    ready = "ready" if data.get("ready") else "NOT READY: " + "; ".join(data.get("not_ready", []))
    totals = data.get("totals", {})
    ended = data.get("calls_ended", {})
    rejected = {k: v for k, v in data.get("rejected", {}).items() if v}
    lines = [
        f"sip-ws-bridge {data.get('version', '?')}  profile {data.get('name', '?')}  "
        f"pid {data.get('pid', '?')}  up {_duration(data.get('uptime_s'))}  {ready}",
        f"calls: {data.get('active_calls', 0)} active of {data.get('max_calls', 0)}, "
        f"{data.get('invites', 0)} taken; {data.get('registration', '')}",
        "ended: " + (", ".join(f"{k} {v}" for k, v in sorted(ended.items())) or "none")
        + ("   rejected: " + ", ".join(f"{k} {v}" for k, v in sorted(rejected.items())) if rejected else ""),
        f"frames in {_count(totals.get('caller_frames', 0))}  "
        f"out {_count(totals.get('bot_frames_played', 0))}  underruns {totals.get('underruns', 0)}  "
        f"drops {totals.get('media_to_bot_dropped', 0)}"
        f"+{totals.get('caller_frames_lost', 0)}  bytes to bot {_count(totals.get('bytes_to_bot', 0))}  "
        f"from bot {_count(totals.get('audio_bytes_from_bot', 0))}  reloads {data.get('reloads', 0)}",
        "",
    ]
    header = (f"{'CALL-ID':<24} {'FROM':<14} {'TO':<10} {'STATE':<10} {'TIME':>6} {'CODEC':<5} "
              f"{'IN':>6} {'OUT':>6} {'UNDR':>4} {'DROP':>4} {'BUF ms':>6} {'DTMF':<8} REC")
    lines.append(header[:width])
    calls = sorted(data.get("calls", []), key=lambda c: -(c.get("age_s") or 0))
    for call in calls:
        age = call.get("answered_s") if call.get("answered_s") is not None else call.get("age_s")
        row = (f"{str(call.get('call_sid', ''))[:24]:<24} {str(call.get('from', ''))[:14]:<14} "
               f"{str(call.get('to', ''))[:10]:<10} {call.get('state', ''):<10} {_duration(age):>6} "
               f"{call.get('codec', ''):<5} {_count(call.get('frames_in', 0)):>6} "
               f"{_count(call.get('frames_out', 0)):>6} {call.get('underruns', 0):>4} "
               f"{call.get('drops', 0):>4} "
               f"{call.get('playout_ms', 0):>6} {str(call.get('dtmf', ''))[-8:]:<8} "
               f"{'yes' if call.get('recording') else ''}")
        lines.append(row[:width])
    if not calls:
        lines.append("(no calls)")
    return "\n".join(lines) + "\n"


def run_status(host: str, port: int, *, once: bool, as_json: bool, interval: float,
               out: TextIO | None = None) -> int:
    out = out if out is not None else sys.stdout
    try:
        while True:
            try:
                data = fetch_status(host, port)
            except StatusUnavailable as exc:
                print(f"sip-ws-bridge: {exc}", file=sys.stderr)
                return EXIT_UNAVAILABLE
            if as_json:
                text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
            else:
                text = render_status(data, shutil.get_terminal_size((120, 40)).columns)
            if once:
                out.write(text)
                out.flush()
                return EXIT_OK
            stamp = time.strftime("%H:%M:%S  ") + f"(every {interval:g} s, Ctrl-C to quit)\n"
            out.write(_CLEAR + stamp + text)
            out.flush()
            time.sleep(interval)
    except KeyboardInterrupt:
        return EXIT_OK
