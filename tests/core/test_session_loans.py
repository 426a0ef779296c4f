"""Sessions lent to one web request at a time (``TokenManager.lend``): kept for the key's
next request only when the request left them as they were made, never shared between two
holders, and dropped in a forked child, on ``close()`` and past the kept-keys bound.

And the key's session shared by every thread for its calls (``shared_session``): one per
key, used by threads at once without a change to it, calling other origins without
credentials and without mounting anything on it, its answers reported to the calling
context's hook only; dropped on ``close()``, past the bound and in a forked child
(tests/workers/test_fork.py)."""

from __future__ import annotations

import http.cookiejar
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import requests
from requests.adapters import HTTPAdapter

from tests.conftest import RecordingServer, fresh_pair
from watcher_auth import (
    ConfigurationError,
    MemoryStore,
    TokenManager,
    WatcherSession,
)
from watcher_auth.web import LastAnswer, report_answers

KEY = "portal-user-3"


@pytest.fixture
def recording_server(module_recording_server: RecordingServer) -> RecordingServer:
    """Watcher, for this module: a recording server shared by its tests."""
    module_recording_server.seen.clear()
    return module_recording_server


@pytest.fixture
def manager(recording_server: RecordingServer) -> Iterator[TokenManager]:
    """A manager whose Watcher is the recording server, holding a fresh pair for two keys."""
    manager = TokenManager(recording_server.url, store=MemoryStore(), timeout=5.0)
    for age, key in enumerate((KEY, "another-user")):  # a second apart: tokens of their own
        manager.store.save(manager.store_key(key), fresh_pair(time.time() - age))
    yield manager
    manager.close()
    report_answers(None)


def lent_and_ended(manager: TokenManager, use: Callable[[WatcherSession], object]) -> bool:
    """Whether the session of a loan that ``use`` had is lent again afterwards."""
    loan = manager.lend(KEY)
    session = loan.session
    use(session)
    loan.end()
    again = manager.lend(KEY)
    try:
        return again.session is session
    finally:
        again.end()


def test_an_unchanged_session_is_lent_again(manager: TokenManager) -> None:
    assert lent_and_ended(manager, lambda session: session.get("streams"))


def test_a_session_used_only_for_calls_is_lent_again(manager: TokenManager) -> None:
    loan = manager.lend(KEY, LastAnswer())
    loan.touched = False  # what a web layer's proxy does until more than a call is used
    session = loan.session
    assert session.get("streams").status_code == 200
    loan.end()
    assert session.hooks == {"response": []}  # the request's hook went with it
    with manager.lend(KEY) as again:
        assert again is session


def _set_header(session: WatcherSession) -> None:
    session.headers["X-Portal-Tenant"] = "tenant-7"


def _replace_a_default_header(session: WatcherSession) -> None:
    session.headers["Accept"] = "text/html"


def _delete_a_default_header(session: WatcherSession) -> None:
    del session.headers["Accept-Encoding"]


def _set_params(session: WatcherSession) -> None:
    session.params["tenant"] = "7"


def _add_hook(session: WatcherSession) -> None:
    session.hooks["response"].append(lambda response, **kwargs: response)


def _set_cookie(session: WatcherSession) -> None:
    session.cookies.set_policy(http.cookiejar.DefaultCookiePolicy())
    session.cookies.set("portal_session", "abc")


def _set_cookie_in_refusing_jar(session: WatcherSession) -> None:
    session.cookies._cookies["127.0.0.1"] = {"/": {}}  # type: ignore[attr-defined]


def _accept_cookies(session: WatcherSession) -> None:
    session.cookies.set_policy(http.cookiejar.DefaultCookiePolicy())


def _replace_the_jar(session: WatcherSession) -> None:
    session.cookies = requests.cookies.RequestsCookieJar()


def _stop_verifying(session: WatcherSession) -> None:
    session.verify = False


def _add_an_attribute(session: WatcherSession) -> None:
    session.tenant = "7"  # type: ignore[attr-defined]


def _delete_and_restore_an_attribute(session: WatcherSession) -> None:
    timeout = session.timeout
    del session.timeout
    session.tenant = "7"  # type: ignore[attr-defined]
    session.timeout = timeout


