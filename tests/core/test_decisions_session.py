"""What a ``requests`` session of the manager does with bodies, redirects and error answers,
and how API v2 credentials ride on a plain ``requests`` call."""

from __future__ import annotations

import datetime
import http.cookiejar
import http.server
import ipaddress
import ssl
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
from requests import PreparedRequest, Response

from watcher_auth import (
    ConfigurationError,
    MemoryStore,
    TokenManager,
    WatcherAPIError,
    WatcherConnectionError,
    WatcherSession,
)
from watcher_auth._session import NoCookies
from watcher_auth.testing import FakeClock, WatcherEmulator
from watcher_auth.testing.pytest_plugin import EmulatorFactory
from watcher_auth.testing.services import require_redis

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


@dataclass
class CookieServer:
    url: str
    seen: list[str | None] = field(default_factory=list)  # each request's Cookie header


@pytest.fixture
def cookie_server() -> Iterator[CookieServer]:
    """A loopback page that sets a cookie on every answer and records what came back."""
    record = CookieServer(url="")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            record.seen.append(self.headers.get("Cookie"))
            if self.path == "/moved":
                self.send_response(302)
                self.send_header("Location", "/page")
            else:
                self.send_response(200)
            self.send_header("Set-Cookie", "tracking=alice-was-here; Path=/")
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    record.url = f"http://localhost:{server.server_address[1]}/page"
    yield record
    server.shutdown()
    server.server_close()


def test_a_cookie_one_answer_sets_never_rides_on_the_next_call(
    connected: TokenManager, emulator: WatcherEmulator, cookie_server: CookieServer
) -> None:
    session = connected.session(KEY)
    by_hand = WatcherSession(base_url=emulator.v3_url, auth=connected.auth(KEY), timeout=5.0)
    for each in (session, by_hand):
        each.get(cookie_server.url)
        each.get(cookie_server.url)
    assert cookie_server.seen == [None, None, None, None]
    assert len(session.cookies) == 0 and len(by_hand.cookies) == 0


def test_cookies_the_caller_gives_are_sent_while_answers_cookies_are_still_refused(
    connected: TokenManager, cookie_server: CookieServer
) -> None:
    session = connected.session(KEY)
    session.get(cookie_server.url, cookies={"theme": "dark"})
    session.cookies.set("lang", "en")
    session.get(cookie_server.url)
    assert cookie_server.seen == ["theme=dark", "lang=en"]
    assert [cookie.name for cookie in session.cookies] == ["lang"]


def test_a_session_whose_caller_accepts_cookies_keeps_and_sends_them(
    connected: TokenManager, cookie_server: CookieServer
) -> None:
    session = connected.session(KEY)
    session.cookies.set_policy(http.cookiejar.DefaultCookiePolicy())
    session.get(cookie_server.url)
    session.get(cookie_server.url)
    assert cookie_server.seen == [None, "tracking=alice-was-here"]


def test_a_cookie_set_on_a_redirect_rides_on_no_later_hop_or_call(
    connected: TokenManager, cookie_server: CookieServer
) -> None:
    first, second = connected.session(KEY), connected.session("another-key")
    moved = cookie_server.url.replace("/page", "/moved")
    answer = first.get(moved)
    assert (answer.status_code, [hop.status_code for hop in answer.history]) == (200, [302])
    first.get(cookie_server.url)
    second.get(cookie_server.url)
    assert cookie_server.seen == [None, None, None, None]
    assert len(first.cookies) == len(second.cookies) == 0


def test_a_plain_requests_session_configured_by_the_manager_refuses_cookies(
    connected: TokenManager, cookie_server: CookieServer
) -> None:
    with connected.configure_session(requests.Session()) as plain:
        plain.get(cookie_server.url, timeout=5)
        plain.get(cookie_server.url, timeout=5)
        assert len(plain.cookies) == 0
    assert cookie_server.seen == [None, None]


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


def test_a_timeout_passed_positionally_is_honoured_and_the_managers_applies_otherwise(
    emulator: WatcherEmulator, fake_clock: FakeClock
) -> None:
    from watcher_auth import WatcherConnectionError

    manager = TokenManager(emulator.url, clock=fake_clock, timeout=0.5)
    manager.login(KEY, username="alice", password="secret")
    session = manager.session(KEY)
    emulator.configure(latency=1.5)
    # requests' positional order after the URL: params, data, headers, cookies, files, auth,
    # then timeout.
    up_to_auth = (None, None, None, None, None, None)
    with pytest.raises(WatcherConnectionError, match="Timeout"):
        session.request("GET", "profile", *up_to_auth)
    response = session.request("GET", "profile", *up_to_auth, 10.0)
    assert response.status_code == 200 and response.json()["name"] == "alice"


