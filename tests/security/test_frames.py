"""What a crash reporter captures: every frame's locals, through every chained exception.

Sentry (with its default settings) and Django's DEBUG page record the local variables of each
frame of an exception's traceback, and follow ``__cause__`` and ``__context__``. An attacker
who can read the crash reports must find no password, token, API key or session id there.
The frames of the test functions themselves are left out: they hold what the caller holds.
Like Sentry's serializer, a ``str`` (a subclass included) is captured as its text, anything
else as its ``repr``.
"""

from __future__ import annotations

import asyncio
import traceback
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any

import pytest

from watcher_auth import (
    AsyncTokenManager,
    InvalidCredentials,
    ReauthenticationRequired,
    TokenManager,
    WatcherAuthError,
    WatcherUnavailable,
)
from watcher_auth.testing import FakeClock, WatcherEmulator

KEY = "portal-user-3"
PASSWORD = "pw-frames-Qz8Lk2"
V2_PASSWORD = PASSWORD
LIFETIME = 300.0


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    pending = [exc]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        pending.extend(e for e in (current.__cause__, current.__context__) if e is not None)


def _frames(tb: TracebackType | None) -> Iterator[Any]:
    for frame, _ in traceback.walk_tb(tb):
        if not frame.f_code.co_name.startswith(("test_", "scenario")):
            yield frame


def captured_text(exc: BaseException) -> str:
    """Everything a frame-capturing crash reporter would store for ``exc``."""
    parts: list[str] = []
    for link in _chain(exc):
        parts.append(repr(link))
        parts.append(str(link))
        parts.extend(repr(arg) for arg in link.args)
        for frame in _frames(link.__traceback__):
            for name, value in frame.f_locals.items():
                try:
                    text = value if isinstance(value, str) else repr(value)
                except Exception:
                    continue
                if isinstance(value, bytes):
                    text = value.decode("latin-1")
                parts.append(f"{frame.f_code.co_name}.{name}={text}")
    return "\n".join(parts)


def assert_no_secret(exc: BaseException, secrets: list[str]) -> None:
    text = captured_text(exc)
    leaked = [secret for secret in secrets if secret and secret in text]
    assert leaked == [], f"found in frames of {type(exc).__name__}: {leaked}"


@pytest.fixture
def emulator(watcher_emulator_factory: Callable[..., WatcherEmulator], fake_clock: FakeClock):
    emulator = watcher_emulator_factory(
        clock=fake_clock,
        access_lifetime=LIFETIME,
        rotate_refresh_tokens=True,
        hang_seconds=1.0,
        seed_users=False,
    )
    emulator.add_user("alice", PASSWORD)
    return emulator


def _secrets(manager: TokenManager, emulator: WatcherEmulator) -> list[str]:
    pair = manager.tokens(KEY)
    assert pair is not None and pair.refresh_token is not None
    return [PASSWORD, pair.access_token, pair.refresh_token, emulator.user_api_key("alice")]


def test_a_refresh_that_times_out_leaves_no_refresh_token_in_any_frame(
    emulator: WatcherEmulator, fake_clock: FakeClock
) -> None:
    manager = TokenManager(emulator.url, clock=fake_clock, timeout=0.3, deadline=0.3)
    manager.login(KEY, username="alice", password=PASSWORD)
    secrets = _secrets(manager, emulator)
    fake_clock.advance(LIFETIME)
    emulator.fail_next("refresh", mode="hang")
    with pytest.raises(WatcherUnavailable) as caught:
        manager.session(KEY).get("profile")
    assert_no_secret(caught.value, secrets)


def test_a_call_that_times_out_leaves_no_access_token_in_any_frame_or_chain(
    emulator: WatcherEmulator, fake_clock: FakeClock
) -> None:
    manager = TokenManager(emulator.url, clock=fake_clock, timeout=0.3)
    manager.login(KEY, username="alice", password=PASSWORD)
    secrets = _secrets(manager, emulator)
    emulator.fail_next("call", mode="hang")
    with pytest.raises(WatcherUnavailable) as caught:
        manager.session(KEY).get("profile")
    assert caught.value.__cause__ is None and caught.value.__context__ is None
    assert_no_secret(caught.value, secrets)


