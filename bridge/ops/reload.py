"""What a profile reload (SIGHUP) can change in a running bridge, and what needs a restart.

Calls carry their own copy of the call policy, so a reload never touches a call in progress:
new calls use the new settings. Settings bound into the SIP endpoint when it started (where it
listens, transports, RTP ports, codecs, registration, the conference clock) and the control
listener's address cannot change live: a reload keeps the running values and says which keys
need a restart. `sip.max_calls` (the admission limit), `sip.forward_headers`, every `bot.*`,
`recording.*`, `logging.level` and `name` apply at once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

from bridge.config import Profile, Secret

__all__ = ["ReloadPlan", "changed_keys", "plan_reload"]

_PUBLIC_KEYS = {
    "sip.listen_host": "sip.listen", "sip.listen_port": "sip.listen",
    "control.listen_host": "control.listen", "control.listen_port": "control.listen",
    "bot.url_redacted": "bot.url", "bot.sample_rate": "bot.url", "bot.query_parameters": "bot.url",
}
# Keys (dotted, as in the profile) that a running bridge takes over from a new profile.
LIVE_SIP_KEYS = ("forward_headers", "max_calls")


def _flatten(value: object, prefix: str, out: dict[str, object]) -> None:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            _flatten(getattr(value, f.name), f"{prefix}.{f.name}" if prefix else f.name, out)
    elif isinstance(value, Mapping):
        out[prefix] = {str(k): v.reveal() if isinstance(v, Secret) else v for k, v in value.items()}
    elif isinstance(value, Secret):
        out[prefix] = ("secret", value.reveal())
    else:
        out[prefix] = value


def _public_key(key: str) -> str:
    """Dataclass paths to the profile's keys: sip.listen_host -> sip.listen, bot.url_redacted -> bot.url."""
    key = key.replace(".guard.", ".", 1)  # sip.guard.allow_from -> sip.allow_from (config/guard.py)
    return _PUBLIC_KEYS.get(key, key)


def changed_keys(old: Profile, new: Profile) -> list[str]:
    """Profile keys whose values differ (secrets compared by value, never shown)."""
    a: dict[str, object] = {}
    b: dict[str, object] = {}
    _flatten(old, "", a)
    _flatten(new, "", b)
    keys: list[str] = []
    for key in sorted(set(a) | set(b)):
        if key == "warnings" or a.get(key) == b.get(key):
            continue
        public = _public_key(key)
        if public not in keys:
            keys.append(public)
    return keys


@dataclass(frozen=True, slots=True)
class ReloadPlan:
    profile: Profile  # what the bridge runs with from now on
    applied: list[str]  # changed keys that take effect (for new calls)
    needs_restart: list[str]  # changed keys kept at their running values


def _needs_restart(key: str) -> bool:
    if key.startswith("sip."):
        return key.split(".")[1] not in LIVE_SIP_KEYS
    return key.startswith(("media.", "control.")) or key == "logging.format"


def plan_reload(old: Profile, new: Profile) -> ReloadPlan:
    changed = changed_keys(old, new)
    restart = [key for key in changed if _needs_restart(key)]
    applied = [key for key in changed if key not in restart]
    sip = dataclasses.replace(old.sip, **{key: getattr(new.sip, key) for key in LIVE_SIP_KEYS})
    effective = dataclasses.replace(
        new,
        sip=sip,
        media=old.media,
        control=old.control,
        logging=dataclasses.replace(new.logging, format=old.logging.format),
    )
    return ReloadPlan(effective, applied, restart)
