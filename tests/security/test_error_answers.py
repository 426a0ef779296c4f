"""Every failure gets a deliberate answer, in HTML and in JSON, on Flask and on Django.

Each row of the error table in :mod:`watcher_auth.web` is produced for real: the emulator
fails, hangs or stops; a Redis server of the test's own stops; a test holds the refresh
lock; the encryption key is rotated away. No library failure may become a 500.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.security.sites import KEY_TWO, Answer, DjangoSite, FlaskSite, Options, Site
from watcher_auth.testing import FakeClock, WatcherEmulator
from watcher_auth.testing.services import require_redis

LIFETIME = 300.0
SHARED_REDIS_DB = 11


@pytest.fixture
def emulator(watcher_emulator_factory: Any, fake_clock: FakeClock) -> WatcherEmulator:
    return watcher_emulator_factory(
        clock=fake_clock, access_lifetime=LIFETIME, rotate_refresh_tokens=True, hang_seconds=1.5
    )


MakeSite = Callable[..., Site]


@pytest.fixture(params=["flask", pytest.param("django", marks=pytest.mark.django_db)])
def make_site(
    request: pytest.FixtureRequest, emulator: WatcherEmulator, fake_clock: FakeClock, tmp_path: Path
) -> Iterator[MakeSite]:
    """``make_site(**options)``: the Flask portal, then the Django one (see ``sites.py``)."""
    made: list[Site] = []

    def make(**options: Any) -> Site:
        site: Site
        if request.param == "flask":
            site = FlaskSite(emulator, fake_clock, Options(**options), tmp_path)
        else:
            settings = request.getfixturevalue("settings")
            site = DjangoSite(emulator, fake_clock, Options(**options), settings)
        made.append(site)
        return site

    yield make
    for site in made:
        site.close()


@pytest.fixture
def site(make_site: MakeSite) -> Site:
    """A portal whose signed-in user has connected the Watcher account alice."""
    site = make_site()
    assert site.connect().status == 302
    return site


# --- the table --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """A failure, how to cause it before one request, and the answer it must get."""

    name: str
    cause: Callable[[Site], str]  # makes the next request fail; returns the path to ask
    status: int
    code: str
    retry_after: int | None = None

    @property
    def connect(self) -> bool:
        return self.status == 401


def _expired(site: Site) -> None:
    site.clock.advance(LIFETIME + 1)


def _refresh_fails(mode: str) -> Callable[[Site], str]:
    def cause(site: Site) -> str:
        _expired(site)
        site.emulator.fail_next("refresh", mode=mode)
        return "/stream-list/"

    return cause


def _call_fails(mode: str, path: str = "/stream-list/") -> Callable[[Site], str]:
    def cause(site: Site) -> str:
        site.emulator.fail_next("call", mode=mode)
        return path

    return cause


def _watcher_stopped(site: Site) -> str:
    site.emulator.stop()
    return "/stream-list/"


def _revoked(site: Site) -> str:
    if not site.manager().is_connected(site.user_key):
        assert site.connect().status == 302
    site.emulator.revoke("alice")
    return "/stream-list/"


def _never_connected(site: Site) -> str:
    assert site.disconnect().status == 302
    return "/stream-list/"


def _key_rotated_away(site: Site) -> str:
    if site.options.keys != (KEY_TWO,):
        site.rebuild(keys=(KEY_TWO,))
    return "/stream-list/"


ROWS = [
    Row("watcher answers 503 to a refresh", _refresh_fails("503"), 503, "watcher_unavailable", 30),
    Row(
        "watcher's refresh answer is HTML",
        _refresh_fails("502_html"),
        503,
        "watcher_unavailable",
        30,
    ),
    Row("watcher's refresh hangs", _refresh_fails("hang"), 503, "watcher_unavailable", 30),
    Row(
        "watcher's refresh answer has no JWT",
        _refresh_fails("bad_jwt"),
        503,
        "watcher_bad_answer",
        30,
    ),
    Row("watcher drops a call", _call_fails("drop"), 503, "watcher_unavailable", 30),
    Row("watcher hangs on a call", _call_fails("hang"), 503, "watcher_unavailable", 30),
    Row(
        "watcher cuts a call's body", _call_fails("reset_mid_body"), 503, "watcher_unavailable", 30
    ),
    Row("watcher answers a call with 500", _call_fails("500"), 503, "watcher_unavailable", 30),
    Row(
        "watcher answers a call with HTML", _call_fails("502_html"), 503, "watcher_unavailable", 30
    ),
    Row(
        "watcher answers a call with no JSON",
        _call_fails("non_json"),
        503,
        "watcher_bad_answer",
        30,
    ),
    Row(
        "raise_for_status on a 500 from watcher",
        _call_fails("500", "/checked-streams/"),
        503,
        "watcher_unavailable",
        30,
    ),
    Row(
        "a call without the decorator when watcher drops it",
        _call_fails("drop", "/profile/"),
        503,
        "watcher_unavailable",
        30,
    ),
    Row(
        "a class-based view's call answered with 500",
        _call_fails("500", "/profile-view/"),
        503,
        "watcher_unavailable",
        30,
    ),
    Row(
        "a view reads watcher's 500 as data",
        _call_fails("500", "/naive-streams/"),
        503,
        "watcher_unavailable",
        30,
    ),
    Row(
        "a view parses watcher's HTML error page",
        _call_fails("502_html", "/naive-streams/"),
        503,
        "watcher_unavailable",
        30,
    ),
    Row(
        "a view parses a non-JSON answer",
        _call_fails("non_json", "/naive-streams/"),
        503,
        "watcher_bad_answer",
        30,
    ),
    Row("watcher is stopped", _watcher_stopped, 503, "watcher_unavailable", 30),
    Row(
        "watcher forbids the call", lambda s: "/watcher-api/users", 403, "watcher_permission_denied"
    ),
    Row(
        "watcher has no such stream",
        lambda s: "/watcher-api/streams/nope",
        404,
        "watcher_not_found",
    ),
    Row(
        "watcher refuses the method",
        lambda s: "/watcher-api/login",
        502,
        "watcher_request_rejected",
    ),
    Row("the user never connected", _never_connected, 401, "watcher_not_connected"),
    Row("watcher revoked the session", _revoked, 401, "watcher_reauthentication_required"),
    Row(
        "the encryption key was rotated away", _key_rotated_away, 401, "watcher_reconnect_required"
    ),
]


def assert_answer(answer: Answer, row: Row, site: Site, *, as_json: bool) -> None:
    assert answer.status != 500, answer.text
    if as_json:
        assert answer.status == row.status, answer.text
        assert answer.json["error"] == row.code
        assert answer.json["message"]
        if row.connect:
            assert answer.json["connect_url"].startswith(site.connect_path)
    elif row.connect:
        assert answer.status == 302, answer.text
        assert answer.location is not None and answer.location.startswith(site.connect_path)
    else:
        assert answer.status == row.status, answer.text
        assert answer.error_code == row.code
    if row.retry_after is None:
        assert "Retry-After" not in answer.headers
    else:
        assert answer.headers["Retry-After"] == str(row.retry_after)


@pytest.mark.parametrize("row", ROWS, ids=[row.name for row in ROWS])
@pytest.mark.parametrize("as_json", [False, True], ids=["html", "json"])
def test_each_failure_gets_its_answer(site: Site, row: Row, as_json: bool) -> None:
    path = row.cause(site)
    answer = site.get(path, as_json=as_json)
    assert_answer(answer, row, site, as_json=as_json)


@pytest.mark.parametrize("row", ROWS, ids=[row.name for row in ROWS])
def test_no_answer_carries_a_token_or_the_password(site: Site, row: Row) -> None:
    stored = site.manager().tokens(site.user_key)
    path = row.cause(site)
    for as_json in (False, True):
        text = site.get(path, as_json=as_json).text
        assert "secret" not in text
        if stored is not None:
            assert stored.access_token not in text and stored.refresh_token not in text


def test_a_failure_repeated_is_logged_once_with_its_cause_and_no_traceback(
    site: Site, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    logger = f"{site.framework}_watcher_auth"
    caplog.set_level(logging.INFO, logger=logger)
    if isinstance(site, DjangoSite):
        from django_watcher_auth._http import failures

        failures.clear()  # one log per process: earlier tests' failures are still counted
    site.emulator.stop()
    for _ in range(3):
        assert site.get("/stream-list/").status == 503
    lines = [r for r in caplog.records if r.name == logger]
    assert len(lines) == 1
    assert lines[0].exc_info is None
    message = lines[0].getMessage()
    assert message.startswith(
        "Watcher request failed on /stream-list/: answered 503 watcher_unavailable; cause: "
        "WatcherConnectionError: Watcher call GET /watcher/client-api/v3/streams failed"
    )


def test_a_portal_bug_after_a_good_answer_is_not_blamed_on_watcher(site: Site) -> None:
    assert site.get("/naive-streams/").status == 200
    assert site.get("/buggy/").status == 500


# --- the token store --------------------------------------------------------------------------


class OwnRedis:
    """A ``redis-server`` of this test's own on a fixed port, stopped and started at will."""

    def __init__(self, port: int, directory: Path) -> None:
        from tests.security.conftest import RedisServer

        binary = require_redis_server()
        self.server = RedisServer(binary, directory)
        self.server.port = port
        self.server.url = f"redis://127.0.0.1:{port}/0"

    @property
    def url(self) -> str:
        return self.server.url


