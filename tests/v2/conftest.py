"""Fixtures for the API v2 tests: an emulator with a known system key, and a manager on it.

The manager tests run once per driver that has API v2 sessions: the sync manager's
``requests`` sessions and the async manager's (see tests/asyncio/drivers.py).
"""

from __future__ import annotations

import pytest

from tests.asyncio.drivers import V2_KINDS, drivers_fixture
from watcher_auth import MemoryStore, TokenManager
from watcher_auth.testing import FakeClock, WatcherEmulator

drivers = drivers_fixture(V2_KINDS)


@pytest.fixture
def system_key() -> str:
    """The emulator's API v2 system key."""
    return "system-key-9f8e7d6c5b4a"


@pytest.fixture
def emulator(watcher_emulator_factory, fake_clock: FakeClock, system_key: str) -> WatcherEmulator:
    """An emulator on the fake clock with alice/secret, bob/hunter2 and admin carol/pw."""
    emulator = watcher_emulator_factory(clock=fake_clock, system_api_key=system_key)
    emulator.add_user("carol", "pw", is_admin=True, streams=1)
    return emulator


@pytest.fixture
def manager(emulator: WatcherEmulator, fake_clock: FakeClock) -> TokenManager:
    """A manager with a memory store on the emulator, without a credentials provider."""
    return TokenManager(emulator.url, store=MemoryStore(), clock=fake_clock, timeout=3.0)
