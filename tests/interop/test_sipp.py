"""The bridge against sipp, an independent SIP implementation: raw codec files streamed as RTP,
RFC 4733 and SIP INFO DTMF, codec negotiation, both hang-up directions, malformed SIP."""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path

import numpy as np
import pytest

from bridge.audio.g711 import alaw_decode, ulaw_decode
from tests.botlib import Stream, TestBot, tone
from tests.bridgelib import BridgeProcess
from tests.integration.test_call_e2e import exact_fraction
from tests.peerlib import MEDIA_DIR, SIPP_AUDIO, TsharkCapture, run_sipp

pytestmark = [pytest.mark.interop, pytest.mark.timeout(120)]


def target(bridge: BridgeProcess) -> str:
    return f"127.0.0.1:{bridge.sip_port}"


@pytest.mark.parametrize("codec, pt, decode", [("pcmu", "0", ulaw_decode), ("pcma", "8", alaw_decode)])
def test_g711_from_sipp_reaches_the_bot_bit_exact(
        tmp_path: Path, codec: str, pt: str, decode: object) -> None:
    """A raw codec file streamed by sipp: the voiced 20 ms the bot gets, after the jitter
    buffer's first 300 ms, are the exact G.711 decode of what was sent. Not quite all of them:
    when PJSIP's adaptive jitter buffer shrinks it merges two frames (WSOLA), which leaves two
    adjacent windows inexact with no packet lost (seen about once in ten runs, on either media
    path). A wrong decoder or law would match ~0 %."""
    async def script(stream: Stream) -> None:
        await asyncio.sleep(4.0)
        await stream.ws.close(1000)

    with TestBot(script) as bot, BridgeProcess(tmp_path, bot.url) as bridge:
        result = run_sipp(tmp_path, target(bridge), "uac_wait_bye",
                          keys={"audio": SIPP_AUDIO[codec], "pt": pt, "codec": codec.upper()})
        stream = bot.wait_closed()
        summary = bridge.wait_summaries()[0]
    assert result.rc == 0, result.errors
    assert summary["codec"] == codec.upper()
    reference = decode((MEDIA_DIR / f"speech.{codec}").read_bytes())  # type: ignore[operator]
    received = stream.pcm()[int(0.3 * 16000):]
    assert len(received) > 3 * 16000
    assert exact_fraction(received, reference) >= 0.97


@pytest.mark.parametrize("scenario, codec", [("uac_media_dtmf", "pcmu"), ("uac_media_dtmf_pcma", "pcma")])
def test_rfc4733_and_info_dtmf_from_sipp_arrive_in_order(tmp_path: Path, scenario: str, codec: str) -> None:
    with TestBot() as bot, BridgeProcess(tmp_path, bot.url) as bridge:
        result = run_sipp(tmp_path, target(bridge), scenario, keys={"audio": SIPP_AUDIO[codec]},
                          duration_ms=1000)
        stream = bot.wait_closed()
    assert result.rc == 0, result.errors
    # sipp sends RFC 4733 "123#" (play_dtmf) and then SIP INFO "5".
    assert stream.dtmf() == "123#5"
    assert stream.of("stop")[0]["stop"]["reason"] == "callended" and stream.close_code == 1000
    assert "BYE" in result.messages


@pytest.mark.parametrize("clock_rate", [8000, 16000])
def test_g722_is_negotiated_and_its_audio_reaches_the_bot(tmp_path: Path, clock_rate: int) -> None:
    """G.722 at 16 kHz to a 16 kHz socket; with media.clock_rate 16000 the wideband band
    (above 4 kHz) survives end to end, with 8000 it is cut at 4 kHz."""
    with TestBot() as bot, BridgeProcess(tmp_path, bot.url + "?sample-rate=16000",
                                         {"media": {"clock_rate": clock_rate}}) as bridge:
        result = run_sipp(tmp_path, target(bridge), "uac_media_dtmf_g722",
                          keys={"audio": SIPP_AUDIO["g722"]}, duration_ms=2000)
        stream = bot.wait_closed()
        summary = bridge.wait_summaries()[0]
    assert result.rc == 0, result.errors
    assert summary["codec"] == "G722"
    pcm16k = np.frombuffer(stream.pcm(), dtype="<i2").astype(np.float64)
    spectrum = np.abs(np.fft.rfft(pcm16k)) ** 2
    freqs = np.fft.rfftfreq(len(pcm16k), 1 / 16000)
    assert np.sqrt(np.mean(pcm16k**2)) > 300
    assert spectrum[(freqs > 200) & (freqs < 3400)].sum() > 0.5 * spectrum.sum()  # speech
    wideband = spectrum[(freqs > 4500) & (freqs < 7000)].sum() / spectrum.sum()
    if clock_rate == 16000:
        assert wideband > 1e-3  # espeak's fricatives above 4.5 kHz made it through
    else:
        assert wideband < 1e-4


