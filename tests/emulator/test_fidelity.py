"""The emulator answers the way Watcher's published API says Watcher does.

Field names, cursors, HTTP Basic on every call, UTF-8 credentials, 403s, and API v2's
``is_logged_in``; the shapes themselves are checked against JSON Schemas in
``tests/conformance/``.
"""

from __future__ import annotations

import base64
import re
from typing import Any
from urllib.parse import parse_qs

import pytest
import requests

from watcher_auth.testing import WatcherEmulator
from watcher_auth.testing.pytest_plugin import EmulatorFactory

# Passwords outside Latin-1, and one inside it that Latin-1 and UTF-8 encode differently.
UNICODE_USERS = {
    "ivan": "пароль",
    "wang": "密码",
    "kim": "🔑key",
    "jürgen": "pässwörd",
}
PADDED_BASE64 = re.compile(r"^[A-Za-z0-9+/]+={0,2}$")


def basic(username: str, password: str, encoding: str = "utf-8") -> dict[str, str]:
    """An HTTP Basic header encoded as RFC 7617 says (UTF-8), or in another encoding."""
    raw = f"{username}:{password}".encode(encoding)
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def login(emulator: WatcherEmulator, username: str = "alice", password: str = "secret") -> Any:
    answer = requests.post(emulator.v3_url + "/login", headers=basic(username, password), timeout=5)
    assert answer.status_code == 200, answer.text
    return answer.json()


def error_of(answer: requests.Response) -> dict[str, Any]:
    (error,) = answer.json()["errors"]
    assert isinstance(error, dict)
    return error


@pytest.fixture
def emulator(watcher_emulator_factory: EmulatorFactory) -> WatcherEmulator:
    emulator = watcher_emulator_factory()
    for username, password in UNICODE_USERS.items():
        emulator.add_user(username, password)
    return emulator


# 403: permission denied, on demand.


@pytest.mark.parametrize("target", ["login", "refresh", "call"])
def test_fail_next_403_refuses_a_login_refresh_or_call_with_a_json_api_body(
    emulator: WatcherEmulator, target: str
) -> None:
    tokens = login(emulator)
    emulator.fail_next(target, mode="403")
    if target == "login":
        request = {"headers": basic("alice", "secret"), "method": "POST", "path": "/login"}
    elif target == "refresh":
        request = {"headers": bearer(tokens["refresh_token"]), "method": "POST", "path": "/login"}
    else:
        request = {"headers": bearer(tokens["access_token"]), "method": "GET", "path": "/streams"}

    def send() -> requests.Response:
        return requests.request(
            request["method"],
            emulator.v3_url + request["path"],
            headers=request["headers"],
            timeout=5,
        )

    refused = send()

    assert refused.status_code == 403
    assert refused.headers["Content-Type"] == "application/json"
    assert error_of(refused)["status"] == "403"
    assert send().status_code == 200
    assert emulator.stats.injected_failures == 1
    assert emulator.stats.forbidden == (1 if target == "call" else 0)


def test_a_call_the_user_may_not_make_is_a_403_counted_as_forbidden(
    emulator: WatcherEmulator,
) -> None:
    answer = requests.get(
        emulator.v3_url + "/users", headers=bearer(login(emulator)["access_token"]), timeout=5
    )

    assert answer.status_code == 403
    assert error_of(answer)["status"] == "403"
    assert (emulator.stats.forbidden, emulator.stats.unauthorized) == (1, 0)


# HTTP Basic on every operation, decoded as UTF-8.


def test_every_v3_call_also_takes_http_basic(emulator: WatcherEmulator) -> None:
    streams = requests.get(emulator.v3_url + "/streams", auth=("bob", "hunter2"), timeout=5)
    profile = requests.get(emulator.v3_url + "/profile", auth=("bob", "hunter2"), timeout=5)

    assert streams.status_code == profile.status_code == 200
    assert profile.json()["name"] == "bob"
    assert [(r.username, r.scheme) for r in emulator.call_log] == [
        ("bob", "basic"),
        ("bob", "basic"),
    ]
    # Basic calls open no session: only /login does.
    assert emulator.stats.active_sessions == {}


def test_a_v3_call_with_a_wrong_basic_password_is_a_401(emulator: WatcherEmulator) -> None:
    answer = requests.get(emulator.v3_url + "/streams", auth=("bob", "wrong"), timeout=5)

    assert answer.status_code == 401
    assert error_of(answer)["status"] == "401"
    assert emulator.stats.unauthorized == 1


@pytest.mark.parametrize(("username", "password"), sorted(UNICODE_USERS.items()))
def test_passwords_outside_ascii_log_in_when_sent_as_utf8(
    emulator: WatcherEmulator, username: str, password: str
) -> None:
    tokens = login(emulator, username, password)

    profile = requests.get(
        emulator.v3_url + "/profile", headers=bearer(tokens["access_token"]), timeout=5
    )
    by_basic = requests.get(
        emulator.v3_url + "/profile", headers=basic(username, password), timeout=5
    )
    assert profile.json()["name"] == by_basic.json()["name"] == username
    assert emulator.stats.password_logins == 1


