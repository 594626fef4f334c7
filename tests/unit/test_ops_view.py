"""Operations against a ServiceView alone: STATUS= line, health pages, live state and a reload,
with no bridge, engine or SIP stack behind them."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bridge.audio.latency import LatencyHistogram
from bridge.config import Profile, parse_profile
from bridge.ops.operations import Operations
from bridge.ops.view import EngineStats, ServiceView
from bridge.sip import RegistrationState


def profile(**sip: Any) -> Profile:
    return parse_profile({"sip": {"listen": "127.0.0.1:5060", **sip}, "bot": {"url": "ws://127.0.0.1:9/a"},
                          "control": {"listen": None}}, env={})


class View:
    def __init__(self) -> None:
        self.profile = profile(max_calls=4)
        self.profile_path: str | None = None
        self.registration: RegistrationState | None = None
        self.rtp_to_ws = LatencyHistogram()
        self.ws_to_rtp = LatencyHistogram()
        self.engine: EngineStats | None = None
        self.applied: list[Profile] = []

    def live_calls(self) -> Sequence[Any]:
        return []

    def calls_in_memory(self) -> int:
        return 0

    def engine_stats(self) -> EngineStats | None:
        return self.engine

    def webhooks(self) -> None:
        return None  # no call API in this view

    def apply_profile(self, profile: Profile) -> None:
        self.applied.append(profile)
        self.profile = profile


def test_pages_follow_the_view() -> None:
    view = View()
    checked: ServiceView = view  # the protocol holds
    ops = Operations(checked)
    assert ops.status_line() == "0 active calls (max 4); trunk mode (not registering)"
    assert ops.healthz().status == 503  # no engine yet
    view.engine = EngineStats(running=True, accepting=True, max_calls=6,
                              rejected_invites={"over_capacity": 2}, refused_requests={"bad_framing": 1})

    async def ready() -> None:
        ops.ready()

    asyncio.run(ready())
    assert ops.healthz().status == 200
    assert ops.readyz().status == 200
    assert ops.status_line().endswith("(max 6); trunk mode (not registering)")
    state = ops.live_state()
    assert state.max_calls == 6 and state.accepting
    assert state.rejected_by_engine == {"over_capacity": 2} and state.refused_requests == {"bad_framing": 1}
    assert state.latency == {"caller_to_bot": view.rtp_to_ws, "bot_to_caller": view.ws_to_rtp}
    view.engine = EngineStats(running=False, accepting=True, max_calls=6, rejected_invites={},
                              refused_requests={})
    assert ops.healthz().status == 503


def test_a_reload_goes_through_apply_profile(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("sip:\n  listen: 127.0.0.1:5060\n  max_calls: 9\nbot:\n  url: ws://127.0.0.1:9/b\n"
                    "control:\n  listen: null\n")
    view = View()
    view.profile_path = str(path)
    ops = Operations(view)
    assert asyncio.run(ops.reload())
    assert [p.sip.max_calls for p in view.applied] == [9]
    assert view.profile.bot.url.reveal() == "ws://127.0.0.1:9/b"
    assert ops.reloads == 1
