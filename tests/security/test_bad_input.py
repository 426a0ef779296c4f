"""Arbitrary answers from Watcher: only typed errors come out, and no pair is lost.

Hypothesis generates status codes, headers and bodies (including JWTs with broken claims);
the manager-level properties serve them from a real HTTP server on loopback.
"""

from __future__ import annotations

import base64
import http.server
import json
import queue
import threading
from collections.abc import Iterator

import jwt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from watcher_auth import (
    MemoryStore,
    ReauthenticationRequired,
    TokenManager,
    TokenPair,
    WatcherAuthError,
)
from watcher_auth._policy import RefreshRejected, parse_token_response
from watcher_auth.testing import FakeClock

NOW = 1_800_000_000.0

claim_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.lists(st.integers(), max_size=3),
)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@st.composite
def jwts(draw: st.DrawFn) -> str:
    """Signed, unsigned, malformed JWTs, with exp missing, textual, negative or far away."""
    claims = draw(st.dictionaries(st.sampled_from(["exp", "iat", "session", "sub"]), claim_values))
    kind = draw(st.sampled_from(["hs256", "none", "garbage-payload", "two-parts", "random"]))
    if kind == "hs256":
        try:
            return jwt.encode(claims, "k" * 32, "HS256")
        except (TypeError, ValueError, OverflowError):
            return "not.a.jwt"
    header = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    if kind == "none":
        return f"{header}.{_b64(json.dumps(claims, default=str).encode())}."
    if kind == "garbage-payload":
        return f"{header}.{_b64(draw(st.binary(max_size=40)))}.sig"
    if kind == "two-parts":
        return f"{header}.{_b64(b'{}')}"
    return draw(st.text(max_size=60))


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20)),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["login", "json", "binary", "html", "truncated", "huge", "deep"]))
    if kind == "login":
        fields = {"access_token": draw(st.one_of(jwts(), json_values))}
        if draw(st.booleans()):
            fields["refresh_token"] = draw(st.one_of(st.text(max_size=40), json_values))
        return json.dumps(fields).encode()
    if kind == "json":
        return json.dumps(draw(json_values)).encode()
    if kind == "binary":
        return draw(st.binary(max_size=200))
    if kind == "html":
        return b"<html><body><h1>502 Bad Gateway</h1></body></html>"
    if kind == "truncated":
        return b'{"access_token": "eyJ'
    if kind == "huge":
        return b'{"access_token": "' + b"a" * 2_000_000 + b'"}'
    return b"[" * 100_000 + b"]" * 100_000


statuses = st.one_of(st.sampled_from([200, 401, 403, 500, 502, 503]), st.integers(100, 599))
header_maps = st.dictionaries(
    st.sampled_from(["Date", "Content-Type", "X-Other"]),
    st.one_of(st.text(max_size=40), st.just("Thu, 15 Jan 2027 08:10:00 GMT")),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(status=statuses, headers=header_maps, body=bodies(), refreshing=st.booleans())
def test_any_login_answer_gives_a_pair_or_a_typed_error(
    status: int, headers: dict[str, str], body: bytes, refreshing: bool
) -> None:
    previous = TokenPair("old-access", "old-refresh", NOW) if refreshing else None
    try:
        pair = parse_token_response(status, headers, body, received_at=NOW, previous=previous)
    except WatcherAuthError as exc:
        if isinstance(exc, RefreshRejected):
            # Only a definite answer from Watcher itself may end a stored pair.
            assert status == 401
            assert not body.strip() or isinstance(json.loads(body), dict)
        return
    assert status == 200
    assert pair.expires_at is not None and pair.refresh_token


class ScriptedWatcher:
    """A loopback server whose /login answers with whatever the test queued."""

    def __init__(self) -> None:
        self.answers: queue.Queue[tuple[int, dict[str, str], bytes]] = queue.Queue()
        answers = self.answers

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def do_POST(self) -> None:
                status, headers, body = answers.get(timeout=5)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def scripted() -> Iterator[ScriptedWatcher]:
    server = ScriptedWatcher()
    yield server
    server.close()


safe_header_values = st.text(
    alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40
)


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    status=st.one_of(st.sampled_from([200, 401, 403, 500, 502]), st.integers(200, 599)),
    date=safe_header_values,
    body=bodies(),
)
def test_a_refresh_that_gets_any_answer_never_loses_the_pair_unless_rejected(
    scripted: ScriptedWatcher, status: int, date: str, body: bytes
) -> None:
    clock = FakeClock(NOW)
    manager = TokenManager(scripted.url, store=MemoryStore(), clock=clock, timeout=5)
    key = manager.store_key("user")
    stored = TokenPair("old-access", "old-refresh", expires_at=NOW - 1, issued_at=NOW - 301)
    manager.store.save(key, stored)
    if status in (204, 304) or 100 <= status < 200:
        body = b""
    scripted.answers.put((status, {"Date": date, "Content-Type": "application/json"}, body))
    try:
        pair = manager.refresh("user")
    except ReauthenticationRequired:
        assert status == 401
        assert manager.store.load(key) is None
        return
    except WatcherAuthError:
        assert manager.store.load(key) == stored
        return
    assert manager.store.load(key) == pair and pair.access_token != "old-access"
