"""Agent-assist taps end to end: sipp plays the recording client (SIPREC) or the forked legs of a
PBX, a Python sender plays each stream's RTP (sipp streams only one per call), the bridge runs as
users run it, and the tap service is the test bot. Assertions are on content: which audio reached
which socket (bit-exact G.711 decodes), what `start` says about whom, and how the tracks line up.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.botlib import Stream, TestBot
from tests.bridgelib import BridgeProcess, free_port
from tests.integration.test_call_e2e import exact_fraction
from tests.peerlib import SPEECH_WAV, Asterisk, free_udp_range, run_sipp, start_sipp
from tests.taplib import (
    FRAME,
    RATE,
    RtpSender,
    RtpStream,
    band_energy,
    bursts,
    expected_g711,
    media_timestamps_ok,
    onsets,
    pair_offsets,
    pcm_of,
    rtp_ports,
    samples,
    tone,
    wait_file,
    wav_pcm,
)

pytestmark = [pytest.mark.interop, pytest.mark.timeout(180)]

SPEECH = wav_pcm(SPEECH_WAV)
TONE = tone(1000, 1.0)  # 1 kHz at 8 kHz repeats every 8 samples: every 20 ms frame is the same
AGENT_MATCH = {"agent_match": ["sip:agent-*"]}


def siprec_call(tmp_path: Path, bridge: BridgeProcess, agent: bytes, customer: bytes, hold_s: float,
                scenario: str = "siprec_src", agent_rtp: dict[str, Any] | None = None,
                ) -> tuple[Any, list[RtpStream]]:
    """One SIPREC session from sipp; the offer's m-line 0 is the agent's stream (label 20) and
    m-line 1 the customer's (label 10). Returns sipp's result and the two RTP streams."""
    ports = rtp_ports(2)
    ports_file = tmp_path / f"answer-{ports[0]}.txt"
    run = start_sipp(tmp_path, f"127.0.0.1:{bridge.sip_port}", scenario, duration_ms=int(hold_s * 1000),
                     keys={"port1": str(ports[0]), "port2": str(ports[1]), "ports_file": str(ports_file)},
                     timeout=2 * hold_s + 30)
    streams = [RtpStream(agent, ports[0], **(agent_rtp or {})), RtpStream(customer, ports[1])]
    sender = RtpSender(streams, 2 * hold_s + 10).start()
    try:
        answer = wait_file(ports_file).split()
        for i, port in enumerate(answer):
            sender.aim(i, int(port))
        result = run.wait(2 * hold_s + 40)
    finally:
        sender.stop()
    return result, streams


def by_track(streams: list[Stream]) -> dict[str, list[Stream]]:
    out: dict[str, list[Stream]] = {}
    for stream in streams:
        out.setdefault(stream.start["start"]["custom_parameters"].get("track", "all"), []).append(stream)
    return out


def params(stream: Stream) -> dict[str, str]:
    return dict(stream.start["start"]["custom_parameters"])


def voiced_exact(pcm: bytes, reference: bytes) -> float:
    return exact_fraction(pcm, reference)


def summary_of(bridge: BridgeProcess, timeout: float = 15.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [r for r in bridge.records() if r.get("event") == "tap_summary"]
        if found:
            return found[-1]
        time.sleep(0.05)
    raise TimeoutError(f"no tap_summary:\n{bridge.log_text()[-3000:]}")


def wait_streams(bot: TestBot, count: int, timeout: float = 15.0) -> list[Stream]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(bot.streams) >= count and all(s.closed.is_set() for s in bot.streams):
            return list(bot.streams)
        time.sleep(0.05)
    raise TimeoutError(f"{len(bot.streams)} streams, {sum(s.closed.is_set() for s in bot.streams)} closed")


# ---------------------------------------------------------------------------------------- SIPREC


def test_siprec_streams_go_to_their_participants_sockets_and_follow_a_metadata_update(tmp_path: Path) -> None:
    """The offer lists the agent's stream first (label 20) and the customer's second (label 10):
    the metadata, not the order, says whose is whose. Each socket carries exactly its participant's
    audio; the re-INVITE moving stream 20 to Carol ends Bob's socket and opens Carol's."""
    with TestBot() as bot, BridgeProcess(tmp_path, bot.url, {"tap": AGENT_MATCH}) as bridge:
        result, rtp = siprec_call(tmp_path, bridge, agent=TONE, customer=SPEECH, hold_s=3.0)
        streams = wait_streams(bot, 3)
        summary = summary_of(bridge)
    assert result.rc == 0, result.errors + result.messages[-2000:]
    tracks = by_track(streams)
    (customer,) = tracks["customer"]
    bob, carol = sorted(tracks["agent"], key=lambda s: int(params(s)["conversation_offset_ms"]))

    # Who is who, from the metadata.
    assert params(customer)["participant_name"] == "Alice Customer"
    assert params(customer)["participant_number"] == "+15551230001" and params(customer)["label"] == "10"
    assert params(bob)["participant_name"] == "Bob Agent" and params(bob)["label"] == "20"
    assert params(carol)["participant_name"] == "Carol Agent"
    assert params(carol)["participant_number"] == "agent-carol"
    conversation = {params(s)["conversation_id"] for s in streams}
    assert conversation == {"hVpd7YQgRW2nD22h7q60JQ=="}
    for stream in streams:
        start = stream.start["start"]
        assert (start["from"], start["media_format"]) == (
            "+15551230001", {"encoding": "base64", "sample_rate": "8000", "bit_rate": "128kbps"})
        assert params(stream)["tap"] == "siprec" and params(stream)["layout"] == "separate"
        assert params(stream)["recorded_session_id"].startswith("ab30317f")
    assert params(customer)["conversation_offset_ms"] == params(bob)["conversation_offset_ms"] == "0"
    assert 2500 <= int(params(carol)["conversation_offset_ms"]) <= 4500  # the update came after -d 3 s

    # What each socket carried: bit-exact decodes of its own participant's audio, nothing else.
    assert voiced_exact(pcm_of(customer), expected_g711(SPEECH)) >= 0.95
    for agent in (bob, carol):
        assert voiced_exact(pcm_of(agent), expected_g711(TONE)) >= 0.95
        assert len(pcm_of(agent)) > 2 * 16000
    x = samples(pcm_of(customer))
    assert band_energy(x, 1000) < 0.2 * float(np.sum(x**2)) * len(x) / 2  # no agent tone leaks in

    # One-way AgentStream: connected, start, media..., stop, close 1000; no mark, no dtmf.
    for stream in streams:
        assert stream.names[:2] == ["connected", "start"] and stream.names[-1] == "stop"
        assert set(stream.names[2:-1]) == {"media"} and stream.close_code == 1000
        assert media_timestamps_ok(stream)
    assert bob.of("stop")[0]["stop"]["reason"] == "stopped"  # ended by the participant change
    assert customer.of("stop")[0]["stop"]["reason"] == carol.of("stop")[0]["stop"]["reason"] == "callended"

    # The answer: both streams, receive only, labels echoed; and no RTP ever came back.
    answer = result.messages.split("SIP/2.0 200 OK", 1)[1].split("-----", 1)[0]
    assert answer.count("m=audio") == 2 and answer.count("a=recvonly") == 2
    assert "a=label:20" in answer and "a=label:10" in answer
    assert [s.received for s in rtp] == [0, 0]
    assert summary["metadata_updates"] == 1 and summary["late_frames"] == 0
    assert summary["calls"][0]["outcome"] == "answered"


def test_siprec_stereo_puts_the_customer_left_and_the_agent_right(tmp_path: Path) -> None:
    profile = {"tap": {**AGENT_MATCH, "layout": "stereo"}}
    with TestBot() as bot, BridgeProcess(tmp_path, bot.url, profile) as bridge:
        result, _ = siprec_call(tmp_path, bridge, agent=TONE, customer=SPEECH, hold_s=2.5)
        streams = wait_streams(bot, 2)  # one socket, reopened when the agent changed
    assert result.rc == 0, result.errors
    first, second = sorted(streams, key=lambda s: int(params(s)["conversation_offset_ms"]))
    for stream, agent in ((first, "Bob Agent"), (second, "Carol Agent")):
        start = stream.start["start"]
        assert start["media_format"] == {"encoding": "base64", "sample_rate": "8000", "bit_rate": "256kbps",
                                         "channels": "2"}
        assert params(stream)["channel_map"] == "left=customer,right=agent"
        assert params(stream)["customer_name"] == "Alice Customer" and params(stream)["agent_name"] == agent
        assert media_timestamps_ok(stream, channels=2)
        stereo = np.frombuffer(pcm_of(stream), dtype="<i2")
        left, right = stereo[0::2].tobytes(), stereo[1::2].tobytes()
        assert len(left) > 2 * 16000
        assert voiced_exact(left, expected_g711(SPEECH)) >= 0.95  # only the customer, bit-exact
        assert voiced_exact(right, expected_g711(TONE)) >= 0.95  # only the agent, bit-exact


def test_siprec_mixed_is_the_sum_of_both_sides(tmp_path: Path) -> None:
    profile = {"tap": {**AGENT_MATCH, "layout": "mixed"}}
    with TestBot() as bot, BridgeProcess(tmp_path, bot.url, profile) as bridge:
        result, _ = siprec_call(tmp_path, bridge, agent=TONE, customer=SPEECH, hold_s=2.5)
        streams = wait_streams(bot, 2)
    assert result.rc == 0, result.errors
    stream = min(streams, key=lambda s: int(params(s)["conversation_offset_ms"]))
    assert "channels" not in stream.start["start"]["media_format"]
    mixed = np.frombuffer(pcm_of(stream), dtype="<i2").astype(np.int32)
    # Every frame of the decoded tone is the same, so mix - tone frame = the customer's audio, exactly.
    tone_frame = np.frombuffer(expected_g711(TONE)[:320], dtype="<i2").astype(np.int32)
    n = len(mixed) // 160 * 160
    frames = mixed[:n].reshape(-1, 160)
    toned = frames[np.abs(frames - tone_frame).max(axis=1) < 20000]  # frames where the tone is in
    customer = np.clip(toned - tone_frame, -32768, 32767).astype("<i2").tobytes()
    assert len(toned) > 100  # > 2 s with both sides
    assert voiced_exact(customer, expected_g711(SPEECH)) >= 0.9
    x = samples(pcm_of(stream))
    assert band_energy(x, 1000) > 0.2 * float(np.sum(x**2)) * len(x) / 2  # and the agent's tone is there


def test_siprec_without_option_tag_or_labels_is_still_taken_streams_by_order(tmp_path: Path) -> None:
    """Going around PJSIP's strict check: an SRC that sends the multipart body without Require:
    siprec, +sip.src or a=label is let through as an ordinary INVITE; the bridge sees the
    rs-metadata and maps the streams by order (the first is the customer's)."""
    with TestBot() as bot, BridgeProcess(tmp_path, bot.url) as bridge:
        result, _ = siprec_call(tmp_path, bridge, agent=SPEECH, customer=TONE, hold_s=2.0,
                                scenario="siprec_src_lax")
        streams = wait_streams(bot, 2)
    assert result.rc == 0, result.errors
    tracks = by_track(streams)
    (first,), (second,) = tracks["customer"], tracks["agent"]  # m-line 0, m-line 1
    assert params(first)["tap"] == "siprec" and params(first)["participant_name"] == ""
    assert voiced_exact(pcm_of(first), expected_g711(SPEECH)) >= 0.95
    assert voiced_exact(pcm_of(second), expected_g711(TONE)) >= 0.95


def test_pjsip_answers_400_to_a_siprec_invite_without_labels(tmp_path: Path) -> None:
    """PJSIP 2.17's own SIPREC check (Require: siprec + +sip.src) runs before the bridge: streams
    without a=label get 400 (see docs/agent-assist.md, "SIPREC from an SBC or PBX"). This pins that
    behaviour."""
    with TestBot() as bot, BridgeProcess(tmp_path, bot.url) as bridge:
        result = run_sipp(tmp_path, f"127.0.0.1:{bridge.sip_port}", "odd_siprec_no_label", timeout=20)
        assert not bot.streams
    assert result.rc == 0, result.errors
    assert "SIP/2.0 400" in result.messages and "label" in result.messages


# ---------------------------------------------------------------------------------- forked legs


def forked_pair(tmp_path: Path, bridge: BridgeProcess, customer: bytes, agent: bytes, *, hold_s: float,
                agent_after_s: float, **stream_args: Any) -> list[RtpStream]:
    """Two forked legs (X-Tap-Id: conv-42): the customer's first, the agent's `agent_after_s` later."""
    ports = rtp_ports(2)
    streams = [RtpStream(customer, ports[0], **stream_args), RtpStream(agent, ports[1], **stream_args)]
    sender = RtpSender(streams, hold_s + agent_after_s + 10).start()
    runs = []
    legs = [("customer", "Alice Customer", "+15551230001"), ("agent", "Bob Agent", "2001")]
    try:
        for i, (track, name, number) in enumerate(legs):
            ports_file = tmp_path / f"answer-{ports[i]}.txt"
            runs.append(start_sipp(tmp_path, f"127.0.0.1:{bridge.sip_port}", "tap_forked_uac",
                                   duration_ms=int((hold_s - i * agent_after_s) * 1000), timeout=hold_s + 30,
                                   keys={"tap_id": "conv-42", "track": track, "name": name, "number": number,
                                         "port1": str(ports[i]), "ports_file": str(ports_file)}))
            sender.aim(i, int(wait_file(ports_file)))
            if i == 0:
                time.sleep(agent_after_s)
        results = [run.wait(hold_s + 40) for run in runs]
    finally:
        sender.stop()
    assert [r.rc for r in results] == [0, 0], [r.errors for r in results]
    return streams


def test_forked_legs_are_one_conversation_on_one_timeline(tmp_path: Path) -> None:
    """Two plain INVITEs marked as taps and paired by X-Tap-Id (what an Asterisk snoop channel per
    direction gives): a socket each, sharing the conversation id; the agent's, opened later, starts
    with silence back to the conversation's start, so simultaneous audio has the same timestamp."""
    with TestBot() as bot, BridgeProcess(tmp_path, bot.url) as bridge:
        rtp = forked_pair(tmp_path, bridge, bursts(500, 10), bursts(1500, 10), hold_s=5.0, agent_after_s=0.8)
        streams = wait_streams(bot, 2)
        summary = summary_of(bridge)
    tracks = by_track(streams)
    (customer,), (agent,) = tracks["customer"], tracks["agent"]
    assert params(customer)["conversation_id"] == params(agent)["conversation_id"] == "conv-42"
    assert params(customer)["tap"] == "forked" and params(customer)["X-Tap-Track"] == "customer"
    assert (params(agent)["participant_name"], params(agent)["participant_number"]) == ("Bob Agent", "2001")
    assert customer.start["start"]["call_sid"] != agent.start["start"]["call_sid"]
    assert params(agent)["conversation_offset_ms"] == "0"
    c, a = samples(pcm_of(customer)), samples(pcm_of(agent))
    assert np.abs(a[: 4000]).max() == 0  # the agent's first 0.5 s: padding before its leg existed
    assert band_energy(c, 1500) < 0.01 * band_energy(c, 500)  # each socket has its own side only
    assert band_energy(a, 500) < 0.01 * band_energy(a, 1500)
    # The agent's RTP starts wherever the schedule is (maybe mid-beep): its first beep is no marker.
    first = int(np.flatnonzero(np.abs(a) > 0)[0])
    offsets = pair_offsets(onsets(c), [o for o in onsets(a) if o > first + 2000])
    assert len(offsets) >= 3 and all(abs(d) <= 160 for d in offsets), offsets
    assert [s.received for s in rtp] == [0, 0]  # a tap never sends audio into the call
    assert [call["outcome"] for call in summary["calls"]] == ["answered", "answered"]


def test_forked_legs_in_stereo_share_one_socket(tmp_path: Path) -> None:
    with TestBot() as bot, BridgeProcess(tmp_path, bot.url, {"tap": {"layout": "stereo"}}) as bridge:
        forked_pair(tmp_path, bridge, SPEECH, TONE, hold_s=4.0, agent_after_s=0.5)
        (stream,) = wait_streams(bot, 1)
    assert stream.of("stop")[0]["stop"]["reason"] == "callended"
    assert params(stream)["customer_name"] == "Alice Customer" and params(stream)["agent_name"] == "Bob Agent"
    stereo = np.frombuffer(pcm_of(stream), dtype="<i2")
    left, right = stereo[0::2].tobytes(), stereo[1::2].tobytes()
    assert voiced_exact(left, expected_g711(SPEECH)) >= 0.95
    assert voiced_exact(right, expected_g711(TONE)) >= 0.95
    assert np.abs(np.frombuffer(right[:6400], dtype="<i2")).max() == 0  # before the agent's leg


@pytest.mark.skipif(not Asterisk.available(), reason="Asterisk is not built (scripts/build-asterisk.sh)")
def test_asterisk_snoop_calls_tap_both_sides_of_a_real_call(tmp_path: Path) -> None:
    """The dialplan of docs/agent-assist.md on a real Asterisk 22: a customer (speech) and an agent
    (1 kHz tone) talk; when the agent answers, Asterisk places one ChanSpy call per side to the
    registered bridge with the tap headers; each socket carries its side only."""
    sip_port = free_port()
    ast = Asterisk.start(tmp_path, sip_port, free_udp_range(100))
    try:
        with TestBot() as bot:
            profile = {"sip": {"register": {"registrar": f"sip:127.0.0.1:{sip_port}", "username": "bridge",
                                            "password": "secret", "expires": 300}}}
            with BridgeProcess(tmp_path, bot.url, profile):
                deadline = time.monotonic() + 15
                while not ast.contacts("bridge") and time.monotonic() < deadline:
                    time.sleep(0.2)
                assert ast.contacts("bridge"), ast.cli("pjsip show contacts")
                ast.cli("channel originate Local/cust@tap-demo/n extension dialer@tap-demo")
                streams = wait_streams(bot, 2, timeout=40)
    finally:
        ast.stop()
    tracks = by_track(streams)
    (customer,), (agent,) = tracks["customer"], tracks["agent"]
    tap_id = params(customer)["conversation_id"]
    assert params(agent)["conversation_id"] == tap_id and params(customer)["X-Tap-Id"] == tap_id
    assert f"TAP-START {tap_id}" in ast.messages()
    for stream in (customer, agent):
        assert stream.of("stop")[0]["stop"]["reason"] == "callended"  # the spied call ended
    c, a = samples(pcm_of(customer)), samples(pcm_of(agent))
    assert len(c) > 8000 * 3 and len(a) > 8000 * 3
    total_a = float(np.sum(a**2)) * len(a) / 2
    total_c = float(np.sum(c**2)) * len(c) / 2
    assert band_energy(a, 1000) > 0.8 * total_a  # the agent's socket: the agent's tone
    assert band_energy(c, 1000) < 0.2 * total_c and np.sqrt(np.mean(c**2)) > 300  # the customer: speech


# ------------------------------------------------------------------------------------ alignment


def _alignment_run(tmp_path: Path, seconds: float) -> None:
    """Both sides beep on the same packet every second; the agent's side loses 5 % of its packets
    at random, goes silent (no packets) for 3 s and loses 1 s outright; the metadata update in
    the middle reopens the agent's socket. On the conversation's timeline (start offsets
    included), every beep of one track lines up with the other's within one 20 ms frame."""
    hold = seconds / 2
    agent_rtp = {"loss": 0.05, "keep": lambda k: k % 50 < 3, "silent": [(seconds * 0.2, seconds * 0.2 + 3)],
                 "lost": [(seconds * 0.7, seconds * 0.7 + 1)]}
    with TestBot() as bot, BridgeProcess(tmp_path, bot.url, {"tap": AGENT_MATCH}) as bridge:
        result, rtp = siprec_call(tmp_path, bridge, agent=bursts(1500, 10), customer=bursts(500, 10),
                                  hold_s=hold, agent_rtp=agent_rtp)
        streams = wait_streams(bot, 3, timeout=30)
        summary = summary_of(bridge)
    assert result.rc == 0, result.errors
    assert rtp[0].dropped > seconds * 50 * 0.03  # the loss really happened (5 % of unprotected packets)

    def timeline(parts: list[Stream]) -> np.ndarray:
        out = bytearray()
        for stream in sorted(parts, key=lambda s: int(params(s)["conversation_offset_ms"])):
            at = int(params(stream)["conversation_offset_ms"]) * 16
            out = out[:at] + bytes(max(0, at - len(out))) + pcm_of(stream)
        return samples(bytes(out))

    tracks = by_track(streams)
    customer, agent = timeline(tracks["customer"]), timeline(tracks["agent"])
    assert abs(len(customer) - len(agent)) <= 2 * 160 and len(customer) >= (seconds - 1) * 16000 // 2
    offsets = pair_offsets(onsets(customer), onsets(agent))
    counters = {k: summary[k] for k in ("late_frames", "gap_frames", "lag_frames")}
    report = {"beeps": len(offsets), "worst_samples": max((abs(d) for d in offsets), default=None),
              "offsets": offsets, "agent_lost": rtp[0].dropped, **counters,
              # where each beep was heard (s): tells a drifting track from a one-off jump
              "customer_beeps_s": [round(x / RATE, 3) for x in onsets(customer)],
              "agent_beeps_s": [round(x / RATE, 3) for x in onsets(agent)]}
    print(json.dumps(report))
    # Beeps lost to the silent second and the 1 s loss cannot pair; all others must.
    assert len(offsets) >= seconds - 6, report
    # Within one 20 ms frame, but for the few seconds after a burst: when this machine pauses for
    # tens of ms, both jitter buffers grow by the burst and then shrink each at its own pace (PJSIP
    # adapts them separately): 2-3 beeps up to 40 ms apart in 4 of 16 runs, mostly on a loaded
    # machine; a quiet machine gives 0 ms throughout. See docs/agent-assist.md, "Alignment".
    beyond_one_frame = [d for d in offsets if abs(d) > FRAME]
    assert all(abs(d) <= 2 * FRAME for d in offsets) and len(beyond_one_frame) <= 3, report


def test_tracks_stay_aligned_through_loss_and_silence_for_a_minute(tmp_path: Path) -> None:
    _alignment_run(tmp_path, 60)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_tracks_do_not_drift_in_ten_minutes(tmp_path: Path) -> None:
    _alignment_run(tmp_path, 600)
