"""The web error policy as plain data, the failure log's rate limit, and portal keys."""

from __future__ import annotations

import logging

import pytest
import requests

from watcher_auth import (
    ConfigurationError,
    InvalidCredentials,
    NotConnected,
    ReauthenticationRequired,
    StoreError,
    StoreLockTimeout,
    TokenDecryptionError,
    WatcherAPIError,
    WatcherAuthError,
    WatcherConnectionError,
    WatcherPermissionDenied,
    WatcherProtocolError,
    WatcherUnavailable,
)
from watcher_auth.testing import FakeClock
from watcher_auth.web import (
    FailureLog,
    error_answer,
    failure_cause,
    portal_id,
    portal_key,
    service_key,
)

TABLE = [
    (WatcherUnavailable("down"), 503, "watcher_unavailable", 30, False),
    (WatcherConnectionError("cut"), 503, "watcher_unavailable", 30, False),
    (WatcherAPIError(500, "boom"), 503, "watcher_unavailable", 30, False),
    (WatcherAPIError(502, "html"), 503, "watcher_unavailable", 30, False),
    (WatcherProtocolError("not json"), 503, "watcher_bad_answer", 30, False),
    (StoreLockTimeout("held"), 503, "watcher_busy", 5, False),
    (StoreError("redis down"), 503, "watcher_store_unavailable", 30, False),
    (TokenDecryptionError("old key"), 401, "watcher_reconnect_required", None, True),
    (ReauthenticationRequired("7"), 401, "watcher_reauthentication_required", None, True),
    (InvalidCredentials("no"), 401, "watcher_reauthentication_required", None, True),
    (NotConnected("7"), 401, "watcher_not_connected", None, True),
    (WatcherPermissionDenied("no"), 403, "watcher_permission_denied", None, False),
    (WatcherAPIError(403, "no"), 403, "watcher_permission_denied", None, False),
    (WatcherAPIError(404, "gone"), 404, "watcher_not_found", None, False),
    (WatcherAPIError(400, "bad"), 502, "watcher_request_rejected", None, False),
    (WatcherAPIError(405, "method"), 502, "watcher_request_rejected", None, False),
    (ConfigurationError("no url"), 503, "watcher_misconfigured", None, False),
    (WatcherAuthError("other"), 502, "watcher_error", None, False),
]


@pytest.mark.parametrize(
    ("exc", "status", "code", "retry_after", "connect"),
    TABLE,
    ids=[f"{type(row[0]).__name__}-{row[2]}" for row in TABLE],
)
def test_every_library_error_has_its_answer(
    exc: Exception, status: int, code: str, retry_after: int | None, connect: bool
) -> None:
    answer = error_answer(exc)
    assert answer is not None
    assert (answer.status, answer.code, answer.retry_after, answer.connect) == (
        status,
        code,
        retry_after,
        connect,
    )
    assert answer.status != 500
    assert answer.as_json()["error"] == code


def test_the_message_never_repeats_the_exception_text() -> None:
    exc = WatcherAPIError(500, "Watcher answered 500 for GET /streams?token=abc")
    answer = error_answer(exc)
    assert answer is not None
    assert "token" not in answer.message and "abc" not in str(answer.as_json())
    assert answer.as_json()["watcher_status"] == 500


def test_other_errors_are_not_ours() -> None:
    assert error_answer(KeyError("streams")) is None
    assert error_answer(requests.ConnectionError("refused")) is None  # no Watcher origin given


def http_error(url: str, status: int) -> requests.HTTPError:
    response = requests.Response()
    response.status_code = status
    response.url = url
    response.request = requests.Request("GET", url).prepare()
    return requests.HTTPError(f"{status}", response=response, request=response.request)


def test_requests_errors_on_calls_to_watcher_are_answered() -> None:
    origin = "https://watcher.example.com"
    on_watcher = http_error("https://WATCHER.example.com:443/watcher/client-api/v3/streams", 503)
    answer = error_answer(on_watcher, watcher_origin=origin)
    assert answer is not None and (answer.status, answer.code) == (503, "watcher_unavailable")
    forbidden = error_answer(http_error(f"{origin}/x", 403), watcher_origin=origin)
    assert forbidden is not None and forbidden.code == "watcher_permission_denied"
    refused = requests.ConnectionError(
        "refused", request=requests.Request("GET", f"{origin}/x").prepare()
    )
    answer = error_answer(refused, watcher_origin=origin)
    assert answer is not None and answer.code == "watcher_unavailable"


def test_requests_errors_on_other_hosts_are_not_ours() -> None:
    elsewhere = http_error("https://maps.example.com/tiles", 503)
    assert error_answer(elsewhere, watcher_origin="https://watcher.example.com") is None
    other_port = http_error("https://watcher.example.com:8443/x", 503)
    assert error_answer(other_port, watcher_origin="https://watcher.example.com") is None


# --- the failure log ---------------------------------------------------------------------------


def failing() -> StoreError:
    try:
        try:
            raise ConnectionRefusedError("password=hunter2 in a driver message")
        except ConnectionRefusedError as cause:
            raise StoreError("the Redis token store failed to read") from cause
    except StoreError as exc:
        return exc


