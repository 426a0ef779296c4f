"""``current_watcher``: while a request uses nothing but its calls they go out on the
manager's shared session for the user's key; anything more and the request gets a session
the manager lends to it alone: the next request of the same user gets it again only when
nothing was changed, another user never gets it, and two requests at once never share it."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from flask_login import current_user

from flask_watcher_auth import current_watcher, get_state, watcher_required
from tests.conftest import RecordingServer, fresh_pair
from watcher_auth._session import _ANSWERS
from watcher_auth.testing import FakeClock
from watcher_auth.web import LastAnswer, portal_key

from .conftest import build_portal


@pytest.fixture
def watcher(module_recording_server: RecordingServer) -> RecordingServer:
    """Watcher, for this module: a recording server that shows the headers each request sent."""
    module_recording_server.seen.clear()
    return module_recording_server


@pytest.fixture
def app(watcher: RecordingServer, fake_clock: FakeClock) -> Iterator[Flask]:
    app = build_portal(watcher.url, fake_clock)
    seen: dict[str, Any] = {}
    app.config["SEEN"] = seen

    @app.get("/lent/streams")
    def streams() -> str:
        seen["session"] = id(current_watcher._get_current_object())
        return str(current_watcher.get("streams").status_code)

    @app.get("/lent/only-calls")
    def only_calls() -> str:
        return str(current_watcher.get("streams").status_code)

    @app.get("/lent/whose-calls")
    def whose_calls() -> str:
        return str(current_watcher.get(f"streams?user={current_user.get_id()}").status_code)

    @app.get("/lent/tenant")
    def tenant() -> str:
        current_watcher.headers["X-Tenant"] = "tenant-7"
        return str(current_watcher.get("streams").status_code)

    @app.get("/lent/no-verify")
    def no_verify() -> str:
        current_watcher.verify = False
        return "ok"

    @app.get("/lent/verify")
    def verify() -> str:
        return repr(current_watcher.verify)

    @app.get("/lent/slow")
    def slow() -> str:
        seen.setdefault("slow", []).append(id(current_watcher._get_current_object()))
        time.sleep(0.2)
        return str(current_watcher.get("streams").status_code)

    state = get_state(app)
    for user_id in ("1", "2"):
        # issued a second apart, so each user's token is their own
        issued = fake_clock() - int(user_id)
        state.store.save(state.manager.store_key(portal_key(user_id)), fresh_pair(issued))
    yield app
    state.store.close()


def signed_in(app: Flask, user_id: str) -> FlaskClient:
    client = app.test_client()
    assert client.post(f"/sign-in/{user_id}").status_code == 200
    return client


def at_once(clients: list[FlaskClient], path: str, times: int = 1) -> list[str]:
    """What each client's ``times`` GETs of ``path`` answered, the clients in threads of
    their own starting together."""
    barrier = threading.Barrier(len(clients))
    answers: list[str] = []

    def visit(client: FlaskClient) -> None:
        barrier.wait(10)
        for _ in range(times):
            answers.append(client.get(path).text)

    threads = [threading.Thread(target=visit, args=(client,)) for client in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return answers


def test_the_next_request_of_the_user_gets_the_session_again(app: Flask) -> None:
    client = signed_in(app, "1")
    assert client.get("/lent/streams").text == "200"
    first = app.config["SEEN"]["session"]
    assert client.get("/lent/only-calls").text == "200"
    assert client.get("/lent/streams").text == "200"
    assert app.config["SEEN"]["session"] == first
    assert list(get_state(app).manager._idle) == ["1"]


def test_a_request_using_only_calls_borrows_nothing(app: Flask) -> None:
    client = signed_in(app, "1")
    manager = get_state(app).manager
    assert client.get("/lent/only-calls").text == "200"
    assert (list(manager._shared), list(manager._idle)) == (["1"], [])
    assert client.get("/lent/streams").text == "200"  # the session itself: lent
    assert list(manager._idle) == ["1"]


def test_a_view_that_reads_watchers_answers_hears_them_for_its_request_only(
    app: Flask,
) -> None:
    @app.get("/lent/reads-answers")
    @watcher_required
    def reads_answers() -> str:
        current_watcher.get("streams")
        heard = _ANSWERS.get()
        assert isinstance(heard, LastAnswer)
        return str(heard.status)

    client = signed_in(app, "1")
    assert client.get("/lent/reads-answers").text == "200"
    assert _ANSWERS.get() is None  # the thread let go of the request's record
    assert client.get("/lent/only-calls").text == "200"
    assert _ANSWERS.get() is None  # a view that reads nothing has no record heard


def test_users_calling_at_once_each_send_their_own_token(
    app: Flask, watcher: RecordingServer
) -> None:
    clients = [signed_in(app, user_id) for user_id in ("1", "2") * 4]
    assert at_once(clients, "/lent/whose-calls", 5) == ["200"] * 40
    manager = get_state(app).manager
    tokens = {key: "Bearer " + manager.current_tokens(key).access_token for key in ("1", "2")}
    assert len(set(tokens.values())) == 2
    assert len(watcher.seen) == 40
    for seen in watcher.seen:
        assert seen["Authorization"] == tokens[seen["path"].rsplit("=", 1)[1]]
    assert not manager._idle  # nothing was lent


def test_another_user_never_gets_it(app: Flask, watcher: RecordingServer) -> None:
    first, second = signed_in(app, "1"), signed_in(app, "2")
    first.get("/lent/streams")
    mine = app.config["SEEN"]["session"]
    second.get("/lent/streams")
    assert app.config["SEEN"]["session"] != mine
    tokens = [seen["Authorization"] for seen in watcher.seen]
    manager = get_state(app).manager
    assert tokens == ["Bearer " + manager.current_tokens(key).access_token for key in ("1", "2")]


def test_a_header_a_view_set_is_not_sent_by_the_next_request(
    app: Flask, watcher: RecordingServer
) -> None:
    client = signed_in(app, "1")
    assert client.get("/lent/tenant").text == "200"
    assert client.get("/lent/only-calls").text == "200"
    assert watcher.seen[0]["X-Tenant"] == "tenant-7"
    assert "X-Tenant" not in watcher.seen[1]


def test_an_attribute_a_view_set_does_not_reach_the_next_request(app: Flask) -> None:
    client = signed_in(app, "1")
    before = client.get("/lent/verify").text
    assert before != "False"
    assert client.get("/lent/no-verify").text == "ok"
    assert client.get("/lent/verify").text == before


def test_two_requests_at_once_never_share_a_session(app: Flask) -> None:
    clients = [signed_in(app, "1") for _ in range(4)]
    assert at_once(clients, "/lent/slow") == ["200"] * 4
    assert len(set(app.config["SEEN"]["slow"])) == 4
    assert list(get_state(app).manager._idle) == ["1"]  # one kept, the others closed


def test_a_view_that_failed_still_gives_its_session_back(app: Flask) -> None:
    @app.get("/lent/fails")
    def fails() -> str:
        app.config["SEEN"]["session"] = id(current_watcher._get_current_object())
        current_watcher.get("streams")
        raise LookupError("a view's own bug")

    app.config["PROPAGATE_EXCEPTIONS"] = False
    client = signed_in(app, "1")
    assert client.get("/lent/fails").status_code == 500
    failed = app.config["SEEN"]["session"]
    client.get("/lent/streams")
    assert app.config["SEEN"]["session"] == failed
