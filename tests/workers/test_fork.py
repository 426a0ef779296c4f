"""A manager used before ``fork()`` — its keep-alive connection to Watcher open, its cache
warm — serves each forked child its own user's answers, never another child's: the core
manager, the Django app's manager after ``get_manager()`` was used, and a Flask app's."""

from __future__ import annotations

import multiprocessing
import os
import threading
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from watcher_auth import MemoryStore, TokenManager
from watcher_auth.stores.redis import RedisStore
from watcher_auth.testing import FakeClock, WatcherEmulator
from watcher_auth.testing.storm import RedisServer
from watcher_auth.web import portal_key

from .conftest import ACCOUNTS, KEYS

pytestmark = pytest.mark.multiprocess

CALLS = 60
USERNAMES = ["w01", "w02", "w03", "w04"]


def answers_for_one_user(call: Callable[[], str], expected: str, result: Any) -> None:
    """In a forked child: 4 threads call ``CALLS`` times; report answers for anyone else."""
    crossed: list[str] = []
    errors: list[str] = []

    def run() -> None:
        for _ in range(CALLS):
            try:
                name = call()
            except Exception as exc:
                errors.append(type(exc).__name__)
                continue
            if name != expected:
                crossed.append(name)

    pool = [threading.Thread(target=run) for _ in range(4)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    result.put((os.getpid(), expected, crossed, errors))


def fork_children(
    calls: dict[str, Callable[[], str]], before_fork: Callable[[], None]
) -> list[Any]:
    """Fork one child per expected answer; returns each child's report."""
    ctx = multiprocessing.get_context("fork")
    result = ctx.Queue()
    before_fork()
    children = [
        ctx.Process(target=answers_for_one_user, args=(call, expected, result), daemon=True)
        for expected, call in calls.items()
    ]
    for child in children:
        child.start()
    reports = [result.get(timeout=120) for _ in children]
    for child in children:
        child.join(30)
        assert child.exitcode == 0
    return reports


def check(reports: list[Any], emulator: WatcherEmulator) -> None:
    for _, expected, crossed, errors in reports:
        assert (expected, crossed, errors) == (expected, [], [])
    calls = emulator.stats.calls_by_user
    assert all(calls[name] >= 4 * CALLS for name in USERNAMES)


@pytest.mark.redis
def test_children_of_a_warm_core_manager_get_only_their_own_users_answers(
    accounts_emulator: Callable[..., WatcherEmulator], own_redis: RedisServer
) -> None:
    emulator = accounts_emulator()
    store = RedisStore(url=own_redis.url, prefix=f"fork:{uuid.uuid4().hex}:", encryption_keys=KEYS)
    manager = TokenManager(emulator.url, store=store)
    for name in USERNAMES:
        manager.login(f"key-{name}", username=name, password=ACCOUNTS[name])
        assert manager.session(f"key-{name}").get("profile").json()["name"] == name  # warm

    def caller(name: str) -> Callable[[], str]:
        return lambda: str(manager.session(f"key-{name}").get("profile").json()["name"])

    reports = fork_children({name: caller(name) for name in USERNAMES}, lambda: None)
    check(reports, emulator)


def test_children_of_a_manager_that_kept_lent_sessions_lend_their_own(
    accounts_emulator: Callable[..., WatcherEmulator],
) -> None:
    emulator = accounts_emulator()
    manager = TokenManager(emulator.url, store=MemoryStore())
    for name in USERNAMES:
        manager.login(f"key-{name}", username=name, password=ACCOUNTS[name])
        with manager.lend(f"key-{name}") as session:  # kept, its connection left open
            assert session.get("profile").json()["name"] == name
    assert len(manager._idle) == len(USERNAMES)

    def caller(name: str) -> Callable[[], str]:
        def whoami() -> str:
            with manager.lend(f"key-{name}") as session:
                if session._shared_adapter is not manager.adapter:
                    return "a session of the parent's"
                return str(session.get("profile").json()["name"])

        return whoami

    reports = fork_children({name: caller(name) for name in USERNAMES}, lambda: None)
    check(reports, emulator)


def test_children_of_a_manager_with_shared_sessions_share_their_own(
    accounts_emulator: Callable[..., WatcherEmulator], second_recording_server: Any
) -> None:
    emulator = accounts_emulator()
    manager = TokenManager(emulator.url, store=MemoryStore())
    for name in USERNAMES:
        manager.login(f"key-{name}", username=name, password=ACCOUNTS[name])
        session = manager.shared_session(f"key-{name}")  # its connection left open
        assert session.get("profile").json()["name"] == name
        session.get(second_recording_server.url + "/page")  # the pool for other origins too
    assert len(manager._shared) == len(USERNAMES)
    parents = set(manager._shared.values())
    parents_foreign = next(iter(parents)).get_adapter(second_recording_server.url)

    def caller(name: str) -> Callable[[], str]:
        def whoami() -> str:
            session = manager.shared_session(f"key-{name}")
            if session in parents or session._shared_adapter is not manager.adapter:
                return "a session of the parent's"
            if session.get_adapter(second_recording_server.url) is parents_foreign:
                return "the parent's pool for other origins"
            return str(session.get("profile").json()["name"])

        return whoami

    reports = fork_children({name: caller(name) for name in USERNAMES}, lambda: None)
    check(reports, emulator)


def _end_in_child(loan: Any, manager: TokenManager, result: Any) -> None:
    loan.end()
    result.put(sorted(manager._idle))


@pytest.mark.parametrize("touched", [True, False])
def test_a_loan_made_before_fork_and_ended_in_the_child_is_not_kept_there(
    accounts_emulator: Callable[..., WatcherEmulator], touched: bool
) -> None:
    emulator = accounts_emulator()
    manager = TokenManager(emulator.url, store=MemoryStore())
    name = USERNAMES[0]
    manager.login(f"key-{name}", username=name, password=ACCOUNTS[name])
    loan = manager.lend(f"key-{name}")
    loan.touched = touched
    assert loan.session.get("profile").json()["name"] == name
    ctx = multiprocessing.get_context("fork")
    result = ctx.Queue()
    child = ctx.Process(target=_end_in_child, args=(loan, manager, result), daemon=True)
    child.start()
    assert result.get(timeout=60) == []  # its connections are the parent's
    child.join(30)
    assert child.exitcode == 0
    loan.end()
    assert list(manager._idle) == [f"key-{name}"]  # in the parent it is kept


@pytest.mark.redis
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True, databases=["default", "postgres"])
def test_children_of_a_django_portal_forked_after_get_manager_get_their_own_answers(
    accounts_emulator: Callable[..., WatcherEmulator], settings: Any
) -> None:
    from django.db import connections

    from django_watcher_auth.conf import get_manager
    from watcher_auth.testing.services import require_redis

    require_redis(14)
    emulator = accounts_emulator()
    settings.WATCHER_AUTH = {
        "URL": emulator.url,
        "STORE": "cache",
        "CACHE_ALIAS": "redis",
        "CACHE_KEY_PREFIX": f"fork-{uuid.uuid4().hex[:12]}",
    }
    for name in USERNAMES:
        get_manager().login(f"key-{name}", username=name, password=ACCOUNTS[name])
        assert get_manager().session(f"key-{name}").get("profile").json()["name"] == name

    def caller(name: str) -> Callable[[], str]:
        return lambda: str(get_manager().session(f"key-{name}").get("profile").json()["name"])

    reports = fork_children({name: caller(name) for name in USERNAMES}, connections.close_all)
    check(reports, emulator)


