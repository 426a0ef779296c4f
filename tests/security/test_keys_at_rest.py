"""Encryption keys at rest: rotation loses nothing, a wrong or missing key says which setting.

Each encrypted store is opened as a portal opens it, with a list of keys (newest first):
records written under key A are read with ``[B, A]``, re-encrypted under B by the next
refresh, then read with ``[B]`` alone; with ``[C]`` they fail with a
:class:`TokenDecryptionError` naming the setting, and stay stored.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask

from django_watcher_auth.conf import get_manager
from flask_watcher_auth import WatcherAuth, get_state
from watcher_auth import (
    ConfigurationError,
    TokenDecryptionError,
    TokenManager,
)
from watcher_auth.crypto import TokenCipher
from watcher_auth.stores.redis import RedisStore
from watcher_auth.stores.sqlalchemy import SQLAlchemyStore
from watcher_auth.testing import FakeClock, WatcherEmulator
from watcher_auth.testing.contract import sample_pair

KEY = "portal-user-7"
LIFETIME = 300.0

OpenManager = Callable[[list[str]], TokenManager]
NOT_RECORDS = [b'{"no": "fields"}', b"[]", b"null", b'"text"', b"not json", b"\xff"]


@pytest.fixture
def emulator(watcher_emulator_factory, fake_clock: FakeClock) -> WatcherEmulator:
    return watcher_emulator_factory(
        clock=fake_clock, access_lifetime=LIFETIME, rotate_refresh_tokens=True
    )


@pytest.fixture
def flask_apps() -> Iterator[list[Flask]]:
    apps: list[Flask] = []
    yield apps
    for app in apps:
        get_state(app).store.close()


def flask_manager(
    apps: list[Flask], emulator: WatcherEmulator, clock: FakeClock, **config: Any
) -> TokenManager:
    app = Flask("portal")
    app.config.update(
        {
            "SECRET_KEY": "portal secret",
            "WATCHER_URL": emulator.url,
            "WATCHER_CLOCK": clock,
            "WATCHER_LOCAL_CACHE_SIZE": 0,
            **config,
        }
    )
    WatcherAuth(app)
    apps.append(app)
    return get_state(app).manager


BACKENDS = [
    pytest.param("redis", marks=pytest.mark.redis),
    pytest.param("postgres", marks=pytest.mark.postgres),
    "sqlite",
    pytest.param("flask-redis", marks=pytest.mark.redis),
    pytest.param("flask-postgres", marks=pytest.mark.postgres),
    pytest.param("django-db", marks=pytest.mark.django_db),
    pytest.param("django-cache", marks=[pytest.mark.redis, pytest.mark.django_db]),
]
SETTINGS = {
    "redis": "RedisStore(encryption_keys=...)",
    "postgres": "SQLAlchemyStore(encryption_keys=...)",
    "sqlite": "SQLAlchemyStore(encryption_keys=...)",
    "flask-redis": "WATCHER_ENCRYPTION_KEYS",
    "flask-postgres": "WATCHER_ENCRYPTION_KEYS",
    "django-db": "WATCHER_AUTH['ENCRYPTION_KEYS']",
    "django-cache": "WATCHER_AUTH['ENCRYPTION_KEYS']",
}


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def open_manager(
    request: pytest.FixtureRequest,
    backend: str,
    emulator: WatcherEmulator,
    fake_clock: FakeClock,
    flask_apps: list[Flask],
) -> OpenManager:
    """``open(keys)``: a manager over the backend's store, encrypting with ``keys``."""
    if backend.startswith("flask-"):
        if backend == "flask-redis":
            config = {
                "WATCHER_STORE": "redis",
                "WATCHER_REDIS_URL": request.getfixturevalue("redis_url"),
                "WATCHER_STORE_OPTIONS": {"prefix": request.getfixturevalue("redis_prefix")},
            }
        else:
            config = {
                "WATCHER_STORE": "sqlalchemy",
                "WATCHER_SQLALCHEMY_URL": request.getfixturevalue("postgres_url"),
                "WATCHER_STORE_OPTIONS": {"table_name": request.getfixturevalue("postgres_table")},
            }
        return lambda keys: flask_manager(
            flask_apps, emulator, fake_clock, WATCHER_ENCRYPTION_KEYS=keys, **config
        )
    if backend.startswith("django-"):
        django_settings = request.getfixturevalue("settings")
        store = {"STORE": "db"}
        if backend == "django-cache":
            prefix = request.getfixturevalue("django_cache_prefix")
            store = {"STORE": "cache", "CACHE_ALIAS": "redis", "CACHE_KEY_PREFIX": prefix}

        def open_django(keys: list[str]) -> TokenManager:
            django_settings.WATCHER_AUTH = {
                "URL": emulator.url,
                "CLOCK": fake_clock,
                "LOCAL_CACHE_SIZE": 0,
                "ENCRYPTION_KEYS": keys,
                **store,
            }
            return get_manager()  # rebuilt for the new settings

        return open_django
    make_store = request.getfixturevalue(f"make_{backend}_store")
    return lambda keys: TokenManager(
        emulator.url, store=make_store(encryption_keys=keys), clock=fake_clock, local_cache_size=0
    )


