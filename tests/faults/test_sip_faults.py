"""SIP-side faults: CANCEL, hold/resume, a caller that vanishes, too many calls, junk SIP, and a
registrar that goes away. sipp, a raw UDP/TCP sender and the pjsua2 test caller create them."""

from __future__ import annotations

import random
import signal
import socket
import time
from pathlib import Path

import numpy as np
import pytest

from tests.botlib import TestBot
from tests.bridgelib import BridgeProcess, free_port, run_test_caller
from tests.faults.faultlib import (
    Baseline,
    background,
    joined,
    media_gaps,
    record,
    start_bridge,
)
from tests.faults.rawsip import RawSip, sdp, status_of
from tests.faults.test_bot_faults import check_healthy, healthy_call
from tests.peerlib import SIPP_AUDIO, Kamailio, run_sipp, start_sipp

pytestmark = [pytest.mark.timeout(180)]


def target(bridge: BridgeProcess) -> str:
    return f"127.0.0.1:{bridge.sip_port}"


def test_cancel_before_answer_ends_the_call_with_487(tmp_path: Path) -> None:
    """The caller gives up while the bot's socket is still opening: 200 to the CANCEL, 487 to
    the INVITE, the bot connection attempt is abandoned, nothing is left behind."""
    with TestBot(hang_handshake=True) as hung:
        bridge = start_bridge(tmp_path, hung.url, {"bot": {"connect_timeout": 5}})
        try:
            baseline = Baseline(bridge)
            result = run_sipp(tmp_path, target(bridge), "uac_cancel", timeout=20)
            summary = bridge.wait_summaries()[0]
            back = baseline.back()
        finally:
            bridge.stop()
    assert result.rc == 0, result.errors + result.messages[-2000:]
    assert "SIP/2.0 487" in result.messages and "SIP/2.0 200" in result.messages
    assert summary["outcome"] == "abandoned", summary
    assert hung.connections == 1  # it was connecting; no retry after the caller left
    record("sip", "CANCEL before the answer -> 487, bot attempt abandoned", baseline=back)


def test_hold_and_resume_keep_one_continuous_stream(tmp_path: Path) -> None:
    """re-INVITE to a=inactive (hold, the caller's audio stops for 4 s) and back to sendrecv:
    the bot sees one stream whose chunks never stop (silence while held), the caller's audio
    after the resume, DTMF after it, and the 2 s RTP timeout does not fire during the hold."""
    with TestBot() as bot:
        bridge = start_bridge(tmp_path, bot.url, {"media": {"rtp_timeout": 2}})
        try:
            result = run_sipp(
                tmp_path,
                target(bridge),
                "uac_hold_unhold",
                keys={"audio": SIPP_AUDIO["pcmu"]},
                duration_ms=4000,
                timeout=40,
            )
            stream = bot.wait_closed()
            summary = bridge.wait_summaries()[0]
        finally:
            bridge.stop()
    assert result.rc == 0, result.errors + result.messages[-2000:]
    assert stream.names.count("connected") == 1 and stream.names.count("start") == 1
    assert stream.of("stop")[0]["stop"]["reason"] == "callended"
    assert summary["end_reason"] == "caller hung up", summary
    gaps = media_gaps(stream)
    assert gaps["chunks_ok"] and gaps["stamps_ok"] and gaps["max_gap_s"] < 0.6, gaps
    assert gaps["messages"] >= 85  # 2 s + 4 s held + 3 s, in 100 ms chunks
    pcm = np.frombuffer(stream.pcm(), dtype="<i2").astype(np.float64)
    rms = [float(np.sqrt(np.mean(pcm[i : i + 800] ** 2))) for i in range(0, len(pcm) - 800, 800)]
    held = rms[30:55]  # 3.0-5.5 s: on hold
    assert held and max(held) < 50, held
    assert max(rms[66:]) > 300  # audio is back after the resume (6.6 s on)
    assert stream.dtmf() == "7"
    record("sip", "re-INVITE hold (inactive, 4 s) and resume keep the stream")


