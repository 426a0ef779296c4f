"""Someone who can write the token table or cache, but has no key, moves records around.

Every encrypted store is attacked the same way, at the storage level, as such a person would:
an ``UPDATE`` of a row, a ``SET`` of a Redis key or cache entry. A record is sealed to the
store key it was written for (API, Watcher server, user key), so one moved anywhere else
fails with :class:`TokenDecryptionError` and no request leaves with its tokens. Records of the
earlier, unbound format (Fernet) are still read until their next save seals them.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from cryptography.fernet import Fernet
from hypothesis import example, given
from hypothesis import strategies as st

from watcher_auth import StoreKey, TokenDecryptionError, TokenManager, TokenPair, TokenStore
from watcher_auth.crypto import TokenCipher
from watcher_auth.testing import FakeClock, WatcherEmulator
from watcher_auth.testing.contract import sample_pair

LIFETIME = 300.0
ADMIN, MALLORY = "admin", "mallory"
OLD_SECRET, NEW_SECRET = "the portal's old secret", "the portal's new secret"


@dataclass
class Backend:
    """One encrypted store and raw access to where it keeps a key's record."""

    name: str
    make_store: Callable[[TokenCipher], TokenStore]
    read: Callable[[TokenStore, StoreKey], bytes]
    write: Callable[[TokenStore, StoreKey, bytes], None]


def _redis_name(store: Any, key: StoreKey) -> bytes:
    return f"{store.prefix}pair:{key}".encode()


def _redis_read(store: Any, key: StoreKey) -> bytes:
    raw = store.client.get(_redis_name(store, key))
    assert raw is not None
    return bytes(raw)


def _redis_write(store: Any, key: StoreKey, raw: bytes) -> None:
    store.client.set(_redis_name(store, key), raw)


def _sql_row(store: Any, key: StoreKey) -> Any:
    t = store.table
    return (t.c.server == key.server) & (t.c.api == key.api) & (t.c.user_key == key.user)


def _sql_read(store: Any, key: StoreKey) -> bytes:
    from sqlalchemy import select

    with store.engine.begin() as conn:
        record = conn.execute(select(store.table.c.record).where(_sql_row(store, key))).scalar()
    assert record
    return str(record).encode()


def _sql_write(store: Any, key: StoreKey, raw: bytes) -> None:
    from sqlalchemy import update

    store.save(key, sample_pair(99))  # a row of one's own to write into
    with store.engine.begin() as conn:
        conn.execute(update(store.table).where(_sql_row(store, key)).values(record=raw.decode()))


def _django_rows(store: Any, key: StoreKey) -> Any:
    from django_watcher_auth.models import WatcherAccount

    return WatcherAccount.objects.using(store.using).filter(
        server=key.server, api=key.api, user_key=key.user
    )


def _django_db_read(store: Any, key: StoreKey) -> bytes:
    record = _django_rows(store, key).values_list("record", flat=True).get()
    assert record
    return str(record).encode()


def _django_db_write(store: Any, key: StoreKey, raw: bytes) -> None:
    store.save(key, sample_pair(99))
    assert _django_rows(store, key).update(record=raw.decode()) == 1


def _django_cache_read(store: Any, key: StoreKey) -> bytes:
    raw = store.cache.get(store._key("record", key))
    assert raw
    return str(raw).encode()


def _django_cache_write(store: Any, key: StoreKey, raw: bytes) -> None:
    store.cache.set(store._key("record", key), raw.decode(), None)


LISTING = [
    pytest.param("redis", marks=pytest.mark.redis),
    pytest.param("postgres", marks=pytest.mark.postgres),
    "sqlite",
    pytest.param("django_db", marks=pytest.mark.django_db),
    pytest.param(
        "django_postgres",
        marks=[
            pytest.mark.postgres,
            pytest.mark.django_db(databases=["postgres"], transaction=True),
        ],
    ),
]
"""The encrypted stores that can list their keys."""


