"""Single packets that once stopped the whole bridge, sent byte for byte, and the answers every
request must get (RFC 3261, the RFC 4475 torture cases). After each batch the bridge still
answers OPTIONS, takes a normal call, and exits 0 on SIGTERM."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from tests.botlib import TestBot
from tests.bridgelib import BridgeProcess, run_test_caller
from tests.faults.faultlib import record, start_bridge
from tests.faults.rawsip import RawSip
from tests.faults.wire import Wire, header, rtp, sdp, status

pytestmark = [pytest.mark.timeout(120)]

# 127.0.0.1 is outside this list: every request from the tests comes from a stranger.
STRANGERS_ONLY = {"sip": {"allow_from": ["127.0.0.2"]}}


def alive(bridge: BridgeProcess) -> None:
    assert bridge.proc is not None and bridge.proc.poll() is None, bridge.log_text()[-3000:]
    with Wire(bridge.sip_port) as wire:
        assert wire.exchange(wire.request("OPTIONS")) == 200


def answered_call(bridge: BridgeProcess, tmp_path: Path) -> bool:
    return bool(run_test_caller(bridge.uri, tmp_path, hold=0.3)["answered"])


def stop_cleanly(bridge: BridgeProcess) -> None:
    rc = bridge.stop()
    assert rc == 0, f"exit status {rc}:\n{bridge.log_text()[-3000:]}"


def invites_from_a_stranger(wire: Wire) -> list[tuple[str, bytes]]:
    big = [f"X-Filler-{i}: {'a' * 90}" for i in range(45)]  # headers past ~4000 bytes
    return [
        ("no SDP", wire.request("INVITE")),
        ("with SDP", wire.request("INVITE", body=sdp(), content_type="application/sdp")),
        ("headers past 4000 bytes", wire.request("INVITE", headers=big)),
        ("empty multipart boundary", wire.request(
            "INVITE", body=b"--\r\n\r\n--", content_type="multipart/mixed;boundary=")),
        ("a body without Content-Type", wire.request("INVITE", body=sdp())),
    ]


@pytest.mark.parametrize("transport", ["UDP", "TCP"])
def test_invites_from_outside_allow_from_get_403_and_the_bridge_lives(tmp_path: Path, transport: str) -> None:
    """The 403 was answered inside pjsua2's onIncomingCall: the answer reset the call, and pjsua2
    then freed the INVITE's clone a second time (assertion, abort). Each INVITE alone killed it.
    Over TCP, a message larger than PJSIP's 4000-byte buffer cannot be framed: the connection
    is closed (what follows it in the stream would be read from the wrong place)."""
    with TestBot() as bot:
        bridge = start_bridge(tmp_path, bot.url, STRANGERS_ONLY)
        try:
            answers: dict[str, list[str]] = {}
            with Wire(bridge.sip_port, transport) as probe:
                packets = invites_from_a_stranger(probe)
            if transport == "TCP":  # 64 KB fits a TCP stream, not a datagram
                filler = [f"X-Filler-{i}: {'b' * 990}" for i in range(64)]
                packets.append(("64 KB INVITE", probe.request("INVITE", headers=filler)))
            for name, packet in packets:
                with Wire(bridge.sip_port, transport) as wire:
                    try:
                        wire.send(packet.replace(b"127.0.0.1:%d" % probe.local_port,
                                                 b"127.0.0.1:%d" % wire.local_port))
                    except OSError:  # the bridge closed the connection while it was written
                        answers[name] = ["<closed>"]
                        continue
                    answers[name] = wire.answers(3.0)
                alive(bridge)
        finally:
            stop_cleanly(bridge)
    codes = {name: [status(m) for m in got if status(m) >= 200][:1] or got[-1:]
             for name, got in answers.items()}
    for name, got in codes.items():
        if transport == "TCP" and name in ("headers past 4000 bytes", "64 KB INVITE"):
            assert got in ([403], ["<closed>"]), codes
        else:
            assert got == [403], codes
    record("sip", f"INVITEs from outside allow_from ({transport}) -> 403, bridge alive",
           injected=len(answers), bad_inputs=len(answers))


def test_a_dtls_srtp_offer_gets_488_and_the_bridge_lives(tmp_path: Path) -> None:
    """What WebRTC gateways send. PJSIP's media set-up failed after pjsua2 had run onIncomingCall,
    answered 480 and then dereferenced the call's cleared INVITE session (segfault)."""
    fingerprint = "a=fingerprint:sha-256 " + ":".join(["AB"] * 32) + "\r\na=setup:actpass\r\n"
    with TestBot() as bot:
        bridge = start_bridge(tmp_path, bot.url)
        try:
            with Wire(bridge.sip_port) as wire:
                code = wire.exchange(wire.request(
                    "INVITE", body=sdp(profile="UDP/TLS/RTP/SAVPF", extra=fingerprint),
                    content_type="application/sdp"))
            alive(bridge)
            assert answered_call(bridge, tmp_path)
        finally:
            stop_cleanly(bridge)
    assert code == 488
    record("sip", "DTLS-SRTP offer -> 488, bridge alive", injected=1, bad_inputs=1)


