"""The Watcher emulator, driven over loopback with plain requests, as a client would."""

from __future__ import annotations

import email.utils
import os
import selectors
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests

from watcher_auth.testing import FakeClock, RemoteEmulator, WatcherEmulator
from watcher_auth.testing.pytest_plugin import EmulatorFactory

REPO = Path(__file__).resolve().parents[2]


def login(emu: WatcherEmulator, username: str = "alice", password: str = "secret") -> Any:
    response = requests.post(emu.v3_url + "/login", auth=(username, password), timeout=5)
    assert response.status_code == 200, response.text
    return response.json()


def refresh(emu: WatcherEmulator, refresh_token: str) -> requests.Response:
    return requests.post(
        emu.v3_url + "/login", headers={"Authorization": f"Bearer {refresh_token}"}, timeout=5
    )


def get(emu: WatcherEmulator, path: str, access_token: str, **kwargs: Any) -> requests.Response:
    headers = {"Authorization": f"Bearer {access_token}"}
    return requests.get(emu.v3_url + path, headers=headers, timeout=5, **kwargs)


def claims(access_token: str) -> Any:
    return jwt.decode(access_token, options={"verify_signature": False})


@pytest.fixture
def emu(fake_clock: FakeClock, watcher_emulator_factory: EmulatorFactory) -> WatcherEmulator:
    return watcher_emulator_factory(clock=fake_clock)


# Logging in.


def test_password_login_returns_a_signed_jwt_and_a_uuid_refresh_token(
    emu: WatcherEmulator, fake_clock: FakeClock
) -> None:
    response = requests.post(emu.v3_url + "/login", auth=("alice", "secret"), timeout=5)

    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"access_token", "refresh_token"}
    uuid.UUID(body["refresh_token"])
    payload = jwt.decode(body["access_token"], emu.public_key_pem, algorithms=["RS256"])
    assert payload["exp"] - payload["iat"] == 300
    assert payload["iat"] == int(fake_clock())
    assert payload["sub"] == "alice"
    assert payload["session"]
    assert email.utils.parsedate_to_datetime(response.headers["Date"]).timestamp() == int(
        fake_clock()
    )
    assert emu.stats.password_logins == 1
    assert emu.stats.active_sessions == {"alice": 1}


def test_wrong_password_and_missing_credentials_get_json_api_401(emu: WatcherEmulator) -> None:
    wrong = requests.post(emu.v3_url + "/login", auth=("alice", "nope"), timeout=5)
    unknown = requests.post(emu.v3_url + "/login", auth=("mallory", "secret"), timeout=5)
    missing = requests.post(emu.v3_url + "/login", timeout=5)

    assert [r.status_code for r in (wrong, unknown, missing)] == [401, 401, 401]
    assert wrong.json() == {
        "errors": [
            {
                "id": None,
                "status": "401",
                "code": "invalid_credentials",
                "title": "Invalid login or password",
                "source": {"pointer": None, "parameter": None},
                "meta": {},
            }
        ]
    }
    assert emu.stats.failed_logins == 3
    assert emu.stats.password_logins == 0


def test_legacy_servers_add_a_top_level_error(emu: WatcherEmulator) -> None:
    emu.configure(legacy_error_field=True)

    response = requests.post(emu.v3_url + "/login", auth=("alice", "nope"), timeout=5)

    assert response.json()["error"] == "Invalid login or password"


# Refreshing.


def test_refresh_without_rotation_keeps_the_refresh_token_and_the_session(
    emu: WatcherEmulator,
) -> None:
    first = login(emu)

    second = refresh(emu, first["refresh_token"]).json()
    third = refresh(emu, first["refresh_token"]).json()

    assert second["refresh_token"] == third["refresh_token"] == first["refresh_token"]
    assert second["access_token"] != first["access_token"]
    assert claims(second["access_token"])["session"] == claims(first["access_token"])["session"]
    assert emu.stats.refreshes == 2
    assert emu.stats.active_sessions == {"alice": 1}


