"""The call API over HTTP (aiohttp on the bridge's loop): the native `/v1/calls` and Exotel's
Connect Voice AI paths, authenticated, size-limited, checked in the contract's order.

What a request asks is decided elsewhere: `bridge/ops/api_model.py` reads the body (size, type,
syntax, fields), this module applies the allow-lists and idempotency keys, and the `CallBackend`
(the service) applies the limits and its state and places, lists and ends calls. A refusal is an
`ApiError` wherever it is raised; it becomes the JSON the path's dialect speaks. No exception text
or traceback ever reaches a response: anything unexpected is logged here and answered 500 with a
fixed message.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from aiohttp import web

from bridge.call.record import CallRecord
from bridge.config.boturl import bot_url_host_allowed
from bridge.ops.api_model import (
    MAX_BODY_BYTES,
    ApiError,
    CallRequest,
    callback_host_allowed,
    destination_allowed,
    parse_call_request,
    parse_exotel_connect,
)

__all__ = ["ApiSettings", "CallApi", "CallBackend", "IdempotencyStore"]

log = logging.getLogger("bridge.api")

IDEMPOTENCY_TTL_S = 24 * 3600.0
_EXOTEL_PREFIX = "/v1/Accounts/"


class CallBackend(Protocol):
    """What the API needs from the running bridge. `place_call` and `end_call` raise ApiError for
    limits (too_many_calls, rate_limited) and state (draining, not_registered, call_not_active)."""

    def place_call(self, request: CallRequest) -> CallRecord: ...
    def calls(self) -> Sequence[CallRecord]: ...
    def call(self, call_sid: str) -> CallRecord | None: ...
    def end_call(self, call_sid: str) -> CallRecord: ...


@dataclass(frozen=True, slots=True)
class ApiSettings:
    auth_token: str
    account_sid: str
    allow_to: tuple[str, ...] = ()  # outbound.allow_to: empty refuses every destination
    bot_url_allowed_hosts: tuple[str, ...] = ()
    callback_allowed_hosts: tuple[str, ...] | None = None  # None: loopback only


class IdempotencyStore:
    """Idempotency keys (per API token, kept 24 h) in SQLite under state_dir; used on one thread."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS idempotency (scope TEXT NOT NULL, key TEXT NOT NULL,"
            " body_hash TEXT NOT NULL, call_sid TEXT NOT NULL, created REAL NOT NULL,"
            " PRIMARY KEY (scope, key))"
        )

    def find(self, scope: str, key: str, now: float) -> tuple[str, str] | None:
        """(body hash, call sid) of a key used in the last 24 h."""
        self._db.execute("DELETE FROM idempotency WHERE created < ?", (now - IDEMPOTENCY_TTL_S,))
        row = self._db.execute(
            "SELECT body_hash, call_sid FROM idempotency WHERE scope = ? AND key = ?", (scope, key)
        ).fetchone()
        return None if row is None else (str(row[0]), str(row[1]))

    def remember(self, scope: str, key: str, body_hash: str, call_sid: str, now: float) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO idempotency VALUES (?, ?, ?, ?, ?)",
            (scope, key, body_hash, call_sid, now),
        )

    def close(self) -> None:
        self._db.close()


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class CallApi:
    """The aiohttp application of the call API."""

    def __init__(
        self,
        settings: ApiSettings,
        backend: CallBackend,
        idempotency: IdempotencyStore,
        run_blocking: Callable[..., Awaitable[object]],
    ) -> None:
        self.settings = settings
        self.backend = backend
        self._keys = idempotency
        self._blocking = run_blocking  # runs a store call off the loop (a thread of the caller's choice)
        self.internal_errors = 0
        self._keys_in_flight: dict[str, list[Any]] = {}  # key -> [lock, requests using it]
        self._scope = hashlib.sha256(settings.auth_token.encode()).hexdigest()[:16]
        self.app = web.Application(middlewares=[self._guard], client_max_size=MAX_BODY_BYTES + 1)
        base = "/v1/Accounts/{account}/Calls"
        self.app.router.add_post("/v1/calls", self._create)
        self.app.router.add_get("/v1/calls", self._list)
        self.app.router.add_get("/v1/calls/{sid}", self._get)
        self.app.router.add_delete("/v1/calls/{sid}", self._delete)
        for suffix in ("", ".json"):
            self.app.router.add_post(f"{base}/connect{suffix}", self._exotel_connect)
        self.app.router.add_get(base + "/{sid}", self._exotel_get)

    # ---- the guard: authentication, size, and errors as JSON --------------------------------

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        exotel = request.path.startswith(_EXOTEL_PREFIX)
        try:
            if not self._authorized(request.headers.get("Authorization", "")):
                raise ApiError(
                    "unauthorized",
                    "send Authorization: Bearer <api.auth_token> (or Basic with the token as the password)",
                )
            if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
                raise ApiError(
                    "body_too_large",
                    f"the body is {request.content_length} bytes; the limit is {MAX_BODY_BYTES}",
                )
            return await handler(request)
        except web.HTTPRequestEntityTooLarge:
            return _error(ApiError("body_too_large", f"the body is over {MAX_BODY_BYTES} bytes"), exotel)
        except web.HTTPNotFound:
            return _error(ApiError("not_found", f"no such path: {request.path[:200]}"), exotel)
        except ApiError as error:
            return _error(error, exotel)
        except web.HTTPException:
            raise  # aiohttp's own answers (405): no request detail in them
        except Exception:  # a bug must not become a traceback in a response: counted, logged, answered 500
            self.internal_errors += 1
            log.exception("API request %s %s failed", request.method, request.path[:200])
            return web.json_response(
                {"error": {"code": "internal_error", "message": "internal error; see the bridge's log"}},
                status=500,
            )

    def _authorized(self, header: str) -> bool:
        scheme, _, value = header.partition(" ")
        token = self.settings.auth_token.encode()
        if scheme.lower() == "bearer":
            return hmac.compare_digest(value.strip().encode(), token)
        if scheme.lower() == "basic":
            try:
                decoded = base64.b64decode(value.strip(), validate=True)
            except ValueError:
                return False
            return hmac.compare_digest(decoded.partition(b":")[2], token)
        return False

    # ---- the native API ---------------------------------------------------------------------

    async def _create(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        call = parse_call_request(body, request.headers.get("Content-Type"))
        self._check_allowed(call)
        key = request.headers.get("Idempotency-Key")
        if key is None:
            return web.json_response(self.backend.place_call(call).native(), status=201)
        if not key.strip() or len(key) > 255:
            raise ApiError("invalid_field", "Idempotency-Key must be 1 to 255 characters", "Idempotency-Key")
        # One request per key at a time: a retry racing the first must not dial a second call.
        entry = self._keys_in_flight.setdefault(key, [asyncio.Lock(), 0])
        entry[1] += 1
        try:
            async with entry[0]:
                return await self._create_once(call, key, hashlib.sha256(body).hexdigest())
        finally:
            entry[1] -= 1
            if not entry[1]:
                del self._keys_in_flight[key]

    async def _create_once(self, call: CallRequest, key: str, digest: str) -> web.StreamResponse:
        seen = await self._blocking(self._keys.find, self._scope, key, time.time())
        if isinstance(seen, tuple):
            if seen[0] != digest:
                raise ApiError(
                    "idempotency_key_reused",
                    "this Idempotency-Key was used for a different request in "
                    "the last 24 h; use a new key for a new call",
                )
            earlier = self.backend.call(seen[1])
            if earlier is None:
                raise ApiError("not_found", f"call {seen[1]} of this Idempotency-Key is no longer kept")
            return web.json_response(earlier.native(), status=200)
        record = self.backend.place_call(call)
        await self._blocking(self._keys.remember, self._scope, key, digest, record.call_sid, time.time())
        return web.json_response(record.native(), status=201)

    async def _list(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"calls": [record.native() for record in self.backend.calls()]})

    async def _get(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(self._find(request.match_info["sid"]).native())

    async def _delete(self, request: web.Request) -> web.StreamResponse:
        sid = request.match_info["sid"]
        self._find(sid)
        return web.json_response(self.backend.end_call(sid).native())

    # ---- Exotel's Connect Voice AI ------------------------------------------------------------

    async def _exotel_connect(self, request: web.Request) -> web.StreamResponse:
        self._check_account(request)
        media_type = (request.content_type or "").lower()
        if media_type not in ("application/x-www-form-urlencoded", "multipart/form-data"):
            raise ApiError(
                "unsupported_media_type",
                "send the form as application/x-www-form-urlencoded or "
                f"multipart/form-data, not {media_type or 'nothing'}",
            )
        try:
            form = await request.post()
        except ValueError as exc:
            raise ApiError("invalid_field", f"the form does not parse: {str(exc)[:120]}") from None
        fields = [(name, value) for name, value in form.items() if isinstance(value, str)]
        call = parse_exotel_connect(fields)
        self._check_allowed(call)
        return web.json_response(self.backend.place_call(call).exotel(self._exotel_base(request)))

    async def _exotel_get(self, request: web.Request) -> web.StreamResponse:
        self._check_account(request)
        sid = request.match_info["sid"].removesuffix(".json")
        return web.json_response(self._find(sid).exotel(self._exotel_base(request)))

    def _check_account(self, request: web.Request) -> None:
        if request.match_info["account"] != self.settings.account_sid:
            raise ApiError("not_found", "no such account on this bridge")

    def _exotel_base(self, request: web.Request) -> str:
        return f"/v1/Accounts/{request.match_info['account']}"

    # ---- shared -----------------------------------------------------------------------------

    def _find(self, sid: str) -> CallRecord:
        record = self.backend.call(sid)
        if record is None:
            raise ApiError("not_found", f"no call {sid[:64]!r} (calls are kept an hour after they end)")
        return record

    def _check_allowed(self, call: CallRequest) -> None:
        """The allow-lists, after the fields and before the limits."""
        settings = self.settings
        if not destination_allowed(call.to, settings.allow_to):
            raise ApiError(
                "destination_not_allowed",
                f"{call.to} is not in outbound.allow_to"
                if settings.allow_to
                else "outbound.allow_to is empty: the profile allows no outbound destination",
                "to",
            )
        if call.bot_url is not None and not bot_url_host_allowed(
            call.bot_url, settings.bot_url_allowed_hosts
        ):
            raise ApiError(
                "bot_url_not_allowed",
                "the bot URL's host is not in bot.url_allowed_hosts",
                "StreamUrl" if call.exotel else "bot_url",
            )
        if call.status_callback is not None and not callback_host_allowed(
            call.status_callback, settings.callback_allowed_hosts
        ):
            raise ApiError(
                "callback_not_allowed",
                "the callback's host is not in api.callback_allowed_hosts (absent: loopback only)",
                "StatusCallback" if call.exotel else "status_callback",
            )


def _error(error: ApiError, exotel: bool) -> web.Response:
    headers: dict[str, str] = {}
    if error.code == "unauthorized":
        headers["WWW-Authenticate"] = 'Bearer realm="sip-ws-bridge", Basic realm="sip-ws-bridge"'
    if error.retry_after is not None:
        headers["Retry-After"] = str(error.retry_after)
    body = error.exotel_body() if exotel else error.body()
    return web.json_response(body, status=error.status, headers=headers)
