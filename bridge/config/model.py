"""The profile's schema: its constants and the frozen dataclasses `parse_profile` returns.

`Secret`, `RegisterSettings`, ``REDACTED`` and the sample rates are in `base`, `BotUrl` in `boturl`,
the access-control and TLS settings (`SipGuard`, `BotGuard`) in `guard`, the tap settings in `tap`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, Literal

from bridge import __version__
from bridge.config.base import DEFAULT_SAMPLE_RATE, RegisterSettings, Secret
from bridge.config.guard import BotGuard, SipGuard
from bridge.config.outbound import ApiProfile, OutboundSettings
from bridge.config.tap import StreamMode, TapSettings

CODECS: Final = ("PCMU", "PCMA", "G722")
TRANSPORTS: Final = ("udp", "tcp")
CLOCK_RATES: Final = (8000, 16000)
LOG_LEVELS: Final = ("debug", "info", "warning", "error")
LOG_FORMATS: Final = ("auto", "json", "text")
DEFAULT_USER_AGENT: Final = f"sip-ws-bridge/{__version__}"

LogLevel = Literal["debug", "info", "warning", "error"]
LogFormat = Literal["auto", "json", "text"]
RecordingLayout = Literal["stereo", "mixed"]
RECORDING_LAYOUTS: Final = ("stereo", "mixed")
DEFAULT_CONTROL_LISTEN: Final = ("127.0.0.1", 8780)
UnreachableAction = Literal["reject", "transfer"]
CloseAction = Literal["hangup", "transfer"]


# --------------------------------------------------------------------------- the schema


@dataclass(frozen=True, slots=True)
class SipSettings:
    listen_host: str
    listen_port: int
    transports: tuple[str, ...] = TRANSPORTS
    public_address: str | None = None
    rtp_port_start: int = 20000
    rtp_port_range: int = 10000
    codecs: tuple[str, ...] = CODECS
    max_calls: int = 100
    user_agent: str = DEFAULT_USER_AGENT
    forward_headers: tuple[str, ...] = ("X-*",)
    register: RegisterSettings | None = None
    # allow_from, rate_limit, inbound_auth, tls, srtp (guard.py)
    guard: SipGuard = field(default_factory=SipGuard)

    @property
    def listen(self) -> str:
        return f"{self.listen_host}:{self.listen_port}"

    @property
    def trunk_mode(self) -> bool:
        """True when the bridge does not register and accepts INVITEs directly."""
        return self.register is None


@dataclass(frozen=True, slots=True)
class UnreachablePolicy:
    """What to do when the bot cannot be reached at call start (after the retries)."""

    action: UnreachableAction = "reject"
    sip_status: int = 503
    transfer_to: str | None = None


@dataclass(frozen=True, slots=True)
class ClosePolicy:
    """What to do when the bot closes its socket in the middle of a call."""

    action: CloseAction = "hangup"
    transfer_to: str | None = None


@dataclass(frozen=True, slots=True)
class BotSettings:
    url: Secret  # the full URL, userinfo and query included: reveal() it to connect
    url_redacted: str  # the same URL with a userinfo password shown as ***: for logs
    sample_rate: int = DEFAULT_SAMPLE_RATE  # derived from ?sample-rate= / ?sample_rate=
    query_parameters: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, Secret] = field(default_factory=dict)  # extra handshake headers
    connect_timeout: float = 10.0
    # After `stop`, how long the bot may finish what it is sending or close first (then 1000).
    stop_grace_s: float = 0.25
    connect_retries: int = 1
    chunk_ms: int = 20  # what Exotel's bots expect: 20 ms frames (320 bytes at 8 kHz)
    prebuffer_ms: int = 60
    buffer_seconds: float = 30.0
    max_message_bytes: int = 1048576
    warn_message_bytes: int = 102400
    clear_answers_marks: bool = True
    account_sid: str = "sip-ws-bridge"
    url_header: str | None = None
    url_header_allowed_hosts: tuple[str, ...] = ()
    # Hosts a bot URL given in an API request may name (globs); the parser defaults it to bot.url's host.
    url_allowed_hosts: tuple[str, ...] = ()
    on_unreachable: UnreachablePolicy = UnreachablePolicy()
    on_close: ClosePolicy = ClosePolicy()
    # stall_timeout, ping_interval, ping_timeout, tls (guard.py)
    guard: BotGuard = field(default_factory=BotGuard)


@dataclass(frozen=True, slots=True)
class MediaSettings:
    clock_rate: int = 8000
    rtp_timeout: float = 30.0  # seconds without RTP from the caller before hanging up; 0 = never
    # Where in every 20 ms this instance's media clock ticks (ms past a multiple of 20 ms of the
    # monotonic clock); None: wherever start-up put it. Instances on one host with different
    # phases (0 and 10 for two) do their per-tick media work at different moments.
    tick_phase_ms: int | None = None
    # Where the bridge sends a call's RTP when packets come from another address than the SDP's:
    # "first" moves there only until the SDP address has been heard (callers behind NAT), never
    # after; "follow" is PJSIP's rule (10 packets in a row from a new source move it, any time).
    rtp_latching: str = "first"


RTP_LATCHING: Final = ("first", "follow")


@dataclass(frozen=True, slots=True)
class LogSettings:
    level: LogLevel = "info"
    format: LogFormat = "auto"


@dataclass(frozen=True, slots=True)
class ControlSettings:
    """The control HTTP listener (/healthz, /readyz, /metrics, /status); listen_host None = off."""

    listen_host: str | None = DEFAULT_CONTROL_LISTEN[0]
    listen_port: int = DEFAULT_CONTROL_LISTEN[1]

    @property
    def listen(self) -> str | None:
        return None if self.listen_host is None else f"{self.listen_host}:{self.listen_port}"


@dataclass(frozen=True, slots=True)
class RecordingSettings:
    """Per-call WAV recordings: caller left / bot right (stereo) or both mixed (mono)."""

    enabled: bool = False
    dir: str | None = None  # required when enabled
    layout: RecordingLayout = "stereo"
    retention_days: int = 30  # recordings older than this are deleted; 0 = keep them
    max_files: int = 10000  # the oldest beyond this many are deleted; 0 = no limit


@dataclass(frozen=True, slots=True)
class Profile:
    name: str
    sip: SipSettings
    bot: BotSettings
    media: MediaSettings = MediaSettings()
    logging: LogSettings = LogSettings()
    warnings: tuple[str, ...] = ()
    control: ControlSettings = ControlSettings()
    recording: RecordingSettings = RecordingSettings()
    mode: StreamMode = "bot"  # tap: every INVITE is an agent-assist tap (tap.py)
    tap: TapSettings = field(default_factory=TapSettings)
    api: ApiProfile = field(default_factory=ApiProfile)  # the call API (outbound.py)
    outbound: OutboundSettings = field(default_factory=OutboundSettings)
    state_dir: str = ""  # durable state: the webhook queue, idempotency keys
