"""``request.watcher`` is a session the manager lends to one request at a time: the
middleware gives it back after the response, and the next request of the same user gets it
again only when it was left as it was made."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.test import Client

from django_watcher_auth._http import attach_watcher, end_watcher_loan
from django_watcher_auth.conf import get_manager, user_key

pytestmark = pytest.mark.django_db

CONNECT = "/watcher/connect/"


@pytest.fixture
def request_for(rf: Any, alice: Any) -> Callable[[], HttpRequest]:
    """A request of alice's with the middleware's attributes, as a view receives it."""

    def make() -> HttpRequest:
        request: HttpRequest = rf.get("/")
        request.user = alice
        attach_watcher(request)
        return request

    return make


def session_of(request: HttpRequest) -> Any:
    return request.watcher._session  # type: ignore[attr-defined]


def test_the_middleware_gives_the_session_back_for_the_next_request(
    connected: Client, alice: Any
) -> None:
    assert connected.get("/cameras/").status_code == 200
    kept, _ = get_manager()._idle[user_key(alice)]
    assert connected.get("/cameras/").status_code == 200
    assert connected.get("/api/streams/").status_code == 200
    assert get_manager()._idle[user_key(alice)][0] is kept


def test_a_session_used_only_for_calls_is_lent_again(
    connected: Client, request_for: Callable[[], HttpRequest]
) -> None:
    first = request_for()
    assert first.watcher.get("profile").json()["name"] == "alice"  # type: ignore[attr-defined]
    session = session_of(first)
    end_watcher_loan(first, HttpResponse())
    second = request_for()
    second.watcher.get("profile")  # type: ignore[attr-defined]
    assert session_of(second) is session


def test_a_header_set_by_one_request_does_not_reach_the_next(
    connected: Client, request_for: Callable[[], HttpRequest]
) -> None:
    first = request_for()
    first.watcher.headers["X-Trace"] = "t-1"  # type: ignore[attr-defined]
    session = session_of(first)
    end_watcher_loan(first, HttpResponse())
    second = request_for()
    assert "X-Trace" not in second.watcher.headers  # type: ignore[attr-defined]
    assert session_of(second) is not session


def test_an_attribute_set_by_one_request_does_not_reach_the_next(
    connected: Client, request_for: Callable[[], HttpRequest]
) -> None:
    first = request_for()
    first.watcher.timeout = 4.0  # type: ignore[attr-defined]
    end_watcher_loan(first, HttpResponse())
    second = request_for()
    assert second.watcher.timeout == get_manager().timeout != 4.0  # type: ignore[attr-defined]


def test_a_session_closed_by_a_with_block_is_not_lent_again(
    connected: Client, request_for: Callable[[], HttpRequest]
) -> None:
    first = request_for()
    with first.watcher as session:  # type: ignore[attr-defined]
        session.get("profile")
    end_watcher_loan(first, HttpResponse())
    second = request_for()
    assert second.watcher.get("profile").status_code == 200  # type: ignore[attr-defined]
    assert session_of(second) is not session


def test_a_streaming_answer_keeps_its_session_until_it_is_read(
    connected: Client, request_for: Callable[[], HttpRequest]
) -> None:
    first = request_for()
    first.watcher.get("profile")  # type: ignore[attr-defined]
    session = session_of(first)

    def body() -> Iterator[bytes]:
        yield first.watcher.get("profile").content  # type: ignore[attr-defined]

    response = StreamingHttpResponse(body())
    end_watcher_loan(first, response)
    second = request_for()
    second.watcher.get("profile")  # type: ignore[attr-defined]
    assert session_of(second) is not session
    assert b"alice" in b"".join(response.streaming_content)  # type: ignore[arg-type]
    assert session_of(first) is session


def test_after_its_response_a_request_uses_a_session_of_its_own(
    connected: Client, request_for: Callable[[], HttpRequest], portal: Any
) -> None:
    first = request_for()
    first.watcher.get("profile")  # type: ignore[attr-defined]
    lent = session_of(first)
    end_watcher_loan(first, HttpResponse())
    second = request_for()
    second.watcher.get("profile")  # type: ignore[attr-defined]
    assert session_of(second) is lent
    # An outer middleware or a signal receiver using it after the response:
    assert first.watcher.get("profile").json()["name"] == "alice"  # type: ignore[attr-defined]
    assert session_of(first) is not lent
