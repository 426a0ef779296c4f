"""The emulator's API v2, driven over loopback with plain requests, as a client would."""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import requests

from watcher_auth.testing import RemoteEmulator, WatcherEmulator


def v2_login(emu: WatcherEmulator, login: str = "alice", password: str = "secret") -> str:
    response = requests.post(
        emu.v2_url + "/auth/login", json={"login": login, "password": password}, timeout=5
    )
    assert response.status_code == 200, response.text
    return str(response.json()["session"])


def get(emu: WatcherEmulator, path: str, headers: dict[str, str], **kwargs: Any):
    return requests.get(emu.v2_url + path, headers=headers, timeout=5, **kwargs)


def test_login_returns_a_session_with_the_user(emulator: WatcherEmulator) -> None:
    response = requests.post(
        emulator.v2_url + "/auth/login", json={"login": "carol", "password": "pw"}, timeout=5
    )
    body = response.json()
    assert response.status_code == 200
    assert (body["login"], body["is_admin"]) == ("carol", True)
    assert isinstance(body["session"], str) and len(body["session"]) >= 20
    assert emulator.stats.v2_logins == 1
    assert emulator.stats.active_v2_sessions == {"carol": 1}


@pytest.mark.parametrize(
    "body",
    [{"login": "alice", "password": "wrong"}, {"login": "nobody", "password": "secret"}],
)
def test_bad_credentials_get_403(emulator: WatcherEmulator, body: dict[str, str]) -> None:
    response = requests.post(emulator.v2_url + "/auth/login", json=body, timeout=5)
    assert response.status_code == 403
    assert response.json()["errors"][0]["code"] == "invalid_credentials"
    assert (emulator.stats.v2_logins, emulator.stats.v2_failed_logins) == (0, 1)


def test_a_login_body_that_is_not_json_gets_400(emulator: WatcherEmulator) -> None:
    response = requests.post(emulator.v2_url + "/auth/login", data=b"login=alice", timeout=5)
    assert response.status_code == 400
    assert emulator.stats.v2_failed_logins == 0


def test_each_scheme_is_accepted_and_whoami_names_the_caller(
    emulator: WatcherEmulator, system_key: str
) -> None:
    session = v2_login(emulator)
    alice_key = emulator.user_api_key("alice")
    by_session = get(emulator, "/auth/whoami", {"x-vsaas-session": session})
    by_user_key = get(
        emulator, "/auth/whoami", {"x-vsaas-api-key": alice_key, "x-vsaas-user": "alice"}
    )
    by_system_key = get(emulator, "/auth/whoami", {"x-vsaas-api-key": system_key})
    assert by_session.json()["login"] == by_user_key.json()["login"] == "alice"
    assert by_system_key.json() == {"login": None, "is_admin": True, "is_logged_in": True}
    assert [(r.username, r.scheme) for r in emulator.call_log] == [
        ("alice", "session"),
        ("alice", "user-key"),
        ("", "system-key"),
    ]
    stats = emulator.stats
    assert (stats.v2_calls, stats.v2_system_calls, stats.v2_calls_by_user) == (3, 1, {"alice": 2})


@pytest.mark.parametrize(
    "names",
    [
        ("X-Vsaas-Session", "X-Vsaas-Api-Key", "X-Vsaas-User"),
        ("X-VSAAS-SESSION", "X-VSAAS-APIKEY", "X-VSAAS-USER"),
        ("x-vsaas-session", "X-Vsaas-Apikey", "x-Vsaas-user"),
    ],
)
def test_header_names_are_case_insensitive_in_both_spellings(
    emulator: WatcherEmulator, system_key: str, names: tuple[str, str, str]
) -> None:
    session_header, key_header, user_header = names
    session = v2_login(emulator)
    alice_key = emulator.user_api_key("alice")
    assert get(emulator, "/cameras", {session_header: session}).status_code == 200
    assert get(emulator, "/cameras", {key_header: system_key}).status_code == 200
    headers = {key_header: alice_key, user_header: "alice"}
    assert get(emulator, "/cameras", headers).status_code == 200
    assert emulator.stats.v2_forbidden == 0


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"x-vsaas-session": "not-a-session"},
        {"x-vsaas-api-key": "not-the-system-key"},
        {"x-vsaas-api-key": "not-alices-key", "x-vsaas-user": "alice"},
        {"x-vsaas-api-key": "<system key>", "x-vsaas-user": "alice"},
        {"x-vsaas-api-key": "anything", "x-vsaas-user": "nobody"},
    ],
)
def test_missing_and_bad_credentials_get_403(
    emulator: WatcherEmulator, system_key: str, headers: dict[str, str]
) -> None:
    # The system key is no user's key: with x-vsaas-user it is refused.
    headers = {k: system_key if v == "<system key>" else v for k, v in headers.items()}
    response = get(emulator, "/cameras", headers)
    assert response.status_code == 403
    assert response.json()["errors"][0]["status"] == "403"
    stats = emulator.stats
    assert (stats.v2_calls, stats.v2_forbidden, stats.v2_calls_by_user) == (1, 1, {})
    assert emulator.call_log == []