def test_refresh_with_rotation_kills_the_old_refresh_token(emu: WatcherEmulator) -> None:
    emu.configure(rotate_refresh_tokens=True)
    first = login(emu)

    second = refresh(emu, first["refresh_token"])
    replayed = refresh(emu, first["refresh_token"])

    assert second.status_code == 200
    assert second.json()["refresh_token"] != first["refresh_token"]
    assert replayed.status_code == 401
    assert refresh(emu, second.json()["refresh_token"]).status_code == 200
    assert emu.stats.refreshes == 2
    assert emu.stats.rejected_refreshes == 1


def test_unknown_refresh_token_is_rejected(emu: WatcherEmulator) -> None:
    assert refresh(emu, str(uuid.uuid4())).status_code == 401
    assert emu.stats.rejected_refreshes == 1


def test_refresh_token_expires_with_its_session(
    emu: WatcherEmulator, fake_clock: FakeClock
) -> None:
    emu.configure(refresh_lifetime=3600)
    tokens = login(emu)

    fake_clock.advance(3601)

    assert refresh(emu, tokens["refresh_token"]).status_code == 401
    assert emu.stats.active_sessions == {}


# Calling with the access token.


def test_old_access_token_works_until_its_exp_even_after_a_refresh(
    emu: WatcherEmulator, fake_clock: FakeClock
) -> None:
    old = login(emu)
    refresh(emu, old["refresh_token"])

    assert get(emu, "/profile", old["access_token"]).status_code == 200
    fake_clock.advance(301)
    assert get(emu, "/profile", old["access_token"]).status_code == 401
    assert emu.stats.unauthorized == 1


def test_expiry_follows_the_server_clock_offset(emu: WatcherEmulator) -> None:
    emu.configure(server_clock_offset=120, include_iat=False)
    tokens = login(emu)

    assert "iat" not in claims(tokens["access_token"])
    emu.advance_clock(181)
    assert get(emu, "/profile", tokens["access_token"]).status_code == 200
    emu.advance_clock(120)
    assert get(emu, "/profile", tokens["access_token"]).status_code == 401


def test_calls_without_a_valid_access_token_get_401(emu: WatcherEmulator) -> None:
    tokens = login(emu)

    assert requests.get(emu.v3_url + "/streams", timeout=5).status_code == 401
    assert get(emu, "/streams", "not-a-jwt").status_code == 401
    assert get(emu, "/streams", tokens["refresh_token"]).status_code == 401
    assert emu.stats.unauthorized == 3
    assert emu.stats.calls_by_user == {}


def test_revoke_kills_access_and_refresh_tokens(emu: WatcherEmulator) -> None:
    tokens = login(emu)
    bob = login(emu, "bob", "hunter2")

    assert emu.revoke("alice") == 1

    assert get(emu, "/profile", tokens["access_token"]).status_code == 401
    assert refresh(emu, tokens["refresh_token"]).status_code == 401
    assert get(emu, "/profile", bob["access_token"]).status_code == 200
    assert emu.stats.active_sessions == {"bob": 1}
    assert emu.stats.rejected_refreshes == 1


def test_revoking_access_tokens_keeps_the_session_so_a_refresh_works(
    emu: WatcherEmulator,
) -> None:
    tokens = login(emu)

    assert emu.revoke_access_tokens("alice") == 1

    assert get(emu, "/profile", tokens["access_token"]).status_code == 401
    new = refresh(emu, tokens["refresh_token"]).json()
    assert get(emu, "/profile", new["access_token"]).status_code == 200
    assert (emu.stats.unauthorized, emu.stats.refreshes) == (1, 1)


def test_a_login_beyond_max_sessions_evicts_the_oldest_session(emu: WatcherEmulator) -> None:
    emu.configure(max_sessions=2)
    oldest, middle, newest = login(emu), login(emu), login(emu)

    assert get(emu, "/profile", oldest["access_token"]).status_code == 401
    assert refresh(emu, oldest["refresh_token"]).status_code == 401
    for survivor in (middle, newest):
        assert get(emu, "/profile", survivor["access_token"]).status_code == 200
    assert emu.stats.evicted_sessions == 1
    assert emu.stats.active_sessions == {"alice": 2}


