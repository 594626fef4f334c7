"""`clean_text`, the one check of a profile text that must be non-empty and free of control (or
other unsafe) characters: each key keeps its own message, and the edge cases each key had before
the checks were merged (white space alone, unstripped values, a password of spaces) stay as they were."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from bridge.config import parse_profile
from bridge.config.values import SPACE_OR_CONTROL_RE, clean_text
from bridge.errors import ConfigError


def minimal(**top: Any) -> dict[str, Any]:
    data = {"sip": {"listen": "127.0.0.1:5060"}, "bot": {"url": "wss://bot.example.com/stream"}}
    return data | top


def register(**overrides: str) -> dict[str, Any]:
    data = copy.deepcopy(minimal())
    data["sip"]["register"] = {"registrar": "sip:pbx.example.com", "username": "1001", "password": "pw"}
    data["sip"]["register"].update(overrides)
    return data


def message(data: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        parse_profile(data, env={})
    return str(info.value)


def test_clean_text_strips_and_rejects_empty_or_unsafe_text() -> None:
    assert clean_text("k", "  x  ", "bad") == "x"
    assert clean_text("k", " x ", "bad", strip=False) == " x "
    assert clean_text("k", "   ", "bad", strip=False, blank_is_empty=False) == "   "
    for value in ("", "   ", "a\nb", "a\x7fb"):
        with pytest.raises(ConfigError, match="bad"):
            clean_text("k", value, "bad")
    with pytest.raises(ConfigError, match="empty!"):
        clean_text("k", " ", "bad", empty="empty!")
    with pytest.raises(ConfigError, match="bad"):
        clean_text("k", "a b", "bad", unsafe=SPACE_OR_CONTROL_RE)


def test_the_plain_texts_share_one_message() -> None:
    expected = "expected a non-empty string without control characters, got "
    assert expected + '"a\\nb"' in message(minimal(name="a\nb"))
    assert expected + '" "' in message(minimal(bot={"url": "wss://b.example.com/", "account_sid": " "}))
    assert parse_profile(minimal(name="  shop  "), env={}).name == "shop"


def test_register_username_and_password_keep_their_own_rules() -> None:
    assert "expected a non-empty string, got an empty one" in message(register(username="  "))
    assert 'expected a user name without spaces, got " 1001"' in message(register(username=" 1001"))
    assert "expected a non-empty password, got an empty one" in message(register(password=""))
    assert "without control characters (newline, tab, ...)" in message(register(password="pw\t"))
    profile = parse_profile(register(password="   "), env={})  # spaces are a password's own business
    assert profile.sip.register is not None
    assert profile.sip.register.password.reveal() == "   "


def test_a_bot_url_with_spaces_says_to_percent_encode_them() -> None:
    assert "must be %-encoded" in message(minimal(bot={"url": "wss://bot.example.com/a b"}))