def test_a_latin1_encoded_password_is_not_the_utf8_one(emulator: WatcherEmulator) -> None:
    answer = requests.post(
        emulator.v3_url + "/login", headers=basic("jürgen", "pässwörd", "latin-1"), timeout=5
    )

    assert answer.status_code == 401
    assert emulator.stats.failed_logins == 1


def test_api_v2_logs_in_with_a_utf8_password(emulator: WatcherEmulator) -> None:
    answer = requests.post(
        emulator.v2_url + "/auth/login", json={"login": "wang", "password": "密码"}, timeout=5
    )

    assert answer.status_code == 200
    assert answer.json()["login"] == "wang"


# Cursors like Watcher's.


def test_stream_cursors_are_padded_base64_of_a_query_string(
    watcher_emulator_factory: EmulatorFactory,
) -> None:
    emulator = watcher_emulator_factory(seed_users=False)
    emulator.add_user("carol", "pw", streams=7)
    headers = bearer(login(emulator, "carol", "pw")["access_token"])

    first = requests.get(
        emulator.v3_url + "/streams", params={"limit": 3}, headers=headers, timeout=5
    ).json()
    cursor = first["next"]

    assert PADDED_BASE64.match(cursor) and len(cursor) % 4 == 0
    query = base64.b64decode(cursor, validate=True).decode()
    assert parse_qs(query)["$name_gt"] == ["carol-cam-2"]
    assert query.startswith("%24name_gt=")
    second = requests.get(
        emulator.v3_url + "/streams", params={"cursor": cursor}, headers=headers, timeout=5
    ).json()
    assert [s["name"] for s in second["streams"]] == [f"carol-cam-{i}" for i in (3, 4, 5)]
    assert PADDED_BASE64.match(second["prev"])
    back = requests.get(
        emulator.v3_url + "/streams", params={"cursor": second["prev"]}, headers=headers, timeout=5
    ).json()
    assert back["streams"] == first["streams"]


def test_a_cursor_pasted_unencoded_into_the_url_still_works(
    watcher_emulator_factory: EmulatorFactory,
) -> None:
    emulator = watcher_emulator_factory(seed_users=False)
    # Names whose cursor holds "+" in base64: an unencoded "+" arrives as a space.
    emulator.add_user("dave", "pw", streams=[{"name": f"cam~{i}>"} for i in range(4)])
    headers = bearer(login(emulator, "dave", "pw")["access_token"])
    first = requests.get(
        emulator.v3_url + "/streams", params={"limit": 1}, headers=headers, timeout=5
    ).json()
    raw = first["next"]

    answer = requests.get(f"{emulator.v3_url}/streams?cursor={raw}", headers=headers, timeout=5)

    assert "+" in raw or "/" in raw
    assert answer.status_code == 200
    assert [s["name"] for s in answer.json()["streams"]] == ["cam~1>"]


def test_a_forged_cursor_is_a_400(emulator: WatcherEmulator) -> None:
    headers = bearer(login(emulator)["access_token"])
    forged = base64.b64encode(b"%24name_gt=a&%24name_lt=b").decode()

    for cursor in (forged, "not base64!", base64.b64encode(b"limit=2").decode()):
        answer = requests.get(
            emulator.v3_url + "/streams", params={"cursor": cursor}, headers=headers, timeout=5
        )
        assert answer.status_code == 400, cursor
        assert error_of(answer)["code"] == "invalid_cursor"


# The profile and the user list.


def test_the_profile_carries_watchers_field_names_and_never_the_password(
    emulator: WatcherEmulator,
) -> None:
    headers = bearer(login(emulator)["access_token"])

    profile = requests.get(emulator.v3_url + "/profile", headers=headers, timeout=5).json()

    assert set(profile) == {
        "name",
        "fullname",
        "email",
        "phone",
        "note",
        "locale",
        "is_admin",
        "is_domain_admin",
        "is_readonly",
        "created_at",
    }
    emulator.configure(max_sessions=3)
    limited = requests.get(emulator.v3_url + "/profile", headers=headers, timeout=5).json()
    assert limited["max_sessions"] == 3
    # Unix milliseconds.
    assert 10**12 <= profile["created_at"] < 10**13
    assert "secret" not in str(profile)


