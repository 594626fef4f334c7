"""`render_profile`: a `Profile` as YAML, every default filled in and every secret shown as ``***``."""

from __future__ import annotations

import json

import yaml

from bridge.config.base import REDACTED
from bridge.config.guard import bot_guard_dict, sip_guard_dict
from bridge.config.model import Profile
from bridge.config.outbound import outbound_dict
from bridge.config.tap import tap_dict
from bridge.config.values import CONTROL_RE


def _profile_to_dict(profile: Profile) -> dict[str, object]:
    sip = profile.sip
    bot = profile.bot
    register: dict[str, object] | None = None
    if sip.register is not None:
        reg = sip.register
        register = {
            "registrar": reg.registrar,
            "username": reg.username,
            "password": REDACTED,
            "realm": reg.realm,
            "expires": reg.expires,
            "identity": reg.identity,
            "outbound_proxy": reg.outbound_proxy,
            "contact": reg.contact,
        }
    on_unreachable: dict[str, object] = {
        "action": bot.on_unreachable.action,
        "sip_status": bot.on_unreachable.sip_status,
    }
    if bot.on_unreachable.transfer_to is not None:
        on_unreachable["transfer_to"] = bot.on_unreachable.transfer_to
    on_close: dict[str, object] = {"action": bot.on_close.action}
    if bot.on_close.transfer_to is not None:
        on_close["transfer_to"] = bot.on_close.transfer_to
    return {
        "name": profile.name,
        "sip": {
            "listen": sip.listen,
            "transports": list(sip.transports),
            "public_address": sip.public_address,
            "rtp_port_start": sip.rtp_port_start,
            "rtp_port_range": sip.rtp_port_range,
            "codecs": list(sip.codecs),
            "max_calls": sip.max_calls,
            "user_agent": sip.user_agent,
            "forward_headers": list(sip.forward_headers),
            "register": register,
            **sip_guard_dict(sip.guard),
        },
        "bot": {
            "url": bot.url_redacted,
            "headers": dict.fromkeys(bot.headers, REDACTED),
            "connect_timeout": bot.connect_timeout,
            "stop_grace": bot.stop_grace_s,
            "connect_retries": bot.connect_retries,
            "chunk_ms": bot.chunk_ms,
            "prebuffer_ms": bot.prebuffer_ms,
            "buffer_seconds": bot.buffer_seconds,
            "max_message_bytes": bot.max_message_bytes,
            "warn_message_bytes": bot.warn_message_bytes,
            "clear_answers_marks": bot.clear_answers_marks,
            "account_sid": bot.account_sid,
            "url_header": bot.url_header,
            "url_header_allowed_hosts": list(bot.url_header_allowed_hosts),
            "url_allowed_hosts": list(bot.url_allowed_hosts),
            "on_unreachable": on_unreachable,
            "on_close": on_close,
            **bot_guard_dict(bot.guard),
        },
        "media": {"clock_rate": profile.media.clock_rate, "rtp_timeout": profile.media.rtp_timeout,
                  "tick_phase_ms": profile.media.tick_phase_ms, "rtp_latching": profile.media.rtp_latching},
        "logging": {"level": profile.logging.level, "format": profile.logging.format},
        "control": {"listen": profile.control.listen},
        "recording": {
            "enabled": profile.recording.enabled,
            "dir": profile.recording.dir,
            "layout": profile.recording.layout,
            "retention_days": profile.recording.retention_days,
            "max_files": profile.recording.max_files,
        },
        **tap_dict(profile.mode, profile.tap),
        **outbound_dict(profile.api, profile.outbound, profile.state_dir),
    }


def render_profile(profile: Profile) -> str:
    """The resolved profile as YAML: every default filled in, every secret shown as ``***``.

    Derived values (the bot's sample rate and query parameters) and warnings are
    given as comments, so the body is itself a valid profile.
    """
    lines = [
        f"# profile {json.dumps(profile.name, ensure_ascii=False)}: resolved, defaults filled in, "
        f"secrets shown as {REDACTED}",
        f"# from bot.url: sample_rate={profile.bot.sample_rate}, "
        f"query_parameters={json.dumps(dict(profile.bot.query_parameters), ensure_ascii=False)}",
    ]
    lines.extend(f"# warning: {CONTROL_RE.sub(' ', w)}" for w in profile.warnings)
    body = yaml.safe_dump(
        _profile_to_dict(profile), sort_keys=False, default_flow_style=False, allow_unicode=True
    )
    return "\n".join(lines) + "\n" + body