def test_a_caller_whose_media_stops_is_hung_up_after_the_rtp_timeout(tmp_path: Path) -> None:
    """No BYE, just no more RTP: after media.rtp_timeout the bridge sends `stop` (stopped) to
    the bot, closes the socket and sends BYE to the caller."""
    with TestBot() as bot:
        bridge = start_bridge(tmp_path, bot.url, {"media": {"rtp_timeout": 3}})
        try:
            started = time.monotonic()
            result = run_sipp(
                tmp_path,
                target(bridge),
                "uac_rtp_stops",
                keys={"audio": SIPP_AUDIO["pcmu"]},
                duration_ms=2000,
                timeout=40,
            )
            elapsed = time.monotonic() - started
            stream = bot.wait_closed()
            summary = bridge.wait_summaries()[0]
        finally:
            bridge.stop()
    assert result.rc == 0, result.errors + result.messages[-2000:]  # sipp got the bridge's BYE
    assert 5.0 <= elapsed <= 9.0, elapsed
    assert stream.of("stop")[0]["stop"]["reason"] == "stopped" and stream.close_code == 1000
    assert summary["end_reason"] == "no RTP from the caller for 3 s", summary
    record("sip", "caller's RTP stops without BYE -> stop + BYE after rtp_timeout")


def test_a_caller_process_that_dies_is_cleaned_up(tmp_path: Path) -> None:
    """The caller is SIGKILLed mid-call (no BYE, no RTP, nobody to answer our BYE): the bot
    gets `stop` after the RTP timeout and the call is gone from the bridge."""
    with TestBot() as bot:
        bridge = start_bridge(tmp_path, bot.url, {"media": {"rtp_timeout": 3}})
        try:
            baseline = Baseline(bridge)
            caller = start_sipp(
                tmp_path,
                target(bridge),
                "uac_wait_bye",
                keys={"audio": SIPP_AUDIO["pcmu"], "pt": "0", "codec": "PCMU"},
                timeout=60,
            )
            stream = bot.wait_stream()
            time.sleep(1.5)
            caller.proc.stop(grace=0, sig=signal.SIGKILL)
            killed = time.monotonic()
            assert stream.closed.wait(10)
            stopped_after = time.monotonic() - killed
            back = baseline.back(timeout=45)
        finally:
            bridge.stop()
    assert stream.of("stop")[0]["stop"]["reason"] == "stopped"
    assert 2.5 <= stopped_after <= 6, stopped_after
    record("sip", "caller process SIGKILLed mid-call -> stop, call cleaned up", baseline=back)


def test_over_capacity_gets_503_with_retry_after_and_calls_in_progress_go_on(tmp_path: Path) -> None:
    with TestBot(echo=True) as bot:
        bridge = start_bridge(tmp_path, bot.url, {"sip": {"max_calls": 2}})
        try:
            first = background(healthy_call, bridge.uri, tmp_path, 8.0)
            second = background(healthy_call, bridge.uri, tmp_path, 8.0)
            bot.wait_stream(1)
            rejected = run_sipp(tmp_path, target(bridge), "uac_rejected", calls=3, timeout=20)
            results = [joined(*first), joined(*second)]
            streams = [bot.wait_closed(0), bot.wait_closed(1)]
            disturbed = sum(check_healthy(r, s, seconds=8) for r, s in zip(results, streams, strict=True))
        finally:
            bridge.stop()
    assert rejected.rc == 0 and rejected.successful == 3, rejected.errors
    assert rejected.messages.count("SIP/2.0 503") >= 3 and "Retry-After: 5" in rejected.messages
    assert len(bot.streams) == 2  # the bot never heard of the rejected calls
    assert disturbed == 0
    record("sip", "3 INVITEs over max_calls -> 503 + Retry-After", injected=3, disturbed=disturbed, others=2)


