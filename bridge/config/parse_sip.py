"""The ``sip`` section of a profile, ``sip.register`` included (`parse_sip`); its access-control,
rate-limit and TLS keys are read by `guard`.
"""

from __future__ import annotations

import re
from typing import Final

from bridge.config.base import RegisterSettings, Secret
from bridge.config.guard import parse_sip_guard
from bridge.config.model import CODECS, DEFAULT_USER_AGENT, TRANSPORTS, SipSettings
from bridge.config.syntax import is_host, parse_listen, parse_sip_uri, sip_uri
from bridge.config.values import MISSING, SPACE_OR_CONTROL_RE, Context, Section, clean_text
from bridge.errors import ConfigError

_REGISTER_KEYS: Final = (
    "registrar",
    "username",
    "password",
    "realm",
    "expires",
    "identity",
    "outbound_proxy",
    "contact",
)
_HEADER_GLOB_RE: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z?\[\]-]+")
_NAME_ADDR_RE: Final = re.compile(r"\s*(?:\"(?:[^\"\\]|\\.)*\"|[^\"<>]*)\s*<([^<>]*)>\s*")


# --------------------------------------------------------------------------- sections


def _parse_register(ctx: Context, sec: Section) -> RegisterSettings:
    registrar = sip_uri(
        ctx,
        sec.key("registrar"),
        sec.required("registrar", '"sip:host[:port]"'),
        example="sip:pbx.example.com",
        user=False,
    )
    registrar_uri = parse_sip_uri(registrar)
    assert registrar_uri is not None

    username_key = sec.key("username")
    username = sec.required_text("username", 'a non-empty string (quote numbers: username: "1001")',
                                 missing="a non-empty string")
    clean_text(username_key, username.value, f"expected a user name without spaces, got {username.shown}",
               unsafe=SPACE_OR_CONTROL_RE, strip=False, empty="expected a non-empty string, got an empty one")

    password_key = sec.key("password")
    password = sec.required_text("password", 'a string (quote it: password: "...")', secret=True,
                                 missing="a string (the SIP password)")
    clean_text(password_key, password.value,
               "expected a password without control characters (newline, tab, ...)",
               strip=False, blank_is_empty=False, empty="expected a non-empty password, got an empty one")

    realm_text = sec.text("realm", "*", 'a realm, or "*" for any')
    realm = "*" if realm_text is None else realm_text.value.strip()
    if not realm:
        raise ConfigError(sec.key("realm"), 'expected a realm, or "*" for any, got an empty string')

    expires = sec.integer("expires", 300, 60, 86400, what="an integer 60-86400 (seconds)")

    identity_key = sec.key("identity")
    identity_value = sec.optional("identity", '"sip:user@domain"', "sip:{username}@{registrar host}")
    if identity_value is MISSING:
        if re.search(r"[@:;<>\"?\s]", username.value):
            raise ConfigError(
                identity_key,
                "is required: it cannot be derived from sip.register.username, which has characters not "
                'allowed in a SIP URI user part; expected a SIP address such as "sip:1001@pbx.example.com"',
            )
        identity = f"sip:{username.value}@{registrar_uri.host}"
    else:
        expected = 'a SIP address such as "sip:1001@pbx.example.com" or "Bot <sip:1001@pbx.example.com>"'
        text = ctx.text(identity_key, identity_value, expected)
        inner = text.value.strip()
        match = _NAME_ADDR_RE.fullmatch(inner)
        if match is not None:
            inner = match.group(1).strip()
        uri = parse_sip_uri(inner)
        if uri is None or uri.user is None:
            raise ConfigError(identity_key, f"expected {expected}, got {text.shown}")
        identity = text.value.strip()

    outbound = sec.nullable_text("outbound_proxy", "a sip: URI")
    outbound_proxy: str | None = None
    if outbound is not None:
        outbound_proxy = sip_uri(
            ctx, sec.key("outbound_proxy"), outbound.value, example="sip:proxy.example.com;lr"
        )

    contact_text = sec.nullable_text("contact", "a sip: URI")
    contact: str | None = None
    if contact_text is not None:
        contact = sip_uri(ctx, sec.key("contact"), contact_text.value, example="sip:bridge@192.0.2.10:5060")

    return RegisterSettings(
        registrar=registrar,
        username=username.value,
        password=Secret(password.value),
        realm=realm,
        expires=expires,
        identity=identity,
        outbound_proxy=outbound_proxy,
        contact=contact,
    )