def test_a_v3_access_token_is_not_a_v2_session(emulator: WatcherEmulator) -> None:
    v3 = requests.post(emulator.v3_url + "/login", auth=("alice", "secret"), timeout=5).json()
    for session in (v3["access_token"], v3["refresh_token"]):
        assert get(emulator, "/cameras", {"x-vsaas-session": session}).status_code == 403


def test_a_user_sees_their_own_cameras_and_the_system_key_sees_all(
    emulator: WatcherEmulator, system_key: str
) -> None:
    own = get(emulator, "/cameras", {"x-vsaas-session": v2_login(emulator)}).json()
    everything = get(emulator, "/cameras", {"x-vsaas-api-key": system_key}).json()
    assert [c["name"] for c in own] == ["alice-cam-0", "alice-cam-1", "alice-cam-2"]
    assert set(own[0]) >= {"name", "title", "organization_id", "folder_id", "stream_status"}
    assert len(everything) == 3 + 3 + 1


def test_cameras_page_by_limit_and_offset_with_paging_headers(
    emulator: WatcherEmulator,
) -> None:
    emulator.add_user("dave", "pw", streams=7)
    headers = {"x-vsaas-session": v2_login(emulator, "dave", "pw")}
    response = get(emulator, "/cameras", headers, params={"limit": 3, "offset": 5})
    assert [c["name"] for c in response.json()] == ["dave-cam-5", "dave-cam-6"]
    assert (response.headers["X-Page-Limit"], response.headers["X-Page-Offset"]) == ("3", "5")
    by_headers = get(emulator, "/cameras", {**headers, "X-Page-Limit": "2", "X-Page-Offset": "1"})
    assert [c["name"] for c in by_headers.json()] == ["dave-cam-1", "dave-cam-2"]
    searched = get(emulator, "/cameras", headers, params={"search": "CAM-4"})
    assert [c["name"] for c in searched.json()] == ["dave-cam-4"]
    assert get(emulator, "/cameras", headers, params={"limit": "x"}).status_code == 400
    assert get(emulator, "/cameras", headers, params={"offset": -1}).status_code == 400


def test_one_camera_by_name_and_404_for_another_users(emulator: WatcherEmulator) -> None:
    headers = {"x-vsaas-session": v2_login(emulator)}
    assert get(emulator, "/cameras/alice-cam-1", headers).json()["name"] == "alice-cam-1"
    assert get(emulator, "/cameras/bob-cam-1", headers).status_code == 404


def test_users_is_for_admins_and_the_system_key(emulator: WatcherEmulator, system_key: str) -> None:
    alice = {"x-vsaas-session": v2_login(emulator)}
    carol = {"x-vsaas-session": v2_login(emulator, "carol", "pw")}
    assert get(emulator, "/users", alice).status_code == 403
    assert len(get(emulator, "/users", carol).json()) == 3
    assert len(get(emulator, "/users", {"x-vsaas-api-key": system_key}).json()) == 3
    # The refusal is counted, yet alice's session still works.
    assert emulator.stats.v2_forbidden == 1
    assert get(emulator, "/auth/whoami", alice).status_code == 200


def test_max_sessions_evicts_the_oldest_session_of_either_api(
    emulator: WatcherEmulator,
) -> None:
    emulator.configure(max_sessions=2)
    first = v2_login(emulator)
    requests.post(emulator.v3_url + "/login", auth=("alice", "secret"), timeout=5)
    third = v2_login(emulator)
    assert get(emulator, "/auth/whoami", {"x-vsaas-session": first}).status_code == 403
    assert get(emulator, "/auth/whoami", {"x-vsaas-session": third}).status_code == 200
    stats = emulator.stats
    assert stats.evicted_sessions == 1
    assert (stats.active_sessions, stats.active_v2_sessions) == ({"alice": 2}, {"alice": 1})


def test_revoke_ends_v2_sessions_but_not_user_keys(emulator: WatcherEmulator) -> None:
    session = v2_login(emulator)
    key_headers = {"x-vsaas-api-key": emulator.user_api_key("alice"), "x-vsaas-user": "alice"}
    assert emulator.revoke("alice") == 1
    assert get(emulator, "/cameras", {"x-vsaas-session": session}).status_code == 403
    assert get(emulator, "/cameras", key_headers).status_code == 200


def test_a_rotated_user_key_stops_working(emulator: WatcherEmulator) -> None:
    old = emulator.user_api_key("alice")
    new = emulator.rotate_api_key("alice")
    assert new != old
    for key, status in [(old, 403), (new, 200)]:
        headers = {"x-vsaas-api-key": key, "x-vsaas-user": "alice"}
        assert get(emulator, "/cameras", headers).status_code == status


