"""The settings a call runs under, derived from the profile once (the service builds one per
profile load; every call of that profile shares it).

The profile's bot section is kept as parsed (`bot`: its defaults are stated once, in
bridge/config); what the call needs in another form is derived here: the URL and headers with
their secrets revealed, the connection slice for `open_bot_link` (TLS context built), and the
URL's sample rate and query parameters (parsed by bridge/config/boturl.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from bridge.config import BotSettings, Profile, RecordingSettings, demo_profile
from bridge.ws.client import BotLinkSettings
from bridge.ws.tls import bot_ssl_context

__all__ = ["CallPolicy"]


@dataclass(frozen=True, slots=True)
class CallPolicy:
    bot: BotSettings  # the profile's bot section
    bot_url: str  # bot.url revealed: what the call connects to unless bot.url_header picks another
    link: BotLinkSettings  # how the bot's socket is opened (headers revealed, TLS context built)
    socket_rate: int  # bot.url's sample rate
    url_params: Mapping[str, str]  # bot.url's other query parameters (they go into `start`)
    clock_rate: int  # media.clock_rate: the conference's rate
    forward_headers: tuple[str, ...]  # SIP headers copied into `start` (sip.forward_headers)
    recording: RecordingSettings | None  # None: this call is not recorded

    @classmethod
    def from_profile(cls, profile: Profile) -> CallPolicy:
        bot = profile.bot
        tls = bot.guard.tls
        return cls(
            bot=bot,
            bot_url=bot.url.reveal(),
            link=BotLinkSettings.of(bot, ssl_context=bot_ssl_context(tls.verify, tls.ca_file)),
            socket_rate=bot.sample_rate,
            url_params=dict(bot.query_parameters),
            clock_rate=profile.media.clock_rate,
            forward_headers=tuple(profile.sip.forward_headers),
            recording=profile.recording if profile.recording.enabled else None,
        )

    @classmethod
    def for_url(cls, url: str, **changes: Any) -> CallPolicy:
        """The default profile's policy for a bot at `url` (tests, tools); `changes` replace fields
        of the bot section (e.g. ``chunk_ms=100``) or of the policy (e.g. ``clock_rate``)."""
        policy = cls.from_profile(demo_profile(5060, url))
        own = {name: changes.pop(name) for name in list(changes) if name in cls.__dataclass_fields__}
        bot = replace(policy.bot, **changes)
        link = BotLinkSettings.of(bot, ssl_context=policy.link.ssl_context)
        return replace(policy, bot=bot, link=link, **own)
