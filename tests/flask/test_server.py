"""The Flask test portal under a real uvicorn (its WSGI interface, a thread per request): an
async view waiting on a slow Watcher call or refresh holds up no other request."""

from __future__ import annotations

import re

import httpx

from tests.asgi_server import timed_while_busy, uvicorn_server
from watcher_auth.testing.pytest_plugin import EmulatorFactory

QUICK = 0.05  # seconds a request may take while another one waits on Watcher
# No quick request may take this long: the loop blocked during the slow request's one second
# of waiting would hold the first of them up for at least 0.7 s.
BLOCKED = 0.5


def test_a_slow_watcher_call_or_refresh_holds_up_no_other_request(
    watcher_emulator_factory: EmulatorFactory,
) -> None:
    emulator = watcher_emulator_factory(rotate_refresh_tokens=True)
    with (
        uvicorn_server(
            "tests.flask.server_app:create_app",
            port=17030,
            env={"WATCHER_URL": emulator.url},
            factory=True,
            interface="wsgi",
            ready_path="/sign-in",
        ) as url,
        httpx.Client(base_url=url, timeout=30) as client,
        httpx.Client(base_url=url, timeout=30) as quick_client,
    ):
        assert client.post("/sign-in/1").status_code == 200
        page = client.get("/watcher/connect").text
        token = re.search(r'name="csrf_token" value="([^"]+)"', page)
        assert token is not None
        connected = client.post(
            "/watcher/connect",
            data={"csrf_token": token.group(1), "username": "alice", "password": "secret"},
        )
        assert connected.status_code == 302
        quick_client.get("/sign-in")  # the quick requests reuse this warm connection

        emulator.configure(latency=1.0)
        call = timed_while_busy(
            lambda: client.get("/async/cameras"), lambda: quick_client.get("/sign-in")
        )
        emulator.configure(latency=0.0, refresh_latency=1.0)
        emulator.revoke_access_tokens("alice")  # the next call gets 401, then a refresh
        refresh = timed_while_busy(
            lambda: client.get("/async/cameras"), lambda: quick_client.get("/sign-in")
        )

    for slow_answer, slow_seconds, quick_answers, quick_seconds in (call, refresh):
        assert slow_answer.status_code == 200, slow_answer.text
        assert slow_answer.json()["streams"] == ["alice-cam-0", "alice-cam-1", "alice-cam-2"]
        assert slow_seconds >= 1.0
        assert [a.status_code for a in quick_answers] == [200] * len(quick_answers)
        assert max(quick_seconds) < BLOCKED and min(quick_seconds) < QUICK, quick_seconds
    assert emulator.stats.refreshes == 1
