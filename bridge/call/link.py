"""What a call uses of its bot's socket (bridge/ws/client.py's BotLink implements it; the
in-process tests use a fake that records what is sent and injects the bot's messages)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Protocol

from bridge.ws.client import BotLinkSettings

__all__ = ["CallLink", "LinkOpener"]

Logger = logging.Logger | logging.LoggerAdapter[logging.Logger]


class CallLink(Protocol):
    @property
    def is_open(self) -> bool: ...
    @property
    def close_code(self) -> int | None: ...
    @property
    def close_reason(self) -> str | None: ...
    @property
    def sent_bytes(self) -> int: ...
    @property
    def stalled_since(self) -> float | None: ...

    def send_nowait(self, text: str, *, droppable: bool = False) -> bool: ...
    def set_message_handler(self, handler: Callable[[str | bytes], None]) -> None: ...
    def messages(self) -> AsyncIterator[str | bytes]: ...
    async def close(self, code: int = ..., reason: str = "", timeout: float = 5.0) -> None: ...
    def abort(self) -> bool: ...
    def take_writes_back(self) -> None: ...


class LinkOpener(Protocol):
    """How a call opens its bot's socket (`open_bot_link`); raises BotConnectError."""

    def __call__(self, url: str, settings: BotLinkSettings, *,
                 logger: Logger = ...) -> Awaitable[CallLink]: ...
