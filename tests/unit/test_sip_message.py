from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from bridge.sip.message import parse_headers, printable, uri_host, uri_user

INVITE = (
    "INVITE sip:bot@10.0.0.1:5060 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 10.0.0.2:5060;branch=z9hG4bK1\r\n"
    "f: \"Alice\" <sip:+15551234@pbx.example.com>;tag=1\r\n"
    "t: <sip:bot@10.0.0.1>\r\n"
    "i: abc@10.0.0.2\r\n"
    "X-Customer-Id: c-42\r\n"
    "X-Folded: first\r\n"
    "  second\r\n"
    "no colon line\r\n"
    "\r\n"
    "v=0\r\n"
)


def test_headers_in_order_with_compact_forms_expanded_and_folds_joined() -> None:
    headers = parse_headers(INVITE)
    names = [n for n, _ in headers]
    assert names == ["Via", "From", "To", "Call-ID", "X-Customer-Id", "X-Folded"]
    assert dict(headers)["X-Folded"] == "first second"
    assert dict(headers)["X-Customer-Id"] == "c-42"


def test_body_is_not_parsed_as_headers() -> None:
    assert all(n != "v" for n, _ in parse_headers(INVITE))


def test_uri_user_and_host() -> None:
    assert uri_user('"Alice" <sip:+15551234@pbx.example.com>;tag=1') == "+15551234"
    assert uri_user("sip:bot@10.0.0.1:5060") == "bot"
    assert uri_user("tel:+4930123") == "+4930123"
    assert uri_user("<sip:10.0.0.1>") == "sip:10.0.0.1"
    assert uri_host("sip:bot@10.0.0.1:5060;transport=tcp") == "10.0.0.1:5060"


@given(st.text())
def test_parsing_anything_never_raises(text: str) -> None:
    parse_headers(text)
    uri_user(text)
    uri_host(text)


def test_printable_replaces_bytes_that_were_not_utf8_and_keeps_the_rest() -> None:
    # The SIP stack hands non-UTF-8 bytes over as lone surrogates (surrogateescape).
    received = b"Alice \xc3\x28 \xe2\x82\xac".decode("utf-8", "surrogateescape")
    cleaned = printable(received)
    assert cleaned == "Alice \ufffd( \u20ac"
    cleaned.encode("utf-8")  # now safe for JSON and logs
    assert printable("plain ☎") == "plain ☎"
