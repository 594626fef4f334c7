"""The RFC 4475 torture messages and the RFC 5118 IPv6 set (tests/faults/corpus/, bytes exact),
each sent to one running bridge, and its answer checked against what the RFCs ask of a user
agent server and what docs/security.md says the bridge answers. After the batch the bridge
still answers OPTIONS, takes a normal call, and exits 0 on SIGTERM.

Over UDP the answer goes to the top Via's sent-by (RFC 3261 18.2.2): those are the RFCs' hosts,
so the test sends each message with that sent-by made 127.0.0.1:<its own port>, and its branch
made unique (the RFCs reuse branches, and a reused branch is a retransmission to PJSIP); nothing
else of the message changes. Over TCP the answer comes back on the connection, so the messages
whose framing is the point go as they are, byte for byte.

The profile asks for digest credentials: every INVITE that passes all the checks before a call
gets 401 and no call, so no answer ever carries media towards the RFCs' addresses.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.botlib import TestBot
from tests.bridgelib import BridgeProcess
from tests.faults.faultlib import record, run_caller, start_bridge
from tests.faults.wire import Wire, header, status

pytestmark = [pytest.mark.timeout(300)]

CORPUS = Path(__file__).parent / "corpus"
AUTH = {"sip": {"inbound_auth": {"username": "torture", "password": "torture-pw-4475"}}}
SILENT = 0  # no answer: a response (never answered, RFC 3261 18.1.2) or bytes still to come


@dataclass(frozen=True)
class Expect:
    udp: tuple[int, ...]  # the acceptable final answers over UDP (SILENT: none)
    why: str
    tcp: tuple[int, ...] | None = None  # sent over TCP too, as they are, when set


CHALLENGED = (401,)  # an INVITE that passed every check before a call
TAKEN = "parsed and served"
LENIENT = "PJSIP reads it leniently and the meaning is unambiguous (RFC 4475 allows a liberal parser)"

EXPECTED: dict[str, Expect] = {
    # RFC 4475 3.1.1: valid messages
    "rfc4475/wsinv": Expect((481,), "a To tag: a re-INVITE for a dialog the bridge does not have", (481,)),
    "rfc4475/intmeth": Expect((501,), "an unknown method (RFC 3261 8.2.1), with Allow"),
    "rfc4475/esc01": Expect(CHALLENGED, TAKEN),
    "rfc4475/escnull": Expect((405,), "REGISTER: not a registrar"),
    "rfc4475/esc02": Expect((501,), "RE%47IST%45R is a method of its own, not REGISTER"),
    "rfc4475/lwsdisp": Expect((200,), TAKEN),
    "rfc4475/longreq": Expect(CHALLENGED, TAKEN, CHALLENGED),
    "rfc4475/dblreq": Expect((405,), "the REGISTER; the INVITE after its body is noise in a datagram "
                             "(RFC 3261 18.3), a second request on a stream", (405,)),
    "rfc4475/semiuri": Expect((200,), TAKEN),
    "rfc4475/transports": Expect((200,), TAKEN),
    "rfc4475/mpart01": Expect((405,), "MESSAGE: not a message server", (405,)),
    "rfc4475/unreason": Expect((SILENT,), "a response"),
    "rfc4475/noreason": Expect((SILENT,), "a response"),
    # RFC 4475 3.1.2: invalid messages
    "rfc4475/badinv01": Expect((400,), "unparseable Via", (400,)),
    "rfc4475/clerr": Expect((400,), "Content-Length past the datagram; on a stream the rest is awaited",
                            (SILENT,)),
    "rfc4475/ncl": Expect((400,), "negative Content-Length; a stream so framed is closed", (400,)),
    "rfc4475/scalar02": Expect((400,), "values past their range"),
    "rfc4475/scalarlg": Expect((SILENT,), "a response"),
    "rfc4475/quotbal": Expect((400,), "unterminated quoted string"),
    "rfc4475/ltgtruri": Expect((400,), "<> around the Request-URI"),
    "rfc4475/lwsruri": Expect((400,), "LWS inside the Request-URI"),
    "rfc4475/lwsstart": Expect((400,), "several SP in the Request-Line"),
    "rfc4475/trws": Expect((400,), "SP after the SIP version"),
    "rfc4475/escruri": Expect(CHALLENGED, "the escaped headers in the Request-URI are ignored (allowed)"),
    "rfc4475/baddate": Expect(CHALLENGED, "an invalid Date is ignored (the RFC allows accepting it)"),
    "rfc4475/regbadct": Expect((400,), "a Contact URI with headers outside <>"),
    "rfc4475/badaspec": Expect((200,), LENIENT),
    "rfc4475/baddn": Expect((200,), LENIENT),
    "rfc4475/badvers": Expect((505,), "SIP/7.0"),
    "rfc4475/mismatch01": Expect((400,), "CSeq method not the request's"),
    "rfc4475/mismatch02": Expect((400,), "CSeq method not the request's"),
    "rfc4475/bigcode": Expect((SILENT,), "a response"),
    # RFC 4475 3.2 and 3.3: transaction and application layer
    "rfc4475/badbranch": Expect((200,), "RFC 2543 transaction matching"),
    "rfc4475/insuf": Expect((400,), "no Call-ID, From or To: answered with the Via and CSeq it has"),
    "rfc4475/unkscm": Expect((416,), "RFC 3261 8.2.2.1"),
    "rfc4475/novelsc": Expect((416,), "RFC 3261 8.2.2.1"),
    "rfc4475/unksm2": Expect((405,), "REGISTER: not a registrar"),
    "rfc4475/bext01": Expect((420,), "RFC 3261 8.2.2.3, with Unsupported"),
    "rfc4475/invut": Expect((415,), "a body the bridge cannot read (RFC 3261 8.2.3), with Accept"),
    "rfc4475/regaut01": Expect((400,), "PJSIP cannot parse an unknown Authorization scheme (ideal: 405)"),
    "rfc4475/multi01": Expect((400,), "several values in single-valued headers", (400,)),
    "rfc4475/mcl01": Expect((400,), "several Content-Length values", (400,)),
    "rfc4475/bcast": Expect((SILENT,), "a response"),
    "rfc4475/zeromf": Expect((200,), "Max-Forwards 0 to the element it names"),
    "rfc4475/cparam01": Expect((405,), "REGISTER: not a registrar"),
    "rfc4475/cparam02": Expect((405,), "REGISTER: not a registrar"),
    "rfc4475/regescrt": Expect((405,), "REGISTER: not a registrar"),
    "rfc4475/sdp01": Expect((406,), "Accept without application/sdp"),
    "rfc4475/inv2543": Expect((400,), "no Contact (RFC 3261 8.1.1.8): no BYE could reach the caller; "
                              "on a stream, no Content-Length either", (400,)),
    # RFC 5118: IPv6 (the bridge listens on IPv4 here)
    "rfc5118/ipv6-good": Expect((405,), "REGISTER: not a registrar"),
    "rfc5118/ipv6-bad": Expect((400,), "an IPv6 Request-URI without brackets"),
    "rfc5118/port-ambiguous": Expect((405,), "REGISTER: not a registrar"),
    "rfc5118/port-unambiguous": Expect((405,), "REGISTER: not a registrar"),
    "rfc5118/via-received-param-with-delim": Expect((481,), "BYE outside a dialog"),
    "rfc5118/via-received-param-no-delim": Expect((200,), TAKEN),
    "rfc5118/ipv6-in-sdp": Expect((488,), "IPv6 media on an IPv4 bridge"),
    "rfc5118/mult-ip-in-header": Expect((481,), "BYE outside a dialog"),
    "rfc5118/mult-ip-in-sdp": Expect((488,), "IPv6 Contact on an IPv4 bridge"),
    "rfc5118/ipv4-mapped-ipv6": Expect((488,), "IPv6 media on an IPv4 bridge"),
    "rfc5118/ipv6-bug-abnf-3-colons": Expect((400,), "not an IPv6 address"),
    "rfc5118/ipv6-correct-abnf-2-colons": Expect((200,), TAKEN),
}

# The top Via's sent-by (after any LWS the RFCs put in the sent-protocol) and its branch.
_SENT_BY = re.compile(rb"(?im)^(?:via|v)[ \t]*:(?:[^\r\n]|\r\n[ \t])*?SIP\s*/\s*[\d.]+\s*/\s*[a-z]+\s+"
                      rb"(\[[^\]\r\n]*\]|[^\s;:,]+)(\s*:\s*\d+)?")
_BRANCH = re.compile(rb"(?i)(branch\s*=\s*)([^\s;,]+)")
_sends = itertools.count(1)


def addressed_to(data: bytes, port: int) -> bytes:
    """`data` with its top Via answering to 127.0.0.1:`port` and a branch no other send has."""
    sent_by = _SENT_BY.search(data)
    if sent_by is None:  # a response, or no Via at all: sent as it is
        return data
    end = sent_by.end(2) if sent_by.group(2) else sent_by.end(1)
    data = data[:sent_by.start(1)] + b"127.0.0.1:%d" % port + data[end:]
    line_end = data.find(b"\r\n", sent_by.start(1))
    branch = _BRANCH.search(data, sent_by.start(1), line_end)
    if branch is not None:
        data = data[:branch.end(2)] + b"-t%d" % next(_sends) + data[branch.end(2):]
    return data


def corpus() -> dict[str, bytes]:
    return {f"{p.parent.name}/{p.stem}": p.read_bytes() for p in sorted(CORPUS.glob("rfc*/*.sip"))}


def final_answer(got: list[str]) -> str:
    finals = [m for m in got if status(m) >= 200]
    return finals[0] if finals else ""


def top_branch(data: bytes) -> str:
    """The branch of the top Via ("" for none): what the peer's transaction matches answers by."""
    sent_by = _SENT_BY.search(data)
    if sent_by is None:
        return ""
    branch = _BRANCH.search(data, sent_by.start(1), data.find(b"\r\n", sent_by.start(1)))
    return branch.group(2).decode() if branch else ""