def junk_datagrams(port: int) -> list[bytes]:
    """Malformed and hostile SIP over UDP (none of them a well-formed INVITE)."""
    via = "Via: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK-junk"
    base = f"sip:bot@127.0.0.1:{port}"
    rng = random.Random(4)
    out = [
        b"",
        b"\r\n\r\n",
        b"\x00" * 64,
        bytes(range(256)) * 4,
        b"SIP/2.0 200 OK\r\n\r\n",
        b"INVITE sip:x SIP/2.0\r\nVia: broken",
        f"INVITE {base} SIP/2.0\r\n{via}\r\nCSeq: 1 INVITE\r\n\r\n".encode(),  # no From/To/Call-ID
        f"INVITE {base} SIP/3.0\r\n{via}\r\nFrom: <sip:a@b>;tag=1\r\nTo: <{base}>\r\nCall-ID: j1\r\n"
        "CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n".encode(),
        f"INVITE ::::: SIP/2.0\r\n{via}\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCall-ID: j2\r\n"
        "CSeq: 1 INVITE\r\n\r\n".encode(),
        f"INVITE {base} SIP/2.0\r\n{via}\r\nFrom: <sip:a@b>;tag=1\r\nTo: <{base}>\r\nCall-ID: j3\r\n"
        "CSeq: -5 INVITE\r\nContent-Length: 99999\r\n\r\nv=0\r\n".encode(),
        f"INVITE {base} SIP/2.0\r\n{via}\r\nFrom: \xff\xfe<sip:a@b>;tag=1\r\nTo: <{base}>\r\n"
        "Call-ID: j4\r\nCSeq: x INVITE\r\n\r\n".encode("latin-1"),
        (f"INVITE {base} SIP/2.0\r\n" + f"{via}\r\n" * 800 + "\r\n").encode(),  # 800 Vias
        f"INVITE {base} SIP/2.0\r\nX-Huge: {'A' * 60000}\r\n\r\n".encode(),  # near the datagram limit
        f"ACK {base} SIP/2.0\r\n{via}\r\nFrom: <sip:a@b>;tag=1\r\nTo: <{base}>;tag=2\r\nCall-ID: nope\r\n"
        "CSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n".encode(),
        f"CANCEL {base} SIP/2.0\r\n{via}\r\nFrom: <sip:a@b>;tag=1\r\nTo: <{base}>\r\nCall-ID: nope\r\n"
        "CSeq: 1 CANCEL\r\nContent-Length: 0\r\n\r\n".encode(),
        f"PRACK {base} SIP/2.0\r\n{via}\r\nFrom: <sip:a@b>;tag=1\r\nTo: <{base}>;tag=2\r\nCall-ID: nope\r\n"
        "CSeq: 2 PRACK\r\nRAck: 1 1 INVITE\r\nContent-Length: 0\r\n\r\n".encode(),
        f"OPTIONS {base} SIP/2.0\r\n{via}\r\nFrom: <sip:a@b>;tag=1\r\nTo: <{base}>\r\nCall-ID: mf0\r\n"
        "CSeq: 1 OPTIONS\r\nMax-Forwards: 0\r\nContent-Length: 0\r\n\r\n".encode(),
    ]
    for method in ("REGISTER", "MESSAGE", "SUBSCRIBE", "NOTIFY", "PUBLISH", "UPDATE", "REFER", "FROBNICATE"):
        out.append(
            f"{method} {base} SIP/2.0\r\n{via}-{method}\r\nFrom: <sip:a@b>;tag=1\r\nTo: <{base}>\r\n"
            f"Call-ID: m-{method}\r\nCSeq: 1 {method}\r\nMax-Forwards: 70\r\n"
            "Content-Length: 0\r\n\r\n".encode()
        )
    out += [bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 1400))) for _ in range(200)]
    return out


def junk_streams() -> list[bytes]:
    """What is sent on TCP connections: garbage, a truncated request, an endless header line."""
    return [
        bytes(range(256)) * 8,
        b"INVITE sip:bot@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 1.2.3.4\r\n",
        b"OPTIONS sip:x SIP/2.0\r\nX-Long: " + b"B" * 200_000,
        b"\r\n" * 10_000,
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    ]