def test_keys_rotate_new_key_first_without_losing_a_record(
    open_manager: OpenManager,
    backend: str,
    emulator: WatcherEmulator,
    fake_clock: FakeClock,
) -> None:
    open_manager(["key A"]).login(KEY, username="alice", password="secret")
    both = open_manager(["key B", "key A"])
    stored = both.tokens(KEY)
    assert stored is not None and stored.username == "alice"

    fake_clock.advance(LIFETIME)
    assert both.session(KEY).get("profile").status_code == 200  # re-saved under key B
    renewed = both.tokens(KEY)
    assert renewed is not None and renewed != stored

    only_new = open_manager(["key B"])
    assert only_new.tokens(KEY) == renewed
    assert only_new.session(KEY).get("profile").json()["name"] == "alice"

    wrong = open_manager(["key C"])
    setting = re.escape(SETTINGS[backend])
    with pytest.raises(TokenDecryptionError, match=setting):
        wrong.tokens(KEY)
    with pytest.raises(TokenDecryptionError, match=setting):
        wrong.session(KEY).get("profile")
    with pytest.raises(TokenDecryptionError, match=setting):
        wrong.refresh(KEY)
    assert only_new.tokens(KEY) == renewed  # still there for the right key

    stats = emulator.stats
    assert (stats.password_logins, stats.refreshes, stats.rejected_refreshes) == (1, 1, 0)


def test_the_flask_secret_key_encrypts_by_default_and_is_named_when_it_changes(
    redis_url: str,
    redis_prefix: str,
    emulator: WatcherEmulator,
    fake_clock: FakeClock,
    flask_apps: list[Flask],
) -> None:
    config = {
        "WATCHER_STORE": "redis",
        "WATCHER_REDIS_URL": redis_url,
        "WATCHER_STORE_OPTIONS": {"prefix": redis_prefix},
    }
    flask_manager(flask_apps, emulator, fake_clock, **config).login(
        KEY, username="alice", password="secret"
    )
    changed = flask_manager(
        flask_apps, emulator, fake_clock, **{**config, "SECRET_KEY": "a new secret"}
    )
    with pytest.raises(TokenDecryptionError, match=re.escape("SECRET_KEY")):
        changed.tokens(KEY)
    # The old SECRET_KEY kept in the list (after the new key) reads the record again.
    rotated = flask_manager(
        flask_apps,
        emulator,
        fake_clock,
        WATCHER_ENCRYPTION_KEYS=["a new secret", "portal secret"],
        **{**config, "SECRET_KEY": "a new secret"},
    )
    assert rotated.session(KEY).get("profile").status_code == 200


@pytest.mark.parametrize(
    "make",
    [
        lambda: RedisStore(url="redis://127.0.0.1:1/0"),
        lambda: RedisStore(url="redis://127.0.0.1:1/0", encryption_keys=["", b""]),
        lambda: SQLAlchemyStore("sqlite://"),
        lambda: SQLAlchemyStore("sqlite://", encryption_keys=[]),
    ],
)
def test_a_store_without_a_key_refuses_to_start(make: Callable[[], object]) -> None:
    with pytest.raises(ConfigurationError, match="encrypt"):
        make()


def test_a_missing_key_names_the_setting() -> None:
    with pytest.raises(ConfigurationError, match=re.escape("WATCHER_AUTH['ENCRYPTION_KEYS']")):
        TokenCipher([], setting="WATCHER_AUTH['ENCRYPTION_KEYS']")
    app = Flask("portal")
    app.config.update(WATCHER_URL="http://127.0.0.1:1", WATCHER_STORE="redis")
    with pytest.raises(ConfigurationError, match="WATCHER_ENCRYPTION_KEYS"):
        WatcherAuth(app)


@pytest.mark.redis
def test_a_corrupt_redis_record_is_a_clear_error_not_a_crash(
    make_redis_store, redis_prefix: str
) -> None:
    store = make_redis_store()
    manager = TokenManager("http://127.0.0.1:1", store=store)
    skey = manager.store_key(KEY)
    for garbage in (b"", b"not a fernet token", b"\xff\x00" * 50, b"gAAAAA" + b"A" * 80):
        store.client.set(f"{redis_prefix}pair:{skey}", garbage)
        with pytest.raises(TokenDecryptionError):
            manager.tokens(KEY)
    for not_a_record in NOT_RECORDS:  # encrypted with the right key
        store.client.set(f"{redis_prefix}pair:{skey}", store.cipher.encrypt(not_a_record, skey))
        with pytest.raises(TokenDecryptionError, match="corrupt"):
            manager.tokens(KEY)
    assert store.client.exists(f"{redis_prefix}pair:{skey}") == 1


@pytest.mark.postgres
def test_a_corrupt_database_record_is_a_clear_error_not_a_crash(make_postgres_store) -> None:
    from sqlalchemy import update

    store = make_postgres_store()
    manager = TokenManager("http://127.0.0.1:1", store=store)
    skey = manager.store_key(KEY)
    store.save(skey, sample_pair())  # a row to damage
    encrypted = [store.cipher.encrypt(record, skey).decode() for record in NOT_RECORDS]
    for text in ["", "not a fernet token", "gAAAAA" + "A" * 80, *encrypted]:
        with store.engine.begin() as conn:
            conn.execute(update(store.table).values(record=text))
        with pytest.raises(TokenDecryptionError):
            manager.tokens(KEY)
    assert list(store.iter_keys()) == [skey]
