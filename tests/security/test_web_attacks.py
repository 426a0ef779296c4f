"""Attacks on the web side: taking over the service account's slot, outliving one's own
deletion, and framing the account pages."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import String, create_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from tests.security.sites import build_flask_portal
from watcher_auth.testing import FakeClock, WatcherEmulator

BOB_STREAMS = ["bob-cam-0", "bob-cam-1", "bob-cam-2"]
ALICE_STREAMS = ["alice-cam-0", "alice-cam-1", "alice-cam-2"]


@pytest.fixture
def emulator(watcher_emulator_factory: Any, fake_clock: FakeClock) -> WatcherEmulator:
    return watcher_emulator_factory(clock=fake_clock, rotate_refresh_tokens=True)


# --- Flask ------------------------------------------------------------------------------------


class FlaskPortal:
    def __init__(self, emulator: WatcherEmulator, clock: FakeClock, **config: Any) -> None:
        self.app = build_flask_portal(
            WATCHER_URL=emulator.url, WATCHER_CLOCK=clock, WATCHER_STORE="memory", **config
        )
        self.emulator = emulator

    def user(self, user_id: str) -> Any:
        client = self.app.test_client()
        assert client.post(f"/sign-in/{user_id}").status_code == 200
        return client

    @staticmethod
    def csrf(client: Any) -> str:
        import re

        page = client.get("/watcher/connect").get_data(as_text=True)
        match = re.search(r'name="csrf_token" value="([^"]+)"', page)
        assert match, page
        return match.group(1)

    def connect(self, client: Any, username: str, password: str) -> Any:
        form = {"csrf_token": self.csrf(client), "username": username, "password": password}
        return client.post("/watcher/connect", data=form)

    def disconnect(self, client: Any) -> Any:
        return client.post("/watcher/disconnect", data={"csrf_token": self.csrf(client)})

    def manager(self) -> Any:
        from flask_watcher_auth import get_state

        return get_state(self.app).manager


def streams(client: Any) -> list[str]:
    answer = client.get("/stream-list/")
    assert answer.status_code == 200, answer.get_data(as_text=True)
    return list(answer.get_data(as_text=True).split("\n"))


@pytest.fixture
def service_portal(emulator: WatcherEmulator, fake_clock: FakeClock) -> FlaskPortal:
    return FlaskPortal(
        emulator, fake_clock, WATCHER_SERVICE_USERNAME="bob", WATCHER_SERVICE_PASSWORD="hunter2"
    )


@pytest.mark.parametrize(
    "attacker_id", ["watcher-service-account", "service:watcher-service-account", "service:bob"]
)
def test_a_flask_user_with_a_service_like_id_cannot_replace_the_service_account(
    service_portal: FlaskPortal, attacker_id: str
) -> None:
    victim = service_portal.user("2")
    assert streams(victim) == BOB_STREAMS  # served by the service account
    attacker = service_portal.user(attacker_id)

    assert service_portal.connect(attacker, "alice", "secret").status_code == 302
    assert streams(attacker) == ALICE_STREAMS
    assert streams(victim) == BOB_STREAMS

    assert service_portal.disconnect(attacker).status_code == 302
    assert streams(victim) == BOB_STREAMS
    assert service_portal.emulator.stats.password_logins == 2  # bob once, alice once


def test_a_deleted_flask_user_is_forgotten_by_forget_user(
    emulator: WatcherEmulator, fake_clock: FakeClock
) -> None:
    from flask_watcher_auth import get_state

    portal = FlaskPortal(emulator, fake_clock)
    user = portal.user("42")
    assert portal.connect(user, "alice", "secret").status_code == 302
    extension = get_state(portal.app).extension
    with portal.app.app_context():
        assert extension.forget_user("42") is True
        assert portal.manager().tokens("42") is None
        assert extension.forget_user(42) is False


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "portal_users"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50))


@pytest.fixture
def user_table(tmp_path: Path) -> Iterator[Any]:
    engine = create_engine(f"sqlite:///{tmp_path / 'users.sqlite3'}")
    Base.metadata.create_all(engine)
    yield engine
    engine.dispose()


def test_a_flask_user_deleted_through_the_orm_leaves_no_tokens_behind(
    emulator: WatcherEmulator, fake_clock: FakeClock, user_table: Any
) -> None:
    from flask_watcher_auth import get_state

    portal = FlaskPortal(emulator, fake_clock)
    with portal.app.app_context():
        get_state(portal.app).extension.forget_deleted_users(User)
    with Session(user_table) as session:
        session.add_all([User(id=5, name="kept"), User(id=6, name="deleted")])
        session.commit()
    for user_id in ("5", "6"):
        assert portal.connect(portal.user(user_id), "alice", "secret").status_code == 302

    with Session(user_table) as session:
        session.delete(session.get(User, 5))
        session.rollback()  # a deletion that did not happen forgets nothing
        session.delete(session.get(User, 6))
        session.commit()

    manager = portal.manager()
    assert manager.tokens("5") is not None
    assert manager.tokens("6") is None


def test_another_site_cannot_frame_the_flask_account_pages(
    emulator: WatcherEmulator, fake_clock: FakeClock
) -> None:
    portal = FlaskPortal(emulator, fake_clock)
    user = portal.user("1")
    answers = [
        user.get("/watcher/connect"),
        user.get("/watcher/connect/v2"),
        user.get("/watcher/status"),
        portal.connect(user, "alice", "secret"),
        portal.disconnect(user),
    ]
    for answer in answers:
        assert answer.headers["X-Frame-Options"] == "DENY"
        assert answer.headers["Content-Security-Policy"] == "frame-ancestors 'none'"
    # The portal's own pages keep their own policy.
    assert "X-Frame-Options" not in user.get("/sign-in/1").headers


def test_another_site_cannot_frame_the_pages_of_a_portal_with_its_own_csp(
    emulator: WatcherEmulator, fake_clock: FakeClock
) -> None:
    portal = FlaskPortal(emulator, fake_clock)

    @portal.app.after_request
    def policy(response: Any) -> Any:
        response.headers.setdefault("Content-Security-Policy", "default-src 'self'")
        return response

    page = portal.user("1").get("/watcher/connect")
    assert page.headers["Content-Security-Policy"] == "default-src 'self'; frame-ancestors 'none'"


# --- Django -----------------------------------------------------------------------------------


@pytest.fixture
def django_portal(emulator: WatcherEmulator, fake_clock: FakeClock, settings: Any) -> Any:
    settings.WATCHER_AUTH = {
        "URL": emulator.url,
        "CLOCK": fake_clock,
        "STORE": "db",
        "USER_KEY": "tests.django.testapp.keys.raw_username",
        "USER_FROM_KEY": "tests.django.testapp.keys.from_raw_username",
        "SERVICE_ACCOUNT": {"USERNAME": "bob", "PASSWORD": "hunter2"},
    }
    return settings


def django_client(username: str) -> Any:
    from django.contrib.auth import get_user_model
    from django.test import Client

    user = get_user_model().objects.create_user(username=username, password="portal-pw")
    client = Client(raise_request_exception=False)
    client.force_login(user)
    return client


def django_streams(client: Any) -> list[str]:
    answer = client.get("/stream-list/")
    assert answer.status_code == 200, answer.content
    return list(answer.content.decode().split("\n"))


@pytest.mark.django_db
def test_a_django_user_whose_key_is_a_service_key_cannot_replace_the_service_account(
    django_portal: Any, emulator: WatcherEmulator
) -> None:
    from django_watcher_auth.conf import get_manager, service_key

    victim = django_client("victim")
    assert django_streams(victim) == BOB_STREAMS
    attacker = django_client(service_key("bob"))

    connected = attacker.post("/watcher/connect/", {"username": "alice", "password": "secret"})
    assert connected.status_code == 302
    assert django_streams(attacker) == ALICE_STREAMS
    assert django_streams(victim) == BOB_STREAMS
    assert attacker.post("/watcher/disconnect/").status_code == 302
    assert django_streams(victim) == BOB_STREAMS
    assert get_manager().tokens(service_key("bob")) is not None
    assert emulator.stats.password_logins == 2


@pytest.fixture(params=["db", pytest.param("cache", marks=pytest.mark.redis)])
def django_store(request: pytest.FixtureRequest, settings: Any) -> str:
    if request.param == "cache":
        prefix = request.getfixturevalue("django_cache_prefix")
        return f"cache:{prefix}"
    return "db"


@pytest.mark.django_db
def test_a_deleted_django_user_leaves_no_tokens_behind(
    emulator: WatcherEmulator,
    fake_clock: FakeClock,
    settings: Any,
    django_store: str,
    django_capture_on_commit_callbacks: Any,
) -> None:
    from django_watcher_auth.conf import get_manager

    config: dict[str, Any] = {"URL": emulator.url, "CLOCK": fake_clock, "STORE": "db"}
    if django_store.startswith("cache:"):
        config.update(
            STORE="cache", CACHE_ALIAS="redis", CACHE_KEY_PREFIX=django_store.split(":", 1)[1]
        )
    settings.WATCHER_AUTH = config
    kept, deleted = django_client("kept"), django_client("deleted")
    for client in (kept, deleted):
        answer = client.post("/watcher/connect/", {"username": "alice", "password": "secret"})
        assert answer.status_code == 302
    from django.contrib.auth import get_user_model

    users = get_user_model().objects
    kept_key, deleted_key = (str(users.get(username=n).pk) for n in ("kept", "deleted"))

    with django_capture_on_commit_callbacks(execute=True):
        users.get(username="deleted").delete()

    manager = get_manager()
    assert manager.tokens(deleted_key) is None
    assert manager.tokens(kept_key) is not None