def test_malformed_sip_battery_leaves_the_bridge_and_its_calls_alone(tmp_path: Path) -> None:
    """sipp's odd scenarios (bad SDP, no common codec, unknown method, malformed headers, BYE for
    an unknown dialog, delayed offer), hand-made hostile datagrams, random bytes, TCP garbage and
    idle TCP connections, all while a call is up: the call is not disturbed, the bridge still
    answers OPTIONS and takes a new call, memory and calls come back to their baseline."""
    scenarios = (
        "odd_bad_sdp",
        "odd_no_common_codec",
        "odd_unknown_method",
        "odd_malformed_headers",
        "odd_bye_unknown_dialog",
        "odd_delayed_offer",
    )
    with TestBot(echo=True) as bot:
        bridge = start_bridge(tmp_path, bot.url, {"media": {"rtp_timeout": 5}})  # junk calls end soon
        try:
            run_test_caller(bridge.uri, tmp_path, silent=True, hold=0.2)  # warm-up
            bot.wait_closed(0)
            baseline = Baseline(bridge)
            thread, out = background(healthy_call, bridge.uri, tmp_path, 10.0)
            bot.wait_stream(1)
            # The bridge (PJSIP) does not answer an unknown method at all: its sipp gives up after 6 s.
            running = {
                name: start_sipp(
                    tmp_path, target(bridge), f"odd/{name}", timeout=6 if "method" in name else 20
                )
                for name in scenarios
            }
            outcomes = {name: run.wait(35) for name, run in running.items()}
            datagrams = junk_datagrams(bridge.sip_port)
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                for datagram in datagrams:
                    udp.sendto(datagram, ("127.0.0.1", bridge.sip_port))
            streams = junk_streams()
            idle = []
            for payload in streams:
                with socket.create_connection(("127.0.0.1", bridge.sip_port), timeout=5) as tcp:
                    tcp.sendall(payload)
            for _ in range(50):  # idle connections that never send a thing
                idle.append(socket.create_connection(("127.0.0.1", bridge.sip_port), timeout=5))
            time.sleep(1.0)
            for conn in idle:
                conn.close()
            alive = run_sipp(tmp_path, target(bridge), "odd/options_ping", timeout=20)
            healthy = joined(thread, out)
            disturbed = check_healthy(healthy, bot.wait_closed(1), seconds=10)
            after = run_test_caller(bridge.uri, tmp_path, silent=True, hold=0.5)
            back = baseline.back()
            assert bridge.proc is not None and bridge.proc.poll() is None
        finally:
            bridge.stop()
    assert (
        "SIP/2.0 400" in outcomes["odd_bad_sdp"].messages or "SIP/2.0 488" in outcomes["odd_bad_sdp"].messages
    )
    assert "SIP/2.0 488" in outcomes["odd_no_common_codec"].messages
    assert "SIP/2.0 481" in outcomes["odd_bye_unknown_dialog"].messages
    assert alive.rc == 0 and "SIP/2.0 200" in alive.messages
    pjsip_lines = [r for r in bridge.records() if r.get("logger") == "bridge.pjsip" and r["level"] != "debug"]
    assert len(pjsip_lines) <= 60, len(pjsip_lines)  # a burst, then about one a second (bridge/sip/pjlog.py)
    assert max(len(r["msg"]) for r in pjsip_lines) < 600
    assert after["answered"]
    assert disturbed == 0
    bad = len(scenarios) + len(datagrams) + len(streams) + 50
    record(
        "sip",
        "malformed SIP: sipp odd/, hostile datagrams, random bytes, TCP junk",
        injected=bad,
        bad_inputs=bad,
        disturbed=disturbed,
        others=1,
        baseline=back,
    )


def test_a_bot_never_hears_of_calls_the_sip_side_refuses(tmp_path: Path) -> None:
    """INVITEs with no common codec or an SDP that is not SDP are refused before any bot is
    contacted; an INVITE without SDP (delayed offer) is answered with an offer."""
    with TestBot() as bot, RawSip(0) as raw:
        bridge = start_bridge(tmp_path, bot.url)
        raw.bridge = ("127.0.0.1", bridge.sip_port)
        try:
            _, no_codec = raw.invite(body=sdp(raw.rtp_port, codec="18 G729/8000"))
            _, not_sdp = raw.invite(body="this is not SDP\r\n")
        finally:
            bridge.stop()
    assert status_of(no_codec) == 488, no_codec
    assert status_of(not_sdp) in (400, 488), not_sdp
    assert not bot.streams
    record("sip", "no common codec / body not SDP -> 488/400, bot never contacted", injected=2, bad_inputs=2)


@pytest.mark.slow
def test_registrar_lost_mid_run_is_retried_with_backoff_and_recovers(tmp_path: Path) -> None:
    """kamailio goes away after the bridge registered: the refresh fails, each failure is logged,
    retries back off, and once kamailio is back the bridge registers again by itself. About 2 min
    (the shortest registration is 60 s)."""
    kam_port = free_port()
    kam = Kamailio.start(tmp_path, kam_port)
    with TestBot() as bot:
        bridge = start_bridge(
            tmp_path,
            bot.url,
            {
                "sip": {
                    "register": {
                        "registrar": f"sip:127.0.0.1:{kam_port}",
                        "username": "bridge",
                        "password": "bridgepass",
                        "expires": 60,
                    }
                }
            },
        )
        try:
            kam.wait_registered("bridge", timeout=10)
            kam.stop()
            bridge.wait_log("registration failed", timeout=90)
            bridge.wait_log("registration retry in", timeout=10)
            call = run_test_caller(bridge.uri, tmp_path, silent=True, hold=0.2)  # direct calls still work
            kam = Kamailio.start(tmp_path, kam_port)
            assert kam.wait_registered("bridge", timeout=120)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                if sum("registered (expires in" in r["msg"] for r in bridge.records()) >= 2:
                    break
                time.sleep(0.2)
            registered = sum("registered (expires in" in r["msg"] for r in bridge.records())
        finally:
            bridge.stop()
            kam.stop()
    assert call["answered"]
    assert registered >= 2
    record("sip", "registrar lost mid-run -> backoff, re-registered when back")