def test_putting_a_password_on_the_profile_changes_it_and_a_blank_one_does_not(
    emulator: WatcherEmulator,
) -> None:
    headers = bearer(login(emulator)["access_token"])

    for change in ({"password": ""}, {"password": "n3w", "locale": "ru"}):
        answer = requests.put(emulator.v3_url + "/profile", json=change, headers=headers, timeout=5)
        assert answer.status_code == 200
        assert "password" not in answer.json()

    assert (
        requests.post(emulator.v3_url + "/login", auth=("alice", "secret"), timeout=5).ok is False
    )
    assert login(emulator, "alice", "n3w")
    assert "n3w" in emulator.issued_secrets()


def test_the_user_list_is_under_users_list(emulator: WatcherEmulator) -> None:
    emulator.add_user("root", "toor", is_admin=True)

    answer = requests.get(emulator.v3_url + "/users", auth=("root", "toor"), timeout=5)

    assert set(answer.json()) == {"users_list"}
    assert "root" in [user["name"] for user in answer.json()["users_list"]]


# API v2.


def test_the_v2_login_answer_says_the_session_is_logged_in(emulator: WatcherEmulator) -> None:
    answer = requests.post(
        emulator.v2_url + "/auth/login", json={"login": "alice", "password": "secret"}, timeout=5
    ).json()
    whoami = requests.get(
        emulator.v2_url + "/auth/whoami", headers={"x-vsaas-session": answer["session"]}, timeout=5
    ).json()

    assert answer["is_logged_in"] is True
    assert (whoami["login"], whoami["is_logged_in"]) == ("alice", True)


@pytest.mark.parametrize("mode", ["403", "guest"])
def test_whoami_for_a_dead_session_answers_as_configured(
    watcher_emulator_factory: EmulatorFactory, mode: str
) -> None:
    emulator = watcher_emulator_factory(v2_dead_session_answer=mode)
    session = requests.post(
        emulator.v2_url + "/auth/login", json={"login": "alice", "password": "secret"}, timeout=5
    ).json()["session"]
    emulator.revoke("alice")

    dead = requests.get(
        emulator.v2_url + "/auth/whoami", headers={"x-vsaas-session": session}, timeout=5
    )
    missing = requests.get(emulator.v2_url + "/auth/whoami", timeout=5)
    cameras = requests.get(
        emulator.v2_url + "/cameras", headers={"x-vsaas-session": session}, timeout=5
    )

    if mode == "guest":
        assert (dead.status_code, missing.status_code) == (200, 200)
        assert dead.json() == missing.json() == {"is_logged_in": False, "is_admin": False}
        assert emulator.stats.v2_guest_answers == 2
        assert emulator.stats.v2_forbidden == 1
    else:
        assert (dead.status_code, missing.status_code) == (403, 403)
        assert emulator.stats.v2_guest_answers == 0
        assert emulator.stats.v2_forbidden == 3
    # Only whoami answers as a guest: any other call is still refused.
    assert cameras.status_code == 403


def test_in_guest_mode_a_bad_api_key_is_still_refused(
    watcher_emulator_factory: EmulatorFactory,
) -> None:
    emulator = watcher_emulator_factory(v2_dead_session_answer="guest")

    answer = requests.get(
        emulator.v2_url + "/auth/whoami",
        headers={"x-vsaas-api-key": "wrong", "x-vsaas-user": "alice"},
        timeout=5,
    )

    assert answer.status_code == 403


def test_the_dead_session_answer_is_a_checked_setting(emulator: WatcherEmulator) -> None:
    with pytest.raises(ValueError, match="v2_dead_session_answer"):
        emulator.configure(v2_dead_session_answer="maybe")
    emulator.remote().configure(v2_dead_session_answer="guest")
    assert requests.get(emulator.v2_url + "/auth/whoami", timeout=5).status_code == 200


def test_v2_cameras_carry_stream_status_and_playback_config(emulator: WatcherEmulator) -> None:
    emulator.add_user(
        "erin",
        "pw",
        api_key="erins-key",
        streams=[
            {"name": "gate", "stats": {"alive": False, "status": "stopped", "playback_token": "t"}},
            {"name": "hall"},
        ],
    )

    answer = requests.get(
        emulator.v2_url + "/cameras",
        headers={"x-vsaas-api-key": "erins-key", "x-vsaas-user": "erin"},
        params={"limit": 1, "offset": 1},
        timeout=5,
    )
    (hall,) = answer.json()

    assert (answer.headers["X-Page-Limit"], answer.headers["X-Page-Offset"]) == ("1", "1")
    assert hall["name"] == "hall"
    assert hall["stream_status"]["alive"] is True
    assert isinstance(hall["playback_config"]["token"], str) and hall["playback_config"]["token"]
    gate = requests.get(
        emulator.v2_url + "/cameras/gate",
        headers={"x-vsaas-api-key": "erins-key", "x-vsaas-user": "erin"},
        timeout=5,
    ).json()
    assert gate["stream_status"] == {"alive": False, "status": "stopped"}
    assert gate["playback_config"]["token"] == "t"
