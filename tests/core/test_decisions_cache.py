"""The per-process copies in front of a shared store: which change notices drop them, and
whose clock judges a pair another host obtained.

The store here is a real :class:`MemoryStore` behind a change channel the test drives: when
a notice arrives (late, never, or while a record is being read) is exactly what is being
tested, and a Redis channel cannot be made to deliver at a chosen moment. The channel itself
is tested against Redis and PostgreSQL in ``tests/stores/test_channels.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

import pytest

from watcher_auth import MemoryStore, StoreKey, TokenManager, TokenPair, TokenStore
from watcher_auth.testing import FakeClock, WatcherEmulator

KEY = "portal-user-5"
LIFETIME = 300.0


class Channel:
    """The store's change channel, delivered when the test says so."""

    def __init__(self) -> None:
        self.listeners: list[Callable[[StoreKey | None], None]] = []
        self.healthy = True

    def close(self) -> None:
        self.listeners.clear()

    def notify(self, key: StoreKey | None) -> None:
        for listener in list(self.listeners):
            listener(key)


class ChannelStore(TokenStore):
    """A shared store whose writes announce themselves on :class:`Channel` (or not)."""

    shared = True
    staleness_bound = 5.0

    def __init__(self) -> None:
        self.inner = MemoryStore()
        self.channel = Channel()
        self.loads = 0
        self.echo = True  # whether this process's writes come back as notices
        self.after_load: Callable[[], object] | None = None

    def load(self, key: StoreKey) -> TokenPair | None:
        self.loads += 1
        pair = self.inner.load(key)
        hook, self.after_load = self.after_load, None
        if hook is not None:
            hook()
        return pair

    def save(self, key: StoreKey, pair: TokenPair) -> None:
        self.inner.save(key, pair)
        if self.echo:
            self.channel.notify(key)

    def delete(self, key: StoreKey) -> None:
        self.inner.delete(key)
        if self.echo:
            self.channel.notify(key)

    def lock(self, key: StoreKey, *, timeout: float) -> AbstractContextManager[object]:
        return self.inner.lock(key, timeout=timeout)

    def watch(self, on_change: Callable[[StoreKey | None], None]) -> Channel:
        self.channel.listeners.append(on_change)
        return self.channel

    def iter_keys(self, *, server: str | None = None, api: str | None = None) -> Iterator[StoreKey]:
        return self.inner.iter_keys(server=server, api=api)


@pytest.fixture
def emulator(watcher_emulator_factory, fake_clock: FakeClock) -> WatcherEmulator:
    return watcher_emulator_factory(clock=fake_clock, access_lifetime=LIFETIME)


@pytest.fixture
def store() -> ChannelStore:
    return ChannelStore()


@pytest.fixture
def manager(emulator: WatcherEmulator, fake_clock: FakeClock, store: ChannelStore) -> TokenManager:
    manager = TokenManager(emulator.url, store=store, clock=fake_clock, timeout=5.0)
    manager.login(KEY, username="alice", password="secret")
    return manager


def _calls(manager: TokenManager, n: int = 1) -> None:
    for _ in range(n):
        assert manager.session(KEY).get("profile").status_code == 200


def test_while_the_channel_is_up_a_copy_is_trusted_past_the_staleness_bound(
    manager: TokenManager, store: ChannelStore, fake_clock: FakeClock
) -> None:
    store.loads = 0
    fake_clock.advance(60)
    _calls(manager, 3)
    assert store.loads == 0


def test_while_the_channel_is_down_a_copy_is_read_again_after_the_staleness_bound(
    manager: TokenManager, store: ChannelStore, fake_clock: FakeClock
) -> None:
    store.channel.healthy = False
    store.loads = 0
    fake_clock.advance(4)
    _calls(manager)
    assert store.loads == 0
    fake_clock.advance(2)
    _calls(manager)
    assert store.loads == 1


def test_the_echo_of_this_processs_own_write_keeps_its_copy(
    manager: TokenManager, store: ChannelStore
) -> None:
    store.loads = 0
    _calls(manager, 3)  # the login's own notice came back during the save
    assert store.loads == 0


def test_a_change_announced_by_another_process_drops_the_copy(
    manager: TokenManager, store: ChannelStore
) -> None:
    _calls(manager)
    store.loads = 0
    store.channel.notify(manager.store_key(KEY))
    _calls(manager, 3)
    assert store.loads == 1


def test_a_change_of_another_key_keeps_this_keys_copy(
    manager: TokenManager, store: ChannelStore
) -> None:
    store.loads = 0
    store.channel.notify(manager.store_key("someone-else"))
    _calls(manager)
    assert store.loads == 0


def test_a_notice_that_anything_may_have_changed_drops_every_copy(
    manager: TokenManager, store: ChannelStore
) -> None:
    manager.login("second", username="bob", password="hunter2")
    store.loads = 0
    store.channel.notify(None)
    _calls(manager)
    assert manager.session("second").get("profile").status_code == 200
    assert store.loads == 2