def test_sip_over_tcp_and_call_sid_is_the_sip_call_id(tmp_path: Path) -> None:
    with TestBot() as bot, BridgeProcess(tmp_path, bot.url) as bridge:
        result = run_sipp(tmp_path, target(bridge), "uac_media_dtmf", keys={"audio": SIPP_AUDIO["pcmu"]},
                          duration_ms=500, extra_args=["-t", "t1"])
        stream = bot.wait_closed()
    assert result.rc == 0, result.errors
    call_ids = {line.split(":", 1)[1].strip() for line in result.messages.splitlines()
                if line.lower().startswith("call-id:")}
    assert stream.start["start"]["call_sid"] in call_ids
    assert stream.dtmf() == "123#5"


def test_an_offer_with_no_common_codec_gets_488(tmp_path: Path) -> None:
    with TestBot() as bot, BridgeProcess(tmp_path, bot.url) as bridge:
        result = run_sipp(tmp_path, target(bridge), "odd/odd_no_common_codec")
        assert not bot.streams  # the bot is never bothered
    assert result.rc == 0, result.errors
    assert "SIP/2.0 488" in result.messages


def test_bot_hanging_up_sends_bye_to_the_caller(tmp_path: Path) -> None:
    async def script(stream: Stream) -> None:
        await asyncio.sleep(1.0)
        await stream.ws.close(1000)

    with TestBot(script) as bot, BridgeProcess(tmp_path, bot.url) as bridge:
        result = run_sipp(tmp_path, target(bridge), "uac_wait_bye",
                          keys={"audio": SIPP_AUDIO["pcmu"], "pt": "0", "codec": "PCMU"})
        summary = bridge.wait_summaries()[0]
    assert result.rc == 0, result.errors  # sipp saw the bridge's BYE and answered it
    assert summary["ended_by"] == "local" and "bot closed" in summary["end_reason"]
    assert bot.streams[0].close_code == 1000


def test_clear_silences_the_rtp_within_one_frame(tmp_path: Path) -> None:
    """On the wire: after `clear` reaches the bridge, every RTP packet it sends is silence
    (mu-law 0xFF/0x7F) from the next 20 ms frame on."""
    sent: dict[str, float] = {}

    async def script(stream: Stream) -> None:
        await asyncio.sleep(0.5)
        await stream.send_audio(tone(1000, 6.0), chunk_bytes=32000)
        await asyncio.sleep(1.5)
        sent["clear"] = time.time()
        await stream.clear()

    with TestBot(script) as bot, BridgeProcess(tmp_path, bot.url) as bridge:
        rtp_lo = bridge.profile["sip"]["rtp_port_start"]
        capture = TsharkCapture.start(tmp_path, f"udp and portrange {rtp_lo}-{rtp_lo + 199}",
                                      duration_s=20, name="clear")
        time.sleep(1.5)
        result = run_sipp(tmp_path, target(bridge), "uac_media_dtmf", keys={"audio": SIPP_AUDIO["pcmu"]},
                          duration_ms=1000)
        bot.wait_closed()
        pcap = capture.stop()
    assert result.rc == 0
    packets = _rtp_payloads(pcap, rtp_lo)
    assert packets, "no RTP captured from the bridge"
    cleared = sent["clear"]
    tone_before = [p for t, p in packets if cleared - 1.0 < t < cleared - 0.1]
    after = [p for t, p in packets if t > cleared + 0.020 + 0.005]  # one frame + scheduling slack
    assert tone_before and all(not _silent(p) for p in tone_before)
    assert after and all(_silent(p) for p in after), [t - cleared for t, p in packets if t > cleared][:5]