def test_stream_passed_positionally_leaves_the_answer_for_the_caller_to_read(
    connected: TokenManager, emulator: WatcherEmulator
) -> None:
    from watcher_auth import ResponseTooLarge

    session = WatcherSession(
        base_url=emulator.v3_url, auth=connected.auth(KEY), timeout=5.0, max_response_bytes=8
    )
    # After the URL: params, data, headers, cookies, files, auth, timeout, allow_redirects,
    # proxies, hooks, then stream.
    up_to_hooks = (None, None, None, None, None, None, 5.0, True, None, None)
    with pytest.raises(ResponseTooLarge):
        session.request("GET", "profile", *up_to_hooks)  # read by the session, within its limit
    with pytest.raises(ResponseTooLarge):
        session.request("GET", "profile", *up_to_hooks, False)  # not streamed: still limited
    streamed = session.request("GET", "profile", *up_to_hooks, True)
    with streamed:
        assert b'"alice"' in b"".join(streamed.iter_content(16))


def test_a_sessions_calls_to_another_origin_do_not_go_through_the_managers_pool(
    connected: TokenManager, emulator: WatcherEmulator
) -> None:
    session = connected.session(KEY)
    assert session.get_adapter(emulator.v3_url + "/profile") is connected.adapter
    assert session.get_adapter("http://elsewhere.test/page") is not connected.adapter
    assert session.get_adapter("https://elsewhere.test/page") is not connected.adapter


@dataclass
class ConnectionCountingServer:
    url: str
    closed: threading.Event = field(default_factory=threading.Event)


@pytest.fixture
def counting_server() -> Iterator[ConnectionCountingServer]:
    """A keep-alive loopback server that notes when a client closes its connection."""
    record = ConnectionCountingServer(url="")

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def finish(self) -> None:
            super().finish()
            record.closed.set()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    record.url = f"http://127.0.0.1:{server.server_address[1]}/page"
    yield record
    server.shutdown()
    server.server_close()


def test_closing_a_session_closes_its_connections_to_other_origins(
    connected: TokenManager, counting_server: ConnectionCountingServer
) -> None:
    session = connected.session(KEY)
    assert session.get(counting_server.url).status_code == 200
    assert not counting_server.closed.is_set()  # kept alive in the session's own pool
    own_pool = session.get_adapter(counting_server.url)  # still referenced: closed, not collected
    session.close()
    assert counting_server.closed.wait(10)
    assert own_pool is not connected.adapter
    assert connected.session(KEY).get("profile").status_code == 200  # the manager's pool serves on


def test_a_session_made_by_hand_follows_the_environments_proxy(
    connected: TokenManager, emulator: WatcherEmulator, recording_server, monkeypatch
) -> None:
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", recording_server.url)
    monkeypatch.setenv("http_proxy", recording_server.url)
    session = WatcherSession(base_url=emulator.v3_url, auth=connected.auth(KEY), timeout=5.0)
    nothing_listens_here = "http://127.0.0.1:9/page"
    assert session.get(nothing_listens_here).status_code == 200  # answered by the proxy
    assert recording_server.seen[0]["path"] == nothing_listens_here


@dataclass
class TlsServer:
    url: str
    certificate: Path