def _mount(session: WatcherSession) -> None:
    session.mount("http://", HTTPAdapter())


def _set_proxy(session: WatcherSession) -> None:
    session.proxies["http"] = "http://127.0.0.1:9"


def _close(session: WatcherSession) -> None:
    session.close()


def _stream(session: WatcherSession) -> None:
    session.stream = True


@pytest.mark.parametrize(
    "change",
    [
        _set_header,
        _replace_a_default_header,
        _delete_a_default_header,
        _set_params,
        _add_hook,
        _set_cookie,
        _set_cookie_in_refusing_jar,
        _accept_cookies,
        _replace_the_jar,
        _stop_verifying,
        _add_an_attribute,
        _delete_and_restore_an_attribute,
        _mount,
        _set_proxy,
        _close,
        _stream,
    ],
)
def test_a_changed_session_is_closed_not_lent_again(
    manager: TokenManager, change: Callable[[WatcherSession], None]
) -> None:
    assert not lent_and_ended(manager, change)


def test_a_header_one_request_set_is_not_sent_by_the_next(
    manager: TokenManager, recording_server: RecordingServer
) -> None:
    with manager.lend(KEY) as session:
        session.headers["X-Portal-Tenant"] = "tenant-7"
        session.get("streams")
    with manager.lend(KEY) as session:
        session.get("streams")
    first, second = recording_server.seen[-2:]
    assert first["X-Portal-Tenant"] == "tenant-7"
    assert "X-Portal-Tenant" not in second
    assert second["Authorization"].startswith("Bearer ")


def test_a_call_to_another_origin_keeps_the_session_from_being_lent_again(
    manager: TokenManager, second_recording_server: RecordingServer
) -> None:
    loan = manager.lend(KEY)
    loan.touched = False  # only called, as through a web layer's proxy
    session = loan.session
    assert session.get(second_recording_server.url + "/page").status_code == 200
    assert second_recording_server.seen[0].get("Authorization") is None
    loan.end()
    with manager.lend(KEY) as again:
        assert again is not session


def test_two_holders_never_share_a_session_and_one_is_kept(manager: TokenManager) -> None:
    first, second = manager.lend(KEY), manager.lend(KEY)
    assert first.session is not second.session
    first.end()
    second.end()
    assert not second.session.adapters  # closed: one session is kept per key
    with manager.lend(KEY) as session:
        assert session is first.session


def test_threads_lending_at_once_each_hold_their_own_session(manager: TokenManager) -> None:
    active: set[int] = set()
    lock = threading.Lock()
    shared: list[int] = []
    errors: list[BaseException] = []

    def requests_of_one_worker() -> None:
        try:
            for _ in range(40):
                loan = manager.lend(KEY)
                with lock:
                    if id(loan.session) in active:
                        shared.append(id(loan.session))
                    active.add(id(loan.session))
                assert loan.session.get("streams").status_code == 200
                with lock:
                    active.discard(id(loan.session))
                loan.end()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=requests_of_one_worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert (errors, shared) == ([], [])
    assert list(manager._idle) == [KEY]


def test_each_key_has_its_own_session(manager: TokenManager) -> None:
    with manager.lend(KEY) as mine:
        pass
    with manager.lend("another-user") as theirs:
        assert theirs is not mine
        assert theirs.auth is manager.auth("another-user")
    with manager.lend(KEY) as again:
        assert again is mine and again.auth is manager.auth(KEY)


def test_a_loan_records_its_holder_until_it_ends(manager: TokenManager) -> None:
    holder = object()
    loan = manager.lend(KEY, owner=holder)
    assert loan.owner is holder and loan.key == KEY and loan.manager is manager
    loan.end()
    assert loan.ended
    assert manager.current_tokens(KEY).access_token not in repr(loan)


def test_a_loan_ends_once_so_a_stale_holder_cannot_give_back_a_session_lent_since(
    manager: TokenManager,
) -> None:
    first = manager.lend(KEY)
    first.end()
    second = manager.lend(KEY)
    assert second.session is first.session
    first.end()  # again, by a holder that kept the loan: nothing happens
    third = manager.lend(KEY)
    assert third.session is not second.session
    for loan in (second, third):
        loan.end()


