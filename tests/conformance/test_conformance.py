"""Every answer the emulator gives follows the schemas written from Watcher's published API.

``schemas/`` holds JSON Schemas written for this project from Flussonic's published
documentation, OpenAPI description and client SDK (field names, types, required fields), and
``schemas/operations.json`` the status codes each operation is documented to answer. Each test
drives the emulator into one documented answer of one operation and validates it.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import jsonschema
import jwt
import pytest
import requests
from referencing import Registry, Resource

from watcher_auth.testing import WatcherEmulator
from watcher_auth.testing.pytest_plugin import EmulatorFactory

SCHEMAS = Path(__file__).parent / "schemas"
OPERATIONS: dict[str, Any] = {
    name: value
    for name, value in json.loads((SCHEMAS / "operations.json").read_text()).items()
    if not name.startswith("$")
}


def _load_schemas() -> dict[str, dict[str, Any]]:
    return {
        path.name: json.loads(path.read_text())
        for path in sorted(SCHEMAS.glob("*.json"))
        if path.name != "operations.json"
    }


LOADED = _load_schemas()
REGISTRY: Registry[Any] = Registry().with_resources(
    (schema["$id"], Resource.from_contents(schema)) for schema in LOADED.values()
)
SEEN: set[tuple[str, int]] = set()


def validator(name: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(LOADED[name], registry=REGISTRY)


def conforms(operation: str, answer: requests.Response) -> Any:
    """Check ``answer`` against what ``operation`` is documented to answer; returns its body."""
    documented = OPERATIONS[operation]
    assert answer.request.method == documented["method"]
    assert answer.request.path_url.split("?")[0] == documented["path"]
    status = str(answer.status_code)
    assert status in documented["answers"], f"{operation} is not documented to answer {status}"
    SEEN.add((operation, answer.status_code))
    schema = documented["answers"][status]
    if schema is None:
        return None
    body = answer.json()
    errors = sorted(validator(schema).iter_errors(body), key=str)
    assert errors == [], f"{operation} {status}: " + "; ".join(e.message for e in errors)
    return body


@pytest.fixture
def emulator(watcher_emulator_factory: EmulatorFactory) -> WatcherEmulator:
    emulator = watcher_emulator_factory(max_sessions=5)
    emulator.add_user("root", "toor", is_admin=True, streams=7)
    emulator.add_user("ivan", "пароль")
    return emulator


def v3(emulator: WatcherEmulator, method: str, path: str, **kwargs: Any) -> requests.Response:
    return requests.request(method, emulator.v3_url + path, timeout=5, **kwargs)


def v2(emulator: WatcherEmulator, method: str, path: str, **kwargs: Any) -> requests.Response:
    return requests.request(method, emulator.v2_url + path, timeout=5, **kwargs)


def utf8_basic(username: str, password: str) -> dict[str, str]:
    raw = f"{username}:{password}".encode()
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def logged_in(emulator: WatcherEmulator, username: str = "root", password: str = "toor") -> Any:
    return conforms("v3_login", v3(emulator, "POST", "/login", auth=(username, password)))


# The schemas themselves.


@pytest.mark.parametrize("name", sorted(LOADED))
def test_each_schema_is_valid_json_schema(name: str) -> None:
    jsonschema.Draft202012Validator.check_schema(LOADED[name])


def test_every_documented_answer_names_a_schema_that_exists() -> None:
    named = {s for op in OPERATIONS.values() for s in op["answers"].values() if s is not None}
    assert named <= set(LOADED)


@pytest.mark.parametrize(
    ("schema", "answer"),
    [
        # What an emulator that drifted from Watcher would answer; each must be refused.
        ("login.json", {"access_token": "eyJa.b.c", "refresh_token": "r", "expires_in": 300}),
        ("error.json", {"errors": [{"status": 401, "title": "Unauthorized"}]}),
        ("error.json", {"error": "Unauthorized"}),
        (
            "streams_page.json",
            {
                "estimated_count": 1,
                "next": "eyJhZnRlciI6ICJhIn0",
                "prev": None,
                "timing": {},
                "streams": [],
            },
        ),
        ("profile.json", {"id": 1, "name": "alice"}),
        ("profile.json", {"name": "alice", "password": "secret"}),
        ("profile.json", {"name": "alice", "created_at": 1_700_000_000}),
        ("users.json", {"users": [{"name": "alice"}]}),
        ("v2_login.json", {"session": "s", "login": "alice", "is_admin": False}),
        ("v2_whoami.json", {"is_logged_in": False, "login": "alice", "is_admin": False}),
        ("v2_cameras.json", [{"name": "cam", "alive": True}]),
        ("access_token_claims.json", {"sub": "alice", "exp": 1_800_000_000}),
    ],
)
def test_the_schemas_refuse_answers_that_differ_from_watchers(schema: str, answer: Any) -> None:
    assert not validator(schema).is_valid(answer)


# Client API v3.


def test_login_answers_conform(emulator: WatcherEmulator) -> None:
    tokens = logged_in(emulator)
    conforms("v3_login", v3(emulator, "POST", "/login", headers=utf8_basic("ivan", "пароль")))
    conforms("v3_login", v3(emulator, "POST", "/login", auth=("root", "wrong")))
    emulator.fail_next("login", mode="403")
    conforms("v3_login", v3(emulator, "POST", "/login", auth=("root", "toor")))

    header = jwt.get_unverified_header(tokens["access_token"])
    claims = jwt.decode(tokens["access_token"], options={"verify_signature": False})
    assert validator("jwt_header.json").is_valid(header)
    assert list(validator("access_token_claims.json").iter_errors(claims)) == []


def test_refresh_answers_conform(watcher_emulator_factory: EmulatorFactory) -> None:
    emulator = watcher_emulator_factory(rotate_refresh_tokens=True)
    tokens = conforms("v3_login", v3(emulator, "POST", "/login", auth=("alice", "secret")))

    new = conforms(
        "v3_refresh", v3(emulator, "POST", "/login", headers=bearer(tokens["refresh_token"]))
    )
    conforms("v3_refresh", v3(emulator, "POST", "/login", headers=bearer(tokens["refresh_token"])))
    emulator.fail_next("refresh", mode="403")
    conforms("v3_refresh", v3(emulator, "POST", "/login", headers=bearer(new["refresh_token"])))

    assert new["refresh_token"] != tokens["refresh_token"]


def test_streams_pages_and_their_errors_conform(emulator: WatcherEmulator) -> None:
    headers = bearer(logged_in(emulator)["access_token"])
    page = conforms("v3_streams", v3(emulator, "GET", "/streams?limit=3", headers=headers))
    while page["next"] is not None:
        page = conforms(
            "v3_streams",
            v3(emulator, "GET", "/streams", headers=headers, params={"cursor": page["next"]}),
        )
    assert page["prev"] is not None
    conforms("v3_streams", v3(emulator, "GET", "/streams?cursor=%21%21", headers=headers))
    conforms("v3_streams", v3(emulator, "GET", "/streams", headers=bearer("not-a-jwt")))
    emulator.fail_next("call", mode="403")
    conforms("v3_streams", v3(emulator, "GET", "/streams", headers=headers))


def test_profile_and_user_list_answers_conform(emulator: WatcherEmulator) -> None:
    root = bearer(logged_in(emulator)["access_token"])
    alice = bearer(logged_in(emulator, "alice", "secret")["access_token"])

    conforms("v3_profile", v3(emulator, "GET", "/profile", headers=root))
    conforms("v3_profile", v3(emulator, "GET", "/profile", headers=utf8_basic("ivan", "пароль")))
    conforms("v3_profile", v3(emulator, "GET", "/profile", headers=utf8_basic("ivan", "ложь")))
    emulator.fail_next("call", mode="403")
    conforms("v3_profile", v3(emulator, "GET", "/profile", headers=alice))
    users = conforms("v3_users", v3(emulator, "GET", "/users", headers=root))
    conforms("v3_users", v3(emulator, "GET", "/users", headers=alice))
    conforms("v3_users", v3(emulator, "GET", "/users"))

    assert {user["name"] for user in users["users_list"]} == {"alice", "bob", "root", "ivan"}


def test_error_bodies_conform_with_the_legacy_field_too(emulator: WatcherEmulator) -> None:
    emulator.configure(legacy_error_field=True)

    body = conforms("v3_login", v3(emulator, "POST", "/login", auth=("root", "wrong")))

    assert body["errors"][0]["status"] == "401"
    assert isinstance(body["error"], str)


# API v2.

DEAD_SESSION_ANSWERS = ["403", "guest"]


@pytest.mark.parametrize("mode", DEAD_SESSION_ANSWERS)
def test_v2_login_answers_conform(watcher_emulator_factory: EmulatorFactory, mode: str) -> None:
    emulator = watcher_emulator_factory(v2_dead_session_answer=mode)

    body = conforms(
        "v2_login",
        v2(emulator, "POST", "/auth/login", json={"login": "bob", "password": "hunter2"}),
    )
    conforms(
        "v2_login", v2(emulator, "POST", "/auth/login", json={"login": "bob", "password": "no"})
    )
    conforms("v2_login", v2(emulator, "POST", "/auth/login", data=b"login=bob"))

    assert body["login"] == "bob"


@pytest.mark.parametrize("mode", DEAD_SESSION_ANSWERS)
def test_v2_whoami_answers_conform_for_live_and_dead_sessions(
    watcher_emulator_factory: EmulatorFactory, mode: str
) -> None:
    emulator = watcher_emulator_factory(v2_dead_session_answer=mode)
    credentials = {"login": "alice", "password": "secret"}
    session = conforms("v2_login", v2(emulator, "POST", "/auth/login", json=credentials))["session"]

    live = conforms(
        "v2_whoami", v2(emulator, "GET", "/auth/whoami", headers={"x-vsaas-session": session})
    )
    system = {"x-vsaas-api-key": str(emulator.system_api_key)}
    conforms("v2_whoami", v2(emulator, "GET", "/auth/whoami", headers=system))
    emulator.revoke("alice")
    dead = v2(emulator, "GET", "/auth/whoami", headers={"x-vsaas-session": session})
    conforms("v2_whoami", dead)
    conforms("v2_whoami", v2(emulator, "GET", "/auth/whoami"))

    assert live["login"] == "alice"
    assert dead.status_code == (200 if mode == "guest" else 403)


def test_v2_camera_lists_conform(emulator: WatcherEmulator) -> None:
    key = {"x-vsaas-api-key": emulator.user_api_key("alice"), "x-vsaas-user": "alice"}

    cameras = conforms("v2_cameras", v2(emulator, "GET", "/cameras?limit=2", headers=key))
    conforms("v2_cameras", v2(emulator, "GET", "/cameras?limit=nope", headers=key))
    conforms("v2_cameras", v2(emulator, "GET", "/cameras", headers={"x-vsaas-session": "x"}))

    assert len(cameras) == 2


# Coverage of the documented answers.


def test_every_documented_answer_was_exercised() -> None:
    # Last in the module, which pytest runs in file order: the tests above fill SEEN.
    documented = {
        (name, int(status)) for name, op in OPERATIONS.items() for status in op["answers"]
    }
    assert documented - SEEN == set()
