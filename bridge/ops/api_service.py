"""The call API as the running service holds it: the HTTP(S) listener, the webhook queue and the
idempotency keys (both in `state_dir`), from start to the end of the drain.

The queue starts first (status events may be queued before the listener is up), the listener
last; at the end the listener answers GETs (and 503 `draining` to new calls) until the calls
ended, then the queue is given a few seconds to deliver their last events before the process
exits (what is left is delivered by the next run).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import sqlite3
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from bridge.config import Profile
from bridge.errors import EXIT_UNAVAILABLE, BridgeError
from bridge.ops.api import ApiSettings, CallApi, CallBackend, IdempotencyStore
from bridge.ops.status_events import Callback, StatusReporter
from bridge.ops.webhooks import RetryPolicy, WebhookSender

__all__ = ["ApiListenError", "ApiService"]

log = logging.getLogger("bridge.api")

_FLUSH_S = 5.0


class ApiListenError(BridgeError):
    """The call API cannot listen on its address, or its state directory cannot be used."""

    exit_code = EXIT_UNAVAILABLE


class ApiService:
    def __init__(self, profile: Profile) -> None:
        self.profile = profile
        api = profile.api
        state = Path(profile.state_dir)
        callback_ssl = (
            ssl.create_default_context(cafile=api.callback_ca_file) if api.callback_ca_file else None
        )
        secret = api.webhook_secret.reveal() if api.webhook_secret else None
        self.sender = WebhookSender(
            state / "webhooks.db",
            secret,
            RetryPolicy(window_s=api.webhook_retry_window),
            ssl_context=callback_ssl,
        )
        default = Callback(api.status_callback, api.status_callback_events) if api.status_callback else None
        self.reporter = StatusReporter(self.sender, default)
        self._state = state
        self._thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="api-store")
        self._keys: IdempotencyStore | None = None
        self._runner: web.AppRunner | None = None
        self.api: CallApi | None = None

    async def start_queue(self) -> None:
        """The webhook queue (and what an earlier run left in it)."""
        try:
            await self.sender.start()
        except (OSError, sqlite3.Error) as exc:  # the directory cannot be made, or its database used
            raise ApiListenError(f"state_dir {self._state}: {exc}") from exc

    async def serve(self, backend: CallBackend) -> None:
        """Listen on api.listen with `backend` placing the calls."""
        api = self.profile.api
        assert api.listen_host is not None and api.auth_token is not None
        loop = asyncio.get_running_loop()
        self._keys = await loop.run_in_executor(
            self._thread, IdempotencyStore, self._state / "idempotency.db"
        )

        async def blocking(fn: Callable[..., Any], *args: Any) -> Any:
            return await loop.run_in_executor(self._thread, fn, *args)

        settings = ApiSettings(
            auth_token=api.auth_token.reveal(),
            account_sid=api.account_sid or self.profile.bot.account_sid,
            allow_to=self.profile.outbound.allow_to,
            bot_url_allowed_hosts=self.profile.bot.url_allowed_hosts,
            callback_allowed_hosts=api.callback_allowed_hosts,
        )
        self.api = CallApi(settings, backend, self._keys, blocking)
        runner = self._runner = web.AppRunner(self.api.app, access_log=None, handle_signals=False)
        await runner.setup()
        tls = None
        if api.tls is not None:
            tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            tls.load_cert_chain(api.tls.cert_file, api.tls.key_file)
        try:
            await web.TCPSite(runner, api.listen_host, api.listen_port, ssl_context=tls).start()
        except OSError as exc:
            await runner.cleanup()
            raise ApiListenError(
                f"api.listen {api.listen_host}:{api.listen_port}: {exc.strerror or exc}"
            ) from exc
        log.info(
            "call API listening on %s://%s:%d", "https" if tls else "http", api.listen_host, api.listen_port
        )

    async def stop(self) -> None:
        """After the calls ended: their last webhooks get a few seconds, then everything closes."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _FLUSH_S
        while self.sender.depth and loop.time() < deadline:
            await asyncio.sleep(0.05)
        if self.sender.depth:
            log.warning("%d webhook(s) not delivered yet; the next run delivers them", self.sender.depth)
        if self._runner is not None:
            await self._runner.cleanup()
        await self.sender.close()
        if self._keys is not None:
            await loop.run_in_executor(self._thread, self._keys.close)
        self._thread.shutdown(wait=True)