def test_closing_the_manager_drops_the_kept_sessions(manager: TokenManager) -> None:
    with manager.lend(KEY) as session:
        pass
    manager.close()
    with manager.lend(KEY) as again:
        assert again is not session


def test_kept_sessions_are_bounded_oldest_first(
    manager: TokenManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    import watcher_auth._manager

    monkeypatch.setattr(watcher_auth._manager, "_AUTHS_KEPT", 3)
    sessions = {}
    for key in ("k1", "k2", "k3", "k4"):
        with manager.lend(key) as session:
            sessions[key] = session
    assert list(manager._idle) == ["k2", "k3", "k4"]
    with manager.lend("k1") as session:
        assert session is not sessions["k1"]
    with manager.lend("k4") as session:
        assert session is sessions["k4"]


def test_a_key_that_is_not_a_string_is_refused_and_nothing_is_kept(
    manager: TokenManager,
) -> None:
    loan = manager.lend(3)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        loan.session.get("streams")
    loan.end()
    assert not manager._idle


# --- what a session that refuses cookies sends (requests' send, less cookies and env) --------


def test_a_redirect_is_followed_with_its_history(
    manager: TokenManager, recording_server: RecordingServer
) -> None:
    session = manager.session(KEY)
    response = session.get(recording_server.url + "/redirect?to=/streams")
    assert response.status_code == 200 and response.url == recording_server.url + "/streams"
    assert [hop.status_code for hop in response.history] == [302]
    assert response.elapsed.total_seconds() > 0
    assert [seen["path"] for seen in recording_server.seen] == ["/redirect?to=/streams", "/streams"]


def test_a_redirect_not_followed_tells_where_it_goes(
    manager: TokenManager, recording_server: RecordingServer
) -> None:
    response = manager.session(KEY).get(
        recording_server.url + "/redirect?to=/streams", allow_redirects=False
    )
    assert response.status_code == 302 and response.history == []
    assert response.next is not None and response.next.url == recording_server.url + "/streams"
    plain = manager.session(KEY).get("streams", allow_redirects=False)
    assert plain.status_code == 200 and plain.next is None
    assert len(recording_server.seen) == 2


def test_the_sessions_proxies_are_used(
    manager: TokenManager, second_recording_server: RecordingServer
) -> None:
    session = manager.session(KEY)
    session.proxies["http"] = second_recording_server.url
    assert session.get("http://127.0.0.1:9/page").status_code == 200  # answered by the proxy
    assert second_recording_server.seen[0]["path"] == "http://127.0.0.1:9/page"


def test_a_response_hook_sees_the_answer_once(manager: TokenManager) -> None:
    seen: list[int] = []
    session = manager.session(KEY)
    session.hooks["response"].append(lambda response, **kwargs: seen.append(response.status_code))
    session.get("streams")
    assert seen == [200]


def test_a_prepared_request_sent_directly_is_read_unless_streamed(manager: TokenManager) -> None:
    session = manager.session(KEY)
    prepared = session.prepare_request(requests.Request("GET", session.url_for("streams")))
    read = session.send(prepared)
    assert read._content_consumed and read.json() == {}  # type: ignore[attr-defined]
    streamed = session.send(prepared, stream=True)
    assert not streamed._content_consumed  # type: ignore[attr-defined]
    streamed.close()


# --- the key's shared session (shared_session) ----------------------------------------------


def test_one_shared_session_per_key(manager: TokenManager) -> None:
    mine = manager.shared_session(KEY)
    assert manager.shared_session(KEY) is mine
    theirs = manager.shared_session("another-user")
    assert theirs is not mine
    assert mine.auth is manager.auth(KEY) and theirs.auth is manager.auth("another-user")
    assert mine.adapters == manager.session(KEY).adapters  # Watcher's origin on the shared pool


def test_threads_calling_at_once_each_send_their_keys_token_and_change_nothing(
    manager: TokenManager, recording_server: RecordingServer
) -> None:
    sessions = {key: manager.shared_session(key) for key in (KEY, "another-user")}
    before = {key: (dict(vars(s)), dict(s.adapters)) for key, s in sessions.items()}
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def worker(key: str) -> None:
        try:
            barrier.wait(10)
            for _ in range(20):
                assert manager.shared_session(key).get(f"streams?key={key}").status_code == 200
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=worker, args=(KEY if n % 2 else "another-user",)) for n in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    tokens = {key: "Bearer " + manager.current_tokens(key).access_token for key in sessions}
    assert len(set(tokens.values())) == 2
    assert len(recording_server.seen) == 160
    for seen in recording_server.seen:
        assert seen["Authorization"] == tokens[seen["path"].rsplit("=", 1)[1]]
    after = {key: (dict(vars(s)), dict(s.adapters)) for key, s in sessions.items()}
    assert after == before