@pytest.fixture(
    params=[
        *LISTING,
        pytest.param("django_cache", marks=[pytest.mark.redis, pytest.mark.django_db]),
    ]
)
def backend(request: pytest.FixtureRequest) -> Backend:
    name = str(request.param)
    make = request.getfixturevalue(f"make_{name}_store")
    access = {
        "redis": (_redis_read, _redis_write),
        "postgres": (_sql_read, _sql_write),
        "sqlite": (_sql_read, _sql_write),
        "django_db": (_django_db_read, _django_db_write),
        "django_postgres": (_django_db_read, _django_db_write),
        "django_cache": (_django_cache_read, _django_cache_write),
    }[name]
    return Backend(name, lambda cipher: make(cipher=cipher), *access)


@pytest.fixture
def emulator(watcher_emulator_factory, fake_clock: FakeClock) -> WatcherEmulator:
    return watcher_emulator_factory(
        clock=fake_clock, access_lifetime=LIFETIME, rotate_refresh_tokens=True
    )


def manager_on(store: TokenStore, emulator: WatcherEmulator, clock: FakeClock) -> TokenManager:
    return TokenManager(emulator.url, store=store, clock=clock, local_cache_size=0)


def old_format_record(secret: str, pair: TokenPair) -> bytes:
    """A record as the earlier format wrote it: Fernet, its key SHA-256 of a context and the
    secret, the store key nowhere in it."""
    digest = hashlib.sha256(b"watcher-auth token encryption v1:" + secret.encode()).digest()
    return Fernet(base64.urlsafe_b64encode(digest)).encrypt(pair.to_json().encode())


def test_copying_the_admins_ciphertext_into_your_own_row_does_not_make_you_the_admin(
    backend: Backend, emulator: WatcherEmulator, fake_clock: FakeClock
) -> None:
    store = backend.make_store(TokenCipher([NEW_SECRET]))
    manager = manager_on(store, emulator, fake_clock)
    manager.login(ADMIN, username="alice", password="secret")
    manager.login(MALLORY, username="bob", password="hunter2")

    admins_record = backend.read(store, manager.store_key(ADMIN))
    backend.write(store, manager.store_key(MALLORY), admins_record)

    with pytest.raises(TokenDecryptionError, match="another user or server"):
        manager.tokens(MALLORY)
    with pytest.raises(TokenDecryptionError):
        manager.session(MALLORY).get("profile")
    fake_clock.advance(LIFETIME)
    with pytest.raises(TokenDecryptionError):
        manager.refresh(MALLORY)
    assert emulator.stats.calls_by_user.get("alice", 0) == 0
    assert emulator.stats.refreshes == 0

    assert manager.session(ADMIN).get("profile").json()["name"] == "alice"  # untouched


def test_moving_a_record_to_another_server_or_api_does_not_decrypt(backend: Backend) -> None:
    store = backend.make_store(TokenCipher([NEW_SECRET]))
    home = StoreKey(server="https://watcher.test", user=ADMIN)
    store.save(home, sample_pair(1))
    record = backend.read(store, home)
    for elsewhere in (
        StoreKey(server="https://other-watcher.test", user=ADMIN),
        StoreKey(server="https://watcher.test", user=ADMIN, api="v2"),
        StoreKey(server="https://watcher.test", user=ADMIN.upper()),
    ):
        backend.write(store, elsewhere, record)
        with pytest.raises(TokenDecryptionError):
            store.load(elsewhere)
    assert store.load(home) == sample_pair(1)


