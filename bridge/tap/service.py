"""Taps inside the bridge process: which INVITEs are taps, their conversations, their pump.

The service offers every INVITE to `TapService.take` first; a tap call is handled here and each of
its legs registers with the SIP router (bridge/sip/router.py), so its later events come straight
to its conversation. Everything else is left to the bot bridge. The service's media pump calls
`pump()` on each 20 ms tick, and its drain calls `stop_all()` / `wait()`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from bridge.sip import CallEnd, DtmfMethod, IncomingCall, MediaInfo, StreamStats
from bridge.sip.router import SipRouter
from bridge.tap.conversation import TapConversation, TapSip
from bridge.tap.correlate import Pairing, classify

if TYPE_CHECKING:
    from bridge.call.bridged import CallPolicy
    from bridge.config import Profile

log = logging.getLogger("bridge.tap")

__all__ = ["TapService"]


class TapLegEvents:
    """One tap leg's SIP events (registered with the router): to its conversation. A tap is
    one-way: its digits and transfer reports go nowhere."""

    __slots__ = ("conversation", "handle")

    def __init__(self, conversation: TapConversation, handle: int) -> None:
        self.conversation = conversation
        self.handle = handle

    def on_progress(self, code: int, with_sdp: bool) -> None:
        pass  # taps are never placed by the bridge

    def on_answered(self) -> None:
        pass

    def on_media(self, media: MediaInfo) -> None:
        self.conversation.on_media(self.handle, media)

    def on_dtmf(self, digit: str, duration_ms: int, method: DtmfMethod) -> None:
        pass

    def on_sip_end(self, end: CallEnd, stats: StreamStats) -> None:
        self.conversation.on_sip_end(self.handle, end, stats)

    def on_transfer_status(self, code: int, final: bool) -> None:
        pass

    def on_rtp_timeout(self, seconds: float) -> None:
        self.conversation.end_leg(self.handle, f"no RTP for {seconds:g} s")

    def on_metadata(self, message: str) -> None:
        self.conversation.on_metadata(self.handle, message)


class TapService:
    """Tap calls: admitted here, their legs' events routed to their conversations."""

    def __init__(self, router: SipRouter, notify_media: Callable[[], None]) -> None:
        self.router = router
        self.notify_media = notify_media
        self.pairing = Pairing()
        self.conversations: dict[str, TapConversation] = {}
        self.by_handle: dict[int, TapConversation] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.finished: list[TapConversation] = []  # the last few, for tests and status
        self.conversations_total = 0

    # ---- calls ------------------------------------------------------------------------------

    def take(self, incoming: IncomingCall, profile: Profile, policy: CallPolicy, sip: TapSip) -> bool:
        """Handle `incoming` if the profile makes it a tap (True); False leaves it to the bot bridge.
        `profile` and `policy` are the service's current ones (a reload changes them)."""
        plan = classify(incoming.headers, incoming.body, mode=profile.mode, tap=profile.tap)
        if plan is None:
            return False
        conversation: TapConversation | None = None
        if plan.kind == "siprec":
            session_id = plan.metadata.session_id if plan.metadata is not None else ""
            conversation_id = self._unique(session_id or incoming.call_id)
        else:
            correlation = plan.correlation or incoming.call_id
            conversation_id, joined = self.pairing.place(correlation, time.monotonic(),
                                                         profile.tap.pair_timeout_s)
            if joined:
                conversation = self.conversations.get(conversation_id)
        if conversation is None:
            conversation = TapConversation(
                conversation_id, plan.kind, sip=sip, policy=policy, tap=profile.tap,
                notify_media=self.notify_media, on_done=self._conversation_done,
            )
            self.conversations[conversation_id] = conversation
            self.conversations_total += 1
        leg = conversation.add_leg(incoming, plan)
        if leg is None:
            if not conversation.legs and not conversation.all_legs:
                self._conversation_done(conversation)
            return True
        self.by_handle[incoming.handle] = conversation
        self.router.register(incoming.handle, TapLegEvents(conversation, incoming.handle))
        task = asyncio.ensure_future(conversation.run_leg(leg))
        self.tasks.add(task)
        task.add_done_callback(self._task_done)
        return True

    def _unique(self, conversation_id: str) -> str:
        candidate, n = conversation_id, 1
        while candidate in self.conversations:
            n += 1
            candidate = f"{conversation_id}-{n}"
        return candidate

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("tap call task failed", exc_info=task.exception())

    def _conversation_done(self, conversation: TapConversation) -> None:
        self.conversations.pop(conversation.conversation_id, None)
        self.pairing.done(conversation.conversation_id)
        for leg in conversation.all_legs:
            self.by_handle.pop(leg.handle, None)
            self.router.unregister(leg.handle)
        for task in conversation.tasks:
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        self.finished = [*self.finished[-9:], conversation]

    # ---- from the bridge --------------------------------------------------------------------

    def pump(self) -> None:
        """Every tick (the bridge's media pump): move audio of every conversation due."""
        for conversation in self.conversations.values():
            if conversation.pump_due():
                conversation.pump()

    @property
    def active_calls(self) -> int:
        return len(self.by_handle)

    def stop_all(self, reason: str = "bridge shutting down") -> None:
        for conversation in list(self.conversations.values()):
            conversation.request_stop(reason)

    async def wait(self, timeout: float) -> None:
        """Until every tap call has ended and its sockets are closed (at most `timeout`)."""
        deadline = time.monotonic() + timeout
        while self.tasks and time.monotonic() < deadline:
            await asyncio.wait(set(self.tasks), timeout=max(0.0, deadline - time.monotonic()))
