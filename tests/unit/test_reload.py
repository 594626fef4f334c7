"""What a profile reload changes live and what waits for a restart."""

from __future__ import annotations

from typing import Any

from bridge.config import parse_profile
from bridge.ops.reload import changed_keys, plan_reload


def profile(**sections: Any) -> Any:
    data: dict[str, Any] = {"sip": {"listen": "127.0.0.1:5060"}, "bot": {"url": "wss://bot.example.com/a"}}
    for name, values in sections.items():
        data[name] = {**data.get(name, {}), **values}
    return parse_profile(data, env={})


def test_nothing_changed() -> None:
    assert changed_keys(profile(), profile()) == []
    plan = plan_reload(profile(), profile())
    assert plan.applied == [] and plan.needs_restart == []


def test_bot_recording_limits_and_level_apply_sip_binding_needs_a_restart() -> None:
    old = profile()
    new = profile(
        bot={"url": "wss://bot.example.com/b?sample-rate=16000", "chunk_ms": 40},
        sip={"listen": "0.0.0.0:5070", "max_calls": 7, "forward_headers": ["X-A"], "codecs": ["PCMA"]},
        recording={"enabled": True, "dir": "/tmp/rec"},
        logging={"level": "debug", "format": "text"},
        media={"clock_rate": 16000},
        control={"listen": "127.0.0.1:9999"},
    )
    plan = plan_reload(old, new)
    assert plan.applied == ["bot.chunk_ms", "bot.url", "logging.level", "recording.dir", "recording.enabled",
                            "sip.forward_headers", "sip.max_calls"]
    assert plan.needs_restart == ["control.listen", "logging.format", "media.clock_rate", "sip.codecs",
                                  "sip.listen"]
    running = plan.profile
    assert running.bot.url.reveal().endswith("/b?sample-rate=16000") and running.bot.chunk_ms == 40
    assert running.sip.max_calls == 7 and running.sip.forward_headers == ("X-A",)
    assert running.recording.enabled and running.logging.level == "debug"
    # Kept at their running values:
    assert running.sip.listen == "127.0.0.1:5060" and running.sip.codecs == ("PCMU", "PCMA", "G722")
    assert running.media.clock_rate == 8000 and running.control.listen == "127.0.0.1:8780"
    assert running.logging.format == "auto"


def test_secrets_are_compared_by_value_and_never_listed_as_values() -> None:
    old = profile(bot={"headers": {"Authorization": "Bearer one"}},
                  sip={"register": {"registrar": "sip:pbx", "username": "u", "password": "p1"}})
    new = profile(bot={"headers": {"Authorization": "Bearer two"}},
                  sip={"register": {"registrar": "sip:pbx", "username": "u", "password": "p2"}})
    plan = plan_reload(old, new)
    assert plan.applied == ["bot.headers"]
    assert plan.needs_restart == ["sip.register.password"]
    assert "two" not in repr(plan.applied + plan.needs_restart)
