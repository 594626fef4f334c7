"""The bridge against kamailio (registrar with digest auth, proxy), baresip (an independent
softphone) and a real Asterisk 22 (chan_pjsip), the PBX our users run."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from tests.botlib import Stream, TestBot, tone
from tests.bridgelib import BridgeProcess, free_port
from tests.peerlib import (
    SIPP_AUDIO,
    SPEECH_WAV,
    Asterisk,
    Baresip,
    Kamailio,
    compare_audio,
    dominant_frequency,
    free_udp_range,
    run_sipp,
)

pytestmark = [pytest.mark.interop, pytest.mark.timeout(180)]


def register_profile(registrar_port: int, *, password: str = "bridgepass", expires: int = 60,
                     username: str = "bridge") -> dict[str, object]:
    return {"sip": {"register": {"registrar": f"sip:127.0.0.1:{registrar_port}", "username": username,
                                 "password": "${BRIDGE_SIP_PASSWORD}", "expires": expires}},
            "_env": {"BRIDGE_SIP_PASSWORD": password}}


def start_bridge(tmp_path: Path, bot_url: str, profile: dict[str, object]) -> BridgeProcess:
    env = profile.pop("_env", None)
    return BridgeProcess(tmp_path, bot_url, profile, env=env).start()  # type: ignore[arg-type]


def test_registers_with_digest_auth_and_takes_calls_routed_by_the_registrar(tmp_path: Path) -> None:
    kam_port = free_port()
    kam = Kamailio.start(tmp_path, kam_port)
    try:
        with TestBot() as bot:
            bridge = start_bridge(tmp_path, bot.url, register_profile(kam_port))
            try:
                contacts = kam.wait_registered("bridge", timeout=10)
                assert any(str(bridge.sip_port) in c for c in contacts)
                bridge.wait_log("registered (expires in")
                # A call to the AoR goes through kamailio (Record-Route) to the bridge.
                result = run_sipp(tmp_path, f"127.0.0.1:{kam_port}", "uac_media_dtmf", service="bridge",
                                  keys={"audio": SIPP_AUDIO["pcmu"]}, duration_ms=1000)
                stream = bot.wait_closed()
                assert result.rc == 0, result.errors
                assert stream.dtmf() == "123#5"
                assert stream.start["start"]["to"] == "bridge"
            finally:
                assert bridge.stop() == 0
        log = kam.proc.log_text()
        assert "-> challenge" in log and "REGISTERED sip:bridge@127.0.0.1" in log
    finally:
        kam.stop()


def test_a_wrong_password_is_reported_and_retried_with_backoff(tmp_path: Path) -> None:
    kam_port = free_port()
    kam = Kamailio.start(tmp_path, kam_port)
    try:
        with TestBot() as bot:
            bridge = start_bridge(tmp_path, bot.url, register_profile(kam_port, password="wrong"))
            try:
                failure = bridge.wait_log("registration failed: 401", timeout=15)
                assert failure["level"] == "warning"
                retry = bridge.wait_log("registration retry in", timeout=5)
                assert retry
                assert not kam.registered_contacts("bridge").get("bridge")
            finally:
                bridge.stop()
    finally:
        kam.stop()


def test_registrar_down_at_start_then_up_registers_with_backoff(tmp_path: Path) -> None:
    """The registrar is unreachable when the bridge starts: each failure is logged, retries back
    off, and once the registrar is up the bridge registers without a restart."""
    kam_port = free_port()
    with TestBot() as bot:
        bridge = start_bridge(tmp_path, bot.url, register_profile(kam_port))
        try:
            bridge.wait_log("registration failed", timeout=40)
            retries = [r["msg"] for r in bridge.records() if "registration retry in" in r.get("msg", "")]
            assert retries
            kam = Kamailio.start(tmp_path, kam_port)
            try:
                kam.wait_registered("bridge", timeout=60)
                bridge.wait_log("registered (expires in", timeout=10)
            finally:
                kam.stop()
        finally:
            bridge.stop()


def test_registration_is_refreshed_before_it_expires(tmp_path: Path) -> None:
    """expires 60: pjsua refreshes 5 s before expiry; the registrar sees a second REGISTER and
    the binding never lapses."""
    kam_port = free_port()
    kam = Kamailio.start(tmp_path, kam_port)
    try:
        with TestBot() as bot:
            bridge = start_bridge(tmp_path, bot.url, register_profile(kam_port, expires=60))
            try:
                kam.wait_registered("bridge", timeout=10)
                deadline = time.monotonic() + 75
                while time.monotonic() < deadline:
                    if kam.proc.log_text().count("REGISTERED sip:bridge@127.0.0.1") >= 2:
                        break
                    time.sleep(1)
                assert kam.proc.log_text().count("REGISTERED sip:bridge@127.0.0.1") >= 2
                assert kam.registered_contacts("bridge").get("bridge")
            finally:
                bridge.stop()
    finally:
        kam.stop()


def test_baresip_calls_the_bridge_sends_dtmf_and_hears_the_bot(tmp_path: Path) -> None:
    with TestBot(echo=True) as bot, BridgeProcess(tmp_path, bot.url) as bridge:
        result = Baresip.call(tmp_path, bridge.uri, SPEECH_WAV, "159#", hold_s=3.0)
        stream = bot.wait_closed()
    assert result.established, result.log[-2000:]
    assert stream.dtmf() == "159#"
    assert stream.of("stop")[0]["stop"]["reason"] == "callended"
    assert result.received_wav is not None
    # baresip heard its own speech, echoed by the bot through the bridge.
    cmp = compare_audio(SPEECH_WAV, result.received_wav)
    assert cmp["ok"], cmp


@pytest.mark.skipif(not Asterisk.available(), reason="Asterisk is not built (scripts/build-asterisk.sh)")
def test_asterisk_dials_the_registered_bridge_sends_dtmf_and_records_the_bot(tmp_path: Path) -> None:
    """The bridge registers to a real Asterisk 22; the dialplan dials it, plays speech and sends
    DTMF 1234; the bot hears the speech and the digits and plays a 1 kHz tone, which is what
    Asterisk records from the bridge."""
    async def script(stream: Stream) -> None:
        await asyncio.sleep(0.5)
        await stream.send_audio(tone(1000, 3.0), paced=True)

    sip_port = free_port()
    ast = Asterisk.start(tmp_path, sip_port, free_udp_range(100))
    try:
        with TestBot(script) as bot:
            bridge = start_bridge(tmp_path, bot.url, register_profile(sip_port, username="bridge",
                                                                       password="secret", expires=300))
            try:
                deadline = time.monotonic() + 15
                while not ast.contacts("bridge") and time.monotonic() < deadline:
                    time.sleep(0.2)
                assert ast.contacts("bridge"), ast.cli("pjsip show contacts")
                call = ast.call_bridge(SPEECH_WAV, "1234", pre_s=0.5, hold_s=3.0)
                stream = bot.wait_closed()
            finally:
                bridge.stop()
    finally:
        ast.stop()
    assert call.answered and call.ended
    assert stream.dtmf() == "1234"
    assert stream.of("stop")[0]["stop"]["reason"] == "callended"  # Asterisk hung up
    assert abs(dominant_frequency(call.rx_wav) - 1000) < 20
    import wave

    import numpy as np

    with wave.open(str(call.rx_wav)) as wav:
        rec = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").astype(np.float64)
    assert np.sqrt(np.mean(rec**2)) > 500  # the tone is really there, not comfort noise
    # and the bot heard Asterisk's playback (speech energy in what it received)
    pcm = np.frombuffer(stream.pcm(), dtype="<i2").astype(np.float64)
    assert np.sqrt(np.mean(pcm**2)) > 300
