"""No open door: who may call, digest auth, rate limits, TLS and SRTP, wss:// verification,
secrets that never leave, and transfer targets nobody but the profile can choose."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests import netns
from tests.botlib import Stream, TestBot
from tests.bridgelib import REPO, BridgeProcess, free_port, run_test_caller
from tests.faults.faultlib import (
    TlsBot,
    background,
    joined,
    make_pki,
    record,
    run_caller,
    start_bridge,
)
from tests.faults.rawsip import RawSip, header, status_of
from tests.faults.test_bot_faults import check_healthy
from tests.peerlib import SIPP_AUDIO, SIPP_DIR, PeerProcess, SippResult, TsharkCapture, run_sipp

pytestmark = pytest.mark.timeout(180)


def warnings_with(bridge: BridgeProcess, text: str) -> list[str]:
    return [r["msg"] for r in bridge.records() if r["level"] == "warning" and text in r["msg"]]


def access_counters(bridge: BridgeProcess) -> dict[str, int]:
    """The counters the engine logs when it stops (after bridge.stop())."""
    for r in bridge.records():
        if r.get("event") == "access_counters":
            return {k: int(v) for k, v in r.items() if isinstance(v, int)}
    raise AssertionError("no access counters logged")


@pytest.mark.skipif(not netns.available(), reason="needs root and ip netns")
def test_only_listed_sources_may_call_the_rest_get_403_counted_without_flooding_the_log(
    tmp_path: Path,
) -> None:
    """The bridge on a test host (its own network namespace) accepts INVITEs only from one
    address: a caller there gets through while 300 INVITEs from another address get 403 each,
    are counted, produce two log lines in all, never reach a bot and do not disturb the call.
    OPTIONS from the unlisted address are still answered (liveness is not a secret)."""
    host = netns.TestHost.create(41)
    stranger = "10.231.41.5"
    subprocess.run(
        ["ip", "addr", "add", f"{stranger}/32", "dev", host.veth],
        check=True,  # type: ignore[attr-defined]
        capture_output=True,
    )
    try:
        with TestBot(echo=True, host=host.peer_ip) as bot:
            bridge = BridgeProcess(
                tmp_path,
                bot.url,
                {"sip": {"listen": f"{host.ns_ip}:5060", "allow_from": [host.peer_ip]}},
                exec_prefix=host.exec_prefix,
            ).start()
            try:
                target = f"sip:bot@{host.ns_ip}:5060"
                thread, out = background(
                    run_caller, target, tmp_path, "--local-ip", host.peer_ip, "--hold", "8"
                )
                bot.wait_stream()
                # sipp in its own process (the bot shares this one), as fast as it goes
                flood = sipp_from(
                    tmp_path, stranger, f"{host.ns_ip}:5060", "uac_rejected", calls=300, rate=1000
                )
                with RawSip(5060, host.ns_ip, local_ip=stranger) as prober:
                    prober.request("OPTIONS", _dialog())
                    options = prober.recv(5)
                result = joined(thread, out)
                disturbed = check_healthy(result, bot.wait_closed(), seconds=8)
            finally:
                bridge.stop()
            counters = access_counters(bridge)
            warned = warnings_with(bridge, "not in sip.allow_from") + warnings_with(
                bridge, "forbidden_source"
            )
    finally:
        host.delete()
    assert flood.rc == 0 and flood.successful == 300, flood.errors[-2000:]
    assert flood.messages.count("SIP/2.0 403") == 300 and "SIP/2.0 200" not in flood.messages
    assert options is not None and status_of(options) == 200
    assert len(bot.streams) == 1
    assert counters["forbidden_source"] == 300
    assert 1 <= len(warned) <= 2, warned  # the first one, then one summary
    assert disturbed == 0
    record(
        "security",
        "300 INVITEs from an unlisted address -> 403, 2 log lines",
        injected=300,
        bad_inputs=300,
        disturbed=disturbed,
        others=1,
    )


def sipp_from(
    workdir: Path, local_ip: str, target: str, scenario: str, *, calls: int, rate: float
) -> SippResult:
    """sipp from an address of a test host link (peerlib's helpers only use 127.0.0.1)."""
    run = f"sipp-{local_ip}-{free_port()}"
    files = {k: workdir / f"{run}_{k}" for k in ("stats", "messages", "errors")}
    argv = [
        "sipp",
        target,
        "-sf",
        str(SIPP_DIR / f"{scenario}.xml"),
        "-s",
        "bot",
        "-i",
        local_ip,
        "-p",
        "0",
        "-mi",
        local_ip,
        "-m",
        str(calls),
        "-r",
        f"{rate:g}",
        "-l",
        str(calls),
        "-timeout",
        "30s",
        "-timeout_error",
        "-nostdin",
        "-trace_stat",
        "-stf",
        str(files["stats"]),
        "-trace_msg",
        "-message_file",
        str(files["messages"]),
        "-trace_err",
        "-error_file",
        str(files["errors"]),
    ]
    proc = PeerProcess(argv, workdir / f"{run}.out", cwd=workdir, max_seconds=45)
    rc = proc.wait(50)
    proc.stop()
    rows = (
        [r.split(";") for r in files["stats"].read_text().splitlines() if r]
        if files["stats"].exists()
        else []
    )
    stats = dict(zip(rows[0], rows[-1], strict=False)) if len(rows) >= 2 else {}
    return SippResult(
        rc=-1 if rc is None else rc,
        stats=stats,
        messages=files["messages"].read_text(errors="replace") if files["messages"].exists() else "",
        errors=files["errors"].read_text(errors="replace") if files["errors"].exists() else "",
    )


def _dialog() -> object:
    from tests.faults.rawsip import Dialog

    return Dialog(call_id="options-probe", from_tag="probe")


def test_rate_limit_per_source_answers_503_with_retry_after(tmp_path: Path) -> None:
    profile = {
        "sip": {
            "rate_limit": {"invites_per_second": 2, "burst": 5},
            "inbound_auth": {"username": "trunk", "password": "rate-limit-pw"},
        }
    }
    with TestBot() as bot:
        bridge = start_bridge(tmp_path, bot.url, profile)
        try:
            with RawSip(bridge.sip_port) as flood:
                finals = flood.invite_burst(40)
                time.sleep(1.1)
                later = flood.invite_burst(1)
        finally:
            bridge.stop()
    statuses = [status_of(m) for m in finals.values()]
    assert len(statuses) == 40
    assert 5 <= statuses.count(401) <= 7  # the burst (+ what refilled meanwhile) is let through
    limited = [m for m in finals.values() if status_of(m) == 503]
    assert len(limited) == 40 - statuses.count(401)
    assert all(header(m, "Retry-After") == "1" for m in limited)
    assert [status_of(m) for m in later.values()] == [401]  # refilled after a second
    assert access_counters(bridge)["rate_limited"] == len(limited)
    assert not bot.streams
    record(
        "security", f"40 INVITEs at once, limit 2/s burst 5 -> {len(limited)} x 503 Retry-After", injected=40
    )


def test_digest_auth_lets_in_only_callers_that_know_the_password(tmp_path: Path) -> None:
    password = "trunk-pw-4e1f"
    env = {"TRUNK_PASSWORD": password}
    profile = {
        "sip": {"inbound_auth": {"username": "trunk", "password": "${TRUNK_PASSWORD}", "realm": "acme"}}
    }
    with TestBot(echo=True) as bot:
        bridge = start_bridge(tmp_path, bot.url, profile, env=env)
        try:
            good = run_caller(bridge.uri, tmp_path, "--auth", f"trunk:{password}", "--hold", "0.5")
            wrong = run_caller(bridge.uri, tmp_path, "--auth", "trunk:guess", "--silent")
            none = run_caller(bridge.uri, tmp_path, "--silent")
            sipp = run_sipp(
                tmp_path,
                f"127.0.0.1:{bridge.sip_port}",
                "uac_auth",
                keys={"audio": SIPP_AUDIO["pcmu"]},
                duration_ms=1000,
                auth=("trunk", password),
                timeout=30,
            )
            sipp_wrong = run_sipp(
                tmp_path,
                f"127.0.0.1:{bridge.sip_port}",
                "uac_auth",
                keys={"audio": SIPP_AUDIO["pcmu"]},
                auth=("trunk", "nope"),
                timeout=15,
            )
            bot.wait_closed(1)
        finally:
            bridge.stop()
    assert good["answered"]
    assert not wrong["answered"] and wrong["end_code"] == 403
    assert not none["answered"] and none["end_code"] == 401
    assert sipp.rc == 0, sipp.errors + sipp.messages[-2000:]
    assert sipp_wrong.rc != 0 and "SIP/2.0 403" in sipp_wrong.messages
    assert len(bot.streams) == 2  # only the two authenticated calls reached the bot
    assert password not in bridge.log_text()
    counters = access_counters(bridge)
    assert counters["auth_failed"] == 2 and counters["auth_ok"] == 2
    record("security", "digest auth: pjsua2 and sipp with/without/wrong password", injected=3, bad_inputs=3)


def _udp_lengths(pcap: Path, lo: int, hi: int) -> list[int]:
    out = subprocess.run(
        [
            "tshark",
            "-r",
            str(pcap),
            "-Y",
            f"udp.srcport >= {lo} && udp.srcport <= {hi}",
            "-T",
            "fields",
            "-e",
            "udp.length",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    return [int(x) for x in out.split()]


def test_sip_over_tls_and_srtp(tmp_path: Path) -> None:
    """TLS listener from the profile: a caller that verifies the bridge's certificate gets
    through and its offer of SRTP is taken (SIP never in clear, RTP 10 bytes longer for the
    SRTP tag); a caller that trusts another CA does not connect; plain UDP callers offering SRTP
    get it too; with require_client_cert only a caller with a certificate from the CA gets in."""
    pki = make_pki(tmp_path / "pki")
    tls_port = free_port()
    tls = {"listen": f"127.0.0.1:{tls_port}", "cert_file": str(pki.cert), "key_file": str(pki.key)}
    with TestBot(echo=True) as bot:
        bridge = start_bridge(tmp_path, bot.url, {"sip": {"tls": tls}})
        rtp_lo = bridge.profile["sip"]["rtp_port_start"]
        capture = TsharkCapture.start(
            tmp_path,
            f"tcp port {tls_port} or (udp and portrange {rtp_lo}-{rtp_lo + 199})",
            duration_s=40,
            name="tls",
        )
        try:
            target = f"sip:bot@127.0.0.1:{tls_port};transport=tls"
            secure = run_caller(
                target, tmp_path, "--tls-ca", str(pki.ca), "--srtp", "mandatory", "--hold", "0.5"
            )
            pcap = capture.stop()
            impostor_trust = run_caller(target, tmp_path, "--tls-ca", str(pki.rogue_cert), "--silent")
            udp_srtp = run_caller(bridge.uri, tmp_path, "--srtp", "optional", "--silent", "--hold", "0.5")
            media = [r["msg"] for r in bridge.records() if r["msg"].startswith("media up")]
        finally:
            capture.stop()
            bridge.stop()
        mutual_tls = {**tls, "ca_file": str(pki.ca), "require_client_cert": True}
        bridge = start_bridge(tmp_path, bot.url, {"sip": {"tls": mutual_tls}})
        try:
            target = f"sip:bot@127.0.0.1:{tls_port};transport=tls"
            anonymous = run_caller(target, tmp_path, "--tls-ca", str(pki.ca), "--silent")
            with_cert = run_caller(
                target,
                tmp_path,
                "--tls-ca",
                str(pki.ca),
                "--tls-cert",
                str(pki.client_cert),
                "--tls-key",
                str(pki.client_key),
                "--silent",
                "--hold",
                "0.3",
            )
        finally:
            bridge.stop()
    assert secure["answered"] and not impostor_trust["answered"]
    assert udp_srtp["answered"]
    assert media[0].endswith("(SRTP)") and media[1].endswith("(SRTP)"), media
    raw = pcap.read_bytes()
    assert b"INVITE sip:" not in raw and b"SIP/2.0 200" not in raw  # signalling only in TLS records
    lengths = [n for n in _udp_lengths(pcap, rtp_lo, rtp_lo + 199) if n > 150]  # RTP, not RTCP
    assert len(lengths) > 50 and set(lengths) == {190}, set(lengths)  # 8 UDP + 12 RTP + 160 PCMU + 10 tag
    assert not anonymous["answered"] and with_cert["answered"]
    record("security", "SIP over TLS (+ client certs) and SRTP; wrong CA and no cert refused", injected=2)


def test_wss_bot_certificate_is_verified_and_credentials_reach_only_the_bot(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    password, token = "url-pw-77", "api-token-88"
    env = {"BOT_URL_PASSWORD": password, "BOT_API_KEY": token}

    async def hold(stream: Stream) -> None:
        await asyncio.sleep(0.1)

    with TlsBot(pki.cert, pki.key, script=hold) as good, TlsBot(pki.rogue_cert, pki.rogue_key) as rogue:
        url = f"wss://bridge:${{BOT_URL_PASSWORD}}@127.0.0.1:{good.port}/bot"
        common = {
            "headers": {"X-Api-Key": "${BOT_API_KEY}"},
            "connect_timeout": 2,
            "connect_retries": 0,
            "url_header": "X-Bot-Url",
            "url_header_allowed_hosts": ["127.0.0.1"],
        }
        with_ca = start_bridge(tmp_path, url, {"bot": {**common, "tls": {"ca_file": str(pki.ca)}}}, env=env)
        try:
            verified = run_test_caller(with_ca.uri, tmp_path, silent=True, hold=0.3)
            impostor = run_test_caller(
                with_ca.uri, tmp_path, silent=True, hold=0.3, headers={"X-Bot-Url": rogue.url}
            )
        finally:
            with_ca.stop()
        system_only = start_bridge(tmp_path, url, {"bot": common}, env=env)
        try:
            unknown_ca = run_test_caller(system_only.uri, tmp_path, silent=True, hold=0.3)
        finally:
            system_only.stop()
        unverified = start_bridge(tmp_path, url, {"bot": {**common, "tls": {"verify": False}}}, env=env)
        try:
            insecure = run_test_caller(unverified.uri, tmp_path, silent=True, hold=0.3)
        finally:
            unverified.stop()
    assert verified["answered"]
    stream = good.streams[0]
    headers = {k.lower(): v for k, v in stream.headers.items()}
    assert headers["authorization"] == "Basic " + base64.b64encode(f"bridge:{password}".encode()).decode()
    assert headers["x-api-key"] == token
    assert not impostor["answered"] and impostor["end_code"] == 503
    assert not rogue.streams
    assert not unknown_ca["answered"] and unknown_ca["end_code"] == 503
    assert any(
        "certificate verify failed" in r["msg"].lower() or "certificate_verify_failed" in r["msg"].lower()
        for r in system_only.records()
    ), system_only.log_text()[-2000:]
    assert insecure["answered"]
    assert warnings_with(unverified, "bot.tls.verify is false")
    for bridge in (with_ca, system_only, unverified):
        assert password not in bridge.log_text() and token not in bridge.log_text()
    record(
        "security",
        "wss: CA checked (custom CA ok, unknown CA and impostor refused), verify off warned",
        injected=3,
    )


def test_secrets_never_appear_in_logs_check_output_status_or_metrics(tmp_path: Path) -> None:
    """Every kind of secret (register password, inbound auth password from a file, bot URL
    password, bearer token) through the paths most likely to leak them: debug logging, a
    registrar that is down, a bot that is unreachable, callers with wrong credentials, `check`,
    /status and /metrics."""
    secrets = {"REG_PASSWORD": "reg-secret-31", "URL_PASSWORD": "url-secret-42", "TOKEN": "bearer-secret-53"}
    inbound = "inbound-secret-64"
    secret_file = tmp_path / "inbound.pw"
    secret_file.write_text(inbound + "\n")
    profile = {
        "sip": {
            "register": {
                "registrar": f"sip:127.0.0.1:{free_port()};transport=tcp",  # refused at once
                "username": "bridge",
                "password": "${REG_PASSWORD}",
            },
            "inbound_auth": {"username": "trunk", "password": "${file:" + str(secret_file) + "}"},
        },
        "bot": {"headers": {"Authorization": "Bearer ${TOKEN}"}, "connect_timeout": 1, "connect_retries": 0},
        "logging": {"level": "debug"},
    }
    url = "wss://user:${URL_PASSWORD}@127.0.0.1:9/bot"
    bridge = start_bridge(tmp_path, url, profile, env=secrets)
    try:
        bridge.wait_log("registration failed", timeout=40)
        unreachable = run_caller(bridge.uri, tmp_path, "--auth", f"trunk:{inbound}", "--silent")
        wrong = run_caller(bridge.uri, tmp_path, "--auth", f"trunk:{inbound}x", "--silent")
        pages = []
        for page in ("status", "metrics"):
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{bridge.control_port}/{page}", timeout=5
                ) as reply:
                    pages.append(reply.read().decode())
            except OSError:
                pages.append("")
    finally:
        bridge.stop()
    check = subprocess.run(
        [sys.executable, "-m", "bridge", "check", "--profile", str(bridge.profile_path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=30,
        check=False,
        env={**bridge.env},
    )
    assert unreachable["end_code"] == 503 and wrong["end_code"] == 403
    assert check.returncode == 0, check.stderr
    assert all(pages), "the control listener's /status and /metrics were not served"
    assert "sip_ws_bridge_" in pages[1]
    everything = bridge.log_text() + check.stdout + check.stderr + "".join(pages)
    basic = base64.b64encode(f"user:{secrets['URL_PASSWORD']}".encode()).decode()
    for value in [*secrets.values(), inbound, inbound + "x", basic]:
        assert value not in everything, value
    assert "user:***@127.0.0.1:9" in bridge.log_text()  # the URL is shown, its password is not
    record(
        "security",
        "secrets absent from debug logs, errors, check, /status, /metrics",
        injected=4,
        note="pages fetched: " + ",".join(str(bool(p)) for p in pages),
    )


def test_nobody_but_the_profile_chooses_a_transfer_target(tmp_path: Path) -> None:
    """INVITE headers naming a target and a bot asking for a transfer change nothing: the REFER
    goes to the profile's on_close target. A REFER from the caller and an INVITE with Replaces
    are refused (603): the bridge never dials a number a peer chose, nor hands a call over."""
    evil = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    evil.bind(("127.0.0.1", 0))
    evil_uri = f"sip:evil@127.0.0.1:{evil.getsockname()[1]}"

    async def ask_for_transfer(stream: Stream) -> None:
        await asyncio.sleep(0.5)
        if stream.start["start"]["custom_parameters"].get("X-Case") == "bot-asks":
            for msg in (
                {"event": "transfer", "to": evil_uri},
                {"event": "redirect", "uri": evil_uri},
                {"event": "mark", "mark": {"name": evil_uri}},
            ):
                await stream.ws.send(json.dumps({**msg, "stream_sid": stream.stream_sid}))
            await asyncio.sleep(0.5)
            await stream.ws.close(1000)

    profile = {"bot": {"on_close": {"action": "transfer", "transfer_to": "sip:agents@127.0.0.1:5999"}}}
    with TestBot(ask_for_transfer) as bot, RawSip(0) as caller, RawSip(0) as intruder:
        bridge = start_bridge(tmp_path, bot.url, profile)
        caller.bridge = intruder.bridge = ("127.0.0.1", bridge.sip_port)
        try:
            headers = {
                "X-Case": "bot-asks",
                "X-Transfer-To": f"<{evil_uri}>",
                "Refer-To": f"<{evil_uri}>",
                "Diversion": f"<{evil_uri}>",
            }
            _, answer = caller.invite(extra=headers)
            assert status_of(answer) == 200
            refer = caller.wait_request("REFER", timeout=10)
            caller.reply(refer, 603, "Decline")
            caller.wait_request("BYE", timeout=10)
            caller.reply(caller.received[-1], 200, "OK")

            second, answer = caller.invite(extra={"X-Case": "caller-refers"})
            assert status_of(answer) == 200
            refused_refer = caller.in_dialog(
                second, "REFER", extra={"Refer-To": f"<{evil_uri}>", "Referred-By": "<sip:raw@127.0.0.1>"}
            )
            replaces = f"{second.call_id};to-tag={second.to_tag};from-tag={second.from_tag}"
            _, refused_replaces = intruder.invite(extra={"Replaces": replaces, "Require": "replaces"})
            still_up = bot.wait_stream(1)
            time.sleep(1.0)
            assert not still_up.closed.is_set()  # the call the intruder tried to take over goes on
            bye = caller.in_dialog(second, "BYE")
            evil.settimeout(2.0)
            try:
                dialled, _ = evil.recvfrom(65535)
            except TimeoutError:
                dialled = b""
        finally:
            bridge.stop()
            evil.close()
    assert "agents@127.0.0.1:5999" in (header(refer, "Refer-To") or "") and "evil" not in refer
    assert status_of(refused_refer) == 603
    assert status_of(refused_replaces) == 603
    assert status_of(bye) == 200
    assert dialled == b"", dialled[:200]
    assert access_counters(bridge)["refused_requests"] == 2
    record(
        "security",
        "transfer target only from the profile; peer REFER and Replaces refused",
        injected=3,
        bad_inputs=6,
    )
