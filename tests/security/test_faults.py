"""Faults at Watcher: typed errors, nothing lost, recovery without a new password login.

Every scenario runs on each kind of store (memory, Redis, PostgreSQL, Django's database and
cache stores): what a fault may and may not change is what the store holds.
"""

from __future__ import annotations

import pytest

from watcher_auth import (
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
        clock=fake_clock, access_lifetime=LIFETIME, rotate_refresh_tokens=False, hang_seconds=1.0
    )


@pytest.fixture
def make_manager(emulator, fake_clock: FakeClock, make_store):
    def make(**options) -> TokenManager:
        return TokenManager(
            emulator.url, store=make_store(), clock=fake_clock, timeout=0.5, deadline=0.5, **options
        )

    return make


@pytest.fixture
def manager(make_manager) -> TokenManager:
    manager = make_manager()
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
    make_manager, emulator, mode: str
) -> None:
    manager = make_manager()
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
    make_manager, emulator, fake_clock: FakeClock
) -> None:
    manager = make_manager(credentials=lambda key: ("alice", "secret"))
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


def test_watcher_down_for_a_while_loses_nothing_and_needs_no_new_password(
    manager: TokenManager, emulator, fake_clock: FakeClock
) -> None:
    stored = manager.tokens(KEY)
    port = emulator.port
    emulator.stop()  # nothing listens: every connection is refused
    session = manager.session(KEY)
    with pytest.raises(WatcherConnectionError):
        session.get("profile")
    with pytest.raises(WatcherUnavailable):
        manager.login("someone-else", username="bob", password="hunter2")
    fake_clock.advance(LIFETIME)
    with pytest.raises(WatcherUnavailable):
        session.get("profile")
    with pytest.raises(WatcherUnavailable):
        manager.refresh(KEY)
    assert manager.tokens(KEY) == stored
    assert manager.tokens("someone-else") is None

    emulator.configure(port=port)
    emulator.start()
    assert session.get("profile").json()["name"] == "alice"
    stats = emulator.stats
    assert (stats.password_logins, stats.refreshes, stats.rejected_refreshes) == (1, 1, 0)