SIPREC_METADATA = (
    b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n"
    b"<recording xmlns='urn:ietf:params:xml:ns:recording:1'>\r\n"
    b"<datamode>compl\xc3\x28te</datamode>\r\n"
    b"<session session_id=\"hVpd7YQgRW2nD22h7q60JQ==\"></session>\r\n"
    b"</recording>\r\n"
)


def siprec_body(metadata: bytes) -> bytes:
    offer = (b"v=0\r\no=src 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
             b"m=audio 40002 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=label:20\r\na=sendonly\r\n"
             b"m=audio 40004 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=label:10\r\na=sendonly\r\n")
    return (b"--b42\r\nContent-Type: application/sdp\r\n\r\n" + offer +
            b"\r\n--b42\r\nContent-Type: application/rs-metadata+xml\r\n"
            b"Content-Disposition: recording-session\r\n\r\n" + metadata + b"\r\n--b42--\r\n")


def test_siprec_metadata_that_is_not_utf8_gets_a_final_answer_and_frees_its_slot(tmp_path: Path) -> None:
    """A UnicodeEncodeError escaped from the metadata parser: no final answer, and the call slot
    and its descriptors were held for good (a slow lock-out). With three slots, five such INVITEs
    and then a normal call: the call is answered only if every slot came back."""
    with TestBot() as bot:
        bridge = start_bridge(tmp_path, bot.url, {"sip": {"max_calls": 3}})
        try:
            codes = []
            for _ in range(5):
                with Wire(bridge.sip_port) as wire:
                    packet = wire.request(
                        "INVITE", body=siprec_body(SIPREC_METADATA),
                        content_type="multipart/mixed;boundary=b42",
                        headers=["Require: siprec"])
                    packet = packet.replace(b"Contact: <sip:wire@127.0.0.1:%d>" % wire.local_port,
                                            b"Contact: <sip:wire@127.0.0.1:%d>;+sip.src" % wire.local_port)
                    wire.send(packet)
                    got = wire.answers(3.0)
                    codes += [status(m) for m in got if status(m) >= 200][:1]
                    wire.end_calls(got)  # a tap may take the call without its metadata
            alive(bridge)
            time.sleep(0.5)
            answered = answered_call(bridge, tmp_path)
            failures = [r for r in bridge.records() if "could not be handled" in r.get("msg", "")
                        or (r.get("levelname") == "ERROR" and "Traceback" in r.get("exc_info", ""))]
        finally:
            stop_cleanly(bridge)
    assert len(codes) == 5 and all(code < 300 or 400 <= code < 500 for code in codes), codes
    assert answered
    assert not failures, failures
    record("tap", "SIPREC metadata not UTF-8 -> final answer, slot freed", injected=5, bad_inputs=5)