def send_all(bridge: BridgeProcess, transport: str) -> dict[str, tuple[str, str]]:
    """Message name -> (the top Via branch sent, the final answer or "")."""
    answers: dict[str, tuple[str, str]] = {}
    for name, data in corpus().items():
        if transport == "TCP" and EXPECTED[name].tcp is None:
            continue
        with Wire(bridge.sip_port, transport) as wire:
            sent = addressed_to(data, wire.local_port) if transport == "UDP" else data
            wire.send(sent)
            answers[name] = (top_branch(sent), final_answer(wire.answers(1.5)))
    return answers


def test_the_corpus_is_complete_and_exact() -> None:
    """49 RFC 4475 messages, 12 RFC 5118 ones, each CRLF-framed as the RFCs give them."""
    messages = corpus()
    assert sorted(messages) == sorted(EXPECTED)
    assert len([n for n in messages if n.startswith("rfc4475/")]) == 49
    for name, data in messages.items():
        head = data.split(b"\r\n\r\n", 1)[0]
        assert b"\n" not in head.replace(b"\r\n", b""), f"{name}: a bare LF in the header"


@pytest.mark.parametrize("transport", ["UDP", "TCP"])
def test_every_torture_message_gets_the_answer_the_rfcs_ask_for(tmp_path: Path, transport: str) -> None:
    with TestBot(echo=True) as bot:
        bridge = start_bridge(tmp_path, bot.url, AUTH)
        try:
            answers = send_all(bridge, transport)
            assert bridge.proc is not None and bridge.proc.poll() is None, bridge.log_text()[-3000:]
            with Wire(bridge.sip_port, transport) as wire:
                assert wire.exchange(wire.request("OPTIONS")) == 200
            call = run_caller(bridge.uri, tmp_path, "--auth", "torture:torture-pw-4475", "--hold", "0.3")
            log = bridge.log_text()
        finally:
            rc = bridge.stop()
        assert rc == 0, f"exit status {rc}:\n{bridge.log_text()[-3000:]}"
    assert call["answered"], call
    wrong = {}
    for name, (branch, answer) in answers.items():
        expect = EXPECTED[name]
        allowed = expect.udp if transport == "UDP" else expect.tcp
        if status(answer) not in (allowed or ()):
            wrong[name] = f"{status(answer) or 'nothing'}, expected {allowed}: {expect.why}"
        code = status(answer)
        if code in (405, 501) and "INVITE" not in (header(answer, "Allow") or ""):
            wrong[name] = f"{code} without Allow"
        if code == 420 and not header(answer, "Unsupported"):
            wrong[name] = "420 without Unsupported"
        if code == 415 and "application/sdp" not in (header(answer, "Accept") or ""):
            wrong[name] = "415 without Accept"
        if answer and branch not in (header(answer, "Via") or header(answer, "v") or ""):
            wrong[name] = f"{code} whose Via does not carry the request's branch {branch}"
    assert not wrong, wrong
    assert "Internal Server Error" not in log
    record("sip", f"RFC 4475/5118 torture corpus ({transport}) -> the RFCs' answers, bridge alive",
           injected=len(answers), bad_inputs=len(answers))
