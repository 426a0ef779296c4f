"""The emulator's control endpoints answer only the holder of its per-run token.

Each test plays an attacker: a local program or a web page in a browser on the developer's
machine that finds the emulator on loopback and tries to read its keys or steer it.
"""

from __future__ import annotations

import secrets
from typing import Any

import pytest
import requests

from watcher_auth.testing import RemoteEmulator, WatcherEmulator
from watcher_auth.testing.emulator import CONTROL_TOKEN_ENV, CONTROL_TOKEN_HEADER


def control(
    emulator: WatcherEmulator,
    method: str,
    action: str,
    *,
    token: str | None = None,
    host: str | None = None,
    headers: dict[str, str] | None = None,
    **kwargs: Any,
) -> requests.Response:
    headers = dict(headers or {})
    if token is not None:
        headers[CONTROL_TOKEN_HEADER] = token
    if host is not None:
        headers["Host"] = host
    return requests.request(
        method, f"{emulator.url}/_emulator/{action}", headers=headers, timeout=5, **kwargs
    )


def can_log_in(emulator: WatcherEmulator, username: str, password: str) -> bool:
    answer = requests.post(emulator.v3_url + "/login", auth=(username, password), timeout=5)
    return answer.status_code == 200


def test_a_caller_without_the_token_cannot_read_the_system_key(
    watcher_emulator: WatcherEmulator,
) -> None:
    answer = control(watcher_emulator, "GET", "settings")

    assert answer.status_code == 403
    assert str(watcher_emulator.system_api_key) not in answer.text
    assert CONTROL_TOKEN_HEADER in answer.json()["error"]


def test_a_caller_without_the_token_cannot_read_a_users_api_key(
    watcher_emulator: WatcherEmulator,
) -> None:
    answer = control(watcher_emulator, "POST", "api-key", json={"username": "alice"})

    assert answer.status_code == 403
    assert watcher_emulator.user_api_key("alice") not in answer.text


def test_a_caller_guessing_the_token_cannot_add_a_user(watcher_emulator: WatcherEmulator) -> None:
    guess = secrets.token_urlsafe(32)
    answer = control(
        watcher_emulator,
        "POST",
        "users",
        token=guess,
        json={"username": "mallory", "password": "pw"},
    )

    assert answer.status_code == 403
    assert not can_log_in(watcher_emulator, "mallory", "pw")


def test_a_caller_without_the_token_cannot_revoke_sessions_or_inject_failures(
    watcher_emulator: WatcherEmulator,
) -> None:
    tokens = requests.post(
        watcher_emulator.v3_url + "/login", auth=("alice", "secret"), timeout=5
    ).json()

    revoke = control(watcher_emulator, "POST", "revoke", json={"username": "alice"})
    fail = control(watcher_emulator, "POST", "fail", json={"target": "login", "mode": "500"})

    assert (revoke.status_code, fail.status_code) == (403, 403)
    assert watcher_emulator.stats.active_sessions == {"alice": 1}
    assert can_log_in(watcher_emulator, "bob", "hunter2")
    refreshed = requests.post(
        watcher_emulator.v3_url + "/login",
        headers={"Authorization": f"Bearer {tokens['refresh_token']}"},
        timeout=5,
    )
    assert refreshed.status_code == 200


def test_a_cross_site_form_posting_text_plain_cannot_add_a_user_even_with_the_token(
    watcher_emulator: WatcherEmulator,
) -> None:
    # A browser sends text/plain form posts cross-origin without a preflight.
    answer = control(
        watcher_emulator,
        "POST",
        "users",
        token=watcher_emulator.control_token,
        data='{"username": "mallory", "password": "pw"}',
        headers={"Content-Type": "text/plain"},
    )

    assert answer.status_code == 415
    assert not can_log_in(watcher_emulator, "mallory", "pw")


def test_a_form_post_without_a_content_type_cannot_reset_the_counters(
    watcher_emulator: WatcherEmulator,
) -> None:
    requests.post(watcher_emulator.v3_url + "/login", auth=("alice", "secret"), timeout=5)

    answer = control(
        watcher_emulator, "POST", "reset-stats", token=watcher_emulator.control_token, data=b"{}"
    )

    assert answer.status_code == 415
    assert watcher_emulator.stats.password_logins == 1


@pytest.mark.parametrize(
    "host",
    ["attacker.example:{port}", "localhost.attacker.example:{port}", "127.0.0.1:1"],
)
def test_a_dns_rebinding_page_with_a_foreign_host_cannot_read_the_keys(
    watcher_emulator: WatcherEmulator, host: str
) -> None:
    # A page from attacker.example whose name now resolves to 127.0.0.1 sends its own Host;
    # even a stolen token must not work through it.
    answer = control(
        watcher_emulator,
        "GET",
        "settings",
        token=watcher_emulator.control_token,
        host=host.format(port=watcher_emulator.port),
    )

    assert answer.status_code == 403
    assert str(watcher_emulator.system_api_key) not in answer.text
    assert "Host" in answer.json()["error"]


@pytest.mark.parametrize("host", ["127.0.0.1:{port}", "localhost:{port}"])
def test_the_token_holder_on_the_emulators_own_address_is_served(
    watcher_emulator: WatcherEmulator, host: str
) -> None:
    answer = control(
        watcher_emulator,
        "GET",
        "settings",
        token=watcher_emulator.control_token,
        host=host.format(port=watcher_emulator.port),
    )

    assert answer.status_code == 200
    assert answer.json()["system_api_key"] == watcher_emulator.system_api_key


def test_remote_emulator_with_a_wrong_token_says_it_was_refused(
    watcher_emulator: WatcherEmulator,
) -> None:
    remote = RemoteEmulator(watcher_emulator.url, control_token=secrets.token_urlsafe(32))

    with pytest.raises(PermissionError, match="refused"):
        remote.revoke("alice")


def test_remote_emulator_needs_a_token(
    watcher_emulator: WatcherEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(CONTROL_TOKEN_ENV, raising=False)
    with pytest.raises(ValueError, match=CONTROL_TOKEN_ENV):
        RemoteEmulator(watcher_emulator.url)

    monkeypatch.setenv(CONTROL_TOKEN_ENV, watcher_emulator.control_token)
    assert RemoteEmulator(watcher_emulator.url).user_api_key("bob") == (
        watcher_emulator.user_api_key("bob")
    )


def test_the_token_cannot_be_changed_remotely_and_never_shows_in_settings_or_reprs(
    watcher_emulator: WatcherEmulator,
) -> None:
    remote = watcher_emulator.remote()

    with pytest.raises(ValueError, match="control_token"):
        remote.configure(control_token=secrets.token_urlsafe(32))
    shown = control(watcher_emulator, "GET", "settings", token=watcher_emulator.control_token)
    assert watcher_emulator.control_token not in shown.text
    assert watcher_emulator.control_token not in repr(remote) + repr(watcher_emulator)
    # Leak checks that search for every issued secret look for the token too.
    assert watcher_emulator.control_token in watcher_emulator.issued_secrets()


def test_each_emulator_has_its_own_random_token(watcher_emulator: WatcherEmulator) -> None:
    other = WatcherEmulator()

    assert other.control_token != watcher_emulator.control_token
    assert len(watcher_emulator.control_token) >= 32
    with pytest.raises(ValueError):
        WatcherEmulator(control_token="short")
