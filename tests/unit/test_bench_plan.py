"""What a benchmark run starts: the captures' command lines and the workers' tick phases."""

from __future__ import annotations

from pathlib import Path

from bridge.tools.bench.plan import Run, rtp_capture_command, tick_phases, ws_capture_command


def run(workers: int = 1, spread_ticks: bool = True) -> Run:
    return Run(Path("/w"), 30, 10.0, 100, 5.0, 10.0, workers, spread_ticks=spread_ticks)


def test_the_captures_sample_rtp_headers_and_whole_bot_streams() -> None:
    assert rtp_capture_command(run(), Path("/w/rtp.pcap"), 12000, 6.0) == [
        "dumpcap", "-q", "-i", "lo", "-P", "-s", "96", "-w", "/w/rtp.pcap",
        "-f", "udp and src portrange 12000-12040", "-a", "duration:26"]
    assert ws_capture_command(run(), Path("/w/ws.pcap"), 4000, 6.0) == [
        "dumpcap", "-q", "-i", "lo", "-P", "-w", "/w/ws.pcap",
        "-f", "tcp dst port 4000 and (tcp[0:2] % 1) = 0", "-a", "duration:26", "-a", "filesize:400000"]


def test_workers_tick_at_their_own_point_of_the_frame_unless_told_not_to() -> None:
    assert tick_phases(run(), 1) is None
    assert tick_phases(run(4), 4) == [0, 5, 10, 15]
    assert tick_phases(run(4, spread_ticks=False), 4) is None
