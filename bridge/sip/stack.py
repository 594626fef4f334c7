"""Starting PJSIP: the endpoint's configuration, transports, codecs, the native SIP guard and the
account, and PJSIP's log into stdlib logging. Runs on the engine's sip thread."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pjsua2 as pj

from bridge.audio.latency import TICK_S
from bridge.errors import SipStackError
from bridge.sip.access import InboundGate
from bridge.sip.pjlog import LineBudget, shorten
from bridge.sip.settings import EngineSettings, TlsParams

log = logging.getLogger("bridge.sip")
pjlog = logging.getLogger("bridge.pjsip")

CODEC_IDS = {"PCMU": "PCMU/8000/1", "PCMA": "PCMA/8000/1", "G722": "G722/16000/1"}


class LogWriter(pj.LogWriter):  # type: ignore[misc]
    """PJSIP's log into stdlib logging. Called from any PJSIP thread, rarely at the levels we ask."""

    budget = LineBudget()  # errors and warnings: junk from the network must not flood the log

    def write(self, entry: Any) -> None:
        level = entry.level
        pylevel = logging.ERROR if level <= 1 else logging.WARNING if level == 2 else logging.DEBUG
        message = shorten(str(entry.msg))
        if level <= 2:
            allowed, dropped = self.budget.take(time.monotonic())
            if not allowed:
                return
            if dropped:
                message = f"{message} [{dropped} more PJSIP error/warning lines were left out]"
        pjlog.log(pylevel, "%s", message)


def init_stack(s: EngineSettings, gate: InboundGate | None, keep_endpoint: Callable[[Any], None],
               new_account: Callable[[], Any]) -> tuple[Any, Any]:
    """Create, configure and start the pjsua2 endpoint, its transports and the account; returns
    (log writer, account). The endpoint is handed to `keep_endpoint` at once, so a failure later
    still lets the caller destroy it."""
    ep = pj.Endpoint()
    keep_endpoint(ep)
    with quiet_stdout():
        # pjlib logs its banner to stdout at level 5 before libInit() applies our log config.
        ep.libCreate()
    cfg = pj.EpConfig()
    if cfg.uaConfig.maxCalls < s.max_calls:
        raise SipStackError(
            f"this pjsua2 build allows {cfg.uaConfig.maxCalls} calls but the profile asks for "
            f"{s.max_calls}; install the project's pjsua2 build (native/build-pjsua2.sh), "
            "not the PyPI wheel"
        )
    # Keep pjsua's own limit at the compiled maximum: the admission limit is ours, so that
    # an INVITE over capacity gets 503 with Retry-After instead of pjsua's bare 486.
    cfg.uaConfig.threadCnt = 0
    cfg.uaConfig.mainThreadOnly = True
    cfg.uaConfig.userAgent = s.user_agent
    cfg.logConfig.level = s.pjsip_log_level
    cfg.logConfig.consoleLevel = s.pjsip_log_level
    cfg.logConfig.msgLogging = 0
    writer = LogWriter()
    cfg.logConfig.writer = writer
    writer.__disown__()  # libDestroy() deletes the writer
    med = cfg.medConfig
    med.clockRate = s.clock_rate
    med.sndClockRate = s.clock_rate
    med.channelCount = 1
    med.audioFramePtime = 20
    med.ptime = 20
    med.threadCnt = 1
    med.hasIoqueue = True
    med.noVad = True  # the bot hears a continuous stream; no comfort-noise gaps in RTP
    med.ecTailLen = 0
    # Never close the (null) sound device when idle: reopened for the next call, its clock
    # would start at a new phase, and `tick_phase_ms` would be lost.
    med.sndAutoCloseTime = -1
    med.quality = 4  # resampling quality when a G.722 leg meets the 8 kHz clock
    ep.libInit(cfg)
    if hasattr(pj, "SipGuard"):
        # Answers what PJSIP would drop or pass on (see native/sip_guard.hpp).
        ipv6_media = ":" in s.listen_host or ":" in (s.public_address or "")
        pj.SipGuard.install(ipv6_media)
        rtp, rtcp = LATCHING[s.rtp_latching]
        pj.SipGuard.setLatching(rtp, rtcp)
        sources = pj.StringVector()
        for network in gate.policy.networks if gate is not None else ():
            sources.append(str(network))
        pj.SipGuard.setReplacesSources(sources)

    for proto in s.transports:
        tc = pj.TransportConfig()
        tc.port = s.listen_port
        if s.listen_host not in ("0.0.0.0", ""):
            tc.boundAddress = s.listen_host
        if s.public_address:
            tc.publicAddress = s.public_address
        kind = pj.PJSIP_TRANSPORT_UDP if proto == "udp" else pj.PJSIP_TRANSPORT_TCP
        try:
            ep.transportCreate(kind, tc)
        except pj.Error as exc:
            raise SipStackError(
                f"cannot listen for SIP on {proto.upper()} {s.listen_host}:{s.listen_port}: "
                f"{exc.reason} (is another instance running on that port?)"
            ) from None
    if s.tls is not None:
        create_tls_transport(ep, s.tls, s.public_address)
    ep.libStart()
    if s.tick_phase_ms is not None:
        wait_for_phase(s.tick_phase_ms / 1000.0)
        log.info("media clock: ticks %d ms past every 20 ms (media.tick_phase_ms)", s.tick_phase_ms)
    # The null device's clock drives the conference: its phase is set here, for good (see
    # sndAutoCloseTime above).
    ep.audDevManager().setNullDev()
    for codec in ep.codecEnum2():
        ep.codecSetPriority(codec.codecId, 0)
    for rank, name in enumerate(s.codecs):
        ep.codecSetPriority(CODEC_IDS[name], 250 - rank)

    ac = pj.AccountConfig()
    host = s.public_address or s.listen_host
    reg = s.register
    if reg is not None:
        ac.idUri = reg.identity or f"sip:{reg.username}@{registrar_host(reg.registrar)}"
        ac.regConfig.registrarUri = reg.registrar
        ac.regConfig.timeoutSec = reg.expires
        ac.regConfig.retryIntervalSec = 0  # our own backoff (see _schedule_reg_retry)
        ac.regConfig.firstRetryIntervalSec = 0
        ac.sipConfig.authCreds.append(pj.AuthCredInfo("digest", reg.realm, reg.username, 0, reg.password))
        if reg.outbound_proxy:
            ac.sipConfig.proxies.append(reg.outbound_proxy)
        if reg.contact:
            ac.sipConfig.contactForced = f"<{reg.contact}>"
    else:
        ac.idUri = f"sip:bridge@{host}:{s.listen_port}"
        ac.regConfig.registerOnAdd = False
    if s.client_auth is not None and reg is None:
        user, password = s.client_auth
        ac.sipConfig.authCreds.append(pj.AuthCredInfo("digest", "*", user, 0, password))
    # SIPREC (RFC 7866) recording sessions are taken as taps; PJSIP checks their form.
    ac.callConfig.siprecUse = pj.PJSUA_SIP_SIPREC_OPTIONAL
    ac.mediaConfig.srtpUse = SRTP_USE[s.srtp]
    # SDES keys may travel over plain UDP/TCP SIP: SRTP where the peer offers it still beats
    # clear RTP on a separate path. For keys that never travel in clear, use sip.tls.
    ac.mediaConfig.srtpSecureSignaling = 0
    mt = ac.mediaConfig.transportConfig
    mt.port = s.rtp_port_start
    mt.portRange = s.rtp_port_range
    if s.listen_host not in ("0.0.0.0", ""):
        mt.boundAddress = s.listen_host
    if s.public_address:
        mt.publicAddress = s.public_address
    account = new_account()
    account.create(ac, True)
    log.info(
        "SIP listening on %s %s:%d (%s)", "/".join(t.upper() for t in s.transports), s.listen_host,
        s.listen_port, "registering as " + ac.idUri if reg else "trunk mode: accepting INVITEs directly",
    )
    if gate is not None:
        for line in gate.describe():
            log.info("%s", line)
    return writer, account


