"""Tests of bridge.config: the SIP profile schema, loader and validator."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge import __version__
from bridge.config import (
    BotSettings,
    Profile,
    Secret,
    bot_url_host_allowed,
    demo_profile,
    header_allowed,
    load_profile,
    parse_bot_url,
    parse_profile,
    render_profile,
)
from bridge.errors import EXIT_CONFIG, ConfigError

PROFILES = Path(__file__).resolve().parents[2] / "sip_profiles"

# A distinctive value that must never leak into output, reprs or error messages.
SECRET = "s3cr3t-Zebra-Quokka-9431"


def minimal() -> dict[str, Any]:
    return {"sip": {"listen": "127.0.0.1:5060"}, "bot": {"url": "wss://bot.example.com/stream"}}


def with_register(**overrides: Any) -> dict[str, Any]:
    data = minimal()
    data["sip"]["register"] = {"registrar": "sip:pbx.example.com", "username": "1001", "password": "pw"}
    data["sip"]["register"].update(overrides)
    return data


def set_path(data: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    data = copy.deepcopy(data)
    *parents, last = dotted.split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value
    return data


def error_of(data: object, env: dict[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_profile(data, env={} if env is None else env)
    return info.value


# --------------------------------------------------------------------------- defaults


def test_defaults() -> None:
    profile = parse_profile(minimal(), env={})
    assert profile.name == "profile"
    assert profile.warnings == ()
    sip = profile.sip
    assert (sip.listen_host, sip.listen_port, sip.listen) == ("127.0.0.1", 5060, "127.0.0.1:5060")
    assert sip.transports == ("udp", "tcp")
    assert sip.public_address is None
    assert (sip.rtp_port_start, sip.rtp_port_range) == (20000, 10000)
    assert sip.codecs == ("PCMU", "PCMA", "G722")
    assert sip.max_calls == 100
    assert sip.user_agent == f"sip-ws-bridge/{__version__}"
    assert sip.forward_headers == ("X-*",)
    assert sip.register is None and sip.trunk_mode
    bot = profile.bot
    assert bot.url == Secret("wss://bot.example.com/stream")
    assert bot.url.reveal() == bot.url_redacted == "wss://bot.example.com/stream"
    assert bot.sample_rate == 8000
    assert bot.query_parameters == {}
    assert bot.headers == {}
    assert bot.connect_timeout == 10.0 and bot.connect_retries == 1
    assert (bot.chunk_ms, bot.prebuffer_ms, bot.buffer_seconds) == (20, 60, 30.0)
    assert (bot.max_message_bytes, bot.warn_message_bytes) == (1048576, 102400)
    assert bot.clear_answers_marks is True
    assert bot.account_sid == "sip-ws-bridge"
    assert bot.url_header is None and bot.url_header_allowed_hosts == ()
    assert (bot.on_unreachable.action, bot.on_unreachable.sip_status) == ("reject", 503)
    assert bot.on_unreachable.transfer_to is None
    assert (bot.on_close.action, bot.on_close.transfer_to) == ("hangup", None)
    assert profile.media.clock_rate == 8000
    assert profile.media.tick_phase_ms is None  # wherever start-up puts the media clock
    assert (profile.logging.level, profile.logging.format) == ("info", "auto")


def test_register_defaults() -> None:
    reg = parse_profile(with_register(registrar="sip:pbx.example.com:5070"), env={}).sip.register
    assert reg is not None
    assert reg.registrar == "sip:pbx.example.com:5070"
    assert reg.username == "1001" and reg.password.reveal() == "pw"
    assert reg.realm == "*" and reg.expires == 300
    assert reg.identity == "sip:1001@pbx.example.com"
    assert reg.outbound_proxy is None


def test_full_profile_values() -> None:
    data = {
        "name": "full",
        "sip": {
            "listen": "sip.example.com:5070",
            "transports": ["TCP"],
            "public_address": "203.0.113.5",
            "rtp_port_start": 30000,
            "rtp_port_range": 0,
            "codecs": ["g722", "pcma"],
            "max_calls": 1024,
            "user_agent": "my-agent",
            "forward_headers": [],
            "register": {
                "registrar": "sips:pbx.example.com;transport=tcp",
                "username": "bot",
                "password": "pw",
                "realm": "asterisk",
                "expires": 60,
                "identity": '"Bot" <sip:bot@example.com>',
                "outbound_proxy": "sip:proxy.example.com;lr",
            },
        },
        "bot": {
            "url": "ws://10.0.0.1:8080/s",
            "connect_timeout": 1,
            "connect_retries": 0,
            "chunk_ms": 20,
            "prebuffer_ms": 0,
            "buffer_seconds": 600,
            "clear_answers_marks": False,
            "account_sid": "acct",
            "on_close": {"action": "transfer", "transfer_to": "sip:queue@pbx"},
        },
        "media": {"clock_rate": 16000},
        "logging": {"level": "DEBUG", "format": "json"},
    }
    profile = parse_profile(data, env={})
    assert profile.name == "full"
    assert profile.sip.transports == ("tcp",)
    assert profile.sip.codecs == ("G722", "PCMA")
    assert profile.sip.forward_headers == ()
    assert profile.sip.register is not None and profile.sip.register.identity == '"Bot" <sip:bot@example.com>'
    assert profile.bot.connect_timeout == 1.0 and isinstance(profile.bot.connect_timeout, float)
    assert profile.bot.on_close.transfer_to == "sip:queue@pbx"
    assert profile.media.clock_rate == 16000
    assert profile.logging.level == "debug"


def test_empty_sections_mean_defaults() -> None:
    data = minimal() | {"media": None, "logging": {}}
    data["sip"]["register"] = None
    profile = parse_profile(data, env={})
    assert profile.media.clock_rate == 8000 and profile.sip.register is None


def test_profile_is_frozen() -> None:
    profile = parse_profile(minimal(), env={})
    with pytest.raises(dataclasses.FrozenInstanceError):
        profile.name = "x"  # type: ignore[misc]


# --------------------------------------------------------------------------- validation rules


BAD_VALUES: list[tuple[dict[Any, Any], str, str]] = [
    # (profile, key of the error, a fragment of its message)
    ({"sip": {"listen": "127.0.0.1:99999"}, "bot": {"url": "ws://b"}}, "sip.listen", "port 1-65535"),
    ({"sip": {"listen": "127.0.0.1"}, "bot": {"url": "ws://b"}}, "sip.listen", '"HOST:PORT"'),
    ({"sip": {"listen": "127.0.0.1:0"}, "bot": {"url": "ws://b"}}, "sip.listen", "port 1-65535"),
    ({"sip": {"listen": "999.1.1.1:5060"}, "bot": {"url": "ws://b"}}, "sip.listen", "IPv4"),
    ({"sip": {"listen": "bad host:5060"}, "bot": {"url": "ws://b"}}, "sip.listen", "host name"),
    ({"sip": {"listen": "[::1]:5060"}, "bot": {"url": "ws://b"}}, "sip.listen", "IPv6"),
    ({"sip": {"listen": 5060}, "bot": {"url": "ws://b"}}, "sip.listen", "got 5060"),
    ({"sip": {}, "bot": {"url": "ws://b"}}, "sip.listen", "required"),
    ({"sip": {"listen": "1.2.3.4:5"}}, "bot", "required"),
    ({"bot": {"url": "ws://b"}}, "sip", "required"),
    (set_path(minimal(), "sip.transports", ["udp", "sctp"]), "sip.transports[1]", "udp, tcp"),
    (set_path(minimal(), "sip.transports", []), "sip.transports", "at least one"),
    (set_path(minimal(), "sip.transports", ["udp", "UDP"]), "sip.transports[1]", "twice"),
    (set_path(minimal(), "sip.transports", "udp"), "sip.transports", "a list"),
    (set_path(minimal(), "sip.public_address", "1.2.3.4:5060"), "sip.public_address", "no port"),
    (set_path(minimal(), "sip.rtp_port_start", 1023), "sip.rtp_port_start", "1024-65000"),
    (set_path(minimal(), "sip.rtp_port_start", 65001), "sip.rtp_port_start", "1024-65000"),
    (set_path(minimal(), "sip.rtp_port_start", "20000"), "sip.rtp_port_start", "an integer"),
    (set_path(minimal(), "sip.rtp_port_start", 2.5e4), "sip.rtp_port_start", "an integer"),
    (set_path(minimal(), "sip.rtp_port_start", True), "sip.rtp_port_start", "got true"),
    (set_path(minimal(), "sip.rtp_port_start", None), "sip.rtp_port_start", "default 20000"),
    (set_path(minimal(), "sip.rtp_port_range", -1), "sip.rtp_port_range", "0-60000"),
    (set_path(minimal(), "sip.rtp_port_range", 60001), "sip.rtp_port_range", "0-60000"),
    (
        set_path(set_path(minimal(), "sip.rtp_port_start", 60000), "sip.rtp_port_range", 10000),
        "sip.rtp_port_range",
        "65535",
    ),
    (set_path(minimal(), "sip.codecs", ["PCMU", "opus"]), "sip.codecs[1]", "PCMU, PCMA, G722"),
    (set_path(minimal(), "sip.codecs", ["PCMU", "pcmu"]), "sip.codecs[1]", "twice"),
    (set_path(minimal(), "sip.codecs", []), "sip.codecs", "at least one"),
    (set_path(minimal(), "sip.max_calls", 0), "sip.max_calls", "1-1024"),
    (set_path(minimal(), "sip.max_calls", 1025), "sip.max_calls", "1-1024"),
    (set_path(minimal(), "sip.user_agent", ""), "sip.user_agent", "non-empty"),
    (set_path(minimal(), "sip.forward_headers", ["X-*", "bad header"]), "sip.forward_headers[1]", "glob"),
    (set_path(minimal(), "sip.forward_headers", "X-*"), "sip.forward_headers", "a list"),
    (set_path(minimal(), "sip.register", "sip:pbx"), "sip.register", "mapping"),
    (
        set_path(minimal(), "sip.register", {"username": "u", "password": "p"}),
        "sip.register.registrar",
        "required",
    ),
    (with_register(registrar="pbx.example.com"), "sip.register.registrar", "sip: or sips:"),
    (with_register(registrar="http://pbx.example.com"), "sip.register.registrar", "sip: or sips:"),
    (with_register(registrar="sip:pbx.example.com:70000"), "sip.register.registrar", "sip: or sips:"),
    (with_register(registrar="sip:me@pbx.example.com"), "sip.register.registrar", "without a user part"),
    (with_register(username=""), "sip.register.username", "non-empty"),
    (with_register(username=1001), "sip.register.username", "quote"),
    (with_register(username="a b"), "sip.register.username", "without spaces"),
    (with_register(password=None), "sip.register.password", "required"),
    (with_register(password=""), "sip.register.password", "non-empty"),
    (with_register(password=1234), "sip.register.password", "a string"),
    (with_register(realm=""), "sip.register.realm", "realm"),
    (with_register(expires=59), "sip.register.expires", "60-86400"),
    (with_register(expires=86401), "sip.register.expires", "60-86400"),
    (with_register(identity="1001@pbx"), "sip.register.identity", "sip:"),
    (with_register(identity="sip:pbx.example.com"), "sip.register.identity", "sip:"),
    (with_register(username="a@b"), "sip.register.identity", "cannot be derived"),
    (with_register(outbound_proxy="proxy.example.com"), "sip.register.outbound_proxy", "sip:"),
    (set_path(minimal(), "bot.url", "http://bot.example.com/"), "bot.url", "ws:// or wss://"),
    (set_path(minimal(), "bot.url", "wss://"), "bot.url", "no host"),
    (set_path(minimal(), "bot.url", "wss://bot.example.com:0/"), "bot.url", "port"),
    (set_path(minimal(), "bot.url", "wss://bot.example.com/#frag"), "bot.url", "fragment"),
    (set_path(minimal(), "bot.url", "wss://bot.example.com/a b"), "bot.url", "spaces"),
    (set_path(minimal(), "bot.url", None), "bot.url", "required"),
    (set_path(minimal(), "bot.url", ["wss://x"]), "bot.url", "a list"),
    (set_path(minimal(), "bot.headers", ["Authorization"]), "bot.headers", "mapping"),
    (set_path(minimal(), "bot.headers", {"Bad Name": "x"}), "bot.headers.Bad Name", "header name"),
    (set_path(minimal(), "bot.headers", {"Host": "x"}), "bot.headers.Host", "cannot be overridden"),
    (set_path(minimal(), "bot.headers", {"X-A": "1", "x-a": "2"}), "bot.headers.x-a", "twice"),
    (set_path(minimal(), "bot.headers", {"X-A": 5}), "bot.headers.X-A", "a string"),
    (set_path(minimal(), "bot.headers", {"X-A": "a\r\nInjected: 1"}), "bot.headers.X-A", "control"),
    (set_path(minimal(), "bot.connect_timeout", 0.05), "bot.connect_timeout", "0.1-120"),
    (set_path(minimal(), "bot.connect_timeout", 121), "bot.connect_timeout", "0.1-120"),
    (set_path(minimal(), "bot.connect_timeout", float("nan")), "bot.connect_timeout", "0.1-120"),
    (set_path(minimal(), "bot.connect_timeout", "fast"), "bot.connect_timeout", "a number"),
    (set_path(minimal(), "bot.connect_retries", 6), "bot.connect_retries", "0-5"),
    (set_path(minimal(), "bot.chunk_ms", 30), "bot.chunk_ms", "multiple of 20"),
    (set_path(minimal(), "bot.chunk_ms", 0), "bot.chunk_ms", "multiple of 20"),
    (set_path(minimal(), "bot.chunk_ms", 1020), "bot.chunk_ms", "multiple of 20"),
    (set_path(minimal(), "bot.prebuffer_ms", 50), "bot.prebuffer_ms", "multiple of 20"),
    (set_path(minimal(), "bot.prebuffer_ms", 2020), "bot.prebuffer_ms", "multiple of 20"),
    (
        set_path(set_path(minimal(), "bot.prebuffer_ms", 2000), "bot.buffer_seconds", 1),
        "bot.prebuffer_ms",
        "buffer_seconds",
    ),
    (set_path(minimal(), "bot.buffer_seconds", 0.5), "bot.buffer_seconds", "1-600"),
    (set_path(minimal(), "bot.buffer_seconds", 601), "bot.buffer_seconds", "1-600"),
    (set_path(minimal(), "bot.max_message_bytes", 10), "bot.max_message_bytes", "an integer"),
    (set_path(minimal(), "bot.warn_message_bytes", 2_000_000), "bot.warn_message_bytes", "max_message_bytes"),
    (set_path(minimal(), "bot.clear_answers_marks", "yes"), "bot.clear_answers_marks", "true or false"),
    (set_path(minimal(), "bot.account_sid", ""), "bot.account_sid", "non-empty"),
    (set_path(minimal(), "bot.url_header", "X Bot"), "bot.url_header", "header name"),
    (set_path(minimal(), "bot.url_header", "X-Bot-Url"), "bot.url_header_allowed_hosts", "at least one host"),
    (
        set_path(
            set_path(minimal(), "bot.url_header", "X-Bot-Url"),
            "bot.url_header_allowed_hosts",
            ["https://x.example.com"],
        ),
        "bot.url_header_allowed_hosts[0]",
        "no scheme",
    ),
    (
        set_path(minimal(), "bot.url_header_allowed_hosts", "x.example.com"),
        "bot.url_header_allowed_hosts",
        "a list",
    ),
    (
        set_path(minimal(), "bot.on_unreachable", {"action": "retry"}),
        "bot.on_unreachable.action",
        "reject, transfer",
    ),
    (
        set_path(minimal(), "bot.on_unreachable", {"sip_status": 399}),
        "bot.on_unreachable.sip_status",
        "400-699",
    ),
    (
        set_path(minimal(), "bot.on_unreachable", {"sip_status": 700}),
        "bot.on_unreachable.sip_status",
        "400-699",
    ),
    (
        set_path(minimal(), "bot.on_unreachable", {"action": "transfer"}),
        "bot.on_unreachable.transfer_to",
        "required when action is transfer",
    ),
    (
        set_path(minimal(), "bot.on_unreachable", {"action": "transfer", "transfer_to": "tel:+123"}),
        "bot.on_unreachable.transfer_to",
        "sip: or sips:",
    ),
    (set_path(minimal(), "bot.on_unreachable", "reject"), "bot.on_unreachable", "mapping"),
    (set_path(minimal(), "bot.on_close", {"action": "reject"}), "bot.on_close.action", "hangup, transfer"),
    (set_path(minimal(), "bot.on_close", {"action": "transfer"}), "bot.on_close.transfer_to", "required"),
    (set_path(minimal(), "media.clock_rate", 24000), "media.clock_rate", "8000 or 16000"),
    (set_path(minimal(), "media.clock_rate", "8000"), "media.clock_rate", "8000 or 16000"),
    (set_path(minimal(), "media.tick_phase_ms", 20), "media.tick_phase_ms", "0-19"),
    (set_path(minimal(), "media.tick_phase_ms", -1), "media.tick_phase_ms", "0-19"),
    (set_path(minimal(), "media.tick_phase_ms", "10"), "media.tick_phase_ms", "0-19"),
    (set_path(minimal(), "logging.level", "trace"), "logging.level", "debug, info, warning, error"),
    (set_path(minimal(), "logging.format", "xml"), "logging.format", "auto, json, text"),
    (minimal() | {"name": ""}, "name", "non-empty"),
    (minimal() | {"name": 3}, "name", "a non-empty string"),
    (minimal() | {"sip": "0.0.0.0:5060"}, "sip", "mapping"),
    (minimal() | {"media": [8000]}, "media", "mapping"),
    (minimal() | {5: "x"}, "", "keys must be strings"),
]


@pytest.mark.parametrize(("value", "expected"), [(0, 0), (10, 10), (19, 19), (None, None)])
def test_the_media_clock_phase_is_a_ms_in_the_20_ms_tick(value: int | None, expected: int | None) -> None:
    profile = parse_profile(set_path(minimal(), "media.tick_phase_ms", value), env={})
    assert profile.media.tick_phase_ms == expected


@pytest.mark.parametrize(("data", "key", "fragment"), BAD_VALUES)
def test_validation_errors_name_the_key(data: dict[Any, Any], key: str, fragment: str) -> None:
    error = error_of(data)
    assert error.key == key, str(error)
    assert fragment in error.message, str(error)
    assert "expected" in error.message or "required" in error.message or "must" in error.message, str(error)
    assert str(error).startswith(f"{key}: ") if key else True
    assert error.exit_code == EXIT_CONFIG


def test_listen_error_message_format() -> None:
    error = error_of({"sip": {"listen": "127.0.0.1:99999"}, "bot": {"url": "ws://b"}})
    assert str(error) == 'sip.listen: expected "HOST:PORT" with a port 1-65535, got "127.0.0.1:99999"'


def test_listen_accepts_hostname_and_any() -> None:
    assert (
        parse_profile(set_path(minimal(), "sip.listen", "0.0.0.0:5060"), env={}).sip.listen_host == "0.0.0.0"
    )
    sip = parse_profile(set_path(minimal(), "sip.listen", "sip-bridge.local:5080"), env={}).sip
    assert (sip.listen_host, sip.listen_port) == ("sip-bridge.local", 5080)


def test_non_mapping_profile() -> None:
    assert error_of(["sip"]).key == ""
    assert error_of(None).key == ""


# --------------------------------------------------------------------------- unknown keys


@pytest.mark.parametrize(
    ("data", "key", "suggestion"),
    [
        (minimal() | {"sipp": {}}, "sipp", "sip"),
        (set_path(minimal(), "sip.lisen", "x"), "sip.lisen", "listen"),
        (set_path(minimal(), "sip.rtp_port_star", 1), "sip.rtp_port_star", "rtp_port_start"),
        (set_path(minimal(), "sip.Codecs", []), "sip.Codecs", "codecs"),
        (set_path(minimal(), "sip.max-calls", 3), "sip.max-calls", "max_calls"),
        (with_register(pasword="x"), "sip.register.pasword", "password"),
        (set_path(minimal(), "bot.conect_timeout", 1), "bot.conect_timeout", "connect_timeout"),
        (
            set_path(minimal(), "bot.on_unreachable", {"transfer": "sip:x@y"}),
            "bot.on_unreachable.transfer",
            "transfer_to",
        ),
        (set_path(minimal(), "logging.levl", "info"), "logging.levl", "level"),
        (set_path(minimal(), "media.clockrate", 8000), "media.clockrate", "clock_rate"),
    ],
)
def test_unknown_key_with_suggestion(data: dict[str, Any], key: str, suggestion: str) -> None:
    error = error_of(data)
    assert error.key == key
    assert "unknown key" in error.message
    assert f'did you mean "{suggestion}"?' in error.message


def test_unknown_key_without_close_match_lists_keys() -> None:
    error = error_of(set_path(minimal(), "media.zzzzzz", 1))
    assert error.key == "media.zzzzzz"
    assert "did you mean" not in error.message
    assert "clock_rate" in error.message


def test_derived_keys_are_not_user_keys() -> None:
    error = error_of(set_path(minimal(), "bot.sample_rate", 16000))
    assert error.key == "bot.sample_rate" and "sample-rate=" in error.message


# --------------------------------------------------------------------------- substitution


def test_env_substitution() -> None:
    data = with_register(password="${SIP_PASSWORD}")
    data["sip"]["listen"] = "${HOST:-0.0.0.0}:${PORT}"
    data["bot"]["headers"] = {"Authorization": "Bearer ${BOT_TOKEN}"}
    data["bot"]["url"] = "wss://${BOT_HOST}/s?x=1"
    env = {"SIP_PASSWORD": "pw", "PORT": "5070", "BOT_TOKEN": "tok", "BOT_HOST": "bot.example.com"}
    profile = parse_profile(data, env=env)
    assert profile.sip.listen == "0.0.0.0:5070"
    assert profile.sip.register is not None and profile.sip.register.password.reveal() == "pw"
    assert profile.bot.headers["Authorization"].reveal() == "Bearer tok"
    assert profile.bot.url.reveal() == "wss://bot.example.com/s?x=1"


def test_env_default_used_when_unset_or_empty() -> None:
    data = set_path(minimal(), "sip.user_agent", "${UA:-fallback agent}")
    assert parse_profile(data, env={}).sip.user_agent == "fallback agent"
    assert parse_profile(data, env={"UA": ""}).sip.user_agent == "fallback agent"
    assert parse_profile(data, env={"UA": "mine"}).sip.user_agent == "mine"


def test_env_empty_default_makes_nullable_null() -> None:
    data = set_path(minimal(), "sip.public_address", "${PUBLIC_IP:-}")
    assert parse_profile(data, env={}).sip.public_address is None
    assert parse_profile(data, env={"PUBLIC_IP": "198.51.100.7"}).sip.public_address == "198.51.100.7"


def test_env_missing_variable() -> None:
    error = error_of(with_register(password="${SIP_PASSWORD}"))
    assert error.key == "sip.register.password"
    assert "SIP_PASSWORD" in error.message and "not set" in error.message


def test_env_substitution_uses_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWB_TEST_AGENT", "from-environ")
    profile = parse_profile(set_path(minimal(), "sip.user_agent", "${SWB_TEST_AGENT}"))
    assert profile.sip.user_agent == "from-environ"


def test_env_substituted_numbers_and_booleans() -> None:
    data = set_path(minimal(), "sip.max_calls", "${MAX_CALLS}")
    data = set_path(data, "bot.connect_timeout", "${TIMEOUT:-2.5}")
    data = set_path(data, "bot.clear_answers_marks", "${CLEAR:-false}")
    profile = parse_profile(data, env={"MAX_CALLS": "7"})
    assert profile.sip.max_calls == 7
    assert profile.bot.connect_timeout == 2.5
    assert profile.bot.clear_answers_marks is False
    error = error_of(data, env={"MAX_CALLS": "lots"})
    assert error.key == "sip.max_calls" and "${MAX_CALLS}" in error.message


def test_literal_dollar_brace_escape() -> None:
    profile = parse_profile(set_path(minimal(), "sip.user_agent", "ua-$${NOT_A_VAR}"), env={})
    assert profile.sip.user_agent == "ua-${NOT_A_VAR}"


@pytest.mark.parametrize("value", ["${", "x ${UNCLOSED", "${1BAD}", "${A-b}", "${file:/x} trailing"])
def test_malformed_references(value: str) -> None:
    error = error_of(set_path(minimal(), "sip.user_agent", value))
    assert error.key == "sip.user_agent"


def test_file_secret(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("from-file\n")
    (tmp_path / "token").write_text("tok\r\n")
    data = with_register(password=f"${{file:{tmp_path / 'pw'}}}")
    data["bot"]["headers"] = {"Authorization": "${file:token}"}
    profile = parse_profile(data, env={}, base_dir=tmp_path)
    assert profile.sip.register is not None
    assert profile.sip.register.password.reveal() == "from-file"
    assert profile.bot.headers["Authorization"].reveal() == "tok"


def test_file_secret_keeps_inner_newlines(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("a\nb\n\n")
    data = set_path(minimal(), "sip.user_agent", f"${{file:{tmp_path / 'pw'}}}")
    # Only one trailing newline is stripped; the value is then checked as usual.
    error = error_of(data)
    assert error.key == "sip.user_agent"


def test_file_secret_missing(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    error = error_of(with_register(password=f"${{file:{missing}}}"))
    assert error.key == "sip.register.password"
    assert str(missing) in error.message


def test_file_secret_relative_to_profile(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "sip").write_text("pw-rel\n")
    profile_file = tmp_path / "p.yaml"
    profile_file.write_text(
        "sip:\n  listen: 127.0.0.1:5060\n  register:\n    registrar: sip:pbx\n    username: u\n"
        "    password: ${file:secrets/sip}\nbot:\n  url: ws://b\n"
    )
    profile = load_profile(profile_file, env={})
    assert profile.sip.register is not None and profile.sip.register.password.reveal() == "pw-rel"


# --------------------------------------------------------------------------- secrets never leak


def secret_profile(tmp_path: Path) -> tuple[dict[str, Any], dict[str, str]]:
    (tmp_path / "tok").write_text(SECRET + "-file\n")
    data = with_register(password="${SIP_PASSWORD}")
    data["bot"]["url"] = f"wss://user:{SECRET}-url@bot.example.com/s?sample-rate=16000"
    data["bot"]["headers"] = {
        "Authorization": "Bearer ${BOT_TOKEN}",
        "X-Literal": SECRET + "-literal",
        "X-File": f"${{file:{tmp_path / 'tok'}}}",
    }
    return data, {"SIP_PASSWORD": SECRET + "-env", "BOT_TOKEN": SECRET + "-token"}


def test_secret_class() -> None:
    secret = Secret(SECRET)
    assert repr(secret) == "'***'" and str(secret) == "***" and f"{secret}" == "***"
    assert secret.reveal() == SECRET
    assert secret == Secret(SECRET) and secret != Secret("other") and secret != SECRET
    assert hash(secret) == hash(Secret(SECRET))
    with pytest.raises(AttributeError):
        secret.__dict__  # noqa: B018


def test_secrets_never_in_repr_or_render(tmp_path: Path) -> None:
    data, env = secret_profile(tmp_path)
    profile = parse_profile(data, env=env)
    assert profile.sip.register is not None
    assert profile.sip.register.password.reveal() == SECRET + "-env"
    assert profile.bot.headers["X-File"].reveal() == SECRET + "-file"
    assert SECRET in profile.bot.url.reveal()
    assert profile.bot.url_redacted == "wss://user:***@bot.example.com/s?sample-rate=16000"
    for text in (repr(profile), str(profile), render_profile(profile), repr(profile.bot), str(profile.sip)):
        assert SECRET not in text
    rendered = render_profile(profile)
    assert "password: '***'" in rendered
    assert "Authorization: '***'" in rendered


def test_secrets_never_in_errors(tmp_path: Path) -> None:
    data, env = secret_profile(tmp_path)
    bad_cases: list[tuple[dict[str, Any], dict[str, str]]] = [
        # a wrong value elsewhere
        (set_path(data, "sip.max_calls", 0), env),
        # a bad header value
        (set_path(data, "bot.headers", {"X-A": SECRET + "\n"}), env),
        (set_path(data, "bot.headers", {"X-A": 12345}), env),
        (set_path(data, "bot.headers", {"X-A": "${" + SECRET}), env),
        (set_path(data, "bot.headers", {"X-A": "${" + SECRET + "}"}), env),
        # a bad password
        (set_path(data, "sip.register.password", SECRET + "\x00"), env),
        (set_path(data, "sip.register.password", "${" + SECRET), env),
        (set_path(data, "sip.register.password", "${file:/nonexistent/" + "x}"), env),
        # a bad URL with a password in it
        (set_path(data, "bot.url", f"wss://user:{SECRET}@bot.example.com:99999/"), env),
        (set_path(data, "bot.url", f"https://user:{SECRET}@bot.example.com/"), env),
        (set_path(data, "bot.url", f"wss://user:{SECRET}/x@bot.example.com/"), env),
        (set_path(data, "bot.url", f"wss://user:{SECRET} x@bot.example.com/"), env),
        (set_path(data, "bot.url", f"wss://user:{SECRET}@bot.example.com/#x"), env),
        # a variable set to something invalid
        (set_path(data, "bot.headers", {"X-A": "${BOT_TOKEN}"}), {**env, "BOT_TOKEN": SECRET + "\r\n"}),
    ]
    for case, case_env in bad_cases:
        with pytest.raises(ConfigError) as info:
            parse_profile(case, env=case_env)
        assert SECRET not in str(info.value), str(info.value)
        assert SECRET not in info.value.message and SECRET not in info.value.key


def test_secrets_never_in_yaml_errors(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(f"sip:\n  register:\n    password: {SECRET}: [\n")
    with pytest.raises(ConfigError) as info:
        load_profile(path, env={})
    assert SECRET not in str(info.value)


def test_render_is_a_valid_profile_with_defaults(tmp_path: Path) -> None:
    data, env = secret_profile(tmp_path)
    profile = parse_profile(data, env=env)
    rendered = render_profile(profile)
    again = parse_profile(yaml.safe_load(rendered), env={})
    assert profile.sip.register is not None
    expected_register = dataclasses.replace(profile.sip.register, password=Secret("***"))
    assert again.sip == dataclasses.replace(profile.sip, register=expected_register)
    assert again.bot.sample_rate == 16000
    assert "rtp_port_start: 20000" in rendered and "max_message_bytes: 1048576" in rendered
    assert "sample_rate=16000" in rendered


# --------------------------------------------------------------------------- bot URL


@pytest.mark.parametrize(
    ("query", "rate", "warned"),
    [
        ("", 8000, False),
        ("?sample-rate=16000", 16000, False),
        ("?sample_rate=24000", 24000, False),
        ("?sample-rate=8000", 8000, False),
        ("?sample-rate=44100", 8000, True),
        ("?sample_rate=abc", 8000, True),
        ("?sample-rate=", 8000, True),
        ("?sample-rate=16000&sample_rate=24000", 16000, False),
        ("?sample-rate=bad&sample-rate=16000", 8000, True),
    ],
)
def test_sample_rate_from_query(query: str, rate: int, warned: bool) -> None:
    profile = parse_profile(set_path(minimal(), "bot.url", "wss://bot.example.com/s" + query), env={})
    assert profile.bot.sample_rate == rate
    assert bool(profile.warnings) is warned
    if warned:
        assert profile.warnings[0].startswith("bot.url: ")
        assert "8000" in profile.warnings[0]
    assert "sample-rate" not in profile.bot.query_parameters
    assert "sample_rate" not in profile.bot.query_parameters


def test_query_parameters() -> None:
    url = "wss://bot.example.com/s?sample-rate=16000&tenant=acme&lang=en-US&tenant=other&flag&q=a%20b"
    bot = parse_profile(set_path(minimal(), "bot.url", url), env={}).bot
    assert bot.query_parameters == {"tenant": "acme", "lang": "en-US", "flag": "", "q": "a b"}
    assert bot.url.reveal() == url  # the query string is kept as written
    assert bot.url_redacted == url


def test_parse_bot_url_for_per_call_urls() -> None:
    parsed = parse_bot_url("wss://a.bots.example.com:8443/x?sample_rate=16000&k=v", key="X-Bot-Url")
    assert (parsed.host, parsed.sample_rate, parsed.query_parameters) == (
        "a.bots.example.com",
        16000,
        {"k": "v"},
    )
    with pytest.raises(ConfigError) as info:
        parse_bot_url("https://x", key="X-Bot-Url")
    assert info.value.key == "X-Bot-Url"


# --------------------------------------------------------------------------- helpers


def test_header_allowed() -> None:
    assert header_allowed("X-Customer-Id", ["X-*"])
    assert header_allowed("x-customer-id", ["X-*"])
    assert header_allowed("P-Asserted-Identity", ["X-*", "p-asserted-identity"])
    assert not header_allowed("From", ["X-*"])
    assert not header_allowed("X-Anything", [])
    assert header_allowed("X-Bot-Url", ["x-bot-?rl"])
    assert not header_allowed("", ["*"])


def test_bot_url_host_allowed() -> None:
    patterns = ["bots.example.com", "*.bots.example.com"]
    assert bot_url_host_allowed("wss://bots.example.com/s", patterns)
    assert bot_url_host_allowed("wss://A.Bots.Example.com:8443/s?x=1", patterns)
    assert bot_url_host_allowed("ws://a.b.bots.example.com/s", patterns)
    assert not bot_url_host_allowed("wss://evil.com/s", patterns)
    assert not bot_url_host_allowed("wss://bots.example.com.evil.com/s", patterns)
    assert not bot_url_host_allowed("wss://bots.example.com@evil.com/s", patterns)
    assert not bot_url_host_allowed("https://bots.example.com/s", patterns)
    assert not bot_url_host_allowed("not a url", patterns)
    assert not bot_url_host_allowed("wss://bots.example.com/s", [])


def test_url_header_settings_and_warnings() -> None:
    data = set_path(minimal(), "bot.url_header", "X-Bot-Url")
    data = set_path(data, "bot.url_header_allowed_hosts", ["Bots.Example.com", "*.bots.example.com"])
    bot = parse_profile(data, env={}).bot
    assert bot.url_header == "X-Bot-Url"
    assert bot.url_header_allowed_hosts == ("bots.example.com", "*.bots.example.com")
    only_hosts = set_path(minimal(), "bot.url_header_allowed_hosts", ["x.example.com"])
    assert any("url_header_allowed_hosts" in w for w in parse_profile(only_hosts, env={}).warnings)
    star = set_path(data, "bot.url_header_allowed_hosts", ["*"])
    assert any('"*"' in w for w in parse_profile(star, env={}).warnings)


def test_transfer_to_ignored_warning() -> None:
    data = set_path(minimal(), "bot.on_close", {"action": "hangup", "transfer_to": "sip:q@pbx"})
    profile = parse_profile(data, env={})
    assert profile.bot.on_close.transfer_to == "sip:q@pbx"
    assert profile.warnings and profile.warnings[0].startswith("bot.on_close.transfer_to: ")


def test_demo_profile() -> None:
    profile = demo_profile(5090, "ws://127.0.0.1:8765/stream?sample-rate=16000")
    assert isinstance(profile, Profile) and isinstance(profile.bot, BotSettings)
    assert (profile.sip.listen_host, profile.sip.listen_port) == ("127.0.0.1", 5090)
    assert profile.sip.register is None
    assert profile.bot.url.reveal() == "ws://127.0.0.1:8765/stream?sample-rate=16000"
    assert profile.bot.sample_rate == 16000
    with pytest.raises(ConfigError):
        demo_profile(0, "ws://127.0.0.1:8765/")


# --------------------------------------------------------------------------- files


EXAMPLE_ENV = {"SIP_PASSWORD": "example-sip-password", "BOT_TOKEN": "example-bot-token"}


@pytest.mark.parametrize("name", ["asterisk", "sbc-trunk", "local-demo"])
def test_example_profiles_load(name: str) -> None:
    profile = load_profile(PROFILES / f"{name}.yaml", env=EXAMPLE_ENV)
    assert profile.name == name
    assert profile.warnings == ()
    rendered = render_profile(profile)
    for value in EXAMPLE_ENV.values():
        assert value not in rendered and value not in repr(profile)


def test_example_asterisk() -> None:
    profile = load_profile(PROFILES / "asterisk.yaml", env=EXAMPLE_ENV)
    reg = profile.sip.register
    assert reg is not None and reg.registrar == "sip:pbx.example.com"
    assert reg.password.reveal() == "example-sip-password"
    assert profile.bot.url.reveal().startswith("wss://")
    assert profile.bot.headers["Authorization"].reveal() == "Bearer example-bot-token"


def test_example_sbc_trunk() -> None:
    profile = load_profile(PROFILES / "sbc-trunk.yaml", env=EXAMPLE_ENV)
    assert profile.sip.register is None
    assert profile.sip.listen == "0.0.0.0:5060"
    assert profile.sip.public_address
    assert profile.bot.url_header == "X-Bot-Url" and profile.bot.url_header_allowed_hosts
    assert profile.bot.on_unreachable.action == "transfer" and profile.bot.on_unreachable.transfer_to


def test_example_local_demo() -> None:
    profile = load_profile(PROFILES / "local-demo.yaml", env={})
    assert profile.sip.listen == "127.0.0.1:5080" and profile.sip.register is None
    assert profile.bot.url.reveal() == "ws://127.0.0.1:8765/stream?sample-rate=8000"


def test_example_profiles_need_their_variables() -> None:
    with pytest.raises(ConfigError) as info:
        load_profile(PROFILES / "asterisk.yaml", env={"BOT_TOKEN": "t"})
    assert info.value.key == "sip.register.password" and "SIP_PASSWORD" in info.value.message


def test_load_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "missing.yaml"
    with pytest.raises(ConfigError) as info:
        load_profile(path)
    assert info.value.key == "" and str(path) in info.value.message


def test_load_name_defaults_to_stem(tmp_path: Path) -> None:
    path = tmp_path / "my-pbx.yaml"
    path.write_text("sip: {listen: '127.0.0.1:5060'}\nbot: {url: 'ws://b'}\n")
    assert load_profile(path, env={}).name == "my-pbx"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "empty"),
        ("# only a comment\n", "empty"),
        ("- a\n- b\n", "a list"),
        ("just a string\n", "a string"),
        ("sip: [unclosed\n", "line 2"),
        ("sip:\n  listen: a\n   bad: indent\n", "line 3"),
        ("sip: {listen: '1.2.3.4:5'}\nsip: {listen: '1.2.3.4:6'}\nbot: {url: 'ws://b'}\n", "duplicate key"),
        ("a: 1\n---\nb: 2\n", "line"),
    ],
)
def test_load_bad_yaml(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_profile(path, env={})
    assert info.value.key == ""
    assert fragment in info.value.message
    assert str(path) in info.value.message


def test_load_yaml_error_has_column(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("sip:\n  listen: a\n   bad: indent\n")
    with pytest.raises(ConfigError) as info:
        load_profile(path, env={})
    assert "line 3, column" in info.value.message


def test_load_merge_keys_are_not_duplicates(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("sip:\n  <<: {listen: '1.2.3.4:5', max_calls: 3}\n  max_calls: 4\nbot:\n  url: ws://b\n")
    profile = load_profile(path, env={})
    assert (profile.sip.listen, profile.sip.max_calls) == ("1.2.3.4:5", 4)


def test_load_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_profile(tmp_path, env={})
    assert info.value.key == "" and str(tmp_path) in info.value.message


# --------------------------------------------------------------------------- robustness


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-10, max_value=70000),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(
        (
            "udp tcp PCMU g722 transfer reject hangup debug json 127.0.0.1:5060 0.0.0.0:99999"
            " sip:pbx.example.com sip:q@pbx ws://b wss://u:p@h/s?sample-rate=16000 ${X} ${X:-1}"
            " ${file:/nonexistent} $${X} X-*"
        ).split()
    ),
)
KEYS = (
    "name sip bot media logging listen transports public_address rtp_port_start rtp_port_range codecs"
    " max_calls user_agent forward_headers register registrar username password realm expires identity"
    " outbound_proxy url headers connect_timeout connect_retries chunk_ms prebuffer_ms buffer_seconds"
    " max_message_bytes warn_message_bytes clear_answers_marks account_sid url_header"
    " url_header_allowed_hosts on_unreachable on_close action sip_status transfer_to clock_rate tick_phase_ms"
    " level format"
).split()
keys = st.one_of(st.sampled_from(KEYS), st.text(max_size=8), st.integers(), st.none(), st.booleans())
values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(keys, children, max_size=6),
    ),
    max_leaves=30,
)


@st.composite
def near_valid_profiles(draw: st.DrawFn) -> dict[Any, Any]:
    """A valid profile with a few values replaced by arbitrary ones."""
    data: dict[Any, Any] = with_register()
    data["bot"]["on_unreachable"] = {"action": "reject"}
    sections = [data, data["sip"], data["sip"]["register"], data["bot"], data["bot"]["on_unreachable"]]
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        section = draw(st.sampled_from(sections))
        section[draw(keys)] = draw(values)
    return data


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(values, st.dictionaries(keys, values, max_size=6), near_valid_profiles()))
def test_parse_profile_raises_only_config_error(data: object) -> None:
    try:
        profile = parse_profile(data, env={"X": "1"})
    except ConfigError as error:
        assert isinstance(error.key, str) and error.message
    else:
        render_profile(profile)


# --------------------------------------------------------------------------- control and recording


def test_control_and_recording_defaults() -> None:
    profile = parse_profile(minimal(), env={})
    assert profile.control.listen == "127.0.0.1:8780"
    assert (profile.control.listen_host, profile.control.listen_port) == ("127.0.0.1", 8780)
    rec = profile.recording
    assert (rec.enabled, rec.dir, rec.layout) == (False, None, "stereo")
    assert (rec.retention_days, rec.max_files) == (30, 10000)
    assert profile.warnings == ()


def test_control_listen_null_turns_it_off() -> None:
    profile = parse_profile(set_path(minimal(), "control.listen", None), env={})
    assert profile.control.listen is None and profile.control.listen_host is None
    assert "control:\n  listen: null" in render_profile(profile)


def test_control_listen_beyond_loopback_warns() -> None:
    profile = parse_profile(set_path(minimal(), "control.listen", "0.0.0.0:9100"), env={})
    assert profile.control.listen == "0.0.0.0:9100"
    assert any(w.startswith("control.listen: 0.0.0.0 is not a loopback address") for w in profile.warnings)
    assert parse_profile(set_path(minimal(), "control.listen", "localhost:9100"), env={}).warnings == ()


def test_recording_values_and_relative_dir(tmp_path: Path) -> None:
    data = set_path(minimal(), "recording", {"enabled": True, "dir": "rec", "layout": "MIXED",
                                             "retention_days": 0, "max_files": 0})
    rec = parse_profile(data, env={}, base_dir=tmp_path).recording
    assert rec.enabled and rec.dir == str(tmp_path / "rec") and rec.layout == "mixed"
    assert (rec.retention_days, rec.max_files) == (0, 0)
    env_dir = set_path(minimal(), "recording", {"enabled": True, "dir": "${STATE_DIRECTORY}/recordings"})
    resolved = parse_profile(env_dir, env={"STATE_DIRECTORY": "/var/lib/x"}).recording
    assert resolved.dir == "/var/lib/x/recordings"


RECORDING_AND_CONTROL_ERRORS: list[tuple[dict[Any, Any], str, str]] = [
    (set_path(minimal(), "control.listen", "8780"), "control.listen", '"HOST:PORT"'),
    (set_path(minimal(), "control.listen", "127.0.0.1:0"), "control.listen", "port 1-65535"),
    (set_path(minimal(), "control.listen", 8780), "control.listen", "got 8780"),
    (set_path(minimal(), "control.lisen", "127.0.0.1:1"), "control.lisen", 'did you mean "listen"'),
    (set_path(minimal(), "control", "127.0.0.1:8780"), "control", "mapping"),
    (set_path(minimal(), "recording.enabled", True), "recording.dir", "required when recording.enabled"),
    (set_path(minimal(), "recording.enabled", "sometimes"), "recording.enabled", "true or false"),
    (set_path(minimal(), "recording.layout", "quad"), "recording.layout", "stereo, mixed"),
    (set_path(minimal(), "recording.retention_days", -1), "recording.retention_days", "0-36500"),
    (set_path(minimal(), "recording.max_files", 1.5), "recording.max_files", "0-10000000"),
    (set_path(minimal(), "recording.dir", 5), "recording.dir", "a directory"),
    (set_path(minimal(), "recording.retention", 5), "recording.retention", 'did you mean "retention_days"'),
]


@pytest.mark.parametrize(("data", "key", "fragment"), RECORDING_AND_CONTROL_ERRORS)
def test_control_and_recording_errors_name_the_key(data: dict[Any, Any], key: str, fragment: str) -> None:
    error = error_of(data)
    assert error.key == key, str(error)
    assert fragment in error.message, str(error)


def test_control_and_recording_render_round_trip(tmp_path: Path) -> None:
    data = set_path(set_path(minimal(), "control.listen", "127.0.0.1:9000"), "recording",
                    {"enabled": True, "dir": str(tmp_path), "layout": "mixed", "max_files": 5})
    profile = parse_profile(data, env={})
    again = parse_profile(yaml.safe_load(render_profile(profile)), env={})
    assert again.control == profile.control and again.recording == profile.recording


@pytest.mark.parametrize("value", ["\u00b2", "\u0661\u0666\u0660\u0660\u0660"])
def test_a_bot_url_rate_of_non_ascii_digits_is_unsupported_not_a_crash(value: str) -> None:
    parsed = parse_bot_url(f"ws://bot/s?sample-rate={value}")
    assert parsed.sample_rate == 8000 and parsed.warnings
