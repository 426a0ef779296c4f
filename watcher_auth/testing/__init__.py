"""Test helpers: the Watcher emulator, clocks, and the store contract suite."""

from watcher_auth.testing._emulator_server import RemoteEmulator, WatcherEmulator
from watcher_auth.testing._emulator_state import CallRecord, EmulatorStats
from watcher_auth.testing.clock import FakeClock, SharedClock

__all__ = [
    "CallRecord",
    "EmulatorStats",
    "FakeClock",
    "RemoteEmulator",
    "SharedClock",
    "WatcherEmulator",
]
