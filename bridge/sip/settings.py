"""What the SIP engine is started with (plain values: the service builds them from the profile)."""

from __future__ import annotations

from dataclasses import dataclass, field

from bridge.sip.access import RateLimit


@dataclass(frozen=True, slots=True)
class RegisterParams:
    registrar: str
    username: str
    password: str
    realm: str = "*"
    expires: int = 300
    identity: str | None = None
    outbound_proxy: str | None = None
    contact: str | None = None  # forced Contact (a front/load balancer address)
    retry_min_s: float = 2.0
    retry_max_s: float = 120.0


@dataclass(frozen=True, slots=True)
class TlsParams:
    """SIP over TLS: a listener (the bridge) or a client transport (the test caller)."""

    listen_host: str
    listen_port: int
    cert_file: str = ""
    key_file: str = ""
    ca_file: str | None = None
    require_client_cert: bool = False  # server: clients must present a certificate signed by ca_file
    verify_server: bool = False  # client: check the server's certificate against ca_file


@dataclass(frozen=True, slots=True)
class EngineSettings:
    listen_host: str
    listen_port: int
    transports: tuple[str, ...] = ("udp", "tcp")
    public_address: str | None = None
    rtp_port_start: int = 20000
    rtp_port_range: int = 10000
    codecs: tuple[str, ...] = ("PCMU", "PCMA", "G722")
    user_agent: str = "sip-ws-bridge"
    clock_rate: int = 8000
    tick_phase_ms: int | None = None  # when in every 20 ms the conference clock ticks (None: any)
    rtp_latching: str = "first"  # first | follow (media.rtp_latching)
    max_calls: int = 100  # admission limit; beyond it INVITEs get 503 + Retry-After
    register: RegisterParams | None = None
    pjsip_log_level: int = 1
    retry_after_s: int = 5
    # Who may call (see access.py); the defaults let in loopback only.
    allow_from: tuple[str, ...] = ("127.0.0.0/8", "::1")
    rate_limit: RateLimit | None = field(default_factory=RateLimit)
    inbound_auth: tuple[str, str, str] | None = None  # username, password, realm
    client_auth: tuple[str, str] | None = None  # username, password: answer challenges (test caller)
    tls: TlsParams | None = None
    srtp: str = "disabled"  # optional | mandatory | disabled
    rtp_timeout_s: float = 0.0  # 0 = never end a call for lack of RTP
