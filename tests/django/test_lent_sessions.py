"""``request.watcher``: while a view uses nothing but its calls they go out on the
manager's shared session for the user's key; on any other use the request is lent a session
of its own, which the middleware gives back after the response, and the next request of the
same user gets it again only when it was left as it was made."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.test import Client

from django_watcher_auth._http import attach_watcher, end_watcher_loan
from django_watcher_auth.conf import get_manager, user_key
from watcher_auth import WatcherSession
from watcher_auth._session import _ANSWERS

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
    """The session lent to the request, if any."""
    return request.watcher._session  # type: ignore[attr-defined]


def lent_to(request: HttpRequest) -> Any:
    """The session lent to the request, after using its headers (more than a call)."""
    assert request.watcher.headers is not None  # type: ignore[attr-defined]
    return session_of(request)


def test_a_request_using_only_calls_borrows_nothing(connected: Client, alice: Any) -> None:
    manager = get_manager()
    assert connected.get("/cameras/").status_code == 200
    assert connected.get("/api/streams/").status_code == 200
    assert list(manager._shared) == [user_key(alice)]
    assert not manager._idle
    assert _ANSWERS.get() is None  # the thread let go of the request's answer record


def test_calls_go_out_on_the_keys_shared_session(
    connected: Client, request_for: Callable[[], HttpRequest], alice: Any
) -> None:
    shared = get_manager().shared_session(user_key(alice))
    for request in (request_for(), request_for()):
        assert request.watcher.get("profile").json()["name"] == "alice"  # type: ignore[attr-defined]
        assert request.watcher.get.__self__ is shared  # type: ignore[attr-defined]
        assert session_of(request) is None
        assert isinstance(request.watcher, WatcherSession)
        end_watcher_loan(request, HttpResponse())
    assert not get_manager()._idle


def test_after_any_other_use_the_requests_calls_go_out_on_its_own_session(
    connected: Client, request_for: Callable[[], HttpRequest], alice: Any
) -> None:
    request = request_for()
    request.watcher.get("profile")  # type: ignore[attr-defined]
    request.watcher.headers["X-Trace"] = "t-1"  # type: ignore[attr-defined]
    own = session_of(request)
    assert own is not None and own is not get_manager().shared_session(user_key(alice))
    assert request.watcher.get.__self__ is own  # type: ignore[attr-defined]
    assert request.watcher.get("profile").request.headers["X-Trace"] == "t-1"  # type: ignore[attr-defined]
    end_watcher_loan(request, HttpResponse())


def test_the_middleware_gives_the_lent_session_back_for_the_next_request(
    connected: Client, request_for: Callable[[], HttpRequest]
) -> None:
    first = request_for()
    session = lent_to(first)
    first.watcher.get("profile")  # type: ignore[attr-defined]
    end_watcher_loan(first, HttpResponse())
    assert lent_to(request_for()) is session


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
    assert "X-Trace" not in second.watcher.get("profile").request.headers  # type: ignore[attr-defined]


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
    assert lent_to(second) is not session
    assert second.watcher.get("profile").status_code == 200  # type: ignore[attr-defined]


def test_a_streaming_answer_keeps_its_session_until_it_is_read(
    connected: Client, request_for: Callable[[], HttpRequest]
) -> None:
    first = request_for()
    session = lent_to(first)

    def body() -> Iterator[bytes]:
        yield first.watcher.get("profile").content  # type: ignore[attr-defined]

    response = StreamingHttpResponse(body())
    end_watcher_loan(first, response)
    assert lent_to(request_for()) is not session
    assert b"alice" in b"".join(response.streaming_content)  # type: ignore[arg-type]
    assert session_of(first) is session


def test_after_its_response_a_request_uses_a_session_of_its_own(
    connected: Client, request_for: Callable[[], HttpRequest], portal: Any
) -> None:
    first = request_for()
    lent = lent_to(first)
    end_watcher_loan(first, HttpResponse())
    second = request_for()
    assert lent_to(second) is lent
    # An outer middleware or a signal receiver using it after the response:
    assert first.watcher.get("profile").json()["name"] == "alice"  # type: ignore[attr-defined]
    assert lent_to(first) is not lent