def _self_signed(directory: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[TlsServer]:
    """An HTTPS server on loopback with a self-signed certificate."""
    cert_path, key_path = _self_signed(tmp_path)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield TlsServer(f"https://127.0.0.1:{server.server_address[1]}/page", cert_path)
    server.shutdown()
    server.server_close()


def test_a_session_made_by_hand_refuses_an_https_server_it_cannot_verify(
    connected: TokenManager, emulator: WatcherEmulator, tls_server: TlsServer, monkeypatch
) -> None:
    # A CA bundle named in the environment would replace the session's own ``verify``.
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    session = WatcherSession(base_url=emulator.v3_url, auth=connected.auth(KEY), timeout=5.0)
    with pytest.raises(WatcherConnectionError, match="SSLError"):
        session.get(tls_server.url)
    session.verify = str(tls_server.certificate)
    assert session.get(tls_server.url).status_code == 200


def test_a_session_used_across_refreshes_sends_each_new_token(
    watcher_emulator_factory: EmulatorFactory, fake_clock: FakeClock
) -> None:
    import redis

    from watcher_auth.stores.redis import RedisStore

    emulator = watcher_emulator_factory(clock=fake_clock, access_lifetime=300)
    url, prefix = require_redis(13), f"watcher_auth_test:{uuid.uuid4().hex}:"
    store = RedisStore(url=url, prefix=prefix, encryption_keys=["a key for the session test"])
    manager = TokenManager(emulator.url, store=store, clock=fake_clock, timeout=5.0)
    try:
        manager.login(KEY, username="alice", password="secret")
        session = manager.session(KEY)
        for _ in range(3 * 10):  # three lifetimes in steps of 30 s
            assert session.get("profile").status_code == 200
            fake_clock.advance(30)
        stats = emulator.stats
        assert stats.refreshes >= 3 and stats.unauthorized == 0
    finally:
        manager.close()
        store.close()
        with redis.Redis.from_url(url) as raw:
            for name in raw.scan_iter(match=prefix + "*"):
                raw.delete(name)


def test_a_v2_credential_header_the_caller_set_gives_way_to_the_records_own(
    emulator: WatcherEmulator, fake_clock: FakeClock
) -> None:
    manager = TokenManager(emulator.url, clock=fake_clock, timeout=5.0)
    manager.v2_connect_user_key(KEY, username="alice", api_key=emulator.user_api_key("alice"))
    response = requests.get(
        emulator.v2_url + "/cameras",
        auth=manager.v2_auth(KEY),
        headers={"X-Vsaas-Session": "a-session-left-over-from-elsewhere"},
        timeout=5,
    )
    assert response.status_code == 200 and response.json() is not None


def test_a_session_set_to_stream_leaves_answers_for_the_caller_to_read(
    connected: TokenManager, emulator: WatcherEmulator
) -> None:
    from watcher_auth import ResponseTooLarge

    session = WatcherSession(
        base_url=emulator.v3_url, auth=connected.auth(KEY), timeout=5.0, max_response_bytes=8
    )
    with pytest.raises(ResponseTooLarge):
        session.get("profile")  # read by the session, within its limit
    session.stream = True  # as requests.Session.stream: the default for every call
    with session.get("profile") as streamed:
        assert b'"alice"' in b"".join(streamed.iter_content(16))
    with pytest.raises(ResponseTooLarge):
        session.get("profile", stream=False)  # a call's own choice wins


def test_arguments_after_a_positional_stream_reach_requests(
    connected: TokenManager, tls_server: TlsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    session = connected.session(KEY)
    session.verify = True
    # After the URL: params, data, headers, cookies, files, auth, timeout, allow_redirects,
    # proxies, hooks, stream, then verify.
    up_to_stream = (None, None, None, None, None, None, 5.0, True, None, None, False)
    with pytest.raises(WatcherConnectionError, match="SSLError"):
        session.request("GET", tls_server.url, *up_to_stream)
    answer = session.request("GET", tls_server.url, *up_to_stream, str(tls_server.certificate))
    assert answer.status_code == 200


def test_each_session_starts_from_requests_default_headers_and_keeps_its_own(
    connected: TokenManager, emulator: WatcherEmulator
) -> None:
    first = connected.session(KEY)
    assert first.headers == requests.utils.default_headers()
    first.headers["X-Trace"] = "first"
    second = connected.session(KEY)
    assert "X-Trace" not in second.headers
    assert second.headers == requests.utils.default_headers()
    assert first.get("profile").request.headers["X-Trace"] == "first"
    assert "X-Trace" not in second.get("profile").request.headers


def test_the_sessions_of_one_key_share_its_auth_and_other_keys_get_their_own(
    connected: TokenManager, emulator: WatcherEmulator
) -> None:
    assert connected.session(KEY).auth is connected.auth(KEY)
    assert connected.auth("another-key") is not connected.auth(KEY)
    assert connected.auth("another-key").key == "another-key"
    with pytest.raises(ConfigurationError):
        connected.session(42).get("profile")  # type: ignore[arg-type]
    assert connected.session(KEY).get("profile").json()["name"] == "alice"


def test_a_sessions_jar_has_what_cookiejar_itself_would_set_and_refuses_cookies() -> None:
    from watcher_auth._session import _SessionJar

    made, reference = _SessionJar.refusing(), _SessionJar(policy=NoCookies())
    assert sorted(vars(made)) == sorted(vars(reference))
    assert len(made) == 0
    made.set("lang", "en")  # a caller's own cookie is kept, as in any jar
    assert [cookie.name for cookie in made] == ["lang"]


def test_current_tokens_answers_from_a_fresh_copy_and_refreshes_a_stale_one(
    connected: TokenManager, emulator: WatcherEmulator, fake_clock: FakeClock
) -> None:
    connected.session(KEY)  # what a web request makes before its decorator asks
    first = connected.current_tokens(KEY)
    assert connected.current_tokens(KEY) is first
    assert emulator.stats.refreshes == 0
    fake_clock.advance(301)  # past the access token's 300 s
    second = connected.current_tokens(KEY)
    assert second.access_token != first.access_token
    assert emulator.stats.refreshes == 1
    assert connected.current_tokens(KEY) is second
