"""Status webhooks against a real HTTP receiver (aiohttp on 127.0.0.1): order per call, the
documented signature verifier, retries and what is not retried, a receiver that is down for a while,
the retry window, and a sender SIGKILLed with events pending whose successor delivers them with the
same event ids."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from bridge.ops.webhooks import EVENT_ID_HEADER, SIGNATURE_HEADER, RetryPolicy, WebhookSender, WebhookStore

ROOT = Path(__file__).resolve().parents[2]
SECRET = "s3cret-ünïcode"
FAST = RetryPolicy(window_s=10.0, first_s=0.05, max_s=0.2, timeout_s=1.0)


def documented_verifier() -> Callable[[str, bytes, str], bool]:
    """The verifier exactly as docs/webhooks.md prints it."""
    text = (ROOT / "docs" / "webhooks.md").read_text()
    code = re.search(r"```python\n(.*?)```", text, re.S)
    assert code, "docs/webhooks.md has no python verifier"
    names: dict[str, Any] = {}
    exec(code.group(1), names)  # the docs' own code, run as a user would paste it
    verify: Callable[[str, bytes, str], bool] = names["verify"]
    return verify


@dataclass
class Received:
    path: str
    event_id: str
    signature: str
    body: bytes


@dataclass
class Receiver:
    """An HTTP receiver whose answers are scripted per event id (default 200)."""

    port: int = 0
    got: list[Received] = field(default_factory=list)
    script: dict[str, list[int]] = field(default_factory=dict)  # event id -> statuses to answer in turn
    by_body: list[tuple[bytes, list[int]]] = field(default_factory=list)  # body part -> statuses
    delay_first: float = 0.0
    runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        event_id = request.headers.get(EVENT_ID_HEADER, "")
        self.got.append(Received(request.path, event_id, request.headers.get(SIGNATURE_HEADER, ""), body))
        statuses = self.script.get(event_id)
        if statuses is None:
            for part, listed in self.by_body:
                if part in body:
                    statuses = self.script.setdefault(event_id, list(listed))
        status = statuses.pop(0) if statuses else 0  # taken on arrival: a late answer's status is spent
        if self.delay_first and len(self.got) == 1:
            await asyncio.sleep(self.delay_first)
        if status:
            headers = {"Location": f"http://127.0.0.1:{self.port}/moved"} if status in (301, 302, 307) else {}
            return web.Response(status=status, headers=headers)
        return web.Response(status=200, text="ok")

    async def start(self, port: int = 0) -> None:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", port)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def event(call: str, n: int) -> bytes:
    return json.dumps({"call_sid": call, "sequence": n, "status": "ringing"}).encode()


async def until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not check():
        assert loop.time() < end, "timed out"
        await asyncio.sleep(0.02)


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), 60))


def stored(path: Path) -> int:
    store = WebhookStore(path)
    try:
        return len(store.pending())
    finally:
        store.close()


def test_in_order_per_call_signed_as_the_docs_verify(tmp_path: Path) -> None:
    verify = documented_verifier()

    async def main() -> None:
        receiver = Receiver()
        await receiver.start()
        sender = WebhookSender(tmp_path / "webhooks.db", SECRET, FAST)
        await sender.start()
        ids = {}
        for n in range(1, 6):
            for call in ("CA1", "CA2"):
                ids[(call, n)] = sender.enqueue(receiver.url(), event(call, n), "application/json", call)
        await until(lambda: sender.stats.sent == 10)
        for call in ("CA1", "CA2"):
            mine = [json.loads(r.body) for r in receiver.got if json.loads(r.body)["call_sid"] == call]
            assert [m["sequence"] for m in mine] == [1, 2, 3, 4, 5]
        for r in receiver.got:
            assert verify(SECRET, r.body, r.signature), r
            assert not verify("wrong secret", r.body, r.signature)
            assert not verify(SECRET, r.body + b" ", r.signature)
        assert {r.event_id for r in receiver.got} == set(ids.values()) and len(set(ids.values())) == 10
        await sender.close()
        await receiver.stop()

    run(main)
    assert stored(tmp_path / "webhooks.db") == 0


def test_retried_on_5xx_408_429_and_timeout_same_id_and_body_later_events_wait(tmp_path: Path) -> None:
    verify = documented_verifier()

    async def main() -> None:
        receiver = Receiver(delay_first=1.5)  # the first attempt times out (timeout_s 1)
        receiver.by_body.append((b'"sequence": 1', [200, 500, 429, 408]))  # the 200 is the late one
        await receiver.start()
        sender = WebhookSender(tmp_path / "webhooks.db", SECRET, FAST)
        await sender.start()
        first = sender.enqueue(receiver.url(), event("CA1", 1), "application/json", "CA1")
        second = sender.enqueue(receiver.url(), event("CA1", 2), "application/json", "CA1")
        await until(lambda: sender.stats.sent == 2)
        order = [r.event_id for r in receiver.got]
        assert order == [first] * 5 + [second], order
        attempts = [r for r in receiver.got if r.event_id == first]
        assert len({r.body for r in attempts}) == 1
        assert all(verify(SECRET, r.body, r.signature) for r in receiver.got)
        assert sender.stats.retried == 4 and sender.stats.failed == 0
        await sender.close()
        await receiver.stop()

    run(main)


def test_other_4xx_and_redirects_are_settled_as_failed_and_not_followed(tmp_path: Path) -> None:
    async def main() -> None:
        receiver = Receiver()
        receiver.by_body.append((b'"sequence": 1', [404]))
        receiver.by_body.append((b'"sequence": 2', [302]))
        await receiver.start()
        sender = WebhookSender(tmp_path / "webhooks.db", SECRET, FAST)
        await sender.start()
        for n in (1, 2, 3):
            sender.enqueue(receiver.url(), event("CA1", n), "application/json", "CA1")
        await until(lambda: sender.stats.sent == 1)
        assert sender.stats.failed == 2 and sender.stats.retried == 0
        assert [r.path for r in receiver.got] == ["/hook"] * 3  # /moved never asked
        await sender.close()
        await receiver.stop()

    run(main)
    assert stored(tmp_path / "webhooks.db") == 0


def test_a_receiver_down_for_a_while_loses_nothing(tmp_path: Path) -> None:
    async def main() -> None:
        port = free_port()
        sender = WebhookSender(tmp_path / "webhooks.db", None, FAST)
        await sender.start()
        for n in (1, 2, 3):
            sender.enqueue(f"http://127.0.0.1:{port}/hook", event("CA1", n), "application/json", "CA1")
        await until(lambda: sender.stats.retried >= 3)
        assert sender.depth == 3
        receiver = Receiver()
        await receiver.start(port)
        await until(lambda: sender.stats.sent == 3)
        assert [json.loads(r.body)["sequence"] for r in receiver.got] == [1, 2, 3]
        assert all(r.signature == "" for r in receiver.got)  # no secret: no signature
        await sender.close()
        await receiver.stop()

    run(main)


def test_dropped_after_the_retry_window_counted_and_removed(tmp_path: Path) -> None:
    async def main() -> None:
        receiver = Receiver()
        receiver.by_body.append((b"CA1", [503] * 1000))
        await receiver.start()
        policy = RetryPolicy(window_s=0.5, first_s=0.05, max_s=0.1)
        sender = WebhookSender(tmp_path / "webhooks.db", SECRET, policy)
        await sender.start()
        sender.enqueue(receiver.url(), event("CA1", 1), "application/json", "CA1")
        sender.enqueue(receiver.url(), event("CA2", 1), "application/json", "CA2")
        await until(lambda: sender.stats.dropped == 1 and sender.stats.sent == 1)
        await until(lambda: sender.depth == 0)
        await sender.close()
        await receiver.stop()

    run(main)
    assert stored(tmp_path / "webhooks.db") == 0


CHILD = textwrap.dedent("""
    import asyncio, json, sys
    from pathlib import Path
    from bridge.ops.webhooks import RetryPolicy, WebhookSender

    async def main():
        sender = WebhookSender(Path(sys.argv[1]), "k", RetryPolicy(first_s=0.05, max_s=0.1))
        await sender.start()
        ids = [sender.enqueue(sys.argv[2], json.dumps({"n": n}).encode(), "application/json", "CA1")
               for n in range(1, 4)]
        while sender.stats.retried < 2:
            await asyncio.sleep(0.02)
        print(json.dumps(ids), flush=True)
        await asyncio.sleep(3600)

    asyncio.run(main())
""")


def test_sigkilled_with_events_pending_the_next_run_delivers_them_with_the_same_ids(tmp_path: Path) -> None:
    port = free_port()
    db = tmp_path / "state" / "webhooks.db"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(db), f"http://127.0.0.1:{port}/hook"],
                             stdout=subprocess.PIPE, text=True, cwd=ROOT,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert child.stdout is not None
        ids = json.loads(child.stdout.readline())
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    assert child.returncode == -signal.SIGKILL

    async def main() -> None:
        receiver = Receiver()
        await receiver.start(port)
        sender = WebhookSender(db, "k", FAST)
        assert await sender.start() == 3
        await until(lambda: sender.stats.sent == 3)
        assert [r.event_id for r in receiver.got] == ids
        assert [json.loads(r.body)["n"] for r in receiver.got] == [1, 2, 3]
        await sender.close()
        await receiver.stop()

    run(main)
    assert stored(db) == 0
