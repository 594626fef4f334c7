"""What a benchmark run is (`Run`) and what it starts: the bridge's profile, and the command
lines of the load bot, sipp and the two captures (RTP toward callers, WebSocket toward the bot)."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from bridge.audio.framing import FRAME_MS
from bridge.tools.bench.procs import ProcSample
from bridge.tools.bench.wire import sample_modulus

SAMPLED_CALLS = 10  # RTP of this many calls is captured to check pacing on the wire
SAMPLED_STREAMS = 16  # about this many bot streams are captured to check pacing toward the bot
WS_CAPTURE_KB = 400_000  # the bot-stream capture stops at this size (a long soak would fill a disk)


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


def tick_phases(run: Run, workers: int) -> list[int] | None:
    """Each worker's media clock at its own point of the 20 ms, as docs/scaling.md advises
    (None: left to chance)."""
    if workers > 1 and run.spread_ticks:
        return [index * FRAME_MS // workers for index in range(workers)]
    return None


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


def loadbot_command(run: Run, bot_port: int, bot_out: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "bridge.tools.bench.loadbot",
        "--listen",
        f"127.0.0.1:{bot_port}",
        "--out",
        str(bot_out),
        "--clear-every",
        f"{run.clear_every_s:g}",
    ]


def dumpcap_command(pcap: Path, capture_filter: str, stops: list[str],
                    snaplen: int | None = None) -> list[str]:
    """A capture on loopback into `pcap`, in pcap rather than pcapng format (-P: what wire.py
    reads), ending at the first of `stops` (-a)."""
    argv = ["dumpcap", "-q", "-i", "lo", "-P"]
    if snaplen is not None:
        argv += ["-s", str(snaplen)]
    argv += ["-w", str(pcap), "-f", capture_filter]
    for stop in stops:
        argv += ["-a", stop]
    return argv


def rtp_capture_command(run: Run, pcap: Path, rtp_start: int, ramp: float) -> list[str]:
    """The bridge's RTP of the first `SAMPLED_CALLS` calls' ports, headers only."""
    return dumpcap_command(pcap, f"udp and src portrange {rtp_start}-{rtp_start + 4 * SAMPLED_CALLS}",
                           [f"duration:{int(run.duration + ramp + 10)}"], snaplen=96)


def ws_capture_command(run: Run, ws_pcap: Path, bot_port: int, ramp: float) -> list[str]:
    """About `SAMPLED_STREAMS` of the bot's streams (chosen by source port), whole frames."""
    every = sample_modulus(run.calls, SAMPLED_STREAMS)
    return dumpcap_command(ws_pcap, f"tcp dst port {bot_port} and (tcp[0:2] % {every}) = 0",
                           [f"duration:{int(run.duration + ramp + 10)}", f"filesize:{WS_CAPTURE_KB}"])


def sipp_command(run: Run, work: Path, target_port: int, sipp_port: int, sipp_media: int,
                 total_calls: int, ramp: float) -> list[str]:
    """sipp placing the calls with real speech and DTMF (the scenario and audio are in `work`)."""
    return [
        "sipp",
        f"127.0.0.1:{target_port}",
        "-sf",
        str(work / "bench_uac.xml"),
        "-s",
        "bench",
        "-key",
        "audio",
        f"{work / 'speech.pcmu'},-1,0",
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
    ]
