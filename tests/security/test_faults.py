"""Faults at Watcher: typed errors, nothing lost, recovery without a new password login."""

from __future__ import annotations

import pytest

from watcher_auth import (
    MemoryStore,
    ReauthenticationRequired,
    TokenManager,
    WatcherAuthError,
    WatcherConnectionError,
    WatcherUnavailable,
)
from watcher_auth.testing import FakeClock

KEY = "portal-user-7"
LIFETIME = 300.0
FAULTS = ["500", "502_html", "503", "drop", "hang", "reset_mid_body"]


@pytest.fixture
def emulator(watcher_emulator_factory, fake_clock: FakeClock):
    # Rotation off: a "hang" refresh is still carried out by the emulator once the client has
    # given up, which under rotation is the lost-answer case tested on its own below.
    return watcher_emulator_factory(
        clock=fake_clock, access_lifetime=LIFETIME, rotate_refresh_tokens=False, hang_seconds=2.0
    )


@pytest.fixture
def manager(emulator, fake_clock: FakeClock) -> TokenManager:
    manager = TokenManager(emulator.url, store=MemoryStore(), clock=fake_clock, timeout=1.0)
    manager.login(KEY, username="alice", password="secret")
    return manager


@pytest.mark.parametrize("mode", FAULTS)
def test_watcher_failing_a_call_gives_a_typed_error_and_keeps_the_pair(
    manager: TokenManager, emulator, mode: str
) -> None:
    stored = manager.tokens(KEY)
    emulator.fail_next("call", mode=mode)
    session = manager.session(KEY)
    try:
        response = session.get("streams")
    except WatcherConnectionError as exc:
        assert mode in ("drop", "hang", "reset_mid_body")
        assert isinstance(exc, WatcherUnavailable)
    else:
        # An error page from Watcher is an answer: the caller sees its status.
        assert response.status_code >= 500
    assert manager.tokens(KEY) == stored
    assert session.get("streams").status_code == 200
    assert emulator.stats.password_logins == 1


@pytest.mark.parametrize("mode", FAULTS)
def test_watcher_failing_a_login_stores_nothing_and_the_next_login_works(
    emulator, fake_clock: FakeClock, mode: str
) -> None:
    manager = TokenManager(emulator.url, clock=fake_clock, timeout=1.0)
    emulator.fail_next("login", mode=mode)
    with pytest.raises(WatcherUnavailable):
        manager.login(KEY, username="alice", password="secret")
    assert manager.tokens(KEY) is None
    manager.login(KEY, username="alice", password="secret")
    assert manager.session(KEY).get("profile").status_code == 200


@pytest.mark.parametrize("mode", FAULTS)
def test_watcher_failing_a_refresh_keeps_the_pair_and_recovers_without_a_password(
    manager: TokenManager, emulator, fake_clock: FakeClock, mode: str
) -> None:
    stored = manager.tokens(KEY)
    fake_clock.advance(LIFETIME)
    emulator.fail_next("refresh", count=2, mode=mode)
    session = manager.session(KEY)
    for _ in range(2):
        with pytest.raises(WatcherUnavailable):
            session.get("profile")
        assert manager.tokens(KEY) == stored
    assert session.get("profile").status_code == 200
    stats = emulator.stats
    assert (stats.password_logins, stats.rejected_refreshes) == (1, 0)
    if mode != "hang":  # a hung refresh still completes at the emulator, later
        assert stats.refreshes == 1


def test_a_refresh_whose_answer_was_lost_under_rotation_asks_for_a_new_login(
    manager: TokenManager, emulator, fake_clock: FakeClock
) -> None:
    # Watcher rotated the refresh token but the answer never arrived: the stored refresh
    # token is dead. Without a credentials provider the person has to connect again.
    emulator.configure(rotate_refresh_tokens=True)
    fake_clock.advance(LIFETIME)
    emulator.fail_next("refresh", mode="process_then_drop")
    with pytest.raises(WatcherUnavailable):
        manager.session(KEY).get("profile")
    assert manager.tokens(KEY) is not None
    with pytest.raises(ReauthenticationRequired):
        manager.session(KEY).get("profile")
    assert manager.tokens(KEY) is None
    stats = emulator.stats
    assert (stats.refreshes, stats.rejected_refreshes, stats.password_logins) == (1, 1, 1)


def test_a_lost_refresh_answer_with_a_credentials_provider_logs_in_once_more(
    emulator, fake_clock: FakeClock
) -> None:
    manager = TokenManager(
        emulator.url, clock=fake_clock, timeout=1.0, credentials=lambda key: ("alice", "secret")
    )
    emulator.configure(rotate_refresh_tokens=True)
    session = manager.session(KEY)
    assert session.get("profile").status_code == 200
    fake_clock.advance(LIFETIME)
    emulator.fail_next("refresh", mode="process_then_drop")
    with pytest.raises(WatcherUnavailable):
        session.get("profile")
    assert session.get("profile").status_code == 200
    stats = emulator.stats
    assert (stats.refreshes, stats.rejected_refreshes, stats.password_logins) == (1, 1, 2)


def test_every_fault_error_is_a_watcher_auth_error(
    manager: TokenManager, emulator, fake_clock: FakeClock
) -> None:
    seen: list[type[Exception]] = []
    for mode in FAULTS:
        fake_clock.advance(LIFETIME)
        emulator.fail_next("refresh", mode=mode)
        try:
            manager.session(KEY).get("profile")
        except Exception as exc:
            seen.append(type(exc))
    assert seen and all(issubclass(t, WatcherAuthError) for t in seen)