def test_add_user_sets_a_chosen_api_key(emulator: WatcherEmulator) -> None:
    emulator.add_user("erin", "pw", api_key="erins-key")
    headers = {"x-vsaas-api-key": "erins-key", "x-vsaas-user": "erin"}
    assert get(emulator, "/auth/whoami", headers).json()["login"] == "erin"
    assert emulator.user_api_key("erin") == "erins-key"
    with pytest.raises(KeyError):
        emulator.user_api_key("nobody")


def test_the_system_key_can_be_switched_off(emulator: WatcherEmulator, system_key: str) -> None:
    emulator.configure(system_api_key=None)
    assert emulator.system_api_key is None
    assert get(emulator, "/cameras", {"x-vsaas-api-key": system_key}).status_code == 403


def test_an_emulator_without_a_given_system_key_makes_one(watcher_emulator) -> None:
    key = watcher_emulator.system_api_key
    assert isinstance(key, str) and len(key) >= 20
    assert get(watcher_emulator, "/cameras", {"x-vsaas-api-key": key}).status_code == 200


@pytest.mark.parametrize("target", ["v2_login", "v2_call"])
@pytest.mark.parametrize("mode", ["500", "503", "502_html", "403"])
def test_v2_failures_are_injected_once(
    emulator: WatcherEmulator, system_key: str, target: str, mode: str
) -> None:
    emulator.fail_next(target, mode=mode)
    session_before = v2_login(emulator) if target == "v2_call" else None

    if target == "v2_login":
        failed = requests.post(
            emulator.v2_url + "/auth/login",
            json={"login": "alice", "password": "secret"},
            timeout=5,
        )
        assert failed.status_code == int(mode[:3])
        assert v2_login(emulator)
    else:
        headers = {"x-vsaas-session": str(session_before)}
        assert get(emulator, "/cameras", headers).status_code == int(mode[:3])
        assert get(emulator, "/cameras", headers).status_code == 200
    stats = emulator.stats
    assert stats.injected_failures == 1
    assert stats.v2_forbidden == (1 if (target, mode) == ("v2_call", "403") else 0)


def test_a_dropped_v2_call_breaks_the_connection(emulator: WatcherEmulator) -> None:
    emulator.fail_next("v2_call", mode="drop")
    with pytest.raises(requests.ConnectionError):
        get(emulator, "/cameras", {"x-vsaas-session": v2_login(emulator)})


def test_v2_failure_modes_follow_the_v2_status_codes(emulator: WatcherEmulator) -> None:
    with pytest.raises(ValueError):
        emulator.fail_next("v2_call", mode="401")
    with pytest.raises(ValueError):
        emulator.fail_next("v2_login", mode="bad_jwt")


def test_reset_stats_clears_the_v2_counters(emulator: WatcherEmulator, system_key: str) -> None:
    v2_login(emulator)
    get(emulator, "/cameras", {"x-vsaas-api-key": system_key})
    get(emulator, "/cameras", {})
    emulator.reset_stats()
    stats = emulator.stats
    assert (stats.v2_logins, stats.v2_calls, stats.v2_system_calls, stats.v2_forbidden) == (
        0,
        0,
        0,
        0,
    )
    assert stats.active_v2_sessions == {"alice": 1}


def test_remote_emulator_drives_the_v2_controls(emulator: WatcherEmulator, system_key: str) -> None:
    remote = emulator.remote()
    remote.add_user("frank", "pw", api_key="franks-key", streams=2)
    assert remote.user_api_key("frank") == "franks-key"
    new_key = remote.rotate_api_key("frank")
    assert new_key == emulator.user_api_key("frank") != "franks-key"
    assert remote.system_api_key == system_key
    assert remote.v2_url == emulator.v2_url
    remote.fail_next("v2_call", mode="403")
    headers = {"x-vsaas-api-key": new_key, "x-vsaas-user": "frank"}
    assert get(emulator, "/cameras", headers).status_code == 403
    assert len(get(emulator, "/cameras", headers).json()) == 2
    assert remote.stats == emulator.stats
    assert remote.call_log == emulator.call_log
    with pytest.raises(KeyError):
        remote.user_api_key("nobody")


def test_the_cli_takes_a_system_key(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parents[2]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(repo), os.environ.get("PYTHONPATH", "")]),
    }
    command = [sys.executable, "-m", "watcher_auth.testing.emulator", "--port", "0"]
    command += ["--user", "alice:secret", "--system-api-key", "cli-system-key"]
    process = subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            assert selector.select(timeout=20), "the emulator printed nothing"
        url = process.stdout.readline().strip().rsplit(" ", 1)[1]
        remote = RemoteEmulator(url, process.stdout.readline().strip().rsplit(" ", 1)[1])
        cameras = requests.get(
            remote.v2_url + "/cameras", headers={"X-Vsaas-Apikey": "cli-system-key"}, timeout=5
        )
        assert len(cameras.json()) == 3
        assert remote.system_api_key == "cli-system-key"
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=10)
    assert process.returncode == 0 and stderr == ""