def test_a_record_in_the_earlier_format_still_reads_and_is_sealed_to_its_key_at_the_next_save(
    backend: Backend, emulator: WatcherEmulator, fake_clock: FakeClock
) -> None:
    # The key rotates at the same time: the old record is under the old secret only.
    store = backend.make_store(TokenCipher([NEW_SECRET, OLD_SECRET]))
    manager = manager_on(store, emulator, fake_clock)
    manager.login(ADMIN, username="alice", password="secret")
    manager.login(MALLORY, username="bob", password="hunter2")
    pair = manager.tokens(ADMIN)
    assert pair is not None
    backend.write(store, manager.store_key(ADMIN), old_format_record(OLD_SECRET, pair))

    assert manager.tokens(ADMIN) == pair
    assert manager.session(ADMIN).get("profile").json()["name"] == "alice"
    assert not backend.read(store, manager.store_key(ADMIN)).startswith(b"v2:")  # not yet

    fake_clock.advance(LIFETIME)
    assert manager.session(ADMIN).get("profile").status_code == 200  # refreshed and saved
    sealed = backend.read(store, manager.store_key(ADMIN))
    assert sealed.startswith(b"v2:")

    only_new = manager_on(backend.make_store(TokenCipher([NEW_SECRET])), emulator, fake_clock)
    assert only_new.session(ADMIN).get("profile").json()["name"] == "alice"
    backend.write(store, manager.store_key(MALLORY), sealed)
    with pytest.raises(TokenDecryptionError):
        only_new.tokens(MALLORY)
    stats = emulator.stats
    assert (stats.password_logins, stats.refreshes, stats.rejected_refreshes) == (2, 1, 0)


def test_until_its_next_save_a_record_in_the_earlier_format_is_not_bound_to_its_key(
    make_sqlite_store: Callable[..., TokenStore],
) -> None:
    # The window SECURITY.md describes: a copied old-format record reads anywhere, unless
    # reading that format is turned off.
    old = old_format_record(OLD_SECRET, sample_pair(1))
    admin = StoreKey(server="https://watcher.test", user=ADMIN)
    mallory = StoreKey(server="https://watcher.test", user=MALLORY)
    backend = Backend("sqlite", lambda c: make_sqlite_store(cipher=c), _sql_read, _sql_write)

    reading_old = backend.make_store(TokenCipher([OLD_SECRET]))
    backend.write(reading_old, mallory, old)
    assert reading_old.load(mallory) == sample_pair(1)

    strict = backend.make_store(TokenCipher([OLD_SECRET], legacy=False))
    with pytest.raises(TokenDecryptionError, match="earlier format"):
        strict.load(mallory)
    strict.save(admin, sample_pair(2))
    assert strict.load(admin) == sample_pair(2)


@pytest.mark.parametrize("backend", LISTING, indirect=True)
def test_the_documented_loop_seals_every_earlier_format_record_so_legacy_reading_can_stop(
    backend: Backend,
) -> None:
    keys = [StoreKey(server="https://watcher.test", user=str(n)) for n in range(3)]
    store = backend.make_store(TokenCipher([NEW_SECRET, OLD_SECRET]))
    for n, key in enumerate(keys):
        backend.write(store, key, old_format_record(OLD_SECRET, sample_pair(n)))

    # SECURITY.md, "Rotating a key":
    for key in store.iter_keys():
        with store.lock(key, timeout=30):
            pair = store.load(key)
            if pair is not None:
                store.save(key, pair)

    strict = backend.make_store(TokenCipher([NEW_SECRET], legacy=False))
    assert [strict.load(key) for key in keys] == [sample_pair(n) for n in range(3)]
    assert all(backend.read(store, key).startswith(b"v2:") for key in keys)


def test_a_record_sealed_under_an_old_key_reads_while_that_key_is_kept_second(
    backend: Backend,
) -> None:
    key = StoreKey(server="https://watcher.test", user=ADMIN)
    backend.make_store(TokenCipher([OLD_SECRET])).save(key, sample_pair(1))

    rotated = backend.make_store(TokenCipher([NEW_SECRET, OLD_SECRET]))
    assert rotated.load(key) == sample_pair(1)
    rotated.save(key, sample_pair(2))

    assert backend.make_store(TokenCipher([NEW_SECRET])).load(key) == sample_pair(2)
    with pytest.raises(TokenDecryptionError):
        backend.make_store(TokenCipher([OLD_SECRET])).load(key)


