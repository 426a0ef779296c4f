"""Three worker processes share one store; in one of them the user disconnects or switches
Watcher account. One second later no process makes a single call with the old account, as
the emulator counts, whether the store's change channel is up or cut."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
import redis

from watcher_auth import TokenManager
from watcher_auth.testing import WatcherEmulator
from watcher_auth.testing.storm import RedisServer

from ._fleet import Fleet
from .conftest import ACCOUNTS, KEYS, terminate_backends

KEY = "portal-user-7"
BOUND = 1.0  # the stores' staleness_bound
# Calls already on the wire at the mark are answered just after it; loopback answers in ms.
IN_FLIGHT = 0.1

ACTIONS = {
    "disconnect": lambda manager: manager.logout(KEY),
    "switch": lambda manager: manager.login(KEY, username="w04", password=ACCOUNTS["w04"]),
}


def calls_by_account(emulator: WatcherEmulator) -> Counter[str]:
    return Counter(record.username for record in emulator.call_log)


def act_and_count(
    fleet: Fleet, emulator: WatcherEmulator, action: str | Callable[[], object]
) -> tuple[Any, Any]:
    """Run ``action`` in worker 0 (or call it here); from one second later, what each worker
    served and what the emulator answered, by account."""
    if isinstance(action, str):
        fleet.run(action)
    else:
        action()
    mark = time.monotonic() + BOUND
    time.sleep(BOUND + IN_FLIGHT)
    emulator.reset_stats()
    time.sleep(1.5)
    return fleet.served_since(mark), calls_by_account(emulator)


def check(action: str, served: Any, answered: Counter[str]) -> None:
    assert answered["w03"] == 0
    for worker in served:
        assert worker.accounts["w03"] == 0
    if action == "switch":
        assert answered["w04"] > 0
        assert all(worker.accounts["w04"] > 0 for worker in served)
    else:
        assert answered == Counter()
        assert all(set(worker.errors) == {"NotConnected"} for worker in served)


@pytest.fixture(params=["redis", "postgres"])
def shared_store(request: pytest.FixtureRequest) -> tuple[str, Callable[[], Any], Any]:
    """(kind, a factory of the store, the channel cutter) for each shared core store."""
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("own_redis")
        prefix = f"coherence:{uuid.uuid4().hex}:"

        def make_redis() -> Any:
            from watcher_auth.stores.redis import RedisStore

            return RedisStore(url=server.url, prefix=prefix, encryption_keys=KEYS)

        return "redis", make_redis, server
    url = request.getfixturevalue("postgres_url")
    table = request.getfixturevalue("postgres_table")

    def make_sql() -> Any:
        from watcher_auth.stores.sqlalchemy import SQLAlchemyStore

        return SQLAlchemyStore(url, table_name=table, encryption_keys=KEYS)

    return "postgres", make_sql, url


@pytest.fixture
def emulator(accounts_emulator: Callable[..., WatcherEmulator]) -> WatcherEmulator:
    return accounts_emulator()


def connected_fleet(emulator: WatcherEmulator, make_store: Callable[[], Any]) -> Fleet:
    seed = TokenManager(emulator.url, store=make_store())
    seed.login(KEY, username="w03", password=ACCOUNTS["w03"])
    seed.close()
    return Fleet(lambda: TokenManager(emulator.url, store=make_store()), KEY, actions=ACTIONS)


@pytest.mark.multiprocess
@pytest.mark.parametrize("action", ["disconnect", "switch"])
def test_no_process_calls_with_the_old_account_a_second_after_a_change(
    shared_store: tuple[str, Callable[[], Any], Any], emulator: WatcherEmulator, action: str
) -> None:
    _, make_store, _ = shared_store
    with connected_fleet(emulator, make_store) as fleet:
        served, answered = act_and_count(fleet, emulator, action)
    check(action, served, answered)


@pytest.mark.multiprocess
@pytest.mark.parametrize("action", ["disconnect", "switch"])
def test_with_the_change_channel_cut_the_bound_still_holds(
    shared_store: tuple[str, Callable[[], Any], Any], emulator: WatcherEmulator, action: str
) -> None:
    kind, make_store, where = shared_store
    with connected_fleet(emulator, make_store) as fleet, ChannelCut(kind, where):
        served, answered = act_and_count(fleet, emulator, action)
    check(action, served, answered)


class ChannelCut:
    """Keep the store's change channel down: Redis refuses SUBSCRIBE and its subscribers are
    killed; PostgreSQL's LISTEN connections are terminated every 50 ms."""

    def __init__(self, kind: str, where: Any) -> None:
        self.kind = kind
        self.where = where
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> ChannelCut:
        if self.kind == "redis":
            client = redis.Redis.from_url(self.where.url)
            client.execute_command("ACL", "SETUSER", "default", "-subscribe", "-psubscribe")
            client.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
            client.close()
        else:
            self._thread = threading.Thread(target=self._terminate, daemon=True)
            self._thread.start()
        time.sleep(0.3)  # every worker has seen its channel fail
        return self

    def _terminate(self) -> None:
        while not self._stop.wait(0.05):
            terminate_backends(self.where, listening=True)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)


@pytest.mark.redis
@pytest.mark.multiprocess
def test_flask_forget_user_in_one_worker_stops_every_worker_within_a_second(
    emulator: WatcherEmulator, own_redis: RedisServer
) -> None:
    from flask_watcher_auth import WatcherAuth, get_state
    from tests.flask.conftest import build_portal
    from watcher_auth.testing import FakeClock
    from watcher_auth.web import portal_key

    extension = WatcherAuth()
    app = build_portal(
        emulator.url,
        FakeClock(),
        extension=extension,
        WATCHER_STORE="redis",
        WATCHER_REDIS_URL=own_redis.url,
        WATCHER_STORE_OPTIONS={"prefix": f"coherence:{uuid.uuid4().hex}:"},
    )
    key = portal_key("1")
    get_state(app).manager.login(key, username="w03", password=ACCOUNTS["w03"])
    # The portal deletes user "1" and, as documented, tells the extension.
    actions = {"forget": lambda _manager: extension.forget_user("1", app=app)}
    with Fleet(
        lambda: get_state(app).manager, key, actions=actions, before_fork=get_state(app).store.close
    ) as fleet:
        served, answered = act_and_count(fleet, emulator, "forget")
    check("disconnect", served, answered)
    get_state(app).store.close()
