"""Taps inside the bridge process: which INVITEs are taps, their conversations, their pump.

`TapService` stands between the SIP engine and the bot bridge (`bridge.service.Bridge`): the engine
reports every event to it; events of tap calls are handled here, everything else goes on to the
bridge unchanged. The bridge's media pump calls `pump()` on each 20 ms tick, and its drain calls
`stop_all()` / `wait()`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from bridge.sip import CallEnd, DtmfMethod, IncomingCall, MediaInfo, RegistrationState, StreamStats
from bridge.tap.conversation import TapConversation, TapSip
from bridge.tap.correlate import Pairing, classify

if TYPE_CHECKING:
    from bridge.service import Bridge

log = logging.getLogger("bridge.tap")

__all__ = ["TapService"]


class TapService:
    """A SipEventSink: tap calls are handled here, the rest is passed to the bridge."""

    def __init__(self, bridge: Bridge) -> None:
        self.bridge = bridge
        self.pairing = Pairing()
        self.conversations: dict[str, TapConversation] = {}
        self.by_handle: dict[int, TapConversation] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.finished: list[TapConversation] = []  # the last few, for tests and status
        self.conversations_total = 0

    def __getattr__(self, name: str) -> Any:
        # Engine events this class does not know (added to the bridge later) go straight on.
        if name.startswith("on_"):
            return getattr(self.bridge, name)
        raise AttributeError(name)

    # ---- calls ------------------------------------------------------------------------------

    def on_incoming_call(self, incoming: IncomingCall) -> None:
        profile = self.bridge.profile
        plan = classify(incoming.headers, incoming.body, mode=profile.mode, tap=profile.tap)
        if plan is None:
            self.bridge.on_incoming_call(incoming)
            return
        sip = self.bridge.engine
        assert sip is not None
        tap_sip: TapSip = sip
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
                conversation_id, plan.kind, sip=tap_sip, policy=self.bridge.policy, tap=profile.tap,
                notify_media=self.bridge.notify_media, on_done=self._conversation_done,
            )
            self.conversations[conversation_id] = conversation
            self.conversations_total += 1
        leg = conversation.add_leg(incoming, plan)
        if leg is None:
            if not conversation.legs and not conversation.all_legs:
                self._conversation_done(conversation)
            return
        self.by_handle[incoming.handle] = conversation
        task = asyncio.ensure_future(conversation.run_leg(leg))
        self.tasks.add(task)
        task.add_done_callback(self._task_done)

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
        for task in conversation.tasks:
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        self.finished = [*self.finished[-9:], conversation]

    def _find(self, handle: int) -> TapConversation | None:
        return self.by_handle.get(handle)

    # ---- the rest of the SipEventSink ---------------------------------------------------------

    def on_call_answered(self, handle: int) -> None:
        if self._find(handle) is None:
            self.bridge.on_call_answered(handle)

    def on_call_media(self, handle: int, media: MediaInfo) -> None:
        conversation = self._find(handle)
        if conversation is None:
            self.bridge.on_call_media(handle, media)
        else:
            conversation.on_media(handle, media)

    def on_call_dtmf(self, handle: int, digit: str, duration_ms: int, method: DtmfMethod) -> None:
        if self._find(handle) is None:  # a tap is one-way: its digits go nowhere
            self.bridge.on_call_dtmf(handle, digit, duration_ms, method)

    def on_call_ended(self, handle: int, end: CallEnd, stats: StreamStats) -> None:
        conversation = self._find(handle)
        if conversation is None:
            self.bridge.on_call_ended(handle, end, stats)
        else:
            conversation.on_sip_end(handle, end, stats)

    def on_transfer_status(self, handle: int, code: int, final: bool) -> None:
        if self._find(handle) is None:
            self.bridge.on_transfer_status(handle, code, final)

    def on_call_rtp_timeout(self, handle: int, seconds: float) -> None:
        conversation = self._find(handle)
        if conversation is None:
            self.bridge.on_call_rtp_timeout(handle, seconds)
        else:
            conversation.end_leg(handle, f"no RTP for {seconds:g} s")

    def on_call_metadata(self, handle: int, message: str) -> None:
        conversation = self._find(handle)
        if conversation is not None:
            conversation.on_metadata(handle, message)

    def on_registration(self, state: RegistrationState) -> None:
        self.bridge.on_registration(state)

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
