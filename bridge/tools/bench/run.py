"""`sip-ws-bridge bench`: how many calls per machine, and how much delay the bridge adds.

It starts the bridge as users run it (`sip-ws-bridge run` on a generated profile), the load bot
in its own process, and sipp placing N concurrent calls at a set rate with real RTP speech
(`rtp_stream`) and RFC 4733 DTMF. It samples the bridge's CPU, memory and open files from
/proc, captures a sample of the bridge's RTP and of its WebSocket streams on the wire to check
the pacing toward callers and toward the bot, and reads the bridge's own latency histograms from
its shutdown record. One table is printed;
`--json FILE` writes the same figures for comparison between runs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from bridge.tools.bench.wire import media_pacing, pacing, read_pcap_rtp, read_pcap_ws_media, sample_modulus
from bridge.tools.demo import free_port

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
SAMPLED_CALLS = 10  # RTP of this many calls is captured to check pacing on the wire
SAMPLED_STREAMS = 16  # about this many bot streams are captured to check pacing toward the bot
WS_CAPTURE_KB = 400_000  # the bot-stream capture stops at this size (a long soak would fill a disk)


@dataclass
class ProcSample:
    t: float
    cpu_s: float
    rss_mb: float
    fds: int


@dataclass
class Run:
    workdir: Path
    calls: int
    duration: float
    chunk_ms: int
    rate: float
    hold: float
    workers: int
    spread_ticks: bool = True
    clear_every_s: float = 15.0  # the load bot's clears, per stream
    samples: list[ProcSample] = field(default_factory=list)


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


def profile_yaml(
    run: Run, sip_port: int, bot_port: int, rtp_start: int, rtp_count: int, log_level: str,
    tick_phase_ms: int | None = None,
) -> str:
    media = "" if tick_phase_ms is None else f"media:\n  tick_phase_ms: {tick_phase_ms}\n"
    return f"""\
name: bench
sip:
  listen: "127.0.0.1:{sip_port}"
  transports: [udp]
  rtp_port_start: {rtp_start}
  rtp_port_range: {rtp_count}
  max_calls: {min(1024, run.calls + 20)}
  codecs: [PCMU]
  rate_limit: {{invites_per_second: 0}}  # the load generator is one source by design
bot:
  url: "ws://127.0.0.1:{bot_port}/bench?sample-rate=8000"
  chunk_ms: {run.chunk_ms}
{media}logging:
  level: {log_level}
  format: json
control:
  listen: null
