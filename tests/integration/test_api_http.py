"""The call API's HTTP layer over real sockets (aiohttp server and client on 127.0.0.1) with an
in-process backend twin: authentication, the contract's check order, every error code, idempotency
keys (also under concurrent retries), the Exotel-compatible paths with urlencoded and multipart bodies,
and a fuzz run that never gets a 500 or the token back."""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import itertools
import json
import random
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from bridge.call.record import CallRecord
from bridge.ops.api import ApiSettings, CallApi, IdempotencyStore
from bridge.ops.api_model import ApiError, CallRequest

TOKEN = "tok-3f9a-secret"
ACCOUNT = "acct42"


class Backend:
    """The service's part, in memory: places calls, and refuses as told."""

    def __init__(self) -> None:
        self.placed: list[CallRequest] = []
        self.records: dict[str, CallRecord] = {}
        self.refuse: ApiError | None = None
        self._ids = itertools.count(1)

    def place_call(self, request: CallRequest) -> CallRecord:
        if self.refuse is not None:
            raise self.refuse
        self.placed.append(request)
        sid = f"CA{next(self._ids)}"
        record = CallRecord(
            call_sid=sid,
            direction="outbound",
            from_=request.from_ or "+100",
            to=request.to,
            created_at=time.time(),
            account_sid=ACCOUNT,
            custom_parameters=dict(request.custom_parameters),
        )
        self.records[sid] = record
        return record

    def calls(self) -> Sequence[CallRecord]:
        return list(self.records.values())

    def call(self, call_sid: str) -> CallRecord | None:
        return self.records.get(call_sid)

    def end_call(self, call_sid: str) -> CallRecord:
        record = self.records[call_sid]
        if record.ended:
            raise ApiError("call_not_active", f"call {call_sid} has ended")
        record.status, record.end_reason, record.disconnected_by = "canceled", "canceled", "api"
        return record


Test = Callable[[aiohttp.ClientSession, str, Backend], Awaitable[None]]


