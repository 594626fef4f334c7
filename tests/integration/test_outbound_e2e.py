"""Outbound calls end to end: the bridge's call API places a call to sipp playing the customer's
phone, a real WebSocket bot streams it, and a real HTTP receiver gets the signed status webhooks.

One bridge for the module (api.listen, webhook secret, state_dir); each test its own sipp (the
destination is a sip: URI naming sipp's port, dialled as given).
"""

from __future__ import annotations

import base64
import email.parser
import email.policy
import json
import re
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from bridge.audio.g711 import ulaw_decode
from tests.botlib import TestBot
from tests.bridgelib import REPO, BridgeProcess
from tests.peerlib import SIPP_DIR, SippRun, free_udp_tcp_port, start_sipp

TOKEN = "outbound-test-token-7d1e"
SECRET = "webhook-secret-\u00e9"
SPEECH = SIPP_DIR.parent / "media" / "speech.pcmu"
OUT = "outbound/"


def documented_verifier() -> Any:
    code = re.search(r"```python\n(.*?)```", (REPO / "docs" / "webhooks.md").read_text(), re.S)
    assert code
    names: dict[str, Any] = {}
    exec(code.group(1), names)  # the docs' own verifier, as a user would paste it
    return names["verify"]


class Receiver:
    """A real HTTP receiver of webhooks on 127.0.0.1 (stdlib server on a thread)."""

    def __init__(self, port: int = 0) -> None:
        self.got: list[tuple[str, dict[str, str], bytes]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                outer.got.append((self.path, dict(self.headers), body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def events(self, path: str) -> list[dict[str, Any]]:
        return [json.loads(body) for p, _, body in self.got if p == path]

    def wait_event(self, path: str, event: str, timeout: float = 15.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            events = self.events(path)
            if any(e["event"] == event for e in events):
                return events
            time.sleep(0.05)
        raise TimeoutError(f"no {event} webhook at {path}: {self.events(path)}")


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[BridgeProcess, TestBot, Receiver]]:
    workdir = tmp_path_factory.mktemp("outbound")
    receiver = Receiver()
    with TestBot(echo=True) as bot:
        api_port = free_udp_tcp_port()
        bridge = BridgeProcess(
            workdir,
            bot.url,
            {
                "bot": {"chunk_ms": 20},
                "api": {"listen": f"127.0.0.1:{api_port}", "auth_token": TOKEN, "webhook_secret": SECRET},
                "outbound": {
                    "via": "sip:127.0.0.1:5999",
                    "allow_to": ["sip:*@127.0.0.1:*"],
                    "caller_id": "+914400000000",
                    "calls_per_second": 50,
                },
                "state_dir": str(workdir / "state"),
            },
        )
        bridge.api_port = api_port  # type: ignore[attr-defined]
        with bridge:
            yield bridge, bot, receiver
            assert bridge.stop() == 0
    receiver.server.shutdown()


def api(bridge: BridgeProcess, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{bridge.api_port}{path}",
        method=method,  # type: ignore[attr-defined]
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def place(bridge: BridgeProcess, sipp: SippRun, receiver: Receiver, hook: str, **fields: Any) -> str:
    status, doc = api(
        bridge,
        "POST",
        "/v1/calls",
        {
            "to": f"sip:+918012345678@127.0.0.1:{sipp.local_port}",
            "status_callback": receiver.url(hook),
            "custom_parameters": {"lead": "42"},
            **fields,
        },
    )
    assert status == 201, doc
    assert doc["status"] == "queued" and doc["direction"] == "outbound"
    return str(doc["call_sid"])


def wait_ended(bridge: BridgeProcess, sid: str, timeout: float = 20.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, doc = api(bridge, "GET", f"/v1/calls/{sid}")
        assert status == 200, doc
        if doc["status"] in ("completed", "busy", "no-answer", "failed", "canceled"):
            return dict(doc)
        time.sleep(0.1)
    raise TimeoutError(f"call {sid} still {doc['status']}")


def uas(workdir: Path, name: str, **kw: Any) -> SippRun:
    keys = {"audio": f"{SPEECH},1,0", "early": f"{SPEECH},1,0"}
    return start_sipp(workdir, None, SIPP_DIR / f"{OUT}{name}.xml", keys=keys, timeout=40, **kw)


def check_webhooks(receiver: Receiver, hook: str, sid: str, events: list[str], final: str) -> None:
    got = receiver.wait_event(hook, "completed")
    assert [e["event"] for e in got] == events and [e["sequence"] for e in got] == list(
        range(1, len(events) + 1)
    )
    assert got[-1]["status"] == final and all(e["call_sid"] == sid for e in got)
    verify = documented_verifier()
    for path, headers, body in receiver.got:
        if path == hook:
            assert verify(SECRET, body, headers["X-Bridge-Signature"]), headers
            assert headers["X-Bridge-Event-Id"]


def test_answered_the_bot_hears_the_customer_from_the_answer_then_delete(
    setup: tuple[BridgeProcess, TestBot, Receiver], tmp_path: Path
) -> None:
    bridge, bot, receiver = setup
    before = len(bot.streams)
    sipp = uas(tmp_path, "uas_answer")
    sid = place(bridge, sipp, receiver, "/answered")
    stream = bot.wait_stream(before)
    start = stream.start["start"]
    assert start["call_sid"] == sid and start["from"] == "+914400000000"
    assert start["to"] == f"sip:+918012345678@127.0.0.1:{sipp.local_port}"
    assert start["custom_parameters"] == {"lead": "42", "direction": "outbound"}
    time.sleep(2.5)
    status, live = api(bridge, "GET", f"/v1/calls/{sid}")
    assert live["status"] == "in-progress" and live["sip_status"] == 200 and live["stream_sid"]
    status, _ended = api(bridge, "DELETE", f"/v1/calls/{sid}")
    assert status == 200
    done = wait_ended(bridge, sid)
    assert (done["status"], done["end_reason"], done["disconnected_by"]) == ("completed", "api_hangup", "api")
    assert done["duration"] > 2
    bot.wait_closed(before)
    assert stream.names[-1] == "stop" and stream.of("stop")[0]["stop"]["reason"] == "stopped"
    # The customer's first words after the answer reach the bot, sample for sample.
    heard = stream.pcm()
    said = ulaw_decode(SPEECH.read_bytes()[:8000])  # the first second
    probe = said[4000:4800]  # 50 ms from a quarter second in
    at = heard.find(probe)
    assert at >= 0, "the customer's words never reached the bot unchanged"
    first = at - 4000  # where the customer's first sample sits in what the bot heard
    lost = max(0, -first) // 2
    assert lost == 0, f"the bot missed the first {lost} samples of the customer's audio"
    got = heard[first : first + len(said)]
    wrong = [i // 2 for i in range(0, len(said), 2) if got[i : i + 2] != said[i : i + 2]]
    assert not wrong, f"{len(wrong)} samples differ, first at {wrong[:5]}, last at {wrong[-5:]}"
    check_webhooks(receiver, "/answered", sid, ["initiated", "ringing", "answered", "completed"], "completed")
    result = sipp.wait(15)
    assert result.rc == 0, result.errors


@pytest.mark.parametrize(
    ("scenario", "status", "end_reason", "sip_status", "events"),
    [
        ("uas_busy", "busy", "busy", 486, ["initiated", "ringing", "completed"]),
        ("uas_unavailable", "failed", "sip_error", 503, ["initiated", "ringing", "completed"]),
    ],
)
def test_not_answered_never_reaches_the_bot(
    setup: tuple[BridgeProcess, TestBot, Receiver],
    tmp_path: Path,
    scenario: str,
    status: str,
    end_reason: str,
    sip_status: int,
    events: list[str],
) -> None:
    bridge, bot, receiver = setup
    before = len(bot.streams)
    sipp = uas(tmp_path, scenario)
    sid = place(bridge, sipp, receiver, f"/{scenario}")
    done = wait_ended(bridge, sid)
    assert (done["status"], done["end_reason"], done["sip_status"]) == (status, end_reason, sip_status)
    assert done["disconnected_by"] == "callee" and done["answered_at"] is None
    check_webhooks(receiver, f"/{scenario}", sid, events, status)
    assert len(bot.streams) == before
    assert sipp.wait(15).rc == 0


def test_no_answer_rings_out_and_delete_while_ringing_cancels(
    setup: tuple[BridgeProcess, TestBot, Receiver], tmp_path: Path
) -> None:
    bridge, _bot, receiver = setup
    sipp = uas(tmp_path, "uas_no_answer")
    sid = place(bridge, sipp, receiver, "/noanswer", ring_timeout=1)
    done = wait_ended(bridge, sid)
    assert (done["status"], done["end_reason"], done["sip_status"]) == ("no-answer", "no_answer", 487)
    assert sipp.wait(15).rc == 0
    sipp = uas(tmp_path, "uas_no_answer")
    sid = place(bridge, sipp, receiver, "/cancel")
    receiver.wait_event("/cancel", "ringing")
    status, _doc = api(bridge, "DELETE", f"/v1/calls/{sid}")
    assert status == 200
    done = wait_ended(bridge, sid)
    assert (done["status"], done["end_reason"], done["disconnected_by"], done["sip_status"]) == (
        "canceled",
        "canceled",
        "api",
        487,
    )
    assert api(bridge, "DELETE", f"/v1/calls/{sid}")[0] == 409
    assert sipp.wait(15).rc == 0


def test_the_customer_hangs_up_and_time_limit(
    setup: tuple[BridgeProcess, TestBot, Receiver], tmp_path: Path
) -> None:
    bridge, bot, receiver = setup
    before = len(bot.streams)
    sipp = uas(tmp_path, "uas_hangs_up", duration_ms=1500)
    sid = place(bridge, sipp, receiver, "/hangsup")
    done = wait_ended(bridge, sid)
    assert (done["status"], done["end_reason"], done["disconnected_by"]) == ("completed", "hangup", "callee")
    stream = bot.wait_closed(before)
    assert stream.of("stop")[0]["stop"]["reason"] == "callended"
    assert sipp.wait(15).rc == 0
    sipp = uas(tmp_path, "uas_answer")
    sid = place(bridge, sipp, receiver, "/limit", time_limit=1.5)
    done = wait_ended(bridge, sid)
    assert (done["status"], done["end_reason"], done["disconnected_by"]) == (
        "completed",
        "time_limit",
        "bridge",
    )
    assert 1.3 < done["duration"] < 4
    assert sipp.wait(15).rc == 0


def test_an_unreachable_bot_hangs_up_at_once(
    setup: tuple[BridgeProcess, TestBot, Receiver], tmp_path: Path
) -> None:
    bridge, _, receiver = setup
    dead = free_udp_tcp_port()
    sipp = uas(tmp_path, "uas_answer")
    sid = place(bridge, sipp, receiver, "/unreachable", bot_url=f"ws://127.0.0.1:{dead}/nobody")
    done = wait_ended(bridge, sid)
    assert (done["status"], done["end_reason"], done["disconnected_by"]) == (
        "failed",
        "bot_unreachable",
        "bridge",
    )
    assert sipp.wait(15).rc == 0


def test_early_media_streams_from_the_183(
    setup: tuple[BridgeProcess, TestBot, Receiver], tmp_path: Path
) -> None:
    bridge, bot, receiver = setup
    before = len(bot.streams)
    sipp = uas(tmp_path, "uas_early_media")
    sid = place(bridge, sipp, receiver, "/early", early_media=True)
    stream = bot.wait_stream(before)
    assert stream.start["start"]["custom_parameters"]["early_media"] == "true"
    _status, doc = api(bridge, "GET", f"/v1/calls/{sid}")
    assert doc["status"] == "ringing"  # streaming, not answered yet (the 200 comes 1.5 s after the 183)
    time.sleep(2.5)
    assert api(bridge, "GET", f"/v1/calls/{sid}")[1]["status"] == "in-progress"
    assert any(b != 0 for b in stream.pcm()[:16000])  # the announcement reached the bot
    api(bridge, "DELETE", f"/v1/calls/{sid}")
    assert wait_ended(bridge, sid)["status"] == "completed"
    assert sipp.wait(15).rc == 0


def test_the_call_command(setup: tuple[BridgeProcess, TestBot, Receiver], tmp_path: Path) -> None:
    bridge, _, _ = setup
    sipp = uas(tmp_path, "uas_hangs_up", duration_ms=1000)
    command = [
        sys.executable,
        "-m",
        "bridge",
        "call",
        "--profile",
        str(bridge.profile_path),
        "--to",
        f"sip:+918012345678@127.0.0.1:{sipp.local_port}",
        "--wait",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=REPO)
    lines = done.stdout.splitlines()
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert lines[1:3] == ["ringing", "in-progress"] and lines[-1].startswith("completed (completed, ")
    assert lines[-1].endswith(", hangup)")
    assert sipp.wait(15).rc == 0
    sipp = uas(tmp_path, "uas_busy")
    command[-2] = f"sip:+918012345678@127.0.0.1:{sipp.local_port}"
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=REPO)
    assert done.returncode == 1 and done.stdout.splitlines()[-1] == "completed (busy, 0 s, busy)"
    assert sipp.wait(15).rc == 0


def test_refusals_over_the_wire(setup: tuple[BridgeProcess, TestBot, Receiver]) -> None:
    bridge, _, _ = setup
    status, doc = api(bridge, "POST", "/v1/calls", {"to": "+15550100"})
    assert (status, doc["error"]["code"]) == (403, "destination_not_allowed")
    status, doc = api(
        bridge, "POST", "/v1/calls", {"to": "sip:x@127.0.0.1:5", "bot_url": "ws://evil.example/"}
    )
    assert (status, doc["error"]["code"]) == (400, "bot_url_not_allowed")
    assert TOKEN not in bridge.log_text()
    assert base64.b64encode(TOKEN.encode()).decode() not in bridge.log_text()


def test_exotel_connect_and_its_callbacks(
    setup: tuple[BridgeProcess, TestBot, Receiver], tmp_path: Path
) -> None:
    bridge, bot, receiver = setup
    before = len(bot.streams)
    sipp = uas(tmp_path, "uas_hangs_up", duration_ms=1000)
    form = urllib.parse.urlencode(
        [
            ("From", f"sip:+918012345678@127.0.0.1:{sipp.local_port}"),
            ("CallerId", "08012345678"),
            ("StreamType", "bidirectional"),
            ("CustomField", "order=7"),
            ("StatusCallback", receiver.url("/exotel")),
            ("StatusCallbackEvents[0]", "answered"),
        ]
    ).encode()
    basic = base64.b64encode(f"key:{TOKEN}".encode()).decode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{bridge.api_port}/v1/Accounts/sip-ws-bridge/Calls/connect.json",  # type: ignore[attr-defined]
        data=form,
        method="POST",
        headers={"Authorization": f"Basic {basic}", "Content-Type": "application/x-www-form-urlencoded"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        call = json.loads(response.read())["Call"]
    assert call["Status"] == "queued" and call["To"] == "08012345678" and call["Direction"] == "outbound-api"
    stream = bot.wait_stream(before)
    assert stream.start["start"]["custom_parameters"]["CustomField"] == "order=7"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and len([g for g in receiver.got if g[0] == "/exotel"]) < 2:
        time.sleep(0.05)
    callbacks = []
    for path, headers, body in receiver.got:
        if path != "/exotel":
            continue
        assert headers["Content-Type"].startswith("multipart/form-data")
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            f"Content-Type: {headers['Content-Type']}\r\n\r\n".encode() + body
        )
        callbacks.append(
            {
                part.get_param("name", header="content-disposition"): part.get_content()
                for part in message.iter_parts()
            }
        )
        assert documented_verifier()(SECRET, body, headers["X-Bridge-Signature"])
    assert [(c["EventType"], c["Status"]) for c in callbacks] == [
        ("answered", "in-progress"),
        ("terminal", "completed"),
    ]
    terminal = callbacks[-1]
    assert terminal["CallSid"] == call["Sid"] and terminal["CustomField"] == "order=7"
    assert terminal["Legs[0][Status]"] == "completed" and int(terminal["ConversationDuration"]) >= 0
    assert terminal["To"] == "08012345678" and terminal["Direction"] == "outbound-api"
    assert sipp.wait(15).rc == 0


def test_a_bridge_killed_with_webhooks_pending_delivers_them_after_restart(tmp_path: Path) -> None:
    """The receiver is down while a call ends; the bridge is SIGKILLed; a new bridge on the same
    state_dir delivers every event, with the event ids the first one stored."""
    hook_port = free_udp_tcp_port()
    hook = f"http://127.0.0.1:{hook_port}/late"
    with TestBot(echo=True) as bot:
        api_port = free_udp_tcp_port()
        overrides = {
            "api": {"listen": f"127.0.0.1:{api_port}", "auth_token": TOKEN, "webhook_secret": SECRET},
            "outbound": {"via": "sip:127.0.0.1:5999", "allow_to": ["sip:*@127.0.0.1:*"]},
            "state_dir": str(tmp_path / "state"),
        }
        first = BridgeProcess(tmp_path, bot.url, overrides)
        first.api_port = api_port  # type: ignore[attr-defined]
        first.start()
        sipp = uas(tmp_path, "uas_busy")
        status, doc = api(
            first,
            "POST",
            "/v1/calls",
            {"to": f"sip:+918012345678@127.0.0.1:{sipp.local_port}", "status_callback": hook},
        )
        assert status == 201
        assert wait_ended(first, doc["call_sid"])["status"] == "busy"
        db = tmp_path / "state" / "webhooks.db"
        deadline = time.monotonic() + 10
        stored: list[tuple[str, bytes]] = []
        while time.monotonic() < deadline and len(stored) < 3:
            with sqlite3.connect(db) as conn:
                stored = [
                    (str(r[0]), bytes(r[1]))
                    for r in conn.execute("SELECT event_id, body FROM webhooks ORDER BY row")
                ]
            time.sleep(0.1)
        assert len(stored) == 3, stored  # initiated, ringing, completed: none delivered yet
        assert first.proc is not None
        first.proc.kill()
        first.proc.wait(10)
        assert sipp.wait(15).rc == 0
        receiver = Receiver(hook_port)
        second = BridgeProcess(tmp_path, bot.url, overrides)
        with second:
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and len(receiver.got) < 3:
                time.sleep(0.05)
        got = [(headers["X-Bridge-Event-Id"], body) for _, headers, body in receiver.got]
        assert got == stored
        assert [json.loads(body)["event"] for _, body in got] == ["initiated", "ringing", "completed"]
        receiver.server.shutdown()
