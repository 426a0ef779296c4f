"""Isolation: every call reaches Watcher as its own user; the token never leaves Watcher's origin.

The emulator records the Watcher user behind each call it answers, and each call carries the
portal user it was made for in its query string (``?for=<key>``), so a call answered as
somebody else shows up in the emulator's log.
"""

from __future__ import annotations

import multiprocessing
import random
import threading
import traceback
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

import jwt
import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from watcher_auth import TokenManager, TokenPair, WatcherAuthError
from watcher_auth.testing import FakeClock, SharedClock
from watcher_auth.v2 import UserApiKeyAuth

USERS = 50
PROCESSES = 4
THREADS = 8
PHASES = 3
CALLS_PER_PHASE = 105  # per thread: 4 x 8 x 3 x 105 = 10,080 calls
LIFETIME = 300.0
SEED = 20240917
TIMEOUT = 120.0


def portal_key(n: int) -> str:
    return f"portal-{n:02d}"


def watcher_user(n: int) -> str:
    return f"user{n:02d}"


def _worker(
    make_manager: Callable[[], TokenManager], worker: int, barrier: Any, results: Any
) -> None:
    calls = 0
    wrong: list[str] = []
    errors: list[str] = []
    called: list[set[int]] = [set() for _ in range(PHASES)]
    guard = threading.Lock()
    try:
        manager = make_manager()
    except Exception:
        results.put((0, [], [traceback.format_exc()], called))
        barrier.abort()
        return

    def caller(thread: int) -> None:
        nonlocal calls
        rng = random.Random(f"{SEED}-{worker}-{thread}")
        sessions: dict[int, Any] = {}
        for phase in range(PHASES):
            barrier.wait(TIMEOUT)
            for _ in range(CALLS_PER_PHASE):
                n = rng.randrange(USERS)
                path = rng.choice(["profile", "streams"])
                # Sometimes a session kept per user, sometimes a new one, sometimes bare
                # requests with the manager's auth: all must stay with their user.
                how = rng.random()
                try:
                    if how < 0.6:
                        session = sessions.setdefault(n, manager.session(portal_key(n)))
                        response = session.get(path, params={"for": portal_key(n)})
                    elif how < 0.8:
                        response = manager.session(portal_key(n)).get(
                            path, params={"for": portal_key(n)}
                        )
                    else:
                        response = requests.get(
                            manager.api_root + path,
                            params={"for": portal_key(n)},
                            auth=manager.auth(portal_key(n)),
                            timeout=10,
                        )
                    body = response.json()
                except Exception as exc:
                    with guard:
                        errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                seen = (
                    body.get("name")
                    if path == "profile"
                    else {s["name"].split("-cam-")[0] for s in body["streams"]}
                )
                expected = watcher_user(n) if path == "profile" else {watcher_user(n)}
                with guard:
                    calls += 1
                    called[phase].add(n)
                    if response.status_code != 200:
                        errors.append(f"HTTP {response.status_code}")
                    elif seen != expected:
                        wrong.append(f"{portal_key(n)} got {seen!r}")
            barrier.wait(TIMEOUT)

    threads = [threading.Thread(target=caller, args=(t,), daemon=True) for t in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    manager.close()
    results.put((calls, wrong, errors, called))


@pytest.mark.redis
@pytest.mark.multiprocess
def test_fifty_users_interleaved_across_processes_and_threads_never_cross(
    watcher_emulator_factory, make_redis_store
) -> None:
    clock = SharedClock()
    emulator = watcher_emulator_factory(
        clock=clock, access_lifetime=LIFETIME, rotate_refresh_tokens=True, seed_users=False
    )
    for n in range(USERS):
        emulator.add_user(watcher_user(n), f"password {n}", streams=2)

    def make_manager() -> TokenManager:
        return TokenManager(emulator.url, store=make_redis_store(), clock=clock)

    parent = make_manager()
    for n in range(USERS):
        parent.login(portal_key(n), username=watcher_user(n), password=f"password {n}")
    parent.close()
    parent.store.close()

    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(PROCESSES * THREADS + 1)
    results = ctx.Queue()
    workers = [
        ctx.Process(target=_worker, args=(make_manager, w, barrier, results), daemon=True)
        for w in range(PROCESSES)
    ]
    for worker in workers:
        worker.start()
    for phase in range(PHASES):
        if phase:
            clock.advance(LIFETIME)  # every user's token expires in every process at once
        barrier.wait(TIMEOUT)
        barrier.wait(TIMEOUT)
    calls, wrong, errors = 0, [], []
    called: list[set[int]] = [set() for _ in range(PHASES)]
    for _ in workers:
        w_calls, w_wrong, w_errors, w_called = results.get(timeout=TIMEOUT)
        calls += w_calls
        wrong += w_wrong
        errors += w_errors
        for phase in range(PHASES):
            called[phase] |= w_called[phase]
    for worker in workers:
        worker.join(TIMEOUT)

    assert errors == []
    assert wrong == []
    assert calls == PROCESSES * THREADS * PHASES * CALLS_PER_PHASE >= 10_000

    # The emulator's own record: who each call was answered as.
    tagged = [r for r in emulator.call_log if "for=" in r.query]
    assert len(tagged) == calls
    crossed = [
        r
        for r in tagged
        if r.username != watcher_user(int(parse_qs(r.query)["for"][0].split("-")[1]))
    ]
    assert crossed == []
    assert set(emulator.stats.calls_by_user) == {watcher_user(n) for n in range(USERS)}

    # One refresh per user per expiry that user was called after, whatever the interleaving.
    stats = emulator.stats
    expected_refreshes = sum(len(called[phase]) for phase in range(1, PHASES))
    assert expected_refreshes == USERS * (PHASES - 1)
    assert (stats.password_logins, stats.refreshes, stats.rejected_refreshes) == (
        USERS,
        expected_refreshes,
        0,
    )


# --- the token never leaves Watcher's origin -----------------------------------------------


V2_SESSION = "v2-session-id-Qm3Xr8"
V2_KEY = "v2-api-key-Wd7Kp2"


@pytest.fixture
def watcher_like(recording_server, fake_clock: FakeClock) -> tuple[TokenManager, str]:
    """A manager whose Watcher is a recording server, with hand-made credentials stored.

    The emulator never redirects, so a recording server plays Watcher here: what is checked
    is only which headers reach which server.
    """
    manager = TokenManager(recording_server.url, clock=fake_clock)
    token = jwt.encode({"exp": fake_clock() + 300}, "a-32-byte-long-hmac-key-for-tests", "HS256")
    manager.store.save(manager.store_key("k"), TokenPair(token, "r", fake_clock() + 300))
    v2_session = TokenPair(V2_SESSION, scheme="session", username="alice")
    manager.store.save(manager.store_key("k", api="v2"), v2_session)
    return manager, token


def _with_auth(auth: Any) -> requests.Session:
    session = requests.Session()
    session.auth = auth
    return session


CLIENTS: dict[str, Callable[[TokenManager, str], requests.Response]] = {
    "WatcherSession": lambda m, url: m.session("k").get(url),
    "requests.get(auth=)": lambda m, url: requests.get(url, auth=m.auth("k"), timeout=5),
    "requests.Session(auth=)": lambda m, url: _with_auth(m.auth("k")).get(url, timeout=5),
    "v2 session": lambda m, url: m.v2_session("k").get(url),
    "v2 system session": lambda m, url: m.v2_system_session(V2_KEY).get(url),
    "UserApiKeyAuth": lambda m, url: _with_auth(
        UserApiKeyAuth("alice", V2_KEY, origin=m.server)
    ).get(url, timeout=5),
}
CREDENTIAL_HEADERS = {"authorization", "x-vsaas-session", "x-vsaas-api-key"}


def test_no_client_sends_credentials_to_another_origin(
    watcher_like: tuple[TokenManager, str], recording_server, second_recording_server
) -> None:
    manager, token = watcher_like
    watcher = recording_server.url
    watcher_port = watcher.rsplit(":", 1)[1]
    other = second_recording_server.url
    other_hostport = other.split("://")[1]
    targets = {
        "another port": other + "/x",
        "the same port as localhost": f"http://localhost:{watcher_port}/x",
        "a redirect to another port": f"{watcher}/redirect?to={other}/x",
        "a redirect to localhost": f"{watcher}/redirect?to=http://localhost:{watcher_port}/x",
        "a protocol-relative redirect": f"{watcher}/redirect?to=//{other_hostport}/x",
        "a userinfo trick": f"http://127.0.0.1:{watcher_port}@{other_hostport}/x",
    }
    for client, send in CLIENTS.items():
        for target, url in targets.items():
            recording_server.seen.clear()
            second_recording_server.seen.clear()
            send(manager, url)
            seen = recording_server.seen + second_recording_server.seen
            assert seen, (client, target)
            if "redirect" in target:  # the first hop is Watcher: credentials go there
                first = {name.lower() for name in recording_server.seen[0]}
                assert first & CREDENTIAL_HEADERS, (client, target)
            for request in seen:
                for secret in (token, V2_SESSION, V2_KEY):
                    assert secret not in request["path"], (client, target)
                sent = {name.lower() for name in request} & CREDENTIAL_HEADERS
                if sent:
                    # Only the first hop, to Watcher itself, carries credentials.
                    assert request["Host"] == f"127.0.0.1:{watcher_port}", (client, target)
                    assert request["path"].startswith("/redirect"), (client, target)


def test_credentials_for_https_are_never_attached_to_plain_http() -> None:
    # No TLS server can run here; the check is on the request the auth prepares, which is
    # where the decision is made. The store is empty: the auth must not even look.
    manager = TokenManager("https://watcher.test")
    auths = [
        manager.auth("k"),
        manager.v2_auth("k"),
        UserApiKeyAuth("alice", V2_KEY, origin=manager.server),
    ]
    for url in [
        "http://watcher.test/watcher/client-api/v3/profile",
        "http://watcher.test:443/watcher/client-api/v3/profile",
        "https://watcher.test.evil.example/watcher/client-api/v3/profile",
        "https://watcher.test:8443/watcher/client-api/v3/profile",
    ]:
        for auth in auths:
            prepared = requests.Request("GET", url, auth=auth).prepare()
            assert not CREDENTIAL_HEADERS & {n.lower() for n in prepared.headers}, (url, auth)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    prefix=st.sampled_from(
        ["", "/", "//", "\\\\", "///", "//{other}/", "http://{other}/", "{watcher}/", "{self}/"]
    ),
    # No ":" in the random part: only the prefixes above name a host, all on loopback, so
    # nothing is ever looked up or sent off this machine.
    path=st.text(alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters=":")),
    tail=st.sampled_from(["", "?next=http://{other}/", "#http://{other}/", "@{other}/"]),
)
def test_any_path_given_to_a_session_keeps_the_token_at_watcher(
    watcher_like: tuple[TokenManager, str],
    recording_server,
    second_recording_server,
    prefix: str,
    path: str,
    tail: str,
) -> None:
    manager, _token = watcher_like
    places = {
        "other": second_recording_server.url.split("://")[1],
        "watcher": f"http://localhost:{recording_server.url.rsplit(':', 1)[1]}",
        "self": recording_server.url,
    }
    url = prefix.format(**places) + path + tail.format(**places)
    relative = not url.startswith("http://")
    recording_server.seen.clear()
    second_recording_server.seen.clear()
    try:
        manager.session("k").get(url, allow_redirects=False)
    except WatcherAuthError:
        assert not relative  # a relative path always makes a request to Watcher
    for request in second_recording_server.seen:
        assert "Authorization" not in request
    for request in recording_server.seen:
        if "Authorization" in request:
            assert request["Host"] == places["self"].split("://")[1]
    if relative:
        [request] = recording_server.seen
        assert request["path"].startswith("/watcher/client-api/v3/")
        assert request["Authorization"].startswith("Bearer ")
