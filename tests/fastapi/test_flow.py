"""The whole flow through a FastAPI app: connect, call, refresh, revocation, outages, users."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx
import pytest
from fastapi import FastAPI

from fastapi_watcher_auth import WatcherAuth, get_state
from tests.fastapi.conftest import Portal, as_user, connect, run
from tests.fastapi.portal import current_user_id
from watcher_auth import ConfigurationError, EventType


def test_a_connected_user_sees_their_streams_after_one_login(portal: Portal) -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        connected = await connect(client, "1")
        assert connected.status_code == 200
        assert connected.json() == {"connected": True, "username": "alice"}
        for _ in range(3):
            answer = await client.get("/cameras", headers=as_user("1"))
            assert answer.status_code == 200
            assert answer.json() == ["alice-cam-0", "alice-cam-1", "alice-cam-2"]

    run(portal, scenario)
    stats = portal.emulator.stats
    assert (stats.password_logins, stats.refreshes, stats.calls) == (1, 0, 3)


def test_an_expired_token_is_refreshed_once_without_a_new_login(portal: Portal) -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        await connect(client, "1")
        portal.clock.advance(301)
        answers = await asyncio.gather(
            *(client.get("/cameras", headers=as_user("1")) for _ in range(5))
        )
        assert [a.status_code for a in answers] == [200] * 5

    run(portal, scenario)
    stats = portal.emulator.stats
    assert (stats.password_logins, stats.refreshes, stats.rejected_refreshes) == (1, 1, 0)
    # Lock waits and other operational events depend on timing; these two do not.
    account_events = [
        e.type
        for e in portal.app.state.events
        if e.type in (EventType.CONNECTED, EventType.REFRESHED)
    ]
    assert account_events == [EventType.CONNECTED, EventType.REFRESHED]


def test_revoked_credentials_answer_401_with_the_connect_url(portal: Portal) -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        await connect(client, "1")
        portal.emulator.revoke("alice")
        portal.clock.advance(301)
        answer = await client.get("/cameras", headers=as_user("1"))
        assert answer.status_code == 401
        assert answer.json()["error"] == "watcher_reauthentication_required"
        assert answer.json()["connect_url"] == "/watcher/connect"
        status = await client.get("/watcher/status", headers=as_user("1"))
        assert status.json()["connected"] is False

    run(portal, scenario)
    assert EventType.REAUTHENTICATION_REQUIRED in [e.type for e in portal.app.state.events]


def test_a_user_who_never_connected_gets_401_not_connected(portal: Portal) -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        answer = await client.get("/cameras", headers=as_user("1"))
        assert answer.status_code == 401
        assert answer.json()["error"] == "watcher_not_connected"
        assert answer.json()["connect_url"] == "/watcher/connect"
        anonymous = await client.get("/cameras")
        assert anonymous.status_code == 401
        assert anonymous.json()["error"] == "watcher_not_connected"

    run(portal, scenario)
    assert portal.emulator.stats.calls == 0


def test_watcher_down_answers_503_with_retry_after(portal: Portal) -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        await connect(client, "1")
        portal.emulator.fail_next("call", mode="503")
        answer = await client.get("/cameras", headers=as_user("1"))
        assert answer.status_code == 503
        assert answer.headers["Retry-After"] == "30"
        assert answer.json()["error"] == "watcher_unavailable"
        portal.emulator.stop()
        answer = await client.get("/cameras", headers=as_user("1"))
        assert (answer.status_code, answer.json()["error"]) == (503, "watcher_unavailable")

    run(portal, scenario)


def test_a_views_raise_for_status_on_watchers_answer_follows_the_policy(portal: Portal) -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        await connect(client, "1")
        answer = await client.get("/raise-for-status", headers=as_user("1"))
        assert answer.status_code == 404
        assert answer.json()["error"] == "watcher_not_found"

    run(portal, scenario)


def test_two_users_never_see_each_others_streams(portal: Portal) -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        await connect(client, "1", "alice", "secret")
        await connect(client, "2", "bob", "hunter2")
        users = ["1", "2"] * 10
        answers = await asyncio.gather(*(client.get("/cameras", headers=as_user(u)) for u in users))
        for user, answer in zip(users, answers, strict=True):
            owner = "alice" if user == "1" else "bob"
            assert all(name.startswith(f"{owner}-") for name in answer.json())

    run(portal, scenario)
    assert portal.emulator.stats.calls_by_user == {"alice": 10, "bob": 10}


def test_connect_takes_utf8_credentials(portal: Portal) -> None:
    portal.emulator.add_user("jürgen", "пароль-ß")

    async def scenario(client: httpx.AsyncClient) -> None:
        connected = await connect(client, "1", "jürgen", "пароль-ß")
        assert connected.json() == {"connected": True, "username": "jürgen"}
        assert (await client.get("/cameras", headers=as_user("1"))).status_code == 200

    run(portal, scenario)


@pytest.mark.parametrize(
    ("content", "content_type", "status"),
    [
        (b'{"username": "alice", "password": "wrong"}', "application/json", 400),
        (b'{"username": "alice"}', "application/json", 400),
        (b'{"username": "al:ice", "password": "secret"}', "application/json", 400),
        (b'{"username": "alice", "password": "\\ud800"}', "application/json", 400),
        (b"\xff\xfe{}", "application/json", 400),
        (b"[]", "application/json", 400),
        (b'{"username": "alice", "password": "secret"}', "text/plain", 415),
        (b'{"username": "alice", "password": "secret"}', "", 415),
    ],
)
def test_connect_refuses_unusable_requests_without_logging_in(
    portal: Portal, content: bytes, content_type: str, status: int
) -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        headers = {**as_user("1"), "Content-Type": content_type}
        answer = await client.post("/watcher/connect", content=content, headers=headers)
        assert answer.status_code == status
        assert "secret" not in answer.text and "wrong" not in answer.text

    run(portal, scenario)
    assert portal.emulator.stats.password_logins == 0


def test_the_router_needs_a_signed_in_portal_user(portal: Portal) -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        answer = await client.post(
            "/watcher/connect", json={"username": "alice", "password": "secret"}
        )
        assert (answer.status_code, answer.json()["error"]) == (401, "login_required")

    run(portal, scenario)
    assert portal.emulator.stats.password_logins == 0


def test_disconnect_forgets_the_account(portal: Portal) -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        await connect(client, "1")
        gone = await client.post("/watcher/disconnect", json={}, headers=as_user("1"))
        assert gone.json() == {"disconnected": True}
        status = await client.get("/watcher/status", headers=as_user("1"))
        assert status.json()["connected"] is False
        answer = await client.get("/cameras", headers=as_user("1"))
        assert answer.status_code == 401

    run(portal, scenario)
    assert EventType.DISCONNECTED in [e.type for e in portal.app.state.events]


def test_api_v2_with_a_user_key_and_with_the_system_key(
    make_portal: Callable[..., Portal],
) -> None:
    portal = make_portal(
        {"system_api_key": "system-key-for-tests"},
        WATCHER_SYSTEM_API_KEY="system-key-for-tests",
    )
    api_key = portal.emulator.user_api_key("bob")

    async def scenario(client: httpx.AsyncClient) -> None:
        before = await client.get("/v2/cameras", headers=as_user("2"))
        assert (before.status_code, before.json()["connect_url"]) == (401, "/watcher/connect/v2")
        connected = await client.post(
            "/watcher/connect/v2",
            json={"username": "bob", "api_key": api_key},
            headers=as_user("2"),
        )
        assert connected.json()["scheme"] == "user-key"
        cameras = await client.get("/v2/cameras", headers=as_user("2"))
        assert cameras.status_code == 200
        assert cameras.json() and all(name.startswith("bob-") for name in cameras.json())
        system = await client.get("/system/cameras", headers=as_user("2"))
        assert system.json() == 6

    run(portal, scenario)
    assert portal.emulator.stats.v2_system_calls == 1


def test_wrong_settings_fail_when_the_plugin_is_set_up() -> None:
    with pytest.raises(ConfigurationError, match="WATCHER_URL is not set"):
        WatcherAuth(user_key=current_user_id).init_app(_app())
    with pytest.raises(ConfigurationError, match="WATCHER_TIMEOUT must be a number"):
        WatcherAuth(
            _app(),
            user_key=current_user_id,
            settings={"WATCHER_URL": "http://w", "WATCHER_TIMEOUT": "x"},
        )
    with pytest.raises(ConfigurationError, match="WATCHER_ENCRYPTION_KEYS"):
        WatcherAuth(
            _app(),
            user_key=current_user_id,
            settings={"WATCHER_URL": "http://w", "WATCHER_STORE": "redis"},
        )
    with pytest.raises(ConfigurationError, match="keeps tokens inside one process"):
        WatcherAuth(
            _app(),
            user_key=current_user_id,
            settings={"WATCHER_URL": "http://w", "WATCHER_MULTIPROCESS": True},
        )


def test_outside_the_lifespan_the_state_says_how_to_start_it(portal: Portal) -> None:
    with pytest.raises(ConfigurationError, match="lifespan"):
        _ = get_state(portal.app).manager


def _app() -> FastAPI:
    return FastAPI()
