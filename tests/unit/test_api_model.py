"""The call API's request model: every field check with its code and field, the Exotel form's
spellings, the allow-list matchers, and a fuzz test (whatever the bytes: a CallRequest or an ApiError,
never another exception)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.ops.api_model import (
    ERROR_STATUS,
    MAX_BODY_BYTES,
    STATUS_EVENTS,
    ApiError,
    CallRequest,
    callback_host_allowed,
    destination_allowed,
    parse_call_request,
    parse_exotel_connect,
)

JSON = "application/json"


def native(doc: object, content_type: str | None = JSON) -> CallRequest:
    return parse_call_request(json.dumps(doc).encode(), content_type)


def refused(doc: object, content_type: str | None = JSON) -> ApiError:
    with pytest.raises(ApiError) as info:
        native(doc, content_type) if not isinstance(doc, bytes) else parse_call_request(doc, content_type)
    return info.value


def test_a_full_native_request() -> None:
    request = native(
        {
            "to": "+918012345678",
            "from": "+914412345678",
            "bot_url": "wss://bot.example.com/s?sample-rate=16000",
            "custom_parameters": {"lead": "42"},
            "headers": {"X-Campaign": "renewals"},
            "ring_timeout": 20,
            "time_limit": 600.5,
            "record": True,
            "early_media": True,
            "status_callback": "https://hooks.example.com/a",
            "status_callback_events": ["completed", "ringing"],
        },
        "application/json; charset=utf-8",
    )
    assert request == CallRequest(
        to="+918012345678",
        from_="+914412345678",
        bot_url="wss://bot.example.com/s?sample-rate=16000",
        custom_parameters={"lead": "42"},
        headers={"X-Campaign": "renewals"},
        ring_timeout=20.0,
        time_limit=600.5,
        record=True,
        early_media=True,
        status_callback="https://hooks.example.com/a",
        status_callback_events=("ringing", "completed"),
    )


def test_defaults() -> None:
    request = native({"to": "sip:alice@pbx.example.com"})
    assert request.ring_timeout == 30 and request.time_limit == 3600
    assert request.status_callback_events == STATUS_EVENTS and not request.record and not request.exotel


@pytest.mark.parametrize(
    ("doc", "code", "field"),
    [
        ({}, "invalid_field", "to"),
        ({"to": ""}, "invalid_field", "to"),
        ({"to": "call me"}, "invalid_field", "to"),
        ({"to": "sip:nobody"}, "invalid_field", "to"),
        ({"to": 918012345678}, "invalid_field", "to"),
        ({"to": "123", "custom_parameters": {"n": 1}}, "invalid_field", "custom_parameters.n"),
        ({"to": "123", "custom_parameters": ["a"]}, "invalid_field", "custom_parameters"),
        ({"to": "123", "headers": {"Contact": "x"}}, "invalid_field", "headers.Contact"),
        ({"to": "123", "headers": {"X-A": "a\r\nVia: evil"}}, "invalid_field", "headers.X-A"),
        ({"to": "123", "ring_timeout": -1}, "invalid_field", "ring_timeout"),
        ({"to": "123", "ring_timeout": "30"}, "invalid_field", "ring_timeout"),
        ({"to": "123", "time_limit": True}, "invalid_field", "time_limit"),
        ({"to": "123", "record": "yes"}, "invalid_field", "record"),
        ({"to": "123", "bot_url": "http://bot"}, "invalid_field", "bot_url"),
        ({"to": "123", "status_callback": "ftp://x"}, "invalid_field", "status_callback"),
        ({"to": "123", "status_callback_events": ["hangup"]}, "invalid_field", "status_callback_events"),
        ({"to": "123", "t\u043e": "cyrillic o"}, "invalid_field", "t\u043e"),
    ],
)
def test_field_errors_name_the_field(doc: dict[str, object], code: str, field: str) -> None:
    error = refused(doc)
    assert (error.code, error.field, error.status) == (code, field, 400)
    assert error.body()["error"] == {"code": code, "message": error.message, "field": field}


def test_the_checks_run_in_the_contract_order() -> None:
    big = b"{" + b" " * MAX_BODY_BYTES + b"}"
    assert refused(big, "text/plain").code == "body_too_large"  # size before content type
    assert refused(b"not json", "text/plain").code == "unsupported_media_type"  # type before syntax
    assert refused(b"not json").code == "invalid_json"
    assert refused(b"[1]").code == "invalid_json"
    assert refused(b"\xff\xfe").code == "invalid_json"
    assert refused(b"{}", None).code == "unsupported_media_type"


def test_exotel_connect_form_as_its_clients_send_it() -> None:
    request = parse_exotel_connect(
        [
            ("From", "09876543210"),
            ("CallerId", "080XXXX1234"),
            ("StreamUrl", "wss://bot.example.com/x"),
            ("StreamType", "bidirectional"),
            ("TimeLimit", "900"),
            ("TimeOut", "25"),
            ("CustomField", "order=7"),
            ("Record", "true"),
            ("StatusCallback", "https://hooks.example.com/exotel"),
            ("StatusCallbackEvents[0]", "answered"),
            ("StatusCallbackEvents[1]", "ringing"),
            ("StatusCallbackContentType", "application/json"),
            ("StreamName", "ignored"),
        ]
    )
    assert request.to == "09876543210" and request.from_ == "080XXXX1234"
    assert request.custom_parameters == {"CustomField": "order=7"}
    assert (request.time_limit, request.ring_timeout, request.record) == (900.0, 25.0, True)
    assert request.status_callback_events == ("ringing", "answered", "terminal")
    assert request.callback_content_type == "application/json" and request.exotel


def test_exotel_lower_case_names_repeated_events_and_defaults() -> None:
    request = parse_exotel_connect(
        [
            ("from", "+15550100"),
            ("streamurl", "ws://127.0.0.1:8765/"),
            ("StatusCallbackEvents[]", "ringing"),
            ("StatusCallbackEvents", "terminal"),
        ]
    )
    assert request.status_callback_events == ("ringing", "terminal")
    assert request.callback_content_type == "multipart/form-data" and request.from_ is None


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ([("From", "1"), ("To", "2")], "To"),
        ([("StreamType", "unidirectional"), ("From", "1")], "StreamType"),
        ([("CallerId", "1")], "From"),
        ([("From", "1"), ("TimeLimit", "ten")], "TimeLimit"),
        ([("From", "1"), ("Record", "maybe")], "Record"),
        ([("From", "1"), ("StatusCallbackEvents[0]", "completed")], "StatusCallbackEvents"),
        ([("From", "1"), ("StatusCallbackContentType", "text/xml")], "StatusCallbackContentType"),
    ],
)
def test_exotel_errors(fields: list[tuple[str, str]], field: str) -> None:
    with pytest.raises(ApiError) as info:
        parse_exotel_connect(fields)
    assert info.value.field == field and info.value.status == 400
    assert info.value.exotel_body()["RestException"]["Status"] == 400


def test_destination_allow_list_denies_by_default() -> None:
    assert not destination_allowed("+918012345678", [])
    assert destination_allowed("+918012345678", ["+9180*"])
    assert not destination_allowed("+918112345678", ["+9180*"])
    assert destination_allowed("sip:Alice@PBX.example.com", ["sip:*@pbx.example.com"])


def test_callback_hosts_default_to_loopback() -> None:
    for url in ("http://127.0.0.1:9/x", "http://localhost/x", "http://[::1]:80/", "https://127.8.0.1/"):
        assert callback_host_allowed(url, None), url
    for url in ("http://10.0.0.1/x", "http://hooks.example.com/", "http:///nohost"):
        assert not callback_host_allowed(url, None), url
    assert callback_host_allowed("https://hooks.example.com/a", ["*.example.com"])
    assert not callback_host_allowed("http://127.0.0.1/", ["*.example.com"])


def test_every_error_code_has_a_status() -> None:
    assert set(ERROR_STATUS.values()) <= {400, 401, 403, 404, 409, 413, 415, 429, 503}
    with pytest.raises(ValueError):
        ApiError("no_such_code", "x")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
field_names = st.sampled_from(
    [
        "to",
        "from",
        "bot_url",
        "custom_parameters",
        "headers",
        "ring_timeout",
        "time_limit",
        "record",
        "early_media",
        "status_callback",
        "status_callback_events",
        "other",
    ]
)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(field_names, json_values, max_size=8))
def test_fuzz_native_documents(doc: dict[str, object]) -> None:
    try:
        native(doc)
    except ApiError as error:
        assert error.status in (400, 413, 415) and error.message


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_native_bytes(body: bytes) -> None:
    try:
        parse_call_request(body, JSON)
    except ApiError as error:
        assert error.status == 400


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(
                [
                    "From",
                    "CallerId",
                    "StreamUrl",
                    "TimeLimit",
                    "TimeOut",
                    "Record",
                    "StatusCallback",
                    "StatusCallbackEvents[0]",
                    "CustomField",
                    "StreamType",
                    "StatusCallbackContentType",
                    "x",
                ]
            ),
            st.text(max_size=30),
        ),
        max_size=8,
    )
)
def test_fuzz_exotel_forms(fields: list[tuple[str, str]]) -> None:
    try:
        parse_exotel_connect(fields)
    except ApiError as error:
        assert error.status == 400