"""


def sipp_stats(csv_path: Path) -> dict[str, str]:
    lines = [ln for ln in csv_path.read_text(errors="replace").splitlines() if ln.strip()]
    if len(lines) < 2:
        return {}
    header = lines[0].split(";")
    row = lines[-1].split(";")
    return dict(zip(header, row, strict=False))


def rtt_percentiles(rtt_csv: Path) -> dict[str, float]:
    values = []
    if rtt_csv.exists():
        for line in rtt_csv.read_text(errors="replace").splitlines()[1:]:
            parts = line.split(";")
            if len(parts) >= 2:
                with contextlib.suppress(ValueError):
                    values.append(float(parts[1]))
    values.sort()
    if not values:
        return {"p50": 0.0, "p95": 0.0, "count": 0}
    return {
        "p50": round(values[len(values) // 2], 1),
        "p95": round(values[min(len(values) - 1, int(0.95 * len(values)))], 1),
        "count": len(values),
    }


def wait_for_text(path: Path, text: str, proc: subprocess.Popen[bytes], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        if path.exists() and text in path.read_text(errors="replace"):
            return True
        time.sleep(0.1)
    return False


def run_bench(run: Run, log: Any = print) -> dict[str, Any]:
    if shutil.which("sipp") is None:
        raise SystemExit("bench: sipp is not installed (apt-get install sip-tester)")
    work = run.workdir
    bot_port, sipp_port = free_port(), free_port()
    workers = max(1, run.workers)
    sip_ports = [free_port() for _ in range(workers)]
    rtp_count = max(4 * math.ceil(run.calls / workers) + 100, 200)
    rtp_starts: list[int] = []
    for _ in range(workers):
        taken = [range(s, s + rtp_count) for s in rtp_starts]
        rtp_starts.append(free_port_block(rtp_count, avoid=taken))
    rtp_start = rtp_starts[0]
    sipp_media = free_port_block(4 * run.calls + 20, avoid=[range(s, s + rtp_count) for s in rtp_starts])
    data = resources.files("bridge").joinpath("data")
    scenario = work / "bench_uac.xml"
    scenario.write_bytes(data.joinpath("bench_uac.xml").read_bytes())
    audio = work / "speech.pcmu"
    audio.write_bytes(data.joinpath("speech.pcmu").read_bytes())
    profiles = []
    phases: list[int] | None = None
    if workers > 1 and run.spread_ticks:
        phases = [index * 20 // workers for index in range(workers)]
    for index, (port, start) in enumerate(zip(sip_ports, rtp_starts, strict=True)):
        profile = work / f"bench-{index}.yaml"
        # Each worker's media clock at its own point of the 20 ms, as docs/scaling.md advises.
        phase = phases[index] if phases is not None else None
        profile.write_text(profile_yaml(run, port, bot_port, start, rtp_count, "info", phase))
        profiles.append(profile)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}

    bot_out = work / "loadbot.json"
    bot_log = (work / "loadbot.log").open("wb")
    bot = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bridge.tools.bench.loadbot",
            "--listen",
            f"127.0.0.1:{bot_port}",
            "--out",
            str(bot_out),
            "--clear-every",
            f"{run.clear_every_s:g}",
        ],
        stdout=bot_log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    bridges: list[subprocess.Popen[bytes]] = []
    bridge_logs = [work / f"bridge-{index}.log" for index in range(workers)]
    for profile, log_path in zip(profiles, bridge_logs, strict=True):
        bridges.append(subprocess.Popen([sys.executable, "-m", "bridge", "run", "--profile", str(profile)],
                                        stdout=log_path.open("wb"), stderr=subprocess.STDOUT, env=env))
    front: subprocess.Popen[bytes] | None = None
    target_port = sip_ports[0]
    if workers > 1:
        target_port = free_port()
        front = start_front(work, target_port, [f"sip:127.0.0.1:{p}" for p in sip_ports])
    capture: subprocess.Popen[bytes] | None = None
    ws_capture: subprocess.Popen[bytes] | None = None
    front_base = front_end = None
    load_base = load_end = sipp_base = sipp_last = ProcSample(0.0, 0.0, 0.0, 0)
    try:
        if not wait_for_text(work / "loadbot.log", "loadbot ready", bot, 20):
            raise SystemExit("bench: the load bot did not start:\n" + (work / "loadbot.log").read_text())
        for bridge, log_path in zip(bridges, bridge_logs, strict=True):
            if not wait_for_text(log_path, "ready:", bridge, 30):
                raise SystemExit("bench: the bridge did not start:\n" + log_path.read_text()[-3000:])
        time.sleep(2.5 if front is not None else 0.5)  # the front's first OPTIONS round
        pids = [pid for bridge in bridges for pid in bridge_pids(bridge.pid)]
        base = proc_sample(pids)
        front_base = proc_sample(front_pids(front)) if front is not None else None
        load_base = proc_sample([bot.pid])
        log(
            f"bench: {workers} bridge process(es) up (RSS {base.rss_mb:.1f} MB, {base.fds} fds); "
            f"{run.calls} calls at {run.rate:g}/s, {run.chunk_ms} ms chunks, {run.duration:g} s"
        )

        total_calls = (
            run.calls if run.hold >= run.duration else math.ceil(run.calls * run.duration / run.hold)
        )
        ramp = run.calls / run.rate
        pcap = work / "rtp.pcap"
        ws_pcap = work / "ws.pcap"
        if shutil.which("dumpcap"):
            capture = subprocess.Popen(
                [
                    "dumpcap",
                    "-q",
                    "-i",
                    "lo",
                    "-P",
                    "-s",
                    "96",
                    "-w",
                    str(pcap),
                    "-f",
                    f"udp and src portrange {rtp_start}-{rtp_start + 4 * SAMPLED_CALLS}",
                    "-a",
                    f"duration:{int(run.duration + ramp + 10)}",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            every = sample_modulus(run.calls, SAMPLED_STREAMS)
            ws_capture = subprocess.Popen(
                [
                    "dumpcap",
                    "-q",
                    "-i",
                    "lo",
                    "-P",
                    "-w",
                    str(ws_pcap),
                    "-f",
                    f"tcp dst port {bot_port} and (tcp[0:2] % {every}) = 0",
                    "-a",
                    f"duration:{int(run.duration + ramp + 10)}",
                    "-a",
                    f"filesize:{WS_CAPTURE_KB}",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(1.0)
        started = time.monotonic()
        sipp = subprocess.Popen(
            [
                "sipp",
                f"127.0.0.1:{target_port}",
                "-sf",
                str(scenario),
                "-s",
                "bench",
                "-key",
                "audio",
                f"{audio},-1,0",
                "-d",
                str(int(run.hold * 1000)),
                "-l",
                str(run.calls),
                "-r",
                str(run.rate),
                "-m",
                str(total_calls),
                "-i",
                "127.0.0.1",
                "-p",
                str(sipp_port),
                "-mi",
                "127.0.0.1",
                "-mp",
                str(sipp_media),
                "-trace_stat",
                "-stf",
                str(work / "sipp_stats.csv"),
                "-fd",
                "1",
                "-trace_rtt",
                "-rtt_freq",
                "1",
                "-trace_err",
                "-recv_timeout",
                "30000",
                "-timeout",
                f"{int(run.duration + ramp + 60)}s",
                "-timeout_error",
                "-nostdin",
                # A 180 forwarded after the 200 (the front's processes may reorder them, as any
                # multi-process proxy may) is ignored instead of aborting the call; a real
                # failure still fails it (a missing 200, BYE or 200 to BYE times out).
                "-default_behaviors",
                "all,-abortunexp",
            ],
            cwd=work,
            stdout=subprocess.DEVNULL,
            stderr=(work / "sipp.err").open("wb"),
        )
        steady_from = started + ramp + 2.0
        steady_to = started + min(run.duration, ramp + run.hold) - 1.0
        steady: list[ProcSample] = []
        sipp_base = sipp_last = proc_sample([sipp.pid])
        peak_rss = base.rss_mb
        next_report = time.monotonic() + 10
        while sipp.poll() is None:
            time.sleep(0.5)
            sample = proc_sample(pids)
            run.samples.append(sample)
            if sipp.poll() is None:
                sipp_last = proc_sample([sipp.pid])
            peak_rss = max(peak_rss, sample.rss_mb)
            if steady_from <= sample.t <= steady_to:
                steady.append(sample)
            if sample.t >= next_report:
                next_report = sample.t + 10
                log(f"bench: t={sample.t - started:5.0f}s RSS {sample.rss_mb:6.1f} MB, {sample.fds} fds")
        sipp_rc = sipp.returncode
        load_end = proc_sample([bot.pid])
        elapsed = time.monotonic() - started
        time.sleep(2.0)
        end = proc_sample(pids)
        front_end = proc_sample(front_pids(front)) if front is not None else None
    finally:
        for dump in (capture, ws_capture):
            if dump is not None and dump.poll() is None:
                dump.send_signal(signal.SIGINT)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    dump.wait(10)
        for bridge in bridges:
            if bridge.poll() is None:
                bridge.send_signal(signal.SIGTERM)
        for bridge in bridges:
            try:
                bridge.wait(60)
            except subprocess.TimeoutExpired:
                bridge.kill()
        if front is not None and front.poll() is None:
            front.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                front.wait(10)
        if bot.poll() is None:
            bot.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                bot.wait(30)

    stats = sipp_stats(work / "sipp_stats.csv")
    bot_figures = json.loads(bot_out.read_text()) if bot_out.exists() else {}
    records = []
    for line in "\n".join(p.read_text(errors="replace") for p in bridge_logs).splitlines():
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                records.append(json.loads(line))
    summaries = [r for r in records if r.get("event") == "call_summary"]
    # Each process reports its own histograms; with several, the worst one is shown.
    latencies = [r for r in records if r.get("event") == "latency"]
    latency: dict[str, dict[str, float]] = {
        direction: max((r.get(direction, {}) for r in latencies), key=lambda d: d.get("p99", 0), default={})
        for direction in ("rtp_to_ws", "ws_to_rtp", "mark_lag", "clear_to_silence")
    }
    rtt = rtt_percentiles(next(iter(work.glob("*_rtt.csv")), work / "none"))
    wire = pacing(read_pcap_rtp(pcap)) if capture is not None and pcap.exists() else {}
    ws_wire = (media_pacing(read_pcap_ws_media(ws_pcap, bot_port))
               if ws_capture is not None and ws_pcap.exists() else {})

    warm_at = started + ramp + min(run.hold, run.duration / 2)
    warm = next((s for s in run.samples if s.t >= warm_at), None)
    cpu_pct = 0.0
    if len(steady) >= 2:
        cpu_pct = 100.0 * (steady[-1].cpu_s - steady[0].cpu_s) / (steady[-1].t - steady[0].t)
    attempted = int(stats.get("TotalCallCreated", 0) or 0)
    completed = int(stats.get("SuccessfulCall(C)", 0) or 0)
    to_bot = bot_figures.get("media_events", 0)
    result: dict[str, Any] = {
        "calls": run.calls,
        "duration_s": run.duration,
        "chunk_ms": run.chunk_ms,
        "rate_cps": run.rate,
        "workers": run.workers,
        "tick_phases_ms": phases,
        "attempted": attempted,
        "answered": completed
        + int(stats.get("FailedCall(C)", 0) or 0)
        - int(stats.get("FailedCallRejected(C)", 0) or 0),
        "completed": completed,
        "failed": int(stats.get("FailedCall(C)", 0) or 0),
        "sipp_rc": sipp_rc,
        "elapsed_s": round(elapsed, 1),
        "invite_to_200_ms": rtt,
        "cpu_total_pct": round(cpu_pct, 1),
        "load_bot_cpu_pct": _cpu_pct(load_base, load_end),
        "sipp_cpu_pct": _cpu_pct(sipp_base, sipp_last),
        "front_cpu_pct": round(
            100.0 * (front_end.cpu_s - front_base.cpu_s) / max(0.001, front_end.t - front_base.t), 1)
        if front_end is not None and front_base is not None else None,
        "cpu_per_call_pct": round(cpu_pct / run.calls, 3) if run.calls else 0.0,
        "rss_base_mb": round(base.rss_mb, 1),
        "rss_peak_mb": round(peak_rss, 1),
        "rss_per_call_mb": round((peak_rss - base.rss_mb) / run.calls, 3) if run.calls else 0.0,
        "rss_end_mb": round(end.rss_mb, 1),
        # Under load: once the first calls were replaced (warm-up) and at the end of the load.
        "rss_warm_mb": round(warm.rss_mb, 1) if warm else None,
        "rss_last_load_mb": round(steady[-1].rss_mb, 1) if steady else None,
        "fds_start": base.fds,
        "fds_end": end.fds,
        "late_frame_pct_to_bot": ws_wire.get("late_pct", 0.0),
        "ws_sampled_events": ws_wire.get("events", 0),
        # The same check as the bot timed its arrivals: its own event loop's delays included.
        "late_frame_pct_to_bot_as_received": round(100.0 * (bot_figures.get("late_events", 0)) / to_bot, 3)
        if to_bot
        else 0.0,
        "missing_ms_to_bot": bot_figures.get("missing_ms", 0),
        "late_frame_pct_to_caller": wire.get("late_pct", 0.0),
        "rtp_sampled_packets": wire.get("packets", 0),
        "added_latency_ms": {
            "rtp_to_ws": latency.get("rtp_to_ws", {}),
            "ws_to_rtp": latency.get("ws_to_rtp", {}),
        },
        "mark_lag_ms": latency.get("mark_lag", {}),
        "clear_to_silence_ms": latency.get("clear_to_silence", {}),
        "marks_answered": bot_figures.get("marks_answered", 0),
        "dtmf_received": bot_figures.get("dtmf", 0),
        "streams_stopped": bot_figures.get("stops", 0),
        "playout_underruns": sum(int(r.get("underruns", 0)) for r in summaries),
        "media_drops": sum(int(r.get("media_drops", 0)) for r in summaries),
        "rtp_rx_lost": sum(int(r.get("rtp_rx_lost", 0)) for r in summaries),
    }
    return result


def _cpu_pct(start: ProcSample, end: ProcSample) -> float:
    return round(100.0 * (end.cpu_s - start.cpu_s) / (end.t - start.t), 1) if end.t > start.t else 0.0


def print_table(r: dict[str, Any]) -> None:
    lat = r["added_latency_ms"]
    rows = [
        (
            "calls concurrent / chunk",
            f"{r['calls']} / {r['chunk_ms']} ms, {r['rate_cps']:g} calls/s, {r['duration_s']:g} s",
        ),
        (
            "attempted / answered / completed",
            f"{r['attempted']} / {r['answered']} / {r['completed']} (failed {r['failed']})",
        ),
        ("INVITE -> 200 OK p50 / p95", f"{r['invite_to_200_ms']['p50']} / {r['invite_to_200_ms']['p95']} ms"),
        ("CPU total / per call", f"{r['cpu_total_pct']} % / {r['cpu_per_call_pct']} % of one core"),
        (
            "RSS base / peak / per call",
            f"{r['rss_base_mb']} / {r['rss_peak_mb']} MB / {r['rss_per_call_mb']} MB",
        ),
        ("RSS end, fds start -> end", f"{r['rss_end_mb']} MB, {r['fds_start']} -> {r['fds_end']}"),
        (
            "late frames to bot / to caller (on the wire)",
            f"{r['late_frame_pct_to_bot']} % / {r['late_frame_pct_to_caller']} % "
            f"({r['ws_sampled_events']} media events, {r['rtp_sampled_packets']} RTP packets sampled)",
        ),
        ("late frames as the load bot received them", f"{r['late_frame_pct_to_bot_as_received']} %"),
        (
            "added latency rtp->ws p50 / p99",
            f"{lat['rtp_to_ws'].get('p50', '-')} / {lat['rtp_to_ws'].get('p99', '-')} ms",
        ),
        (
            "added latency ws->rtp p50 / p99",
            f"{lat['ws_to_rtp'].get('p50', '-')} / {lat['ws_to_rtp'].get('p99', '-')} ms",
        ),
        (
            "mark answered after its audio p50 / p99",
            f"{r['mark_lag_ms'].get('p50', '-')} / {r['mark_lag_ms'].get('p99', '-')} ms "
            f"({r['marks_answered']} marks)",
        ),
        (
            "clear -> silence p50 / p99",
            f"{r['clear_to_silence_ms'].get('p50', '-')} / {r['clear_to_silence_ms'].get('p99', '-')} ms "
            f"({int(r['clear_to_silence_ms'].get('count', 0))} clears)",
        ),
        ("DTMF received by the bot", str(r["dtmf_received"])),
        (
            "load generators' CPU (bot, sipp, front)",
            f"{r['load_bot_cpu_pct']} %, {r['sipp_cpu_pct']} %, "
            f"{'-' if r['front_cpu_pct'] is None else r['front_cpu_pct']} %",
        ),
        ("playout underruns, media drops, RTP lost", f"{r['playout_underruns']}, {r['media_drops']}, "
                                                     f"{r['rtp_rx_lost']}"),
    ]
    width = max(len(k) for k, _ in rows)
    print("-" * (width + 50))
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    print("-" * (width + 50))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sip-ws-bridge bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=20, help="concurrent calls (default 20)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of load (default 10)")
    parser.add_argument("--chunk-ms", type=int, choices=(20, 100), default=100)
    parser.add_argument(
        "--rate", type=float, default=0.0, help="calls set up per second (default calls/5, max 50)"
    )
    parser.add_argument(
        "--hold", type=float, default=0.0, help="call length in s (default: the whole duration)"
    )
    parser.add_argument("--workers", type=int, default=1, help="bridge worker processes (default 1)")
    parser.add_argument("--same-tick", action="store_true",
                        help="leave each worker's media clock phase to chance (default: spread "
                             "them over the 20 ms with media.tick_phase_ms)")
    parser.add_argument("--clear-every", type=float, default=15.0,
                        help="seconds between the load bot's clears on each stream (default 15)")
    parser.add_argument("--json", help="write the figures to this file")
    parser.add_argument("--keep", help="keep the run's files (logs, captures) in this directory")
    args = parser.parse_args(argv)
    rate = args.rate or min(50.0, max(1.0, args.calls / 5))
    hold = args.hold or args.duration
    workdir = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="sip-ws-bridge-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    run = Run(workdir, args.calls, args.duration, args.chunk_ms, rate, hold, args.workers,
              spread_ticks=not args.same_tick, clear_every_s=args.clear_every)
    result: dict[str, Any] | None = None
    try:
        result = run_bench(run)
    finally:
        # A run that lost a call keeps its files: sipp's errors and the bridges' logs say why,
        # and a capacity run is too long to repeat just to find out.
        if not args.keep:
            if all_completed(result):
                shutil.rmtree(workdir, ignore_errors=True)
            else:
                print(f"bench: not every call completed; the run's files (bridge and load bot logs, "
                      f"sipp.err, the RTP capture) are kept in {workdir}", file=sys.stderr)
    print_table(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0 if all_completed(result) else 1


def all_completed(result: dict[str, Any] | None) -> bool:
    return result is not None and result["attempted"] > 0 and result["completed"] == result["attempted"]
