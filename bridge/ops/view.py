"""What operations (bridge/ops/) read of the running service, and the one thing they change.

The service (bridge/service.py) implements `ServiceView`; nothing in bridge/ops/ imports the
service, so the control pages, metrics, STATUS= lines and reloads depend on these few members
only (and can be driven by any object that has them).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from bridge.call.bridged import BridgeCall
    from bridge.config import Profile
    from bridge.ops.metrics import LatencySource
    from bridge.ops.webhooks import WebhookSender
    from bridge.sip import RegistrationState

__all__ = ["EngineStats", "ServiceView"]



@dataclass(frozen=True, slots=True)
class EngineStats:
    """The SIP engine as operations report it, read when a page or a scrape asks."""

    running: bool  # the SIP thread is alive (/healthz)
    accepting: bool  # new INVITEs are taken (cleared while draining)
    max_calls: int  # the admission limit in force
    # INVITEs the engine answered itself, by reason: 503 over capacity or draining, and the
    # access gate's refusals (source not allowed, rate limited, digest challenge or failure).
    rejected_invites: Mapping[str, int]
    # Requests the native SIP guard answered with an error or dropped before any call existed.
    refused_requests: Mapping[str, int]


class ServiceView(Protocol):
    """The running bridge as bridge/ops/ sees it (all on the loop)."""

    @property
    def profile(self) -> Profile: ...

    @property
    def profile_path(self) -> str | None:
        """The file a reload (SIGHUP) re-reads; None when the profile was not read from one."""

    @property
    def registration(self) -> RegistrationState | None:
        """The last registration answer (None before the first, and in trunk mode)."""

    # The bridge's own latency histograms: caller audio from the clock tick to the bot's socket,
    # and bot audio from its arrival to the caller.
    @property
    def rtp_to_ws(self) -> LatencySource: ...

    @property
    def ws_to_rtp(self) -> LatencySource: ...

    def live_calls(self) -> Sequence[BridgeCall]:
        """The bot calls in progress."""

    def calls_in_memory(self) -> int:
        """Call objects still alive, finished ones included (they should be freed at once)."""

    def engine_stats(self) -> EngineStats | None:
        """None until the SIP engine exists."""

    def webhooks(self) -> WebhookSender | None:
        """The status webhooks' sender (None without api.listen)."""

    def apply_profile(self, profile: Profile) -> None:
        """A reloaded profile takes effect: new calls use it, calls in progress keep theirs."""
