"""Profile keys for access control, TLS and fault handling: defaults, validation, redaction, fuzz."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.config import parse_profile, render_profile
from bridge.errors import ConfigError


def profile(
    sip: dict[str, Any] | None = None, bot: dict[str, Any] | None = None, media: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "sip": {"listen": "0.0.0.0:5060", **(sip or {})},
        "bot": {"url": "wss://bot.example.com/s", **(bot or {})},
        "media": media or {},
    }


def error(data: dict[str, Any], env: dict[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_profile(data, env=env or {})
    return info.value


def test_defaults_are_safe() -> None:
    p = parse_profile(profile(), env={})
    guard = p.sip.guard
    assert guard.allow_from == ("127.0.0.0/8", "::1")  # never "accept anyone"
    assert (guard.rate_limit.invites_per_second, guard.rate_limit.burst) == (50.0, 100)
    assert guard.inbound_auth is None and guard.tls is None and guard.srtp == "optional"
    bot = p.bot.guard
    assert (bot.stall_timeout, bot.ping_interval, bot.ping_timeout) == (10.0, 20.0, 20.0)
    assert bot.tls.verify is True and bot.tls.ca_file is None
    assert p.media.rtp_timeout == 30.0
    assert p.warnings == ()


def test_registering_bridge_also_accepts_its_registrar_and_proxy() -> None:
    data = profile(
        {
            "register": {
                "registrar": "sip:pbx.example.com:5070",
                "username": "u",
                "password": "p",
                "outbound_proxy": "sip:192.0.2.5;lr",
            }
        }
    )
    assert parse_profile(data, env={}).sip.guard.allow_from == (
        "127.0.0.0/8",
        "::1",
        "pbx.example.com",
        "192.0.2.5",
    )


def test_explicit_allow_list_and_everyone_warning() -> None:
    rules = ["192.0.2.0/24", "2001:db8::/32", "sbc.example.com", "10.1.2.3"]
    p = parse_profile(profile({"allow_from": rules}), env={})
    assert p.sip.guard.allow_from == ("192.0.2.0/24", "2001:db8::/32", "sbc.example.com", "10.1.2.3")
    open_profile = parse_profile(profile({"allow_from": ["0.0.0.0/0"]}), env={})
    assert any("any address" in w for w in open_profile.warnings)


@pytest.mark.parametrize(
    "sip, key, fragment",
    [
        ({"allow_from": []}, "sip.allow_from", "at least one"),
        ({"allow_from": None}, "sip.allow_from", "remove the key"),
        ({"allow_from": ["not a host!"]}, "sip.allow_from[0]", "host name"),
        ({"allow_from": "10.0.0.0/8"}, "sip.allow_from", "a list"),
        ({"rate_limit": {"invites_per_second": -1}}, "sip.rate_limit.invites_per_second", "0-100000"),
        ({"rate_limit": {"burst": 0}}, "sip.rate_limit.burst", "1-1000000"),
        ({"rate_limit": {"bursts": 3}}, "sip.rate_limit.bursts", 'did you mean "burst"'),
        ({"inbound_auth": {"password": "longenough"}}, "sip.inbound_auth.username", "required"),
        (
            {"inbound_auth": {"username": "t", "password": "short"}},
            "sip.inbound_auth.password",
            "8 characters",
        ),
        (
            {"inbound_auth": {"username": "a b", "password": "longenough"}},
            "sip.inbound_auth.username",
            "spaces",
        ),
        ({"tls": {"listen": "0.0.0.0:5061", "cert_file": "c.pem"}}, "sip.tls.key_file", "required"),
        ({"tls": {"listen": "nope", "cert_file": "c", "key_file": "k"}}, "sip.tls.listen", "HOST:PORT"),
        ({"tls": {"listen": "0.0.0.0:5060", "cert_file": "c", "key_file": "k"}}, "sip.tls.listen", "5061"),
        (
            {
                "tls": {
                    "listen": "0.0.0.0:5061",
                    "cert_file": "c",
                    "key_file": "k",
                    "require_client_cert": True,
                }
            },
            "sip.tls.require_client_cert",
            "ca_file",
        ),
        ({"srtp": "sometimes"}, "sip.srtp", "optional, mandatory, disabled"),
    ],
)
def test_sip_guard_errors_name_the_key(sip: dict[str, Any], key: str, fragment: str) -> None:
    err = error(profile(sip))
    assert err.key == key and fragment in err.message, (err.key, err.message)


@pytest.mark.parametrize(
    "bot, media, key, fragment",
    [
        ({"stall_timeout": -1}, {}, "bot.stall_timeout", "0-600"),
        ({"ping_timeout": 0}, {}, "bot.ping_timeout", "1-600"),
        ({"tls": {"verify": "perhaps"}}, {}, "bot.tls.verify", "true or false"),
        ({"tls": {"verfy": False}}, {}, "bot.tls.verfy", 'did you mean "verify"'),
        ({}, {"rtp_timeout": 99999}, "media.rtp_timeout", "0-3600"),
    ],
)
def test_bot_and_media_guard_errors(
    bot: dict[str, Any], media: dict[str, Any], key: str, fragment: str
) -> None:
    err = error(profile(bot=bot, media=media))
    assert err.key == key and fragment in err.message, (err.key, err.message)


def test_turning_verification_off_is_explicit_and_warned() -> None:
    p = parse_profile(profile(bot={"tls": {"verify": False}}), env={})
    assert p.bot.guard.tls.verify is False
    assert any("bot.tls.verify is false" in w for w in p.warnings)
    rendered = render_profile(p)
    assert "# warning: bot.tls.verify is false" in rendered


def test_inbound_password_is_a_secret_everywhere(tmp_path: Any) -> None:
    secret_file = tmp_path / "pw"
    secret_file.write_text("file-held-password\n")
    data = profile(
        {
            "inbound_auth": {"username": "trunk", "password": "${file:" + str(secret_file) + "}"},
            "tls": {
                "listen": "0.0.0.0:5061",
                "cert_file": "/etc/b/cert.pem",
                "key_file": "/etc/b/key.pem",
                "ca_file": "/etc/b/ca.pem",
                "require_client_cert": True,
            },
        }
    )
    p = parse_profile(data, env={})
    auth = p.sip.guard.inbound_auth
    assert auth is not None and auth.password.reveal() == "file-held-password"
    assert "file-held-password" not in repr(p) and "file-held-password" not in render_profile(p)
    tls = p.sip.guard.tls
    assert tls is not None and tls.listen == "0.0.0.0:5061" and tls.require_client_cert


def test_render_round_trips_with_every_guard_key() -> None:
    data = profile(
        {
            "allow_from": ["192.0.2.0/24"],
            "rate_limit": {"invites_per_second": 5, "burst": 10},
            "inbound_auth": {"username": "trunk", "password": "${PW}", "realm": "acme"},
            "tls": {"listen": "0.0.0.0:5061", "cert_file": "c.pem", "key_file": "k.pem"},
            "srtp": "mandatory",
        },
        {
            "stall_timeout": 3,
            "ping_interval": 5,
            "ping_timeout": 5,
            "tls": {"verify": True, "ca_file": "/etc/ca.pem"},
        },
        {"rtp_timeout": 12},
    )
    p = parse_profile(data, env={"PW": "password-123"})
    text = render_profile(p)
    assert "password-123" not in text
    again = parse_profile(yaml.safe_load(text.replace("'***'", "'password-123'")), env={})
    assert again.sip.guard == p.sip.guard and again.bot.guard == p.bot.guard
    assert again.media.rtp_timeout == 12


guard_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=20),
    st.lists(st.text(max_size=20), max_size=3),
    st.dictionaries(
        st.sampled_from(
            [
                "listen",
                "cert_file",
                "key_file",
                "ca_file",
                "require_client_cert",
                "username",
                "password",
                "realm",
                "invites_per_second",
                "burst",
                "verify",
                "x",
            ]
        ),
        st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=20)),
        max_size=5,
    ),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.dictionaries(
        st.sampled_from(["allow_from", "rate_limit", "inbound_auth", "tls", "srtp"]), guard_values, max_size=4
    ),
    st.dictionaries(
        st.sampled_from(["stall_timeout", "ping_interval", "ping_timeout", "tls"]), guard_values, max_size=3
    ),
    st.dictionaries(st.just("rtp_timeout"), guard_values, max_size=1),
)
def test_guard_keys_raise_only_config_error(
    sip: dict[str, Any], bot: dict[str, Any], media: dict[str, Any]
) -> None:
    try:
        p = parse_profile(profile(sip, bot, media), env={})
    except ConfigError as exc:
        assert exc.message
    else:
        render_profile(p)