def test_two_own_writes_need_two_echoes_before_a_foreign_change_drops_the_copy(
    emulator: WatcherEmulator, fake_clock: FakeClock, store: ChannelStore
) -> None:
    store.echo = False  # the echoes arrive later, when the test delivers them
    manager = TokenManager(emulator.url, store=store, clock=fake_clock, timeout=5.0)
    manager.login(KEY, username="alice", password="secret")
    manager.login(KEY, username="alice", password="secret")
    skey = manager.store_key(KEY)
    store.channel.notify(skey)  # the first login's echo
    store.channel.notify(skey)  # the second login's echo
    store.loads = 0
    _calls(manager)
    assert store.loads == 0
    store.channel.notify(skey)  # no write of ours is pending: another process changed it
    _calls(manager)
    assert store.loads == 1


def test_an_echo_that_never_came_does_not_hide_a_later_foreign_change(
    emulator: WatcherEmulator, fake_clock: FakeClock, store: ChannelStore
) -> None:
    store.echo = False
    manager = TokenManager(emulator.url, store=store, clock=fake_clock, timeout=5.0)
    manager.login(KEY, username="alice", password="secret")  # its notice is lost
    fake_clock.advance(6)  # longer than an echo ever takes
    store.loads = 0
    store.channel.notify(manager.store_key(KEY))
    _calls(manager)
    assert store.loads == 1


def test_a_record_read_while_a_change_was_announced_is_not_kept(
    manager: TokenManager, store: ChannelStore
) -> None:
    skey = manager.store_key(KEY)
    store.channel.notify(skey)  # another process changed it: the next call reads the store
    store.after_load = lambda: store.channel.notify(skey)  # ...and it changes again meanwhile
    store.loads = 0
    _calls(manager)
    _calls(manager)
    assert store.loads == 2


def test_logout_drops_this_processs_copy_even_without_an_echo(
    emulator: WatcherEmulator, fake_clock: FakeClock, store: ChannelStore
) -> None:
    store.echo = False
    manager = TokenManager(emulator.url, store=store, clock=fake_clock, timeout=5.0)
    manager.login(KEY, username="alice", password="secret")
    _calls(manager)
    store.inner.save(manager.store_key("other"), TokenPair("x", "y", None))
    assert manager.logout(KEY) is True
    assert manager.tokens(KEY) is None and not manager.is_connected(KEY)


# --- whose clock ------------------------------------------------------------------------------


def test_a_pair_from_a_host_with_another_clock_is_judged_on_this_hosts_clock(
    emulator: WatcherEmulator, fake_clock: FakeClock
) -> None:
    store = ChannelStore()  # with per-process copies, kept before the offset was known
    synced = TokenManager(emulator.url, store=store, clock=fake_clock, timeout=5.0)
    behind = TokenManager(emulator.url, store=store, clock=lambda: fake_clock() - 600, timeout=5.0)
    synced.login(KEY, username="alice", password="secret")
    _calls(behind)  # Watcher's Date header tells this host its clock is 600 s behind
    for _ in range(2 * 30):  # two lifetimes in steps of 10 s
        _calls(behind)
        fake_clock.advance(10)
    stats = emulator.stats
    assert (stats.unauthorized, stats.refreshes) == (0, 2)


@pytest.mark.parametrize("how", ["login", "refresh"])
def test_a_host_learns_its_offset_from_its_own_login_or_refresh(
    emulator: WatcherEmulator, fake_clock: FakeClock, how: str
) -> None:
    store = ChannelStore()
    synced = TokenManager(emulator.url, store=store, clock=fake_clock, timeout=5.0)
    behind = TokenManager(emulator.url, store=store, clock=lambda: fake_clock() - 600, timeout=5.0)
    if how == "login":
        behind.login(KEY, username="alice", password="secret")
    else:
        synced.login(KEY, username="alice", password="secret")
        behind.refresh(KEY)  # its only word with Watcher
    elsewhere = synced.login("other-key", username="alice", password="secret")
    assert elsewhere.local_expires_at is not None
    # The pair the synced host got, judged by the host whose clock is behind: fresh on
    # Watcher's clock until LIFETIME minus the margin, whatever the hosts' clocks say.
    fake_clock.advance(LIFETIME - 60)
    assert behind.needs_refresh(elsewhere) is False
    fake_clock.advance(40)
    assert behind.needs_refresh(elsewhere) is True


def test_after_a_notice_that_anything_changed_no_echo_is_awaited_any_more(
    emulator: WatcherEmulator, fake_clock: FakeClock, store: ChannelStore
) -> None:
    store.echo = False
    manager = TokenManager(emulator.url, store=store, clock=fake_clock, timeout=5.0)
    manager.login(KEY, username="alice", password="secret")  # its echo is still on its way
    store.channel.notify(None)  # the channel reconnected: every copy and awaited echo goes
    _calls(manager)  # read again and kept
    store.loads = 0
    store.channel.notify(manager.store_key(KEY))  # not an echo: another process wrote
    _calls(manager)
    assert store.loads == 1