def test_the_cause_names_the_chain_without_other_libraries_messages() -> None:
    assert failure_cause(failing()) == (
        "StoreError: the Redis token store failed to read <- ConnectionRefusedError"
    )


def test_one_line_per_failure_and_repeats_are_counted(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock(1000.0)
    log = FailureLog(logging.getLogger("test.failures"), interval=60, clock=clock)
    exc = failing()
    answer = error_answer(exc)
    assert answer is not None
    caplog.set_level(logging.INFO, logger="test.failures")

    written = [log.log(exc, answer, where="/cameras/") for _ in range(5)]
    clock.advance(30)
    written.append(log.log(exc, answer))
    other = WatcherUnavailable("Watcher at https://w did not answer")
    other_answer = error_answer(other)
    assert other_answer is not None
    written.append(log.log(other, other_answer))
    clock.advance(31)
    written.append(log.log(exc, answer))

    assert written == [True, False, False, False, False, False, True, True]
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "Watcher request failed on /cameras/: answered 503 watcher_store_unavailable; cause: "
        "StoreError: the Redis token store failed to read <- ConnectionRefusedError",
        "Watcher request failed: answered 503 watcher_unavailable; cause: "
        "WatcherUnavailable: Watcher at https://w did not answer",
        "Watcher request failed: answered 503 watcher_store_unavailable; cause: "
        "StoreError: the Redis token store failed to read <- ConnectionRefusedError "
        "(and 5 more like it in the last 61s)",
    ]
    assert all(r.exc_info is None for r in caplog.records)  # no traceback
    assert all(r.levelno == logging.WARNING for r in caplog.records)


def test_connect_answers_are_logged_quietly(caplog: pytest.LogCaptureFixture) -> None:
    log = FailureLog(logging.getLogger("test.quiet"))
    caplog.set_level(logging.INFO, logger="test.quiet")
    exc = NotConnected("7")
    answer = error_answer(exc)
    assert answer is not None
    log.log(exc, answer)
    assert [r.levelno for r in caplog.records] == [logging.INFO]


# --- portal keys --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "portal_user",
    ["1", "42", "alice", "service:bob", "user:1", "user:user:1", "watcher-service-account", ""],
)
def test_no_portal_id_reaches_a_service_key_and_each_maps_back(portal_user: str) -> None:
    key = portal_key(portal_user)
    assert not key.startswith("service:")
    assert portal_id(key) == portal_user


def test_ordinary_ids_keep_their_keys_so_existing_records_stay_readable() -> None:
    assert [portal_key(i) for i in ("1", "42", "alice@example.com")] == [
        "1",
        "42",
        "alice@example.com",
    ]


def test_service_keys_belong_to_no_portal_user() -> None:
    assert portal_id(service_key("bob")) is None
    assert portal_id("user:1") is None  # portal_key("1") is "1": no id has this key


def test_reading_watchers_error_page_as_data_is_watchers_failure() -> None:
    after_500 = error_answer(KeyError("streams"), last_status=500)
    assert after_500 is not None and (after_500.status, after_500.code) == (
        503,
        "watcher_unavailable",
    )
    not_json = error_answer(ValueError("Expecting value"), last_status=200, last_was_json=False)
    assert not_json is not None and not_json.code == "watcher_bad_answer"


def test_a_portal_bug_after_a_good_answer_stays_the_portals() -> None:
    assert error_answer(KeyError("no-such-field"), last_status=200) is None
    assert error_answer(ValueError("bad int"), last_status=200, last_was_json=True) is None
    assert error_answer(RuntimeError("bug"), last_status=500) is None  # not a parsing error
    assert error_answer(KeyError("streams")) is None  # Watcher was never asked


def test_a_cleared_log_writes_the_next_failure_again(caplog: pytest.LogCaptureFixture) -> None:
    log = FailureLog(logging.getLogger("test.cleared"), clock=FakeClock(5.0))
    exc = WatcherUnavailable("down")
    answer = error_answer(exc)
    assert answer is not None
    assert [log.log(exc, answer), log.log(exc, answer)] == [True, False]
    log.clear()
    assert log.log(exc, answer) is True


def test_last_answer_tells_the_status_and_whether_the_body_was_json() -> None:
    from requests import Response

    from watcher_auth.web import LastAnswer

    last = LastAnswer()
    assert (last.status, last.was_json) == (None, True)  # nothing answered yet
    page = Response()
    page.status_code = 502
    page.headers["Content-Type"] = "text/HTML; charset=utf-8"
    last(page)
    assert (last.status, last.was_json) == (502, False)
    data = Response()
    data.status_code = 200
    data.headers["content-type"] = "application/problem+JSON"
    last(data)
    assert (last.status, last.was_json) == (200, True)
    untyped = Response()
    untyped.status_code = 200
    last(untyped)
    assert last.was_json is False  # no Content-Type: not JSON
    last.was_json = True  # what an httpx hook sets directly
    assert last.was_json is True