def create_tls_transport(ep: Any, t: TlsParams, public_address: str | None) -> None:
    for path, key in ((t.cert_file, "sip.tls.cert_file"), (t.key_file, "sip.tls.key_file"),
                      (t.ca_file, "sip.tls.ca_file")):
        if path and not os.access(path, os.R_OK):
            raise SipStackError(f"{key}: cannot read {path}; check the path and its permissions")
    tc = pj.TransportConfig()
    tc.port = t.listen_port
    if t.listen_host not in ("0.0.0.0", ""):
        tc.boundAddress = t.listen_host
    if public_address:
        tc.publicAddress = public_address
    tls = tc.tlsConfig
    tls.certFile = t.cert_file
    tls.privKeyFile = t.key_file
    if t.ca_file:
        tls.CaListFile = t.ca_file
    tls.proto = pj.PJ_SSL_SOCK_PROTO_TLS1_2 | pj.PJ_SSL_SOCK_PROTO_TLS1_3
    tls.verifyServer = t.verify_server
    tls.verifyClient = t.require_client_cert
    tls.requireClientCert = t.require_client_cert
    try:
        ep.transportCreate(pj.PJSIP_TRANSPORT_TLS, tc)
    except pj.Error as exc:
        raise SipStackError(
            f"cannot listen for SIP on TLS {t.listen_host}:{t.listen_port}: {exc.reason} (is the port "
            "in use, or are sip.tls.cert_file and key_file not a matching PEM certificate and key?)"
        ) from None
    log.info("SIP listening on TLS %s:%d%s", t.listen_host, t.listen_port,
             " (client certificates required)" if t.require_client_cert else "")


@contextlib.contextmanager
def quiet_stdout() -> Iterator[None]:
    sys.stdout.flush()
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


# Packets in a row from a new source that move a stream there (RTP, RTCP): "first" never once the
# SDP address was heard (a stream that has heard nothing yet still latches, for NAT); "follow"
# is PJSIP's default rule.
NEVER = 0xFFFFFFFF
LATCHING = {"first": (NEVER, NEVER), "follow": (10, 3)}

SRTP_USE = {
    "optional": pj.PJMEDIA_SRTP_OPTIONAL,
    "mandatory": pj.PJMEDIA_SRTP_MANDATORY,
    "disabled": pj.PJMEDIA_SRTP_DISABLED,
}


def registrar_host(registrar: str) -> str:
    host = registrar.split(":", 1)[1] if ":" in registrar else registrar
    host = host.split(";", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def wait_for_phase(phase_s: float) -> None:
    """Sleep until time.monotonic() is `phase_s` past a multiple of the 20 ms tick. PJSIP's clock
    runs on the same monotonic clock and schedules each tick a whole period after the last, so a
    clock started now keeps this phase."""
    time.sleep((phase_s - time.monotonic() % TICK_S) % TICK_S)


def describe_start_error(settings: EngineSettings, exc: Any) -> str:
    return f"the SIP stack failed to start: {exc.title}: {exc.reason}"
