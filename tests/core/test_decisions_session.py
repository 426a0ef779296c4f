"""What a ``requests`` session of the manager does with bodies, redirects and error answers,
and how API v2 credentials ride on a plain ``requests`` call."""

from __future__ import annotations

import pytest
import requests
from requests import PreparedRequest, Response

from watcher_auth import MemoryStore, TokenManager, WatcherAPIError
from watcher_auth.testing import FakeClock, WatcherEmulator

KEY = "portal-user-9"


@pytest.fixture
def emulator(watcher_emulator_factory, fake_clock: FakeClock) -> WatcherEmulator:
    return watcher_emulator_factory(clock=fake_clock, system_api_key="the-system-key")


@pytest.fixture
def connected(emulator: WatcherEmulator, fake_clock: FakeClock) -> TokenManager:
    manager = TokenManager(emulator.url, store=MemoryStore(), clock=fake_clock, timeout=5.0)
    manager.login(KEY, username="alice", password="secret")
    return manager


def test_a_one_shot_body_is_not_sent_again_after_a_401(
    connected: TokenManager, emulator: WatcherEmulator
) -> None:
    emulator.revoke_access_tokens("alice")
    chunks = iter([b'{"title": ', b'"Side door"}'])
    response = connected.session(KEY).put(
        "streams/alice-cam-1", data=chunks, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 401  # the caller gets the answer; its stream is spent
    stats = emulator.stats
    assert (stats.unauthorized, stats.refreshes) == (1, 0)


def test_a_rewindable_body_is_sent_again_in_full_after_a_401(
    connected: TokenManager, emulator: WatcherEmulator
) -> None:
    import io

    emulator.revoke_access_tokens("alice")
    body = io.BytesIO(b'xx{"title": "Garage"}')
    body.seek(2)  # the body starts where the caller left the file, on the retry too
    session = connected.session(KEY)
    response = session.put(
        "streams/alice-cam-1", data=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 200 and response.json()["title"] == "Garage"
    assert emulator.stats.refreshes == 1


def test_a_400_answer_raises_watcher_api_error(connected: TokenManager) -> None:
    with pytest.raises(WatcherAPIError) as caught:
        connected.session(KEY).json("streams", params={"cursor": "not-a-cursor"})
    assert caught.value.status_code == 400


def test_a_successful_json_answer_is_returned_as_data(connected: TokenManager) -> None:
    # The boundary below the first error status: a 2xx/3xx JSON answer is returned as data.
    assert connected.session(KEY).json("profile")["name"] == "alice"


def test_a_redirect_from_http_to_https_on_the_same_host_drops_the_token() -> None:
    # requests itself keeps Authorization on an http -> https upgrade to the same host on
    # the default ports; Watcher's origin is exact, so the token must not follow. Ports 80
    # and 443 cannot be served here, so the redirect is handed to the session directly.
    manager = TokenManager("http://watcher.test")
    session = manager.session(KEY)
    original = Response()
    original.request = PreparedRequest()
    original.request.prepare(method="GET", url="http://watcher.test/watcher/client-api/v3/x")
    for target, kept in [
        ("https://watcher.test/watcher/client-api/v3/x", False),
        ("http://watcher.test/watcher/client-api/v3/y", True),
    ]:
        prepared = PreparedRequest()
        prepared.prepare(method="GET", url=target, headers={"Authorization": "Bearer t"})
        session.rebuild_auth(prepared, original)
        assert ("Authorization" in prepared.headers) is kept, target


def test_v2_auth_authenticates_a_plain_requests_call_to_watcher(
    emulator: WatcherEmulator, fake_clock: FakeClock
) -> None:
    manager = TokenManager(emulator.url, clock=fake_clock, timeout=5.0)
    manager.v2_login(KEY, username="alice", password="secret")
    response = requests.get(emulator.v2_url + "/cameras", auth=manager.v2_auth(KEY), timeout=5)
    assert response.status_code == 200
    assert emulator.stats.v2_calls_by_user == {"alice": 1}


def test_v2_auth_logs_in_again_after_watcher_forgets_the_session(
    emulator: WatcherEmulator, fake_clock: FakeClock
) -> None:
    manager = TokenManager(
        emulator.url,
        clock=fake_clock,
        timeout=5.0,
        credentials=lambda key: ("alice", "secret"),
    )
    manager.v2_login(KEY, username="alice", password="secret")
    emulator.revoke("alice")
    response = requests.get(emulator.v2_url + "/cameras", auth=manager.v2_auth(KEY), timeout=5)
    assert response.status_code == 200
    assert emulator.stats.v2_logins == 2


def test_an_httpx_client_of_the_manager_sends_to_another_origin_without_the_token(
    emulator: WatcherEmulator,
    fake_clock: FakeClock,
    recording_server,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A CA bundle from the environment reaches httpx as a path, which httpx deprecates.
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    manager = TokenManager(emulator.url, clock=fake_clock, timeout=5.0)
    manager.login(KEY, username="alice", password="secret")
    with manager.httpx_client(KEY) as client:
        assert client.get(recording_server.url + "/elsewhere").status_code == 200
        assert client.get(emulator.v3_url + "/profile").status_code == 200
    assert recording_server.seen and "Authorization" not in recording_server.seen[0]
    assert emulator.stats.calls_by_user == {"alice": 1}


def test_a_cookie_one_answer_sets_never_rides_on_the_next_call(
    connected: TokenManager, emulator: WatcherEmulator
) -> None:
    import http.server
    import threading

    seen: list[str | None] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.headers.get("Cookie"))
            self.send_response(200)
            self.send_header("Set-Cookie", "tracking=alice-was-here; Path=/")
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://localhost:{server.server_address[1]}/page"
        from watcher_auth import WatcherSession

        session = connected.session(KEY)
        by_hand = WatcherSession(base_url=emulator.v3_url, auth=connected.auth(KEY), timeout=5.0)
        for each in (session, by_hand):
            each.get(url)
            each.get(url)
    finally:
        server.shutdown()
        server.server_close()
    assert seen == [None, None, None, None]
    assert len(session.cookies) == 0 and len(by_hand.cookies) == 0


def test_every_session_of_a_manager_shares_the_managers_connection_pool(
    connected: TokenManager, emulator: WatcherEmulator
) -> None:
    first, second = connected.session(KEY), connected.session("another-key")
    for session in (first, second):
        assert session.get_adapter(emulator.v3_url + "/profile") is connected.adapter
    on_default_port = TokenManager("https://watcher.test")
    session = on_default_port.session(KEY)
    assert session.get_adapter("https://watcher.test/watcher/client-api/v3/x") is (
        on_default_port.adapter
    )
    assert session.get_adapter("https://watcher.test:443/watcher/client-api/v3/x") is (
        on_default_port.adapter
    )


def test_a_session_made_with_a_base_url_without_a_trailing_slash_resolves_paths_under_it(
    connected: TokenManager, emulator: WatcherEmulator
) -> None:
    from watcher_auth import WatcherSession

    session = WatcherSession(base_url=emulator.v3_url, auth=connected.auth(KEY), timeout=5.0)
    assert session.url_for("profile") == emulator.v3_url + "/profile"
    assert session.get("profile").json()["name"] == "alice"


def test_a_callers_own_timeout_wins_over_the_managers(
    connected: TokenManager, emulator: WatcherEmulator
) -> None:
    from watcher_auth import WatcherConnectionError

    emulator.configure(latency=1.0)
    session = connected.session(KEY)  # the manager's timeout: 5 s
    with pytest.raises(WatcherConnectionError, match="Timeout"):
        session.get("profile", timeout=0.2)
    emulator.configure(latency=0.0)
    assert session.get("profile").status_code == 200
