"""A bad network between caller and bridge: 5 % loss, 40 +- 20 ms jitter and the reordering it
causes, on RTP only (SIP passes untouched), made by tests/peers/netem/tunnetem.py (a userspace
netem: this kernel has no sch_netem) between two network namespaces this test creates."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from bridge.audio.g711 import ulaw_encode
from tests import netns
from tests.botlib import Stream, TestBot, tone
from tests.bridgelib import BridgeProcess
from tests.faults.faultlib import media_gaps, record, wait_until
from tests.peerlib import PEERS_DIR, SIPP_DIR, PeerProcess

pytestmark = [
    pytest.mark.timeout(180),
    pytest.mark.skipif(not netns.available(), reason="needs root and ip netns"),
]

CALLER_IP, BRIDGE_IP = "10.78.0.2", "10.78.0.1"  # the TUN link tunnetem makes between the namespaces
CALLER_RTP = 16000


def tone_windows(pcm: bytes, freq: float = 1000.0, rate: int = 8000, window_ms: int = 20) -> tuple[int, int]:
    """(windows where `freq` dominates, all windows) of 16-bit PCM."""
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    n = rate * window_ms // 1000
    hits = total = 0
    for i in range(0, len(samples) - n + 1, n):
        w = samples[i : i + n]
        total += 1
        if np.sqrt(np.mean(w**2)) < 300:
            continue
        spectrum = np.abs(np.fft.rfft(w * np.hanning(n)))
        hits += abs(np.argmax(spectrum) * rate / n - freq) <= rate / n
    return hits, total


def test_rtp_loss_jitter_and_reordering_leave_a_continuous_stream(tmp_path: Path) -> None:
    host = netns.TestHost.create(43)  # the bridge's namespace; its bot is reached over a veth
    caller_ns = f"sipwsb-caller-{host.index}-{id(host) % 10000}"
    subprocess.run(["ip", "netns", "add", caller_ns], check=True, capture_output=True)
    impairment: PeerProcess | None = None
    marks: dict[str, float] = {}

    async def script(stream: Stream) -> None:
        await asyncio.sleep(1.0)
        await stream.send_audio(tone(500, 1.0), chunk_bytes=3200)
        marks["a-sent"] = time.monotonic()
        await stream.mark("a")
        await asyncio.sleep(1.5)
        await stream.send_audio(tone(500, 5.0), chunk_bytes=16000)
        await stream.mark("b")
        await asyncio.sleep(0.5)
        marks["clear-sent"] = time.monotonic()
        await stream.clear()

    caller_audio = tmp_path / "tone1k.pcmu"
    caller_audio.write_bytes(ulaw_encode(tone(1000, 20.0)))
    try:
        with TestBot(script, host=host.peer_ip) as bot:
            bridge = BridgeProcess(
                tmp_path,
                bot.url,
                {"sip": {"listen": f"{BRIDGE_IP}:5060", "allow_from": [CALLER_IP]}},
                exec_prefix=host.exec_prefix,
            )
            rtp_lo = bridge.profile["sip"]["rtp_port_start"]
            impairment = PeerProcess(
                [
                    sys.executable,
                    str(PEERS_DIR / "netem" / "tunnetem.py"),
                    "--ns-a",
                    host.name,
                    "--ns-b",
                    caller_ns,
                    "--ip-a",
                    BRIDGE_IP,
                    "--ip-b",
                    CALLER_IP,
                    "--delay",
                    "40",
                    "--jitter",
                    "20",
                    "--loss",
                    "5",
                    "--ports",
                    f"{rtp_lo}-{rtp_lo + 199},{CALLER_RTP}-{CALLER_RTP + 9}",
                    "--duration",
                    "90",
                    "--seed",
                    "7",
                ],
                tmp_path / "tunnetem.log",
                max_seconds=100,
            )
            assert wait_until(lambda: "tunnetem:" in impairment.log_text(), 10), impairment.log_text()
            bridge.start()
            try:
                sipp = PeerProcess(
                    [
                        "ip",
                        "netns",
                        "exec",
                        caller_ns,
                        "sipp",
                        f"{BRIDGE_IP}:5060",
                        "-sf",
                        str(SIPP_DIR / "uac_media_dtmf.xml"),
                        "-s",
                        "bot",
                        "-i",
                        CALLER_IP,
                        "-mi",
                        CALLER_IP,
                        "-mp",
                        str(CALLER_RTP),
                        "-key",
                        "audio",
                        f"{caller_audio},-1,0",
                        "-d",
                        "6000",
                        "-m",
                        "1",
                        "-timeout",
                        "40s",
                        "-timeout_error",
                        "-nostdin",
                        "-trace_msg",
                        "-message_file",
                        str(tmp_path / "impaired_messages.log"),
                    ],
                    tmp_path / "sipp-impaired.out",
                    cwd=tmp_path,
                    max_seconds=50,
                )
                rc = sipp.wait(55)
                sipp.stop()
                stream = bot.wait_closed()
                summary = bridge.wait_summaries()[0]
            finally:
                bridge.stop()
    finally:
        if impairment is not None:
            impairment.stop()
        subprocess.run(["ip", "netns", "del", caller_ns], capture_output=True, check=False)
        host.delete()
    stats = impairment.log_text() if impairment is not None else ""
    lost = [int(n) for n in re.findall(r"lost=(\d+)", stats)]
    assert rc == 0, (tmp_path / "sipp-impaired.out").read_text()[-2000:]
    assert lost and sum(lost) >= 10, stats  # the loss really happened (both directions)
    assert summary["rtp_rx_lost"] > 0 and summary["jitter_ms"] >= 3, summary
    gaps = media_gaps(stream)
    assert gaps["chunks_ok"] and gaps["stamps_ok"] and gaps["max_gap_s"] < 0.6, gaps
    assert gaps["messages"] >= 90  # about 10 s of the caller's audio, every 100 ms chunk present
    # Packet-loss concealment: the 1 kHz tone is in (nearly) every 20 ms of the stream although
    # 5 % of its packets never arrived. From 4 s on: before that sipp pauses its audio for the
    # RFC 4733 digits (silence there is what was sent, not loss).
    pcm = stream.pcm()
    hits, total = tone_windows(pcm[4 * 16000 : -3200])
    assert total >= 200 and hits / total >= 0.99, (hits, total)
    assert stream.dtmf() == "123#5"
    got = stream.mark_times()
    assert list(got) == ["a", "b"]
    assert got["a"] - marks["a-sent"] >= 0.9  # answered after its second of audio was played
    assert got["b"] - marks["clear-sent"] < 0.2  # answered by the clear, not 5 s later
    record(
        "network",
        f"RTP 5 % loss ({sum(lost)} packets), 40+-20 ms jitter, reordering: "
        f"stream continuous, tone in {100 * hits / total:.0f} % of frames, DTMF, marks, clear",
        injected=sum(lost),
    )