def test_a_record_that_decrypts_to_garbage_keeps_its_text_out_of_the_error_and_its_frames() -> None:
    # A crash reporter records every frame's locals and every chained exception.
    cipher = TokenCipher([NEW_SECRET])
    key = StoreKey(server="https://watcher.test", user=ADMIN)
    secret = "refresh-token-Vb7Kq2"
    for text in (f'{{"refresh_token": "{secret}"}}', f'["{secret}"]', f'{{"{secret}"'):
        with pytest.raises(TokenDecryptionError, match="corrupt") as caught:
            cipher.loads(cipher.encrypt(text.encode(), key), key)
        seen: list[str] = []
        error: BaseException | None = caught.value
        while error is not None:
            seen.append(str(error))
            tb = error.__traceback__
            while tb is not None:
                if tb.tb_frame.f_code.co_filename != __file__:  # not this test's own frame
                    seen.extend(repr(value) for value in tb.tb_frame.f_locals.values())
                tb = tb.tb_next
            error = error.__cause__ or error.__context__
        assert seen and not [item for item in seen if secret in item]


store_keys = st.builds(StoreKey, server=st.text(max_size=12), user=st.text(max_size=12))


@given(store_keys, store_keys)
@example(StoreKey(server="s", user="\ud800"), StoreKey(server="s", user="\ud801"))
@example(StoreKey(server="s", user="a|b"), StoreKey(server="s|a", user="b"))
def test_a_sealed_record_opens_under_its_own_key_and_under_no_other(
    home: StoreKey, elsewhere: StoreKey
) -> None:
    cipher = TokenCipher([NEW_SECRET])
    record = cipher.dumps(sample_pair(1), home)
    assert cipher.loads(record, home) == sample_pair(1)
    if elsewhere != home:
        with pytest.raises(TokenDecryptionError):
            cipher.loads(record, elsewhere)


@pytest.fixture(
    params=[
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("postgres", marks=pytest.mark.postgres),
        "sqlite",
    ]
)
def async_and_sync(request: pytest.FixtureRequest) -> Iterator[tuple[Any, Backend, Any]]:
    """An async store, a sync one over the same records for raw access, and ``run(coro)`` on
    the one event loop the async store's connections belong to."""
    from watcher_auth.stores.redis import AsyncRedisStore
    from watcher_auth.stores.sqlalchemy import AsyncSQLAlchemyStore

    name = str(request.param)
    cipher = TokenCipher([NEW_SECRET])
    sync: Any = request.getfixturevalue(f"make_{name}_store")(cipher=cipher)
    if name == "redis":
        store: Any = AsyncRedisStore(
            url=request.getfixturevalue("redis_url"), prefix=sync.prefix, cipher=cipher
        )
        access = (_redis_read, _redis_write)
    else:
        store = AsyncSQLAlchemyStore(
            sync.engine.url.render_as_string(hide_password=False),
            table_name=sync.table.name,
            cipher=cipher,
        )
        access = (_sql_read, _sql_write)
    loop = asyncio.new_event_loop()
    yield store, Backend(name, lambda _cipher: sync, *access), loop.run_until_complete
    loop.run_until_complete(store.aclose())
    loop.close()


def test_copying_a_record_in_an_async_store_does_not_decrypt_either(
    async_and_sync: tuple[Any, Backend, Any],
) -> None:
    store, raw, run = async_and_sync
    sync = raw.make_store(TokenCipher([NEW_SECRET]))
    admin = StoreKey(server="https://watcher.test", user=ADMIN)
    mallory = StoreKey(server="https://watcher.test", user=MALLORY)

    async def attack() -> None:
        await store.save(admin, sample_pair(1))
        raw.write(sync, mallory, raw.read(sync, admin))
        with pytest.raises(TokenDecryptionError):
            await store.load(mallory)
        assert await store.load(admin) == sample_pair(1)

    run(attack())
