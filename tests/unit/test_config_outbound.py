"""The `api`, `outbound` and `state_dir` keys: defaults that deny, the checks with their key paths,
and how `check` renders them (secrets as ***)."""

from __future__ import annotations

from typing import Any

import pytest

from bridge.config import parse_profile, render_profile
from bridge.errors import ConfigError

BASE: dict[str, Any] = {"sip": {"listen": "127.0.0.1:5060"}, "bot": {"url": "ws://127.0.0.1:8765/bot"}}
REGISTER = {"registrar": "sip:pbx.example.com", "username": "1001", "password": "pw"}


def profile(env: dict[str, str] | None = None, **sections: Any) -> Any:
    data = {**BASE, **sections}
    return parse_profile(data, env=env or {"HOME": "/home/op"})


def refused(**sections: Any) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        profile(**sections)
    return info.value


def test_defaults_deny() -> None:
    p = profile()
    assert p.api.listen_host is None and p.outbound.via is None and p.outbound.allow_to == ()
    assert p.api.callback_allowed_hosts is None and p.api.webhook_retry_window == 600
    assert (p.outbound.max_concurrent, p.outbound.calls_per_second, p.outbound.burst) == (10, 5.0, 10.0)
    assert p.bot.url_allowed_hosts == ("127.0.0.1",)
    assert p.state_dir == "/home/op/.local/state/sip-ws-bridge/default" or p.state_dir.endswith(
        "/.local/state/sip-ws-bridge/" + p.name
    )


def test_state_dir_from_systemd() -> None:
    assert profile(env={"STATE_DIRECTORY": "/var/lib/sip-ws-bridge"}).state_dir == "/var/lib/sip-ws-bridge"


def test_a_full_api_and_outbound() -> None:
    p = profile(
        api={
            "listen": "127.0.0.1:8790",
            "auth_token": "${TOKEN}",
            "webhook_secret": "s",
            "callback_allowed_hosts": ["*.example.com"],
            "status_callback": "https://h.example.com/x",
            "status_callback_events": ["completed", "ringing"],
        },
        outbound={
            "via": {"uri": "sip:sbc.example.com:5060", "username": "u", "password": "p"},
            "caller_id": "+914412345678",
            "allow_to": ["+9180*"],
            "headers": {"X-Tenant": "a"},
            "calls_per_second": 2,
        },
        env={"TOKEN": "t0k", "HOME": "/h"},
    )
    assert p.api.auth_token.reveal() == "t0k" and p.api.status_callback_events == ("ringing", "completed")
    assert p.outbound.via.kind == "trunk" and p.outbound.via.uri == "sip:sbc.example.com:5060"
    assert p.outbound.burst == 4.0
    text = render_profile(p)
    assert "t0k" not in text and "webhook_secret: '***'" in text and "password: '***'" in text


def test_registrar_via_follows_sip_register() -> None:
    p = profile(sip={"listen": "127.0.0.1:5060", "register": REGISTER})
    assert p.outbound.via is not None and p.outbound.via.kind == "registrar"


@pytest.mark.parametrize(
    ("sections", "key", "words"),
    [
        ({"api": {"listen": "127.0.0.1:8790"}}, "api.auth_token", "required with api.listen"),
        ({"api": {"listen": "127.0.0.1:8790", "auth_token": "${UNSET}"}}, "api.auth_token", "is not set"),
        ({"outbound": {"via": "registrar"}}, "outbound.via", "needs sip.register"),
        ({"outbound": {"via": "http://x"}}, "outbound.via", "trunk URI"),
        (
            {"outbound": {"via": {"uri": "sip:x", "username": "u"}}},
            "outbound.via",
            "both username and password",
        ),
        ({"outbound": {"allow_to": ["+91 80*"]}}, "outbound.allow_to[0]", "without spaces"),
        ({"outbound": {"max_concurrent": 0}}, "outbound.max_concurrent", ""),
        ({"api": {"status_callback": "ftp://x"}}, "api.status_callback", "http"),
        ({"api": {"status_callback_events": ["hangup"]}}, "api.status_callback_events[0]", ""),
        (
            {"api": {"tls": {"cert_file": "/nonexistent.pem", "key_file": "/nonexistent.key"}}},
            "api.tls.cert_file",
            "not a readable file",
        ),
        (
            {"bot": {"url": "ws://127.0.0.1/", "url_allowed_hosts": ["ws://x"]}},
            "bot.url_allowed_hosts[0]",
            "host",
        ),
    ],
)
def test_refusals_name_the_key(sections: dict[str, Any], key: str, words: str) -> None:
    error = refused(**sections)
    assert error.key == key and words in error.message, (error.key, error.message)


def test_a_listener_beyond_loopback_without_tls_is_warned_about() -> None:
    p = profile(api={"listen": "0.0.0.0:8790", "auth_token": "t"})
    assert any("clear text" in w for w in p.warnings)