def test_another_origin_gets_no_credentials_and_nothing_is_mounted(
    manager: TokenManager, second_recording_server: RecordingServer
) -> None:
    session = manager.shared_session(KEY)
    adapters = dict(session.adapters)
    for _ in range(2):
        assert session.get(second_recording_server.url + "/page").status_code == 200
    assert [seen.get("Authorization") for seen in second_recording_server.seen] == [None, None]
    assert dict(session.adapters) == adapters
    other = manager.shared_session("another-user")
    assert other.get_adapter(second_recording_server.url) is session.get_adapter(
        second_recording_server.url + "/page"
    )  # one pool for other origins, made once
    assert session.get_adapter(manager.api_root) is manager.adapter


def test_answers_go_to_the_hook_of_the_calling_context_only(
    manager: TokenManager, recording_server: RecordingServer
) -> None:
    session = manager.shared_session(KEY)
    answers: dict[str, LastAnswer] = {}
    barrier = threading.Barrier(2)

    def request(name: str, path: str) -> None:
        last = answers[name] = LastAnswer()
        report_answers(last)
        barrier.wait(10)
        session.get(path, allow_redirects=False)

    redirected = threading.Thread(
        target=request, args=("redirected", f"{recording_server.url}/redirect?to=/x")
    )
    plain = threading.Thread(target=request, args=("plain", "streams"))
    for thread in (redirected, plain):
        thread.start()
    for thread in (redirected, plain):
        thread.join(30)
    assert answers["redirected"].status == 302
    assert answers["plain"].status == 200
    session.get("streams")  # this thread set no hook: nobody hears of it
    assert (answers["redirected"].status, answers["plain"].status) == (302, 200)
    mine = LastAnswer()
    report_answers(mine)
    session.get("streams")
    assert mine.status == 200
    report_answers(None)
    session.get(f"{recording_server.url}/redirect?to=/x", allow_redirects=False)
    assert mine.status == 200


def test_closing_the_manager_drops_the_shared_sessions_and_their_pool(
    manager: TokenManager, second_recording_server: RecordingServer
) -> None:
    session = manager.shared_session(KEY)
    session.get(second_recording_server.url + "/page")
    foreign = session.get_adapter(second_recording_server.url)
    assert foreign.poolmanager.pools  # type: ignore[attr-defined]
    manager.close()
    assert not foreign.poolmanager.pools  # type: ignore[attr-defined]
    again = manager.shared_session(KEY)
    assert again is not session
    assert again.get_adapter(second_recording_server.url) is not foreign
    assert again.get("streams").status_code == 200


def test_shared_sessions_are_bounded_oldest_first(
    manager: TokenManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    import watcher_auth._manager

    monkeypatch.setattr(watcher_auth._manager, "_AUTHS_KEPT", 3)
    sessions = {key: manager.shared_session(key) for key in ("k1", "k2", "k3", "k4")}
    assert list(manager._shared) == ["k2", "k3", "k4"]
    assert manager.shared_session("k1") is not sessions["k1"]
    assert manager.shared_session("k4") is sessions["k4"]


def test_a_shared_session_refuses_a_key_that_is_not_a_string_and_is_not_kept(
    manager: TokenManager,
) -> None:
    session = manager.shared_session(3)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        session.get("streams")
    assert not manager._shared