@pytest.mark.redis
def test_children_of_a_warm_flask_portal_render_only_their_own_users_answers(
    accounts_emulator: Callable[..., WatcherEmulator], own_redis: RedisServer
) -> None:
    from flask_watcher_auth import get_state
    from tests.flask.conftest import build_portal

    emulator = accounts_emulator()
    app = build_portal(
        emulator.url,
        FakeClock(),
        WATCHER_STORE="redis",
        WATCHER_REDIS_URL=own_redis.url,
        WATCHER_STORE_OPTIONS={"prefix": f"fork:{uuid.uuid4().hex}:"},
    )
    users = dict(zip(["1", "2", "3"], USERNAMES, strict=False))
    manager = get_state(app).manager
    clients = {}
    for user_id, name in users.items():
        manager.login(portal_key(user_id), username=name, password=ACCOUNTS[name])
        client = app.test_client()
        assert client.post(f"/sign-in/{user_id}").status_code == 200
        assert client.get("/whoami").json == {"name": name}  # warm: a real request
        clients[name] = client

    parent_manager = get_state(app).manager

    def caller(name: str) -> Callable[[], str]:
        def whoami() -> str:
            if get_state(app).manager is parent_manager:
                return "the parent's manager"  # a forked worker makes its own
            answer = clients[name].get("/whoami")
            assert answer.status_code == 200, answer.status_code
            return str(answer.json["name"])  # type: ignore[index]

        return whoami

    reports = fork_children({name: caller(name) for name in users.values()}, lambda: None)
    for _, expected, crossed, errors in reports:
        assert (expected, crossed, errors) == (expected, [], [])
    get_state(app).store.close()