def test_a_wrong_password_leaves_no_password_in_any_frame(
    emulator: WatcherEmulator, fake_clock: FakeClock
) -> None:
    manager = TokenManager(emulator.url, clock=fake_clock)
    wrong = "pw-wrong-Vb3Tn7"
    with pytest.raises(InvalidCredentials) as caught:
        manager.login(KEY, username="alice", password=wrong)
    assert_no_secret(caught.value, [wrong, PASSWORD])
    with pytest.raises(InvalidCredentials) as caught:
        manager.v2_login(KEY, username="alice", password=wrong)
    assert_no_secret(caught.value, [wrong, PASSWORD])


def test_a_rejected_refresh_chains_nothing_that_holds_the_refresh_token(
    emulator: WatcherEmulator, fake_clock: FakeClock
) -> None:
    manager = TokenManager(emulator.url, clock=fake_clock)
    manager.login(KEY, username="alice", password=PASSWORD)
    secrets = _secrets(manager, emulator)
    emulator.revoke("alice")
    fake_clock.advance(LIFETIME)
    with pytest.raises(ReauthenticationRequired) as caught:
        manager.session(KEY).get("profile")
    assert caught.value.__context__ is None
    assert_no_secret(caught.value, secrets)


def test_a_failing_v2_call_leaves_no_session_id_in_any_frame(
    emulator: WatcherEmulator, fake_clock: FakeClock
) -> None:
    manager = TokenManager(emulator.url, clock=fake_clock, timeout=0.3)
    record = manager.v2_login(KEY, username="alice", password=PASSWORD)
    emulator.fail_next("v2_call", mode="500")
    with pytest.raises(WatcherAuthError) as caught:
        manager.v2_session(KEY).json("cameras")
    assert_no_secret(caught.value, [PASSWORD, record.access_token])
    emulator.fail_next("v2_call", mode="drop")
    with pytest.raises(WatcherUnavailable) as caught:
        manager.v2_session(KEY).get("cameras")
    assert_no_secret(caught.value, [PASSWORD, record.access_token])


def test_the_async_manager_leaves_no_token_in_any_frame_on_a_refresh_timeout(
    emulator: WatcherEmulator, fake_clock: FakeClock
) -> None:
    async def scenario() -> tuple[BaseException, list[str]]:
        emulator.configure(hang_seconds=4.0)
        async with AsyncTokenManager(
            emulator.url, clock=fake_clock, timeout=2.0, deadline=2.0
        ) as manager:
            await manager.login(KEY, username="alice", password=PASSWORD)
            pair = await manager.tokens(KEY)
            assert pair is not None and pair.refresh_token is not None
            fake_clock.advance(LIFETIME)
            emulator.fail_next("refresh", mode="hang")
            try:
                await manager.session(KEY).get("profile")
            except WatcherUnavailable as exc:
                return exc, [PASSWORD, pair.access_token, pair.refresh_token]
            raise AssertionError("the refresh did not time out")

    exc, secrets = asyncio.run(scenario())
    assert_no_secret(exc, secrets)


def test_the_frame_walk_finds_a_secret_that_is_there() -> None:
    # The check itself must be able to fail: a plain local holding a token is found.
    def leaky(token: str) -> None:
        header = f"Bearer {token}"
        raise RuntimeError(len(header))

    with pytest.raises(RuntimeError) as caught:
        leaky("tok-Hq2Wm9")
    with pytest.raises(AssertionError):
        assert_no_secret(caught.value, ["tok-Hq2Wm9"])


def test_a_server_that_claims_a_token_lives_for_decades_cannot_pin_it_in_the_caches(
    watcher_emulator_factory: Callable[..., WatcherEmulator], fake_clock: FakeClock
) -> None:
    # The claims are not verified (no key to check them): a broken or hostile server's
    # far-away exp is believed only up to max_lifetime, and the token is refreshed after it.
    century = 100 * 365 * 24 * 3600.0
    emulator = watcher_emulator_factory(clock=fake_clock, access_lifetime=century)
    manager = TokenManager(emulator.url, clock=fake_clock, max_lifetime=3600)
    pair = manager.login(KEY, username="alice", password="secret")
    assert pair.expires_at is not None and pair.expires_at <= fake_clock() + 3600
    fake_clock.advance(3600 - 61)
    assert manager.session(KEY).get("profile").status_code == 200
    assert emulator.stats.refreshes == 0
    fake_clock.advance(2)  # within the margin before the believed expiry
    assert manager.session(KEY).get("profile").status_code == 200
    assert emulator.stats.refreshes == 1