def serve(tmp_path: Path, test: Test, **settings: Any) -> None:
    async def main() -> None:
        backend = Backend()
        store = IdempotencyStore(tmp_path / "idempotency.db")
        thread = concurrent.futures.ThreadPoolExecutor(1)
        loop = asyncio.get_running_loop()

        async def blocking(fn: Callable[..., Any], *args: Any) -> Any:
            return await loop.run_in_executor(thread, fn, *args)

        defaults: dict[str, Any] = {
            "auth_token": TOKEN,
            "account_sid": ACCOUNT,
            "allow_to": ("+9180*", "sip:*"),
            "bot_url_allowed_hosts": ("127.0.0.1",),
        }
        api = CallApi(ApiSettings(**{**defaults, **settings}), backend, store, blocking)
        runner = web.AppRunner(api.app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        try:
            async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as http:
                await test(http, f"http://127.0.0.1:{port}", backend)
            assert api.internal_errors == 0
        finally:
            await runner.cleanup()
            thread.shutdown()
            store.close()

    asyncio.run(asyncio.wait_for(main(), 60))


async def post(http: aiohttp.ClientSession, url: str, body: object, **kw: Any) -> tuple[int, Any, Any]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Content-Type": "application/json", **kw.pop("headers", {})}
    async with http.post(url, data=data, headers=headers, **kw) as response:
        return response.status, await response.json(content_type=None), response.headers


def test_authentication(tmp_path: Path) -> None:
    async def test(http: aiohttp.ClientSession, base: str, backend: Backend) -> None:
        async with aiohttp.ClientSession() as anonymous:
            async with anonymous.get(base + "/v1/calls") as response:
                assert response.status == 401 and "Bearer" in response.headers["WWW-Authenticate"]
                assert (await response.json())["error"]["code"] == "unauthorized"
            # Auth before size: a stranger's huge body is refused as a stranger.
            async with anonymous.post(base + "/v1/calls", data=b"x" * 100_000) as response:
                assert response.status == 401
            for header in (
                f"Bearer {TOKEN}x",
                "Bearer ",
                f"Basic {base64.b64encode(b'u:nope').decode()}",
                "Basic !!!",
                TOKEN,
            ):
                async with anonymous.get(base + "/v1/calls", headers={"Authorization": header}) as response:
                    assert response.status == 401, header
            basic = base64.b64encode(f"AC123:{TOKEN}".encode()).decode()
            async with anonymous.get(
                base + "/v1/calls", headers={"Authorization": f"Basic {basic}"}
            ) as response:
                assert response.status == 200

    serve(tmp_path, test)


def test_every_refusal_in_the_contract_order(tmp_path: Path) -> None:
    async def test(http: aiohttp.ClientSession, base: str, backend: Backend) -> None:
        url = base + "/v1/calls"

        async def code(body: object, **kw: Any) -> tuple[int, str, str | None]:
            status, doc, _ = await post(http, url, body, **kw)
            return status, doc["error"]["code"], doc["error"].get("field")

        assert await code(b"{" + b" " * 70_000 + b"}") == (413, "body_too_large", None)
        assert (await code(b"x" * 70_000, headers={"Content-Type": "text/plain"}))[1] == "body_too_large"
        assert await code(b"to=1", headers={"Content-Type": "text/plain"}) == (
            415,
            "unsupported_media_type",
            None,
        )
        assert await code(b"{nope") == (400, "invalid_json", None)
        assert await code({"to": "+918012345678", "ring_timeout": -5}) == (
            400,
            "invalid_field",
            "ring_timeout",
        )
        assert await code({"to": "+15550100"}) == (403, "destination_not_allowed", "to")
        assert await code({"to": "+918012345678", "bot_url": "ws://evil.example.com/"}) == (
            400,
            "bot_url_not_allowed",
            "bot_url",
        )
        assert await code({"to": "+918012345678", "status_callback": "http://10.1.1.1/"}) == (
            400,
            "callback_not_allowed",
            "status_callback",
        )
        backend.refuse = ApiError("rate_limited", "5 calls per second", retry_after=1)
        status, doc, headers = await post(http, url, {"to": "+918012345678"})
        assert (status, doc["error"]["code"], headers["Retry-After"]) == (429, "rate_limited", "1")
        backend.refuse = ApiError("draining", "the bridge is stopping")
        assert await code({"to": "+918012345678"}) == (503, "draining", None)
        assert not backend.placed

    serve(tmp_path, test)


def test_an_empty_allow_to_refuses_every_destination(tmp_path: Path) -> None:
    async def test(http: aiohttp.ClientSession, base: str, backend: Backend) -> None:
        status, doc, _ = await post(http, base + "/v1/calls", {"to": "sip:anyone@127.0.0.1"})
        assert status == 403 and "outbound.allow_to is empty" in doc["error"]["message"]

    serve(tmp_path, test, allow_to=())


def test_create_list_get_delete(tmp_path: Path) -> None:
    async def test(http: aiohttp.ClientSession, base: str, backend: Backend) -> None:
        status, created, _ = await post(
            http, base + "/v1/calls", {"to": "+918012345678", "custom_parameters": {"lead": "9"}}
        )
        assert (
            status == 201 and created["status"] == "queued" and created["custom_parameters"] == {"lead": "9"}
        )
        sid = created["call_sid"]
        async with http.get(base + "/v1/calls") as response:
            assert [c["call_sid"] for c in (await response.json())["calls"]] == [sid]
        async with http.get(f"{base}/v1/calls/{sid}") as response:
            assert (await response.json())["to"] == "+918012345678"
        async with http.get(base + "/v1/calls/CAnope") as response:
            assert response.status == 404 and (await response.json())["error"]["code"] == "not_found"
        async with http.delete(f"{base}/v1/calls/{sid}") as response:
            assert response.status == 200 and (await response.json())["disconnected_by"] == "api"
        async with http.delete(f"{base}/v1/calls/{sid}") as response:
            assert response.status == 409 and (await response.json())["error"]["code"] == "call_not_active"
        async with http.get(base + "/v2/whatever") as response:
            assert response.status == 404 and (await response.json())["error"]["code"] == "not_found"

    serve(tmp_path, test)


def test_idempotency_keys_never_dial_twice(tmp_path: Path) -> None:
    async def test(http: aiohttp.ClientSession, base: str, backend: Backend) -> None:
        url, body = base + "/v1/calls", {"to": "+918012345678"}
        results = await asyncio.gather(
            *(post(http, url, body, headers={"Idempotency-Key": "k1"}) for _ in range(8))
        )
        assert sorted(status for status, _, _ in results) == [200] * 7 + [201]
        assert len({doc["call_sid"] for _, doc, _ in results}) == 1 and len(backend.placed) == 1
        status, doc, _ = await post(http, url, {"to": "+918099999999"}, headers={"Idempotency-Key": "k1"})
        assert (status, doc["error"]["code"]) == (409, "idempotency_key_reused")
        assert (await post(http, url, body, headers={"Idempotency-Key": "k2"}))[0] == 201
        assert len(backend.placed) == 2

    serve(tmp_path, test)


def test_exotel_connect_urlencoded_and_multipart(tmp_path: Path) -> None:
    async def test(http: aiohttp.ClientSession, base: str, backend: Backend) -> None:
        url = f"{base}/v1/Accounts/{ACCOUNT}/Calls/connect.json"
        form = {
            "From": "+918012345678",
            "CallerId": "08012345",
            "StreamUrl": "ws://127.0.0.1:9/",
            "StreamType": "bidirectional",
            "CustomField": "order=7",
            "StatusCallback": "http://127.0.0.1:9/cb",
            "StatusCallbackEvents[0]": "answered",
        }
        async with http.post(url, data=form) as response:  # urlencoded
            assert response.status == 200
            call = (await response.json())["Call"]
            assert call["From"] == "+918012345678" and call["To"] == "08012345" and call["Status"] == "queued"
            assert call["Direction"] == "outbound-api"
        multipart = aiohttp.FormData()
        for name, value in form.items():
            multipart.add_field(name, value)
        async with http.post(url.removesuffix(".json"), data=multipart) as response:
            assert response.status == 200
        assert [p.custom_parameters for p in backend.placed] == [{"CustomField": "order=7"}] * 2
        assert backend.placed[0].status_callback_events == ("answered", "terminal")
        async with http.get(f"{base}/v1/Accounts/{ACCOUNT}/Calls/{call['Sid']}.json") as response:
            assert (await response.json())["Call"]["Sid"] == call["Sid"]
        async with http.post(url, data={**form, "To": "+91"}) as response:
            assert response.status == 400
            assert (await response.json())["RestException"]["Status"] == 400
        async with http.post(f"{base}/v1/Accounts/other/Calls/connect", data=form) as response:
            assert response.status == 404 and "RestException" in await response.json()
        async with http.post(url, data=b"{}", headers={"Content-Type": "application/json"}) as response:
            assert response.status == 415

    serve(tmp_path, test)


def test_fuzzed_requests_never_get_a_500_or_the_token(tmp_path: Path) -> None:
    async def test(http: aiohttp.ClientSession, base: str, backend: Backend) -> None:
        rng = random.Random(7)
        pieces = [
            b"{",
            b"}",
            b'"to"',
            b":",
            b'"+918012345678"',
            b",",
            b"[",
            b"]",
            b"null",
            b"1e999",
            b'"\\u0000"',
            b'"headers"',
            b'{"X-A":"b"}',
            b"\xff",
            b'"ring_timeout"',
            b"-1",
            b'"custom_parameters"',
        ]
        paths = ["/v1/calls", f"/v1/Accounts/{ACCOUNT}/Calls/connect", "/v1/calls/x", "/v1/calls/%00"]
        types = [
            "application/json",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=z",
            "text/plain",
            "",
        ]
        for _ in range(300):
            body = b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 12)))
            path, content_type = rng.choice(paths), rng.choice(types)
            async with http.post(base + path, data=body, headers={"Content-Type": content_type}) as response:
                text = await response.text()
                assert response.status < 500, (path, content_type, body, text)
                assert TOKEN not in text and "Traceback" not in text

    serve(tmp_path, test)


