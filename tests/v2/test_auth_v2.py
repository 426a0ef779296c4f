"""The API v2 key schemes as requests auth objects, and where their headers may go."""

from __future__ import annotations

import pytest
import requests

from watcher_auth import ConfigurationError, TokenManager, TokenPair, WatcherAPIError
from watcher_auth.testing import WatcherEmulator
from watcher_auth.v2 import SystemApiKeyAuth, UserApiKeyAuth


def vsaas_headers(seen: dict[str, str]) -> set[str]:
    return {name.lower() for name in seen if name.lower().startswith("x-vsaas")}


def test_the_system_key_sees_every_camera(emulator: WatcherEmulator, system_key: str) -> None:
    response = requests.get(
        f"{emulator.url}/vsaas/api/v2/cameras", auth=SystemApiKeyAuth(system_key), timeout=5
    )
    assert response.status_code == 200 and len(response.json()) == 7
    assert emulator.stats.v2_system_calls == 1


def test_a_user_key_sees_that_users_cameras(emulator: WatcherEmulator) -> None:
    auth = UserApiKeyAuth("bob", emulator.user_api_key("bob"))
    response = requests.get(f"{emulator.url}/vsaas/api/v2/cameras", auth=auth, timeout=5)
    assert [c["name"] for c in response.json()] == ["bob-cam-0", "bob-cam-1", "bob-cam-2"]
    assert emulator.stats.v2_calls_by_user == {"bob": 1}


@pytest.mark.parametrize("scheme", ["system", "user"])
def test_a_bad_key_is_a_typed_403_whose_message_hides_the_key(
    manager: TokenManager, emulator: WatcherEmulator, scheme: str
) -> None:
    bad_key = "bad-key-0123456789abcdef"
    if scheme == "system":
        session = manager.v2_system_session(bad_key)
    else:
        session = manager.v2_system_session("unused")
        session.auth = UserApiKeyAuth("alice", bad_key, origin=emulator.url)
    with pytest.raises(WatcherAPIError) as caught:
        session.json("cameras")
    assert caught.value.status_code == 403
    assert bad_key not in str(caught.value) and "/vsaas/api/v2/cameras" in str(caught.value)
    assert emulator.stats.v2_forbidden == 1


def test_reprs_never_show_the_key() -> None:
    system = SystemApiKeyAuth("sys-secret-1", origin="https://watcher.test")
    user = UserApiKeyAuth("alice", "user-secret-2")
    assert "sys-secret-1" not in repr(system) and "***" in repr(system)
    assert "user-secret-2" not in repr(user) and "alice" in repr(user)
    assert "sys-secret-1" not in repr(
        TokenManager("https://watcher.test").v2_system_session("sys-secret-1")
    )


@pytest.mark.parametrize("bad", ["", "with space ", "line\nbreak"])
def test_keys_that_cannot_be_sent_are_refused_at_once(bad: str) -> None:
    with pytest.raises(ConfigurationError):
        SystemApiKeyAuth(bad)
    with pytest.raises(ConfigurationError):
        UserApiKeyAuth("alice", bad)
    with pytest.raises(ConfigurationError):
        UserApiKeyAuth(bad, "key")
    with pytest.raises(ConfigurationError):
        SystemApiKeyAuth("key", origin="ftp://watcher.test")


def test_with_an_origin_the_key_goes_nowhere_else(
    emulator: WatcherEmulator, system_key: str, recording_server
) -> None:
    auth = SystemApiKeyAuth(system_key, origin=emulator.url)
    requests.get(recording_server.url + "/elsewhere", auth=auth, timeout=5)
    assert requests.get(emulator.v2_url + "/cameras", auth=auth, timeout=5).status_code == 200
    assert vsaas_headers(recording_server.seen[0]) == set()


@pytest.mark.parametrize(
    "auth",
    [SystemApiKeyAuth("sys-key"), UserApiKeyAuth("alice", "user-key")],
    ids=["system", "user"],
)
def test_plain_requests_drop_the_key_on_a_redirect_to_another_origin(
    recording_server, second_recording_server, auth
) -> None:
    # requests itself strips only Authorization on such a redirect.
    target = second_recording_server.url + "/landing"
    response = requests.get(f"{recording_server.url}/redirect?to={target}", auth=auth, timeout=5)
    assert response.status_code == 200
    assert vsaas_headers(recording_server.seen[0]) >= {"x-vsaas-api-key"}
    assert vsaas_headers(second_recording_server.seen[0]) == set()


def test_a_redirect_within_the_origin_keeps_the_key(recording_server) -> None:
    target = recording_server.url + "/landing"
    requests.get(
        f"{recording_server.url}/redirect?to={target}", auth=SystemApiKeyAuth("k"), timeout=5
    )
    assert [vsaas_headers(seen) for seen in recording_server.seen] == [{"x-vsaas-api-key"}] * 2


def test_a_system_session_sends_its_key_only_to_watcher(
    recording_server, second_recording_server
) -> None:
    # A recording server plays Watcher: what is checked is which headers reach whom.
    manager = TokenManager(recording_server.url)
    session = manager.v2_system_session("sys-key")
    session.get("cameras")
    session.get(second_recording_server.url + "/absolute")
    target = second_recording_server.url + "/landing"
    session.get(f"{recording_server.url}/redirect?to={target}")
    assert recording_server.seen[0]["path"] == "/vsaas/api/v2/cameras"
    assert vsaas_headers(recording_server.seen[0]) == {"x-vsaas-api-key"}
    assert [vsaas_headers(seen) for seen in second_recording_server.seen] == [set(), set()]


@pytest.mark.parametrize(
    "pair",
    [
        TokenPair("session-id-1", username="alice", scheme="session"),
        TokenPair("user-key-1", username="alice", scheme="user-key"),
    ],
    ids=["session", "user-key"],
)
def test_a_users_stored_credentials_never_reach_another_origin(
    recording_server, second_recording_server, pair: TokenPair
) -> None:
    manager = TokenManager(recording_server.url)
    manager.store.save(manager.store_key("k", api="v2"), pair)
    session = manager.v2_session("k")
    session.get(second_recording_server.url + "/absolute")
    target = second_recording_server.url + "/landing"
    assert session.get(f"{recording_server.url}/redirect?to={target}").status_code == 200
    assert requests.get(
        second_recording_server.url + "/plain", auth=manager.v2_auth("k"), timeout=5
    ).ok
    assert pair.access_token in recording_server.seen[0].values()
    assert [vsaas_headers(seen) for seen in second_recording_server.seen] == [set()] * 3


def test_a_session_redirect_to_the_same_host_on_another_port_drops_the_key() -> None:
    from requests import PreparedRequest, Response

    session = TokenManager("https://watcher.test").v2_system_session("sys-key")
    for target in ["http://watcher.test/x", "https://watcher.test:8443/x", "https://evil.test/x"]:
        prepared = PreparedRequest()
        prepared.prepare(method="GET", url=target, headers={"X-Vsaas-Api-Key": "sys-key"})
        original = Response()
        original.request = PreparedRequest()
        original.request.prepare(method="GET", url="https://watcher.test/vsaas/api/v2/x")
        session.rebuild_auth(prepared, original)
        assert vsaas_headers(dict(prepared.headers)) == set(), target
