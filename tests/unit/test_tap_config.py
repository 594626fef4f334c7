"""Profile keys of taps: `mode` and the `tap` section, validated with their key paths."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from bridge.config import parse_profile, render_profile
from bridge.config.tap import TapSettings
from bridge.ops.reload import plan_reload
from tests.unit.test_config import SECRET, error_of, minimal, set_path


def parse(data: dict[str, Any]) -> Any:
    return parse_profile(data, env={})


def test_defaults_are_bot_mode_with_header_taps_and_separate_sockets() -> None:
    profile = parse(minimal())
    assert profile.mode == "bot"
    assert profile.tap == TapSettings()
    assert profile.tap.enabled_by_header == "X-Stream-Mode" and profile.tap.layout == "separate"


def test_a_full_tap_section() -> None:
    profile = parse({**minimal(), "mode": "TAP", "tap": {
        "url": "wss://asr.example.com/tap?sample-rate=16000",
        "headers": {"Authorization": f"Bearer {SECRET}"},
        "layout": "stereo", "enabled_by_header": None, "correlation_header": "X-Conv",
        "track_header": "X-Side", "pair_timeout_s": 30, "agent_match": ["sip:agent-*", "1???"],
    }})
    tap = profile.tap
    assert profile.mode == "tap" and tap.layout == "stereo" and tap.enabled_by_header is None
    assert tap.url is not None and tap.url.sample_rate == 16000
    assert (tap.correlation_header, tap.track_header, tap.pair_timeout_s) == ("X-Conv", "X-Side", 30.0)
    assert tap.agent_match == ("sip:agent-*", "1???")
    assert tap.headers["Authorization"].reveal() == f"Bearer {SECRET}"
    rendered = render_profile(profile)
    assert SECRET not in rendered and "Authorization: '***'" in rendered
    again = parse_profile(yaml.safe_load(rendered.replace("'***'", "x")), env={})
    assert again.tap.layout == "stereo" and again.mode == "tap"


@pytest.mark.parametrize("path, value, key, words", [
    ("mode", "listen", "mode", "one of bot, tap"),
    ("tap.layout", "quad", "tap.layout", "one of separate, mixed, stereo"),
    ("tap.url", "http://asr.example.com", "tap.url", "ws://"),
    ("tap.correlation_header", "X Tap", "tap.correlation_header", "header"),
    ("tap.correlation_header", None, "tap.correlation_header", "null"),
    ("tap.track_header", "X-Stream-Mode", "tap", "different headers"),
    ("tap.pair_timeout_s", 0, "tap.pair_timeout_s", "0.5-300"),
    ("tap.agent_match", "sip:agent-*", "tap.agent_match", "a list"),
    ("tap.agent_match", ["two words"], "tap.agent_match[0]", "without spaces"),
    ("tap.layuot", "mixed", "tap.layuot", "layout"),
])
def test_bad_tap_keys_name_the_key(path: str, value: object, key: str, words: str) -> None:
    err = error_of(set_path(minimal(), path, value))
    assert err.key == key and words in str(err)


def test_tap_headers_without_tap_url_are_ignored_with_a_warning() -> None:
    profile = parse(set_path(minimal(), "tap.headers", {"Authorization": "Bearer x"}))
    assert any("tap.headers: ignored" in w for w in profile.warnings)


def test_tap_settings_apply_on_reload() -> None:
    old = parse(minimal())
    new = parse({**minimal(), "mode": "tap", "tap": {"layout": "mixed"}})
    plan = plan_reload(old, new)
    assert {"mode", "tap.layout"} <= set(plan.applied) and not plan.needs_restart
    assert plan.profile.tap.layout == "mixed"


def test_the_agent_assist_example_profile_loads() -> None:
    from bridge.config import load_profile
    from tests.unit.test_config import PROFILES

    profile = load_profile(PROFILES / "agent-assist.yaml", env={"ASR_TOKEN": "t"})
    assert profile.mode == "tap" and profile.tap.layout == "separate"
    assert profile.tap.url is not None and profile.tap.url.sample_rate == 16000
    assert profile.tap.headers["Authorization"].reveal() == "Bearer t" and not profile.warnings