def test_requests_the_bridge_does_not_serve_get_the_answer_rfc3261_gives(tmp_path: Path) -> None:
    """Out-of-dialog requests used to be dropped in silence (the peer retransmits for 32 s)."""
    with TestBot() as bot:
        bridge = start_bridge(tmp_path, bot.url)
        try:
            got: dict[str, tuple[int, str | None, str | None]] = {}
            with Wire(bridge.sip_port) as wire:
                def ask(name: str, packet: bytes) -> None:
                    wire.send(packet)
                    finals = [m for m in wire.answers(3.0) if status(m) >= 200]
                    message = finals[0] if finals else ""
                    got[name] = (status(message), header(message, "Allow"), header(message, "Unsupported"))

                for method in ("REGISTER", "PUBLISH", "SUBSCRIBE", "MESSAGE"):
                    ask(method, wire.request(method))
                ask("intmeth", wire.request("NEWMETHOD"))
                for method in ("BYE", "INFO", "UPDATE", "REFER"):
                    ask(f"{method} outside a dialog", wire.request(method, to_tag="nosuchdialog"))
                ask("unkscm", wire.request("OPTIONS", uri="nobodyKnowsThisScheme:totallyopaquecontent"))
                ask("bext01 OPTIONS", wire.request("OPTIONS", headers=["Require: newfeature1, newfeature2"]))
                ask("bext01 INVITE", wire.request("INVITE", headers=["Require: nothingSupportedHere"],
                                                  body=sdp(), content_type="application/sdp"))
                ask("sdp01", wire.request("INVITE", headers=["Accept: text/nobodyKnowsThis"], body=sdp(),
                                          content_type="application/sdp"))
                two_lengths = wire.request("INVITE", body=sdp(), content_type="application/sdp",
                                           headers=[f"Content-Length: {len(sdp()) + 10}"])
                ask("mcl01", two_lengths)
                ask("clerr", wire.request("INVITE", body=sdp(), content_type="application/sdp",
                                          content_length=9999))
                ask("mismatch01", wire.request("INVITE", cseq_method="OPTIONS", body=sdp(),
                                               content_type="application/sdp"))
                ask("ipv6-in-sdp", wire.request(
                    "INVITE", body=sdp(ip="IP6 2001:db8::1"), content_type="application/sdp"))
            alive(bridge)
            assert answered_call(bridge, tmp_path)
        finally:
            stop_cleanly(bridge)
    for method in ("REGISTER", "PUBLISH", "SUBSCRIBE", "MESSAGE"):
        assert got[method][0] == 405 and "INVITE" in (got[method][1] or ""), got
    assert got["intmeth"][0] == 501 and "INVITE" in (got["intmeth"][1] or ""), got
    for method in ("BYE", "INFO", "UPDATE", "REFER"):
        assert got[f"{method} outside a dialog"][0] == 481, got
    assert got["unkscm"][0] == 416, got
    assert got["bext01 OPTIONS"][0] == 420 and "newfeature1" in (got["bext01 OPTIONS"][2] or ""), got
    assert got["bext01 INVITE"][0] == 420 and "nothingSupportedHere" in (got["bext01 INVITE"][2] or ""), got
    assert got["sdp01"][0] == 406, got
    for name in ("mcl01", "clerr", "mismatch01"):
        assert got[name][0] == 400, got
    assert got["ipv6-in-sdp"][0] == 488, got
    record("sip", "requests not served -> 405/501/481/416/420/406/400/488", injected=len(got),
           bad_inputs=len(got))


def test_replaces_from_a_stranger_gets_the_documented_403(tmp_path: Path) -> None:
    with TestBot() as bot:
        bridge = start_bridge(tmp_path, bot.url, STRANGERS_ONLY)
        try:
            with Wire(bridge.sip_port) as wire:
                code = wire.exchange(wire.request(
                    "INVITE", headers=["Replaces: somecall@127.0.0.1;to-tag=a;from-tag=b"],
                    body=sdp(), content_type="application/sdp"))
            alive(bridge)
        finally:
            stop_cleanly(bridge)
    assert code == 403


@pytest.mark.parametrize(("latching", "stolen"), [("first", False), ("follow", True)])
def test_rtp_latching_a_stranger_cannot_take_a_calls_audio(tmp_path: Path, latching: str,
                                                           stolen: bool) -> None:
    """With media.rtp_latching: first (the default) a stream latches to a new source only until its
    SDP address has been heard; bursts from a stranger afterwards get nothing. `follow` is
    PJSIP's own rule (10 packets in a row move it), kept for callers whose NAT mapping changes."""
    with TestBot() as bot:
        bridge = start_bridge(tmp_path, bot.url, {"media": {"rtp_latching": latching}})
        stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        stranger.bind(("127.0.0.1", 0))
        try:
            with RawSip(bridge.sip_port) as raw:
                dialog, answer = raw.invite()
                assert status(answer) == 200
                port = int(answer.split("m=audio ", 1)[1].split()[0])
                for seq in range(50):  # the caller, from its SDP address, for a second
                    raw.rtp.sendto(rtp(seq, seq * 160, 1111), ("127.0.0.1", port))
                    time.sleep(0.02)
                for burst in range(5):  # a stranger's bursts, each quicker than the caller's packets
                    for seq in range(15):
                        n = 1000 + burst * 15 + seq
                        stranger.sendto(rtp(n, n * 160, 2222), ("127.0.0.1", port))
                    raw.rtp.sendto(rtp(50 + burst, (50 + burst) * 160, 1111), ("127.0.0.1", port))
                    time.sleep(0.1)
                stranger.settimeout(1.0)
                try:
                    leaked = len(stranger.recv(2048)) > 0
                except TimeoutError:
                    leaked = False
                raw.in_dialog(dialog, "BYE")
        finally:
            stranger.close()
            stop_cleanly(bridge)
    assert leaked is stolen


