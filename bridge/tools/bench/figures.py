"""A benchmark run's figures, from what it measured and the files it left (sipp's statistics,
the load bot's JSON, the bridges' logs, the captures), and the table that shows them."""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridge.tools.bench.plan import Run
from bridge.tools.bench.procs import ProcSample
from bridge.tools.bench.wire import media_pacing, pacing, read_pcap_rtp, read_pcap_ws_media


@dataclass
class Measured:
    """What `run_bench` measured while the load ran (the rest is read from the run's files)."""

    phases: list[int] | None  # each worker's tick phase, ms
    started: float  # when sipp started (monotonic)
    ramp: float  # seconds sipp takes to set up the concurrent calls
    elapsed: float
    sipp_rc: int | None
    base: ProcSample  # the bridges before the load
    end: ProcSample  # and after it
    peak_rss: float
    steady: list[ProcSample]  # the bridges' samples once every call was up
    load_bot: tuple[ProcSample, ProcSample]
    sipp: tuple[ProcSample, ProcSample]
    front: tuple[ProcSample, ProcSample] | None
    bridge_logs: list[Path]
    bot_out: Path
    bot_port: int
    rtp_pcap: Path | None  # None: no capture (no dumpcap)
    ws_pcap: Path | None


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


def figures(run: Run, m: Measured) -> dict[str, Any]:
    work = run.workdir
    stats = sipp_stats(work / "sipp_stats.csv")
    bot_figures = json.loads(m.bot_out.read_text()) if m.bot_out.exists() else {}
    records = []
    for line in "\n".join(p.read_text(errors="replace") for p in m.bridge_logs).splitlines():
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
    wire = pacing(read_pcap_rtp(m.rtp_pcap)) if m.rtp_pcap is not None and m.rtp_pcap.exists() else {}
    ws_wire = (media_pacing(read_pcap_ws_media(m.ws_pcap, m.bot_port))
               if m.ws_pcap is not None and m.ws_pcap.exists() else {})

    warm_at = m.started + m.ramp + min(run.hold, run.duration / 2)
    warm = next((s for s in run.samples if s.t >= warm_at), None)
    steady, base, end, peak_rss = m.steady, m.base, m.end, m.peak_rss
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
        "tick_phases_ms": m.phases,
        "attempted": attempted,
        "answered": completed
        + int(stats.get("FailedCall(C)", 0) or 0)
        - int(stats.get("FailedCallRejected(C)", 0) or 0),
        "completed": completed,
        "failed": int(stats.get("FailedCall(C)", 0) or 0),
        "sipp_rc": m.sipp_rc,
        "elapsed_s": round(m.elapsed, 1),
        "invite_to_200_ms": rtt,
        "cpu_total_pct": round(cpu_pct, 1),
        "load_bot_cpu_pct": cpu_pct_between(*m.load_bot),
        "sipp_cpu_pct": cpu_pct_between(*m.sipp),
        "front_cpu_pct": round(
            100.0 * (m.front[1].cpu_s - m.front[0].cpu_s) / max(0.001, m.front[1].t - m.front[0].t), 1)
        if m.front is not None else None,
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


def cpu_pct_between(start: ProcSample, end: ProcSample) -> float:
    return round(100.0 * (end.cpu_s - start.cpu_s) / (end.t - start.t), 1) if end.t > start.t else 0.0


def all_completed(result: dict[str, Any] | None) -> bool:
    return result is not None and result["attempted"] > 0 and result["completed"] == result["attempted"]


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
