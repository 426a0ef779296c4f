"""Async views through Django's ASGI handler (``AsyncClient``) against the Watcher emulator:
``await request.awatcher()``, expiry and refresh, revocation, outages, users kept apart."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.core import checks
from django.test import AsyncClient, override_settings

from django_watcher_auth import signals

pytestmark = pytest.mark.django_db(transaction=True)

CONNECT = "/watcher/connect/"
JSON = {"headers": {"Accept": "application/json"}}


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    # async_to_sync keeps the ORM calls of sync views on this thread's database connection.
    async_to_sync(scenario)()


async def connected_client(user: Any, username: str = "alice", password: str = "secret") -> Any:
    client = AsyncClient()
    await client.aforce_login(user)
    answer = await client.post(CONNECT, {"username": username, "password": password})
    assert answer.status_code == 302
    return client


@pytest.fixture
def bob(make_user: Any) -> Any:
    return make_user("portal-bob")


def test_an_async_view_gets_the_users_streams_after_one_login(portal: Any, alice: Any) -> None:
    async def scenario() -> None:
        client = await connected_client(alice)
        for _ in range(3):
            answer = await client.get("/async/cameras/")
            assert answer.status_code == 200
            assert answer.json() == {"streams": ["alice-cam-0", "alice-cam-1", "alice-cam-2"]}

    run(scenario)
    stats = portal.emulator.stats
    assert (stats.password_logins, stats.refreshes, stats.calls) == (1, 0, 3)


def test_concurrent_async_requests_after_expiry_refresh_once(portal: Any, alice: Any) -> None:
    refreshed: list[Any] = []

    def receiver(sender: Any, user: Any, **extra: Any) -> None:
        refreshed.append(user)

    signals.watcher_tokens_refreshed.connect(receiver)
    try:

        async def scenario() -> None:
            client = await connected_client(alice)
            portal.clock.advance(301)
            answers = await asyncio.gather(*(client.get("/async/cameras/") for _ in range(5)))
            assert [a.status_code for a in answers] == [200] * 5

        run(scenario)
    finally:
        signals.watcher_tokens_refreshed.disconnect(receiver)
    stats = portal.emulator.stats
    assert (stats.password_logins, stats.refreshes, stats.rejected_refreshes) == (1, 1, 0)
    # The signal's user lookup ran off the event loop (the ORM refuses to run on it).
    assert refreshed == [alice]


def test_revoked_credentials_send_pages_to_connect_and_json_clients_a_401(
    portal: Any, alice: Any
) -> None:
    async def scenario() -> None:
        client = await connected_client(alice)
        portal.emulator.revoke("alice")
        portal.clock.advance(301)
        api = await client.get("/async/profile-view/", **JSON)
        assert api.status_code == 401
        assert api.json()["error"] == "watcher_reauthentication_required"
        assert api.json()["connect_url"] == CONNECT
        page = await client.get("/async/cameras/")
        assert page.status_code == 302
        assert page["Location"] == f"{CONNECT}?next=%2Fasync%2Fcameras%2F"

    run(scenario)


def test_an_undecorated_async_view_is_answered_by_the_middleware(portal: Any, alice: Any) -> None:
    async def scenario() -> None:
        client = AsyncClient()
        await client.aforce_login(alice)
        answer = await client.get("/async/profile/", **JSON)
        assert (answer.status_code, answer.json()["error"]) == (401, "watcher_not_connected")
        anonymous = await AsyncClient().get("/async/cameras/", **JSON)
        assert (anonymous.status_code, anonymous.json()) == (401, {"error": "login_required"})

    run(scenario)
    assert portal.emulator.stats.calls == 0


def test_watcher_down_answers_503_with_retry_after(portal: Any, alice: Any) -> None:
    async def scenario() -> None:
        client = await connected_client(alice)
        portal.emulator.fail_next("call", mode="502_html")
        answer = await client.get("/async/cameras/")
        assert answer.status_code == 503
        assert answer["Retry-After"] == "30"
        portal.emulator.stop()
        answer = await client.get("/async/profile/", **JSON)
        assert (answer.status_code, answer.json()["error"]) == (503, "watcher_unavailable")

    run(scenario)


def test_raise_for_status_in_an_async_view_follows_the_policy(portal: Any, alice: Any) -> None:
    async def scenario() -> None:
        client = await connected_client(alice)
        answer = await client.get("/async/checked/", **JSON)
        assert (answer.status_code, answer.json()["error"]) == (404, "watcher_not_found")

    run(scenario)


def test_two_users_never_see_each_others_streams(portal: Any, alice: Any, bob: Any) -> None:
    async def scenario() -> None:
        clients = [await connected_client(alice), await connected_client(bob, "bob", "hunter2")]
        answers = await asyncio.gather(*(clients[i % 2].get("/async/cameras/") for i in range(10)))
        for i, answer in enumerate(answers):
            owner = "alice" if i % 2 == 0 else "bob"
            assert all(name.startswith(f"{owner}-") for name in answer.json()["streams"])

    run(scenario)
    assert portal.emulator.stats.calls_by_user == {"alice": 5, "bob": 5}


def test_an_async_view_uses_the_api_v2_account(portal: Any, bob: Any) -> None:
    api_key = portal.emulator.user_api_key("bob")

    async def scenario() -> None:
        client = AsyncClient()
        await client.aforce_login(bob)
        before = await client.get("/async/v2/cameras/")
        assert before.status_code == 302 and "/watcher/connect/v2/" in before["Location"]
        connected = await client.post(
            "/watcher/connect/v2/", {"username": "bob", "mode": "api_key", "api_key": api_key}
        )
        assert connected.status_code == 302
        answer = await client.get("/async/v2/cameras/")
        assert answer.status_code == 200
        cameras = answer.json()["cameras"]
        assert cameras and all(name.startswith("bob-") for name in cameras)

    run(scenario)


def test_a_sync_only_wrapper_around_an_async_view_fails_check_e010() -> None:
    assert not [m for m in checks.run_checks(tags=["urls"]) if m.id == "django_watcher_auth.E010"]
    with override_settings(ROOT_URLCONF="tests.django.testapp.sync_wrapped_urls"):
        found = [m for m in checks.run_checks(tags=["urls"]) if m.id == "django_watcher_auth.E010"]
    assert len(found) == 1
    assert found[0].msg.startswith(
        "The URL pattern 'cameras/' serves the async view wrapped_cameras through a sync-only "
        "wrapper"
    )