@pytest.mark.timeout(150)
def test_a_200_never_acked_ends_the_call_at_timer_h(tmp_path: Path) -> None:
    """RFC 3261 13.3.1.4: no ACK within 64*T1 (32 s) ends the call. It used to live ~64 s (PJSIP's
    BYE then waits 32 s more for an answer), holding the bot's socket, recorded as a hang-up."""
    with TestBot(echo=True) as bot:
        bridge = start_bridge(tmp_path, bot.url)
        try:
            with Wire(bridge.sip_port) as wire:
                wire.send(wire.request("INVITE", body=sdp(), content_type="application/sdp"))
                answered_at = time.monotonic()
                assert 200 in [status(m) for m in wire.answers(5.0)]
                stream = bot.wait_closed(timeout=45)
                closed_after = time.monotonic() - answered_at
                summary = bridge.wait_summaries(timeout=10)[0]
        finally:
            stop_cleanly(bridge)
    assert 30 <= closed_after <= 36, closed_after
    assert stream.close_code == 1000 and stream.of("stop")
    assert summary["end_cause"] == "no_ack" and summary["sip_status"] == 408, summary


def test_a_tcp_connection_whose_framing_cannot_be_trusted_is_answered_400_and_closed(tmp_path: Path) -> None:
    """Two Content-Length values on a stream: whatever follows would be read from the wrong
    place, so after the 400 the connection is closed; a new connection works as before."""
    with TestBot() as bot:
        bridge = start_bridge(tmp_path, bot.url)
        try:
            with Wire(bridge.sip_port, "TCP") as wire:
                # Framed by the first (0); the second says 40.
                wire.send(wire.request("OPTIONS", headers=["Content-Length: 0"], content_length=40))
                got = wire.answers(3.0, until_final=False)
            with Wire(bridge.sip_port, "TCP") as fresh:
                again = fresh.exchange(fresh.request("OPTIONS"))
            alive(bridge)
        finally:
            stop_cleanly(bridge)
    assert [status(m) for m in got if status(m)] == [400] and got[-1] == "<closed>", got
    assert again == 200


@pytest.mark.parametrize("transport", ["UDP", "TCP"])
def test_every_answer_before_a_call_exists_leaves_the_bridge_up(tmp_path: Path, transport: str) -> None:
    """The rest of the family of the 403 crash: the digest challenge (401), the rate limit (503),
    capacity (503) and a codec mismatch (488), each for an INVITE with and without SDP and with
    headers near the transport's size limit; then OPTIONS, a normal call and SIGTERM -> 0."""
    big = [f"X-Filler-{i}: {'c' * 60}" for i in range(40)]  # ~2.8 KB of headers
    no_codec = sdp().replace(b" 0 101\r\n", b" 18 101\r\n").replace(b"a=rtpmap:0 PCMU", b"a=rtpmap:18 G729")
    variants: list[dict[str, object]] = [
        {}, {"body": sdp(), "content_type": "application/sdp"}, {"headers": big}]
    answers: dict[str, list[int]] = {}

    def ask(bridge: BridgeProcess, name: str, kinds: list[dict[str, object]]) -> None:
        for kwargs in kinds:
            with Wire(bridge.sip_port, transport) as wire:
                wire.send(wire.request("INVITE", **kwargs))  # type: ignore[arg-type]
                got = wire.answers(3.0)
                answers.setdefault(name, []).extend([status(m) for m in got if status(m) >= 200][:1])
                wire.end_calls(got)

    with TestBot(echo=True) as bot:
        for name, profile in (
            ("digest", {"sip": {"inbound_auth": {"username": "u", "password": "family-pw-123"}}}),
            ("rate", {"sip": {"rate_limit": {"invites_per_second": 0.01, "burst": 1}}}),
            ("capacity", {"sip": {"max_calls": 1}}),
        ):
            bridge = start_bridge(tmp_path, bot.url, profile)
            try:
                with Wire(bridge.sip_port, transport) as holder:  # a token spent, a slot taken
                    holder.send(holder.request("INVITE", body=sdp(), content_type="application/sdp"))
                    held = holder.answers(3.0)
                    ask(bridge, name, variants)
                    holder.end_calls(held)
                if name == "capacity":
                    time.sleep(1.0)
                    ask(bridge, "codec", [{"body": no_codec, "content_type": "application/sdp"}])
                    assert answered_call(bridge, tmp_path)
                alive(bridge)
            finally:
                stop_cleanly(bridge)
    assert answers["digest"] == [401, 401, 401], answers
    assert answers["rate"] == [503, 503, 503], answers
    assert answers["capacity"] == [503, 503, 503], answers
    assert answers["codec"] == [488], answers
