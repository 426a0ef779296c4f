"""API v2 policy as plain functions: answers in, records or typed errors out."""

from __future__ import annotations

import json

import pytest

from watcher_auth import (
    ConfigurationError,
    InvalidCredentials,
    TokenPair,
    WatcherProtocolError,
    WatcherUnavailable,
)
from watcher_auth.v2._policy import (
    check_secret,
    credential_headers,
    login_failure,
    parse_login_response,
    strip_credential_headers,
    user_key_pair,
    whoami_answer,
)

JSON_403 = json.dumps({"errors": [{"status": "403", "code": "forbidden", "title": "No"}]}).encode()
HTML_403 = b"<html><body><h1>403 Forbidden</h1>nginx</body></html>"


def test_a_login_answer_becomes_a_session_record() -> None:
    body = json.dumps({"session": "W98uOoiMFf46SyE78RjWIZjsaVM", "login": "alice"}).encode()
    pair = parse_login_response(200, body, username="Alice", received_at=1000.0)
    assert pair.access_token == "W98uOoiMFf46SyE78RjWIZjsaVM"
    assert (pair.scheme, pair.username, pair.connected_at) == ("session", "alice", 1000.0)
    assert (pair.refresh_token, pair.expires_at) == (None, None)
    assert "W98uOoiMFf46SyE78RjWIZjsaVM" not in repr(pair)


@pytest.mark.parametrize(
    "body", [b"not json", b"[]", b"{}", b'{"session": ""}', b'{"session": 42}']
)
def test_a_login_answer_without_a_session_is_a_protocol_error(body: bytes) -> None:
    with pytest.raises(WatcherProtocolError):
        parse_login_response(200, body, username="alice", received_at=0.0)


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (403, JSON_403, InvalidCredentials),
        (403, b"", InvalidCredentials),
        (401, JSON_403, InvalidCredentials),
        (403, HTML_403, WatcherProtocolError),
        (500, JSON_403, WatcherUnavailable),
        (502, HTML_403, WatcherUnavailable),
        (429, b"", WatcherUnavailable),
        (404, b"", WatcherProtocolError),
        (400, JSON_403, WatcherProtocolError),
    ],
)
def test_login_failures_mean_what_their_status_says(
    status: int, body: bytes, error: type[Exception]
) -> None:
    assert type(login_failure(status, body)) is error
    with pytest.raises(error):
        parse_login_response(status, body, username="alice", received_at=0.0)


def test_whoami_tells_alive_from_dead_and_refuses_to_guess() -> None:
    assert whoami_answer(200, b'{"login": "alice"}') == {"login": "alice"}
    assert whoami_answer(403, JSON_403) is None
    assert whoami_answer(403, b"") is None
    with pytest.raises(WatcherProtocolError):
        whoami_answer(403, HTML_403)  # a proxy's page says nothing about the session
    with pytest.raises(WatcherProtocolError):
        whoami_answer(200, b"<html>")
    with pytest.raises(WatcherUnavailable):
        whoami_answer(503, b"")
    with pytest.raises(WatcherProtocolError):
        whoami_answer(401, b"")


def test_a_record_is_presented_by_its_scheme() -> None:
    session = TokenPair("s-1", username="alice", scheme="session")
    key = user_key_pair("alice", "k-1", received_at=5.0)
    assert credential_headers(session) == {"x-vsaas-session": "s-1"}
    assert credential_headers(key) == {"x-vsaas-api-key": "k-1", "x-vsaas-user": "alice"}
    with pytest.raises(WatcherProtocolError):
        credential_headers(TokenPair("t", scheme="jwt"))


def test_credential_headers_are_stripped_in_any_case_or_spelling() -> None:
    headers = {
        "X-Vsaas-Session": "s",
        "x-vsaas-api-key": "k",
        "X-VSAAS-APIKEY": "k",
        "X-Vsaas-User": "u",
        "Accept": "application/json",
    }
    strip_credential_headers(headers)
    assert headers == {"Accept": "application/json"}


@pytest.mark.parametrize("value", ["", " s3cr3t", "s3cr3t\n", "s3c\rr3t", "s3crét", None, 42])
def test_a_key_that_cannot_travel_in_a_header_is_refused_without_showing_it(
    value: object,
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        check_secret(value, "user API key")
    assert "user API key" in str(caught.value)
    if isinstance(value, str) and value.strip():
        assert value.strip() not in str(caught.value)