def _distinct_choices(
    ctx: Context, sec: Section, name: str, choices: tuple[str, ...], item_name: str
) -> tuple[str, ...]:
    """A non-empty list of distinct values from `choices`, in the order given (default: all)."""
    options = ", ".join(choices)
    value = sec.optional(name, f"a list of {options}", list(choices))
    if value is MISSING:
        return choices
    key = sec.key(name)
    listed: list[str] = []
    for i, item in enumerate(ctx.items(key, value, options)):
        choice = ctx.choice(f"{key}[{i}]", item, choices)
        if choice in listed:
            raise ConfigError(f"{key}[{i}]", f"{choice} is listed twice; expected each {item_name} once")
        listed.append(choice)
    if not listed:
        raise ConfigError(key, f"expected at least one of {options}, got an empty list")
    return tuple(listed)


def parse_sip(ctx: Context, sec: Section) -> SipSettings:
    listen_key = sec.key("listen")
    listen = sec.required_text("listen", '"HOST:PORT", e.g. "0.0.0.0:5060"')
    listen_host, listen_port = parse_listen(listen_key, listen)

    transports = _distinct_choices(ctx, sec, "transports", TRANSPORTS, "transport")

    public_address: str | None = None
    public = sec.nullable_text("public_address", "an IPv4 address or a host name")
    if public is not None:
        public_address = public.value.strip()
        if not is_host(public_address):
            raise ConfigError(
                sec.key("public_address"),
                f"expected an IPv4 address or a host name (no port), or null, got {public.shown}",
            )

    rtp_port_start = sec.integer("rtp_port_start", 20000, 1024, 65000)
    rtp_port_range = sec.integer("rtp_port_range", 10000, 0, 60000, what="an integer 0-60000 (0 = unlimited)")
    if rtp_port_range and rtp_port_start + rtp_port_range > 65536:
        raise ConfigError(
            sec.key("rtp_port_range"),
            f"rtp_port_start {rtp_port_start} + rtp_port_range {rtp_port_range} goes past port 65535; "
            f"expected at most {65536 - rtp_port_start} (or 0 for unlimited)",
        )

    codecs = _distinct_choices(ctx, sec, "codecs", CODECS, "codec")

    max_calls = sec.integer("max_calls", 100, 1, 1024)

    user_agent = sec.plain_text("user_agent", DEFAULT_USER_AGENT)

    forward_headers: tuple[str, ...] = ("X-*",)
    value = sec.optional("forward_headers", "a list of header name patterns", ["X-*"])
    if value is not MISSING:
        key = sec.key("forward_headers")
        patterns: list[str] = []
        for i, item in enumerate(ctx.items(key, value, 'header name patterns such as "X-*"')):
            pattern = ctx.text(f"{key}[{i}]", item, 'a header name pattern such as "X-*"')
            if not _HEADER_GLOB_RE.fullmatch(pattern.value.strip()):
                raise ConfigError(
                    f"{key}[{i}]", f'expected a header name or glob such as "X-*", got {pattern.shown}'
                )
            patterns.append(pattern.value.strip())
        forward_headers = tuple(patterns)

    register: RegisterSettings | None = None
    if sec.raw("register") not in (MISSING, None):
        register = _parse_register(ctx, sec.section("register", _REGISTER_KEYS))
    guard = parse_sip_guard(ctx, sec, register, (listen_host, listen_port), transports)

    return SipSettings(
        listen_host=listen_host,
        listen_port=listen_port,
        transports=transports,
        public_address=public_address,
        rtp_port_start=rtp_port_start,
        rtp_port_range=rtp_port_range,
        codecs=codecs,
        max_calls=max_calls,
        user_agent=user_agent,
        forward_headers=forward_headers,
        register=register,
        guard=guard,
    )
