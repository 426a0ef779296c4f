"""pytest fixtures for tests that talk to a Watcher emulator.

Installed with the package (entry point ``pytest11``), so any project's tests can use:

- ``watcher_emulator``: a running :class:`~watcher_auth.testing.WatcherEmulator` on real
  time, with users ``alice``/``secret`` and ``bob``/``hunter2``, stopped after the test. It
  holds its control token (``control_token``); ``watcher_emulator.remote()`` is a
  :class:`~watcher_auth.testing.RemoteEmulator` for it, for code that takes one.
- ``watcher_emulator_factory``: ``factory(**kwargs)`` builds and starts an emulator with the
  constructor's keyword arguments (and the same two users unless ``seed_users=False``); all
  are stopped after the test.
- ``fake_clock``: a :class:`~watcher_auth.testing.FakeClock` to pass as ``clock=`` to both
  the emulator and the code under test.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

import pytest

from watcher_auth.testing._emulator_server import WatcherEmulator
from watcher_auth.testing.clock import FakeClock

__all__ = [
    "DEFAULT_USERS",
    "EmulatorFactory",
    "fake_clock",
    "watcher_emulator",
    "watcher_emulator_factory",
]

DEFAULT_USERS = {"alice": "secret", "bob": "hunter2"}


class EmulatorFactory(Protocol):
    """The type of the ``watcher_emulator_factory`` fixture."""

    def __call__(self, *, seed_users: bool = True, **kwargs: Any) -> WatcherEmulator: ...


@pytest.fixture
def fake_clock() -> FakeClock:
    """A clock that moves only when the test calls ``advance()``."""
    return FakeClock()


@pytest.fixture
def watcher_emulator_factory() -> Iterator[EmulatorFactory]:
    """Build started emulators from constructor kwargs; all stop when the test ends."""
    started: list[WatcherEmulator] = []

    def make(*, seed_users: bool = True, **kwargs: Any) -> WatcherEmulator:
        emulator = WatcherEmulator(**kwargs)
        if seed_users:
            for username, password in DEFAULT_USERS.items():
                emulator.add_user(username, password)
        started.append(emulator.start())
        return emulator

    yield make
    for emulator in started:
        emulator.stop()


@pytest.fixture
def watcher_emulator(watcher_emulator_factory: EmulatorFactory) -> WatcherEmulator:
    """A running emulator on real time with ``alice``/``secret`` and ``bob``/``hunter2``."""
    return watcher_emulator_factory()
