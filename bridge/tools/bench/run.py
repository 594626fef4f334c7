"""`sip-ws-bridge bench`: how many calls per machine, and how much delay the bridge adds.

It starts the bridge as users run it (`sip-ws-bridge run` on a generated profile), the load bot
in its own process, and sipp placing N concurrent calls at a set rate with real RTP speech
(`rtp_stream`) and RFC 4733 DTMF. It samples the bridge's CPU, memory and open files from
/proc, captures a sample of the bridge's RTP and of its WebSocket streams on the wire to check
the pacing toward callers and toward the bot, and reads the bridge's own latency histograms from
its shutdown record. One table is printed;
`--json FILE` writes the same figures for comparison between runs.

This module runs it (`run_bench`) and is the command (`main`); plan.py says what is started,
procs.py starts, samples and stops the processes, figures.py reads the results and prints them.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path
from typing import Any

from bridge.tools.bench.figures import Measured, all_completed, figures, print_table
from bridge.tools.bench.plan import (
    Run,
    loadbot_command,
    profile_yaml,
    rtp_capture_command,
    sipp_command,
    tick_phases,
    ws_capture_command,
)
from bridge.tools.bench.procs import (
    ProcSample,
    bridge_pids,
    free_port_block,
    front_pids,
    proc_sample,
    start_front,
    stop_all,
    wait_for_text,
)
from bridge.tools.demo import free_port

__all__ = ["main", "run_bench"]


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
    (work / "bench_uac.xml").write_bytes(data.joinpath("bench_uac.xml").read_bytes())
    (work / "speech.pcmu").write_bytes(data.joinpath("speech.pcmu").read_bytes())
    profiles = []
    phases = tick_phases(run, workers)
    for index, (port, start) in enumerate(zip(sip_ports, rtp_starts, strict=True)):
        profile = work / f"bench-{index}.yaml"
        phase = phases[index] if phases is not None else None
        profile.write_text(profile_yaml(run, port, bot_port, start, rtp_count, "info", phase))
        profiles.append(profile)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}

    bot_out = work / "loadbot.json"
    bot_log = (work / "loadbot.log").open("wb")
    bot = subprocess.Popen(loadbot_command(run, bot_port, bot_out), stdout=bot_log, stderr=subprocess.STDOUT,
                           env=env)
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
            capture = subprocess.Popen(rtp_capture_command(run, pcap, rtp_start, ramp),
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            ws_capture = subprocess.Popen(ws_capture_command(run, ws_pcap, bot_port, ramp),
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1.0)
        started = time.monotonic()
        sipp = subprocess.Popen(
            sipp_command(run, work, target_port, sipp_port, sipp_media, total_calls, ramp),
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
        stop_all([capture, ws_capture], bridges, front, bot)

    return figures(run, Measured(
        phases=phases, started=started, ramp=ramp, elapsed=elapsed, sipp_rc=sipp_rc, base=base, end=end,
        peak_rss=peak_rss, steady=steady, load_bot=(load_base, load_end), sipp=(sipp_base, sipp_last),
        front=(front_base, front_end) if front_base is not None and front_end is not None else None,
        bridge_logs=bridge_logs, bot_out=bot_out, bot_port=bot_port,
        rtp_pcap=pcap if capture is not None else None, ws_pcap=ws_pcap if ws_capture is not None else None,
    ))


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