def require_redis_server() -> str:
    import shutil

    from watcher_auth.testing.services import service_missing

    binary = shutil.which("redis-server")
    if binary is None:
        service_missing("redis-server", "the redis-server binary is not installed")
    return binary  # type: ignore[return-value]


OWN_REDIS_PORT = 16641


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    redis = OwnRedis(OWN_REDIS_PORT, tmp_path)
    redis.server.start()
    yield redis
    redis.server.stop()


@pytest.fixture
def shared_redis_prefix() -> Iterator[tuple[str, str]]:
    """``(url, prefix)`` on the shared Redis; the prefix's keys are removed afterwards."""
    import redis

    url = require_redis(SHARED_REDIS_DB)
    prefix = f"watcher-errors-{uuid.uuid4().hex[:10]}:"
    yield url, prefix
    client = redis.Redis.from_url(url)
    for name in client.scan_iter(match=f"*{prefix}*"):
        client.delete(name)
    client.close()


@pytest.mark.redis
@pytest.mark.parametrize("as_json", [False, True], ids=["html", "json"])
def test_a_store_that_is_down_answers_503_and_comes_back(
    make_site: MakeSite, own_redis: OwnRedis, as_json: bool
) -> None:
    site = make_site(store=("redis", own_redis.url, f"errors-{uuid.uuid4().hex[:8]}:"))
    assert site.connect().status == 302
    assert site.get("/stream-list/").status == 200
    _expired(site)  # the next request needs the store
    own_redis.server.stop()

    answer = site.get("/stream-list/", as_json=as_json)
    row = Row("the store is down", _expired, 503, "watcher_store_unavailable", 30)
    assert_answer(answer, row, site, as_json=as_json)
    status_page = site.get(site.status_path, as_json=as_json)
    assert (status_page.status, status_page.headers["Retry-After"]) == (503, "30")

    own_redis.server.start()  # appendonly: the record survived
    assert site.get("/stream-list/").status == 200
    assert site.emulator.stats.password_logins == 1