def test_the_call_command_follows_a_call_to_its_end(tmp_path: Path) -> None:
    from bridge.ops.call_command import place_call

    async def test(http: aiohttp.ClientSession, base: str, backend: Backend) -> None:
        loop = asyncio.get_running_loop()
        lines: list[str] = []

        async def progress(answered: bool) -> None:
            while not backend.records or list(backend.records.values())[-1].ended:
                await asyncio.sleep(0.01)
            record = list(backend.records.values())[-1]
            for status in ("ringing", "in-progress", "completed") if answered else ("ringing", "busy"):
                await asyncio.sleep(0.3)
                record.status = status  # type: ignore[assignment]
                if status == "in-progress":
                    record.answered_at = time.time()
                if status in ("completed", "busy"):
                    record.ended_at = time.time()
                    record.end_reason = "hangup" if answered else "busy"

        def command(wait: bool = True) -> int:
            return place_call(
                base, TOKEN, {"to": "+918012345678"}, wait=wait, say=lines.append, warn=lines.append
            )

        follow = asyncio.ensure_future(progress(True))
        assert await loop.run_in_executor(None, command) == 0
        await follow
        assert lines[1:3] == ["ringing", "in-progress"] and lines[3].startswith("completed (completed, 0.")
        assert lines[3].endswith(" s, hangup)")
        lines.clear()
        follow = asyncio.ensure_future(progress(False))
        assert await loop.run_in_executor(None, command) == 1
        await follow
        assert lines[1:] == ["ringing", "completed (busy, 0 s, busy)"]
        lines.clear()
        backend.refuse = ApiError("draining", "the bridge is stopping")
        assert await loop.run_in_executor(None, command) == 1 and "draining" in lines[0]

    serve(tmp_path, test)


def test_the_call_command_says_when_the_api_is_unreachable() -> None:
    from bridge.ops.call_command import place_call

    lines: list[str] = []
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        assert (
            place_call(
                f"http://127.0.0.1:{port}", TOKEN, {"to": "1"}, wait=True, say=lines.append, warn=lines.append
            )
            == 69
        )
    assert "cannot reach the bridge's API" in lines[0]