def test_a_users_own_max_sessions_wins_over_the_default(emu: WatcherEmulator) -> None:
    emu.configure(max_sessions=5)
    emu.add_user("carol", "pw", max_sessions=1)
    first = login(emu, "carol", "pw")
    login(emu, "carol", "pw")

    assert get(emu, "/profile", first["access_token"]).status_code == 401
    assert emu.stats.evicted_sessions == 1


# Endpoints.


def test_cursor_pagination_walks_all_streams(emu: WatcherEmulator) -> None:
    emu.add_user("dave", "pw", streams=250)
    token = login(emu, "dave", "pw")["access_token"]

    pages = [get(emu, "/streams", token, params={"limit": 100}).json()]
    while pages[-1]["next"]:
        params = {"limit": 100, "cursor": pages[-1]["next"]}
        pages.append(get(emu, "/streams", token, params=params).json())

    assert [len(p["streams"]) for p in pages] == [100, 100, 50]
    assert [p["estimated_count"] for p in pages] == [250, 250, 250]
    assert pages[0]["prev"] is None
    assert pages[1]["prev"] is not None
    names = [s["name"] for p in pages for s in p["streams"]]
    assert sorted(names) == sorted(f"dave-cam-{i}" for i in range(250))
    back = get(emu, "/streams", token, params={"cursor": pages[2]["prev"]}).json()
    assert back["streams"] == pages[1]["streams"]


def test_streams_have_the_documented_fields_and_filter_by_q(emu: WatcherEmulator) -> None:
    token = login(emu)["access_token"]

    everything = get(emu, "/streams", token).json()
    one = get(emu, "/streams", token, params={"q": "cam-1"}).json()

    assert everything["timing"] == {}
    assert [s["name"] for s in everything["streams"]] == [f"alice-cam-{i}" for i in range(3)]
    stream = everything["streams"][0]
    assert {"name", "title", "organization_id", "folder_id", "stats"} <= stream.keys()
    assert set(stream["stats"]) == {"alive", "status", "playback_token", "streaming_endpoint"}
    assert [s["name"] for s in one["streams"]] == ["alice-cam-1"]


def test_users_see_only_their_own_streams(emu: WatcherEmulator) -> None:
    bob = login(emu, "bob", "hunter2")["access_token"]

    names = [s["name"] for s in get(emu, "/streams", bob).json()["streams"]]

    assert names == ["bob-cam-0", "bob-cam-1", "bob-cam-2"]
    assert get(emu, "/streams/alice-cam-0", bob).status_code == 404