@pytest.mark.redis
@pytest.mark.parametrize("as_json", [False, True], ids=["html", "json"])
def test_a_refresh_lock_held_too_long_answers_503_busy(
    make_site: MakeSite, shared_redis_prefix: tuple[str, str], as_json: bool
) -> None:
    site = make_site(store=("lockable", *shared_redis_prefix))
    assert site.connect().status == 302
    _expired(site)
    manager = site.manager()
    with manager.store.lock(site.store_key(), timeout=5):  # another worker, refreshing
        answer = site.get("/stream-list/", as_json=as_json)
    row = Row("the lock is held", _expired, 503, "watcher_busy", 5)
    assert_answer(answer, row, site, as_json=as_json)
    assert site.emulator.stats.refreshes == 0
    assert site.get("/stream-list/").status == 200


@pytest.fixture
def own_database() -> Iterator[str]:
    """A PostgreSQL database of the test's own (it gets closed to connections), dropped after."""
    import os

    import psycopg

    from watcher_auth.testing.services import create_postgres_database, require_postgres

    name = f"watcher_auth_web_outage_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    url = create_postgres_database(name)
    yield url.replace("postgresql://", "postgresql+psycopg://", 1)
    with psycopg.connect(require_postgres(), autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
        )
        admin.execute(f'DROP DATABASE IF EXISTS "{name}"')


def _postgres_admin(sql: str, *params: Any) -> None:
    import psycopg

    from watcher_auth.testing.services import require_postgres

    with psycopg.connect(require_postgres(), autocommit=True) as admin:
        admin.execute(sql, params or None)  # type: ignore[arg-type]


@pytest.mark.postgres
@pytest.mark.parametrize("as_json", [False, True], ids=["html", "json"])
def test_a_postgres_store_whose_connections_are_killed_answers_503_then_recovers(
    emulator: WatcherEmulator,
    fake_clock: FakeClock,
    tmp_path: Path,
    own_database: str,
    as_json: bool,
) -> None:
    database = own_database.rsplit("/", 1)[1]
    application = f"watcher-web-{uuid.uuid4().hex[:8]}"
    store = ("postgres", own_database, "tokens", application)
    site = FlaskSite(emulator, fake_clock, Options(store=store), tmp_path)
    try:
        assert site.connect().status == 302
        kill = (
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND application_name = %s"
        )
        # Killed once: the pool notices the dead connection and opens a new one.
        _postgres_admin(kill, database, application)
        assert site.get("/stream-list/").status == 200

        _expired(site)
        _postgres_admin(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
        _postgres_admin(kill, database, application)
        answer = site.get("/stream-list/", as_json=as_json)
        row = Row("the database is closed", _expired, 503, "watcher_store_unavailable", 30)
        assert_answer(answer, row, site, as_json=as_json)

        _postgres_admin(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
        assert site.get("/stream-list/").status == 200
        assert emulator.stats.password_logins == 1
    finally:
        site.close()