def _silent(payload: bytes) -> bool:
    return all(b in (0xFF, 0x7F, 0xFE, 0x7E) for b in payload)


def _rtp_payloads(pcap: Path, rtp_lo: int) -> list[tuple[float, bytes]]:
    """(capture time, payload) of PCMU packets sent from the bridge's RTP port range."""
    import subprocess

    out = subprocess.run(
        ["tshark", "-r", str(pcap), "-o", "rtp.heuristic_rtp:TRUE", "-Y", "rtp.p_type == 0",
         "-T", "fields", "-e", "frame.time_epoch", "-e", "udp.srcport", "-e", "rtp.payload"],
        capture_output=True, text=True, timeout=60, check=True).stdout
    packets = []
    for line in out.splitlines():
        parts = line.split("\t")
        if len(parts) != 3 or not parts[2]:
            continue
        if rtp_lo <= int(parts[1]) < rtp_lo + 200:
            packets.append((float(parts[0]), bytes.fromhex(parts[2].replace(":", ""))))
    return packets


def test_bot_closing_can_transfer_the_caller_with_refer(tmp_path: Path) -> None:
    """Profile on_close: transfer -> the bridge sends a blind REFER to the configured URI, and
    hangs up its leg once the transferee reports the outcome."""
    async def script(stream: Stream) -> None:
        await asyncio.sleep(1.0)
        await stream.ws.close(1000)

    overrides = {"bot": {"on_close": {"action": "transfer", "transfer_to": "sip:agents@127.0.0.1:5999"}}}
    with TestBot(script) as bot, BridgeProcess(tmp_path, bot.url, overrides) as bridge:
        result = run_sipp(tmp_path, target(bridge), "uac_accept_refer", keys={"audio": SIPP_AUDIO["pcmu"]})
        summary = bridge.wait_summaries()[0]
        assert bot.streams[0].close_code == 1000
    assert result.rc == 0, result.errors + result.messages[-3000:]
    assert "REFER-TO sip:agents@127.0.0.1:5999" in result.logs
    assert "transferred to sip:agents@127.0.0.1:5999" in summary["end_reason"]


def test_rtp_timestamps_and_marker_stay_continuous_across_silence(tmp_path: Path) -> None:
    """The bridge sends one packet every 20 ms whatever the bot does (audio, silence, audio):
    sequence +1 and timestamp +160 each time, and the marker bit at most on the first packet."""
    import subprocess

    async def script(stream: Stream) -> None:
        await asyncio.sleep(0.3)
        await stream.send_audio(tone(500, 0.5))
        await asyncio.sleep(1.5)  # silence gap
        await stream.send_audio(tone(700, 0.5))

    with TestBot(script) as bot, BridgeProcess(tmp_path, bot.url) as bridge:
        rtp_lo = bridge.profile["sip"]["rtp_port_start"]
        capture = TsharkCapture.start(tmp_path, f"udp and src portrange {rtp_lo}-{rtp_lo + 199}",
                                      duration_s=20, name="rtp")
        result = run_sipp(tmp_path, target(bridge), "uac_media_dtmf", keys={"audio": SIPP_AUDIO["pcmu"]},
                          duration_ms=1500)
        bot.wait_closed()
        pcap = capture.stop()
    assert result.rc == 0
    out = subprocess.run(
        ["tshark", "-r", str(pcap), "-o", "rtp.heuristic_rtp:TRUE", "-Y", "rtp.p_type == 0",
         "-T", "fields", "-e", "rtp.seq", "-e", "rtp.timestamp", "-e", "rtp.marker"],
        capture_output=True, text=True, timeout=60, check=True).stdout
    rows = [tuple(int(x) if x.isdigit() else x for x in line.split("\t")) for line in out.splitlines()]
    assert len(rows) > 150  # > 3 s of 20 ms packets
    for (seq_a, ts_a, _), (seq_b, ts_b, marker_b) in itertools.pairwise(rows):
        assert (seq_b - seq_a) % 65536 == 1
        assert (ts_b - ts_a) % 2**32 == 160
        assert marker_b in (0, "0", "False")
