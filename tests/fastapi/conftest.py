"""Fixtures for the FastAPI plugin's tests: the test portal on an emulated Watcher."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from fastapi_watcher_auth import WatcherAuth
from tests.fastapi.portal import USER_HEADER, build_portal
from watcher_auth.testing import FakeClock, WatcherEmulator
from watcher_auth.testing.pytest_plugin import EmulatorFactory


@dataclass
class Portal:
    """The test portal, its plugin, and the emulator and clock they share."""

    app: FastAPI
    watcher_auth: WatcherAuth
    emulator: WatcherEmulator
    clock: FakeClock

    @asynccontextmanager
    async def client(self) -> AsyncIterator[httpx.AsyncClient]:
        """A client over ``httpx.ASGITransport``, inside the app's lifespan."""
        transport = httpx.ASGITransport(app=self.app)
        async with (
            self.watcher_auth.lifespan(self.app),
            httpx.AsyncClient(transport=transport, base_url="http://portal.test") as client,
        ):
            yield client


def as_user(user_id: str) -> dict[str, str]:
    """The headers that sign ``user_id`` in to the test portal."""
    return {USER_HEADER: user_id}


async def connect(
    client: httpx.AsyncClient, user_id: str, username: str = "alice", password: str = "secret"
) -> httpx.Response:
    """Connect ``user_id``'s Watcher account through the plugin's router."""
    return await client.post(
        "/watcher/connect",
        json={"username": username, "password": password},
        headers=as_user(user_id),
    )


@pytest.fixture
def make_portal(
    watcher_emulator_factory: EmulatorFactory, fake_clock: FakeClock
) -> Callable[..., Portal]:
    """``make_portal(**settings)``: a portal on a new emulator (alice, bob), fake clock."""

    def make(emulator_options: dict[str, Any] | None = None, **settings: Any) -> Portal:
        emulator = watcher_emulator_factory(
            clock=fake_clock, rotate_refresh_tokens=True, **(emulator_options or {})
        )
        config = {"WATCHER_URL": emulator.url, "WATCHER_CLOCK": fake_clock, **settings}
        app, plugin = build_portal(config)
        return Portal(app, plugin, emulator, fake_clock)

    return make


@pytest.fixture
def portal(make_portal: Callable[..., Portal]) -> Portal:
    """The portal on the in-memory store."""
    return make_portal()


Scenario = Callable[[httpx.AsyncClient], Awaitable[None]]


def run(portal: Portal, scenario: Scenario) -> None:
    """Run ``scenario(client)`` on a new event loop, inside the app's lifespan."""

    async def main() -> None:
        async with portal.client() as client:
            await scenario(client)

    asyncio.run(main())
