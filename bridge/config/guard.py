"""Profile keys for access control, encryption and fault handling (parsed for `bridge.config`).

sip:   allow_from, rate_limit, inbound_auth, tls, srtp
bot:   stall_timeout, ping_interval, ping_timeout, tls
media: rtp_timeout

`bridge.config` calls these with its own section readers, so every error names its key the
same way; nothing here is imported by anything but `bridge.config` and the service.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Final, Literal, cast

from bridge.config.base import REDACTED, RegisterSettings, Secret
from bridge.config.syntax import parse_listen, parse_sip_uri
from bridge.config.values import MISSING, Context, Section, clean_text
from bridge.errors import ConfigError

SrtpUse = Literal["optional", "mandatory", "disabled"]
SRTP_CHOICES: Final = ("optional", "mandatory", "disabled")
DEFAULT_ALLOW_FROM: Final = ("127.0.0.0/8", "::1")

RATE_LIMIT_KEYS: Final = ("invites_per_second", "burst")
INBOUND_AUTH_KEYS: Final = ("username", "password", "realm")
SIP_TLS_KEYS: Final = ("listen", "cert_file", "key_file", "ca_file", "require_client_cert")
BOT_TLS_KEYS: Final = ("verify", "ca_file")

SIP_GUARD_KEYS: Final = ("allow_from", "rate_limit", "inbound_auth", "tls", "srtp")
BOT_GUARD_KEYS: Final = ("stall_timeout", "ping_interval", "ping_timeout", "tls")
MEDIA_GUARD_KEYS: Final = ("rtp_timeout",)

# What an inbound-auth user name and realm may not hold (both are quoted in Digest headers), and
# a file path.
_USER_NAME_UNSAFE_RE: Final = re.compile(r'[\s"\\\x00-\x1f\x7f]')
_REALM_UNSAFE_RE: Final = re.compile(r'["\\\x00-\x1f\x7f]')
_NUL_RE: Final = re.compile("\x00")
_HOST_RE: Final = re.compile(r"(?=.{1,253}$)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
                             r"(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?")


@dataclass(frozen=True, slots=True)
class RateLimitSettings:
    invites_per_second: float = 50.0  # 0 = no limit
    burst: int = 100


@dataclass(frozen=True, slots=True)
class InboundAuthSettings:
    username: str
    password: Secret
    realm: str = "sip-ws-bridge"


@dataclass(frozen=True, slots=True)
class SipTlsSettings:
    listen_host: str
    listen_port: int
    cert_file: str
    key_file: str
    ca_file: str | None = None
    require_client_cert: bool = False

    @property
    def listen(self) -> str:
        return f"{self.listen_host}:{self.listen_port}"


@dataclass(frozen=True, slots=True)
class SipGuard:
    allow_from: tuple[str, ...] = DEFAULT_ALLOW_FROM
    rate_limit: RateLimitSettings = RateLimitSettings()
    inbound_auth: InboundAuthSettings | None = None
    tls: SipTlsSettings | None = None
    srtp: SrtpUse = "optional"


@dataclass(frozen=True, slots=True)
class BotTlsSettings:
    verify: bool = True
    ca_file: str | None = None


@dataclass(frozen=True, slots=True)
class BotGuard:
    stall_timeout: float = 10.0  # 0 = never end a call because the bot stopped reading
    ping_interval: float = 20.0  # 0 = no keepalive pings
    ping_timeout: float = 20.0
    tls: BotTlsSettings = field(default_factory=BotTlsSettings)


# --------------------------------------------------------------------------- sip


def _allow_from(ctx: Context, sec: Section, register: RegisterSettings | None) -> tuple[str, ...]:
    key = sec.key("allow_from")
    expected = "a list of addresses, networks or host names"
    value = sec.optional("allow_from", expected, list(DEFAULT_ALLOW_FROM))
    if value is MISSING:
        return default_allow_from(register)
    rules: list[str] = []
    items = ctx.items(key, value, 'addresses, networks or host names such as "192.0.2.0/24"')
    for i, item in enumerate(items):
        text = ctx.text(f"{key}[{i}]", item, 'an address, a network such as "192.0.2.0/24", or a host name')
        rule = text.value.strip()
        try:
            network = ipaddress.ip_network(rule, strict=False)
        except ValueError:
            network = None
        if network is None and not _HOST_RE.fullmatch(rule):
            raise ConfigError(
                f"{key}[{i}]",
                f'expected an IP address, a network such as "192.0.2.0/24" or a host name, got {text.shown}',
            )
        if network is not None and network.prefixlen == 0:
            ctx.warnings.append(
                f"{key}[{i}]: {rule} lets any address place calls; protect the bridge with "
                "sip.inbound_auth or a firewall"
            )
        rules.append(rule)
    if not rules:
        raise ConfigError(
            key, 'expected at least one address, network or host name (the default is ["127.0.0.0/8", "::1"])'
        )
    return tuple(rules)


def default_allow_from(register: RegisterSettings | None) -> tuple[str, ...]:
    """Loopback, plus the registrar's and outbound proxy's hosts when the bridge registers."""
    rules = list(DEFAULT_ALLOW_FROM)
    if register is not None:
        for uri in (register.registrar, register.outbound_proxy):
            host = _uri_host(uri) if uri else ""
            if host and host not in rules:
                rules.append(host)
    return tuple(rules)


def _uri_host(uri: str) -> str:
    parsed = parse_sip_uri(uri)
    if parsed is None:
        return ""
    return parsed.host[1:-1] if parsed.host.startswith("[") else parsed.host


def _rate_limit(sec: Section) -> RateLimitSettings:
    rate = sec.number("invites_per_second", 50.0, 0.0, 100000.0)
    burst = sec.integer("burst", 100, 1, 1000000)
    if rate == 0:
        sec.ctx.warnings.append(f"{sec.key('invites_per_second')}: 0 turns the per-source rate limit off")
    return RateLimitSettings(invites_per_second=rate, burst=burst)


def _inbound_auth(ctx: Context, sec: Section) -> InboundAuthSettings:
    user_key = sec.key("username")
    username_text = sec.required_text("username", "a non-empty string", missing="a user name")
    username = clean_text(user_key, username_text.value,
                          "expected a non-empty user name without spaces, quotes or backslashes",
                          unsafe=_USER_NAME_UNSAFE_RE)
    pw_key = sec.key("password")
    password = sec.required_text("password", 'a string (quote it: password: "...")', secret=True,
                                 missing="a string (the password callers must prove)").value
    if len(password) < 8:
        raise ConfigError(pw_key, "expected a password of at least 8 characters")
    realm = "sip-ws-bridge"
    realm_text = sec.text("realm", realm, "a realm name")
    if realm_text is not None:
        realm = clean_text(sec.key("realm"), realm_text.value,
                           f"expected a realm without quotes or backslashes, got {realm_text.shown}",
                           unsafe=_REALM_UNSAFE_RE)
    return InboundAuthSettings(username=username, password=Secret(password), realm=realm)


def _file(ctx: Context, sec: Section, name: str, *, required: bool) -> str | None:
    expected = "a file path"
    if required:
        text = sec.required_text(name, expected)
    else:
        nullable = sec.nullable_text(name, expected)
        if nullable is None:
            return None
        text = nullable
    return clean_text(sec.key(name), text.value, f"expected {expected}, got {text.shown}", unsafe=_NUL_RE)


def _sip_tls(ctx: Context, sec: Section) -> SipTlsSettings:
    listen_key = sec.key("listen")
    listen = sec.required_text("listen", '"HOST:PORT", e.g. "0.0.0.0:5061"')
    host, port = parse_listen(listen_key, listen)
    cert = _file(ctx, sec, "cert_file", required=True)
    key = _file(ctx, sec, "key_file", required=True)
    ca_file = _file(ctx, sec, "ca_file", required=False)
    require_client_cert = sec.boolean("require_client_cert", False)
    if require_client_cert and ca_file is None:
        raise ConfigError(sec.key("require_client_cert"),
                          "needs sip.tls.ca_file: the CA that signs the clients' certificates")
    assert cert is not None and key is not None
    return SipTlsSettings(host, port, cert, key, ca_file, require_client_cert)


def parse_sip_guard(ctx: Context, sec: Section, register: RegisterSettings | None,
                    listen: tuple[str, int], transports: tuple[str, ...]) -> SipGuard:
    allow_from = _allow_from(ctx, sec, register)
    rate_limit = _rate_limit(sec.section("rate_limit", RATE_LIMIT_KEYS))
    auth = None
    if sec.raw("inbound_auth") not in (None, MISSING):
        auth = _inbound_auth(ctx, sec.section("inbound_auth", INBOUND_AUTH_KEYS))
    tls = None
    if sec.raw("tls") not in (None, MISSING):
        tls = _sip_tls(ctx, sec.section("tls", SIP_TLS_KEYS))
        if tls.listen_port == listen[1] and "tcp" in transports and tls.listen_host in (listen[0], "0.0.0.0"):
            raise ConfigError(sec.key("tls.listen"),
                              f"port {tls.listen_port} is already sip.listen's TCP port; expected another "
                              "port, e.g. 5061")
    srtp = cast(SrtpUse, sec.choice("srtp", "optional", SRTP_CHOICES))
    return SipGuard(allow_from=allow_from, rate_limit=rate_limit, inbound_auth=auth, tls=tls, srtp=srtp)


def sip_guard_dict(guard: SipGuard) -> dict[str, object]:
    auth = guard.inbound_auth
    tls = guard.tls
    return {
        "allow_from": list(guard.allow_from),
        "rate_limit": {"invites_per_second": guard.rate_limit.invites_per_second,
                       "burst": guard.rate_limit.burst},
        "inbound_auth": None if auth is None else {"username": auth.username, "password": REDACTED,
                                                   "realm": auth.realm},
        "tls": None if tls is None else {"listen": tls.listen, "cert_file": tls.cert_file,
                                         "key_file": tls.key_file, "ca_file": tls.ca_file,
                                         "require_client_cert": tls.require_client_cert},
        "srtp": guard.srtp,
    }


# --------------------------------------------------------------------------- bot and media


def parse_bot_guard(ctx: Context, sec: Section) -> BotGuard:
    stall = sec.number("stall_timeout", 10.0, 0.0, 600.0)
    interval = sec.number("ping_interval", 20.0, 0.0, 600.0)
    timeout = sec.number("ping_timeout", 20.0, 1.0, 600.0)
    tls_sec = sec.section("tls", BOT_TLS_KEYS)
    verify = tls_sec.boolean("verify", True)
    ca_file = _file(ctx, tls_sec, "ca_file", required=False)
    if not verify:
        ctx.warnings.append(
            "bot.tls.verify is false: the bot's certificate is not checked, so anyone on the network "
            "path can pose as the bot and hear every call"
        )
        if ca_file is not None:
            ctx.warnings.append("bot.tls.ca_file: ignored because bot.tls.verify is false")
    if stall == 0:
        ctx.warnings.append("bot.stall_timeout: 0 keeps a call up however long the bot stops reading")
    return BotGuard(stall_timeout=stall, ping_interval=interval, ping_timeout=timeout,
                    tls=BotTlsSettings(verify=verify, ca_file=ca_file))


def bot_guard_dict(guard: BotGuard) -> dict[str, object]:
    return {
        "stall_timeout": guard.stall_timeout,
        "ping_interval": guard.ping_interval,
        "ping_timeout": guard.ping_timeout,
        "tls": {"verify": guard.tls.verify, "ca_file": guard.tls.ca_file},
    }


def parse_rtp_timeout(sec: Section) -> float:
    return sec.number("rtp_timeout", 30.0, 0.0, 3600.0)
