"""The wss:// TLS context: verification on by default, a private CA, and an explicit, warned opt-out."""

from __future__ import annotations

import logging
import ssl
from pathlib import Path

import pytest

from bridge.errors import ConfigError
from bridge.ws.tls import bot_ssl_context


def test_verification_is_on_by_default() -> None:
    context = bot_ssl_context()
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2


def test_turning_it_off_is_warned(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, "bridge.ws"):
        context = bot_ssl_context(verify=False)
    assert context.verify_mode == ssl.CERT_NONE and not context.check_hostname
    assert "not authenticated" in caplog.text


def test_an_unreadable_ca_file_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        bot_ssl_context(ca_file=str(tmp_path / "missing.pem"))
    assert info.value.key == "bot.tls.ca_file" and "missing.pem" in info.value.message
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    with pytest.raises(ConfigError):
        bot_ssl_context(ca_file=str(junk))