def test_put_merges_the_body_into_the_stream(emu: WatcherEmulator) -> None:
    token = login(emu)["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    url = emu.v3_url + "/streams/alice-cam-0"

    put = requests.put(url, json={"title": "Front door"}, headers=headers, timeout=5)
    bad = requests.put(url, data=b"{nope", headers=headers, timeout=5)
    missing = requests.put(url + "x", json={"title": "x"}, headers=headers, timeout=5)

    assert put.status_code == 200
    assert put.json()["title"] == "Front door"
    assert put.json()["name"] == "alice-cam-0"
    assert get(emu, "/streams/alice-cam-0", token).json()["title"] == "Front door"
    assert bad.status_code == 400
    assert missing.status_code == 404
    assert missing.json()["errors"][0]["status"] == "404"


def test_delete_removes_a_stream(emu: WatcherEmulator) -> None:
    token = login(emu)["access_token"]
    url = emu.v3_url + "/streams/alice-cam-2"

    deleted = requests.delete(url, headers={"Authorization": f"Bearer {token}"}, timeout=5)

    assert deleted.status_code == 204
    assert get(emu, "/streams/alice-cam-2", token).status_code == 404


def test_profile_users_organizations_and_folders(emu: WatcherEmulator) -> None:
    emu.add_user("root", "pw", is_admin=True, max_sessions=4)
    alice = login(emu)["access_token"]
    root = login(emu, "root", "pw")["access_token"]
    headers = {"Authorization": f"Bearer {alice}"}

    profile = get(emu, "/profile", alice).json()
    updated = requests.put(
        emu.v3_url + "/profile", json={"fullname": "Alice A."}, headers=headers, timeout=5
    ).json()
    organizations = get(emu, "/organizations", alice).json()["organizations"]
    folders = get(emu, f"/organizations/{organizations[0]['id']}/folders", alice).json()

    assert profile["name"] == "alice"
    assert profile["is_admin"] is False
    assert {"fullname", "email", "is_domain_admin", "locale"} <= profile.keys()
    assert updated["fullname"] == "Alice A."
    assert len(organizations) == 1
    assert folders["folders"][0]["organization_id"] == organizations[0]["id"]
    assert get(emu, "/users", alice).status_code == 403
    users = get(emu, "/users", root).json()["users_list"]
    assert [u["name"] for u in users] == ["alice", "bob", "root"]
    assert users[2]["max_sessions"] == 4


def test_unknown_paths_get_json_api_404(emu: WatcherEmulator) -> None:
    token = login(emu)["access_token"]

    for response in (get(emu, "/nothing", token), requests.get(emu.url + "/nothing", timeout=5)):
        assert response.status_code == 404
        assert response.json()["errors"][0]["status"] == "404"


def test_date_header_can_be_left_out(emu: WatcherEmulator) -> None:
    emu.configure(send_date_header=False)

    assert "Date" not in requests.post(emu.v3_url + "/login", timeout=5).headers


# Failure injection.


@pytest.mark.parametrize("mode", ["500", "502_html", "503", "non_json", "bad_jwt"])
def test_injected_failure_answers_once_then_logins_work(emu: WatcherEmulator, mode: str) -> None:
    emu.fail_next("login", mode=mode)

    failed = requests.post(emu.v3_url + "/login", auth=("alice", "secret"), timeout=5)

    if mode == "500":
        assert failed.status_code == 500
        assert failed.json()["errors"][0]["status"] == "500"
    elif mode == "502_html":
        assert failed.status_code == 502
        assert failed.headers["Content-Type"] == "text/html"
        assert "Bad Gateway" in failed.text
    elif mode == "503":
        assert failed.status_code == 503
    elif mode == "non_json":
        assert (failed.status_code, failed.text) == (200, "not json")
    else:
        with pytest.raises(jwt.DecodeError):
            claims(failed.json()["access_token"])
    login(emu)
    assert emu.stats.injected_failures == 1
    assert emu.stats.password_logins == 1


@pytest.mark.parametrize(
    ("mode", "error"),
    [
        ("drop", requests.ConnectionError),
        ("reset_mid_body", requests.exceptions.ChunkedEncodingError),
    ],
)
def test_broken_connections(emu: WatcherEmulator, mode: str, error: type[Exception]) -> None:
    emu.fail_next("login", mode=mode)

    with pytest.raises(error):
        requests.post(emu.v3_url + "/login", auth=("alice", "secret"), timeout=5)

    login(emu)
    assert emu.stats.password_logins == 1


def test_hang_outlasts_a_client_timeout(emu: WatcherEmulator) -> None:
    emu.configure(hang_seconds=0.5)
    token = login(emu)["access_token"]
    emu.fail_next("call", mode="hang")

    with pytest.raises(requests.Timeout):
        requests.get(
            emu.v3_url + "/profile", headers={"Authorization": f"Bearer {token}"}, timeout=0.1
        )

    assert get(emu, "/profile", token).status_code == 200


def test_a_refresh_whose_answer_is_lost_still_rotates_the_token(emu: WatcherEmulator) -> None:
    emu.configure(rotate_refresh_tokens=True)
    tokens = login(emu)
    emu.fail_next("refresh", mode="process_then_drop")

    with pytest.raises(requests.ConnectionError):
        refresh(emu, tokens["refresh_token"])

    assert refresh(emu, tokens["refresh_token"]).status_code == 401
    stats = emu.stats
    assert (stats.refreshes, stats.rejected_refreshes, stats.injected_failures) == (1, 1, 1)


def test_failures_are_consumed_in_order_per_target(emu: WatcherEmulator) -> None:
    tokens = login(emu)
    emu.fail_next("refresh", count=2, mode="503")
    emu.fail_next("call", mode="500")

    statuses = [refresh(emu, tokens["refresh_token"]).status_code for _ in range(3)]
    call = get(emu, "/profile", tokens["access_token"])

    assert statuses == [503, 503, 200]
    assert call.status_code == 500
    assert emu.stats.injected_failures == 3
    assert emu.stats.calls == 0


def test_an_injected_401_on_a_call_counts_as_unauthorized(emu: WatcherEmulator) -> None:
    token = login(emu)["access_token"]
    emu.fail_next("call", mode="401")

    response = get(emu, "/profile", token)

    assert response.status_code == 401
    assert response.json()["errors"][0]["status"] == "401"
    assert get(emu, "/profile", token).status_code == 200
    assert (emu.stats.unauthorized, emu.stats.injected_failures) == (1, 1)


def test_bad_jwt_is_refused_for_calls(emu: WatcherEmulator) -> None:
    with pytest.raises(ValueError):
        emu.fail_next("call", mode="bad_jwt")


def test_latency_delays_answers(emu: WatcherEmulator) -> None:
    tokens = login(emu)
    emu.configure(refresh_latency=0.2)

    started = time.monotonic()
    refresh(emu, tokens["refresh_token"])

    assert time.monotonic() - started >= 0.2


# Stats, call log, concurrency.


def test_stats_and_call_log_record_who_called_what(emu: WatcherEmulator) -> None:
    alice = login(emu)["access_token"]
    bob = login(emu, "bob", "hunter2")["access_token"]
    get(emu, "/streams", alice, params={"limit": 2})
    get(emu, "/profile", bob)
    get(emu, "/profile", "garbage")

    stats = emu.stats
    assert (stats.calls, stats.unauthorized) == (3, 1)
    assert stats.calls_by_user == {"alice": 1, "bob": 1}
    assert [(r.username, r.method, r.path, r.query) for r in emu.call_log] == [
        ("alice", "GET", "/watcher/client-api/v3/streams", "limit=2"),
        ("bob", "GET", "/watcher/client-api/v3/profile", ""),
    ]
    emu.reset_stats()
    assert emu.stats.calls == 0
    assert emu.stats.active_sessions == {"alice": 1, "bob": 1}
    assert emu.call_log == []


def test_many_keep_alive_clients_at_once(emu: WatcherEmulator) -> None:
    tokens = [login(emu)["access_token"], login(emu, "bob", "hunter2")["access_token"]]
    errors: list[BaseException] = []

    def client(token: str) -> None:
        with requests.Session() as session:
            session.headers["Authorization"] = f"Bearer {token}"
            for _ in range(20):
                try:
                    session.get(emu.v3_url + "/streams", timeout=10).raise_for_status()
                except requests.RequestException as exc:
                    errors.append(exc)

    threads = [threading.Thread(target=client, args=(tokens[i % 2],)) for i in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert emu.stats.calls_by_user == {"alice": 400, "bob": 400}


HAMMER = textwrap.dedent(
    """
    import sys, threading, requests
    url, token = sys.argv[1], sys.argv[2]
    failures = []
    def run():
        with requests.Session() as s:
            for _ in range(25):
                auth = {"Authorization": "Bearer " + token}
                r = s.get(url + "/streams", headers=auth, timeout=10)
                if r.status_code != 200:
                    failures.append(r.status_code)
    threads = [threading.Thread(target=run) for _ in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    sys.exit(1 if failures else 0)
    """
)


@pytest.mark.multiprocess
def test_several_processes_at_once(emu: WatcherEmulator) -> None:
    token = login(emu)["access_token"]

    workers = [
        subprocess.Popen([sys.executable, "-c", HAMMER, emu.v3_url, token]) for _ in range(4)
    ]

    assert [w.wait(timeout=30) for w in workers] == [0, 0, 0, 0]
    assert emu.stats.calls_by_user == {"alice": 4 * 8 * 25}


def test_stop_closes_idle_keep_alive_connections(watcher_emulator: WatcherEmulator) -> None:
    with requests.Session() as session:
        session.post(watcher_emulator.v3_url + "/login", auth=("bob", "hunter2"), timeout=5)
        url = watcher_emulator.v3_url + "/login"
        watcher_emulator.stop()

        with pytest.raises(requests.ConnectionError):
            session.post(url, auth=("bob", "hunter2"), timeout=5)


# Remote control and the CLI.


def test_remote_emulator_drives_the_same_controls(emu: WatcherEmulator) -> None:
    remote = RemoteEmulator(emu.url, control_token=emu.control_token)

    remote.add_user("erin", "pw", streams=[{"name": "lobby", "title": "Lobby"}])
    tokens = login(emu, "erin", "pw")
    remote.configure(access_lifetime=60, rotate_refresh_tokens=True)
    remote.fail_next("call", mode="503")

    assert get(emu, "/streams", tokens["access_token"]).status_code == 503
    streams = get(emu, "/streams", tokens["access_token"]).json()["streams"]
    assert [(s["name"], s["title"]) for s in streams] == [("lobby", "Lobby")]
    new = refresh(emu, tokens["refresh_token"]).json()
    assert new["refresh_token"] != tokens["refresh_token"]
    assert claims(new["access_token"])["exp"] - claims(new["access_token"])["iat"] == 60
    remote.advance_clock(61)
    assert get(emu, "/profile", new["access_token"]).status_code == 401
    assert remote.stats == emu.stats
    assert remote.stats.injected_failures == 1
    assert [r.username for r in remote.call_log] == ["erin"]
    assert remote.revoke_access_tokens("erin") == 1
    assert remote.revoke("erin") == 1
    remote.reset_stats()
    assert remote.stats.calls == 0
    with pytest.raises(KeyError):
        remote.revoke("nobody")
    with pytest.raises(ValueError):
        remote.fail_next("everything")


def test_cli_serves_until_sigterm(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    command = [sys.executable, "-m", "watcher_auth.testing.emulator", "--port", "0"]
    command += ["--user", "alice:secret", "--user", "bob:pw:bobs-key", "--streams", "5", "--rotate"]
    process = subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            assert selector.select(timeout=20), "the emulator printed nothing"
        line = process.stdout.readline().strip()
        assert line.startswith("Watcher emulator listening on http://127.0.0.1:")
        url = line.rsplit(" ", 1)[1]
        token_line = process.stdout.readline().strip()
        assert token_line.startswith("Control token: ")
        control_token = token_line.rsplit(" ", 1)[1]

        tokens = requests.post(
            url + "/watcher/client-api/v3/login", auth=("alice", "secret"), timeout=5
        ).json()
        streams = requests.get(
            url + "/watcher/client-api/v3/streams",
            headers={"Authorization": f"Bearer {tokens['access_token']}"},
            timeout=5,
        ).json()
        assert streams["estimated_count"] == 5
        assert RemoteEmulator(url, control_token).stats.password_logins == 1
        cameras = requests.get(
            url + "/vsaas/api/v2/cameras",
            headers={"x-vsaas-api-key": "bobs-key", "x-vsaas-user": "bob"},
            timeout=5,
        )
        assert cameras.status_code == 200 and len(cameras.json()) == 5
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=10)

    assert process.returncode == 0
    assert stderr == ""
