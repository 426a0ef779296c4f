"""Two portals, one on Flask and one on Django, driven through their real request stacks.

Both have the same pages, so one test can run against either:

- ``/stream-list/``: the README's example, every stream through ``paginate("streams")``;
- ``/checked-streams/``: a plain ``requests`` call checked with ``raise_for_status()``;
- ``/watcher-api/<path>``: any Watcher API path through the JSON helper;
- ``/naive-streams/``: ``get("streams").json()["streams"]``, without looking at the status;
- ``/buggy/``: a portal bug (a missing key) after a good answer from Watcher;
- ``/profile/``: the profile through ``current_watcher`` / ``request.watcher``, without the
  decorator (the extension's error handlers or Django's middleware answer failures);
- ``/profile-view/``: the same with the decorator (Django: a class-based view with
  ``WatcherRequiredMixin``);
- the library's status, connect and disconnect pages.

Each site signs one portal user in. ``rebuild(**changes)`` starts the portal again with other
settings over the same store (a rotated encryption key...).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from watcher_auth.testing import FakeClock, WatcherEmulator

KEY_ONE = "the first encryption key of the error tests"
KEY_TWO = "the encryption key that replaced it"


@dataclass
class Answer:
    """One answer of a portal."""

    status: int
    location: str | None
    text: str
    headers: dict[str, str]

    @property
    def json(self) -> Any:
        return json.loads(self.text)

    @property
    def error_code(self) -> str | None:
        """The ``data-error`` code of an error page."""
        marker = 'data-error="'
        if marker not in self.text:
            return None
        return self.text.split(marker, 1)[1].split('"', 1)[0]


@dataclass
class Options:
    """What a site is built with; ``store`` is ``"default"``, ``("redis", url, prefix)``,
    ``("lockable", url, prefix)`` (a shared Redis whose lock a test can hold) or, for Flask,
    ``("postgres", url, table, application_name)``."""

    keys: tuple[str, ...] = (KEY_ONE,)
    timeout: float = 0.5
    lock_timeout: float = 0.3
    store: Any = "default"
    user_id: str = "7"


class Site:
    framework: str
    status_path: str
    connect_path: str
    disconnect_path: str

    def __init__(self, emulator: WatcherEmulator, clock: FakeClock, options: Options) -> None:
        self.emulator = emulator
        self.clock = clock
        self.options = options

    def get(self, path: str, *, as_json: bool = False) -> Answer:
        raise NotImplementedError

    def connect(self, username: str = "alice", password: str = "secret") -> Answer:
        raise NotImplementedError

    def disconnect(self) -> Answer:
        raise NotImplementedError

    def manager(self) -> Any:
        raise NotImplementedError

    def rebuild(self, **changes: Any) -> None:
        """Start the portal again with other options (same store, same user)."""
        raise NotImplementedError

    @property
    def user_key(self) -> str:
        raise NotImplementedError

    def store_key(self) -> Any:
        return self.manager().store_key(self.user_key)


class FlaskSite(Site):
    framework = "flask"
    status_path = "/watcher/status"
    connect_path = "/watcher/connect"
    disconnect_path = "/watcher/disconnect"

    def __init__(
        self, emulator: WatcherEmulator, clock: FakeClock, options: Options, directory: Path
    ) -> None:
        super().__init__(emulator, clock, options)
        self.directory = directory
        self.apps: list[Any] = []
        self._build()

    def _config(self) -> dict[str, Any]:
        options = self.options
        config: dict[str, Any] = {
            "WATCHER_URL": self.emulator.url,
            "WATCHER_CLOCK": self.clock,
            "WATCHER_ENCRYPTION_KEYS": list(options.keys),
            "WATCHER_TIMEOUT": options.timeout,
            "WATCHER_LOCK_TIMEOUT": options.lock_timeout,
            "WATCHER_DEADLINE": options.timeout,
        }
        kind = options.store if isinstance(options.store, str) else options.store[0]
        if kind == "default":
            config["WATCHER_STORE"] = "sqlalchemy"
            config["WATCHER_SQLALCHEMY_URL"] = f"sqlite:///{self.directory / 'tokens.sqlite3'}"
        elif kind == "postgres":  # ("postgres", url, table, application_name)
            config["WATCHER_STORE"] = "sqlalchemy"
            config["WATCHER_SQLALCHEMY_URL"] = options.store[1]
            config["WATCHER_STORE_OPTIONS"] = {
                "table_name": options.store[2],
                "engine_options": {"connect_args": {"application_name": options.store[3]}},
            }
        else:  # "redis" (a private server) or "lockable" (the shared one, own prefix)
            url, prefix = options.store[1], options.store[2]
            config["WATCHER_STORE"] = "redis"
            config["WATCHER_REDIS_URL"] = url
            config["WATCHER_STORE_OPTIONS"] = {"prefix": prefix}
        return config

    def _build(self) -> None:
        self.app = build_flask_portal(**self._config())
        self.apps.append(self.app)
        self.client = self.app.test_client()
        assert self.client.post(f"/sign-in/{self.options.user_id}").status_code == 200

    def rebuild(self, **changes: Any) -> None:
        for name, value in changes.items():
            setattr(self.options, name, value)
        self._build()

    def close(self) -> None:
        from flask_watcher_auth import get_state

        for app in self.apps:
            get_state(app).store.close()

    @property
    def user_key(self) -> str:
        from watcher_auth.web import portal_key

        return portal_key(self.options.user_id)

    @staticmethod
    def _answer(response: Any) -> Answer:
        return Answer(
            response.status_code,
            response.headers.get("Location"),
            response.get_data(as_text=True),
            dict(response.headers),
        )

    def get(self, path: str, *, as_json: bool = False) -> Answer:
        headers = {"Accept": "application/json"} if as_json else {"Accept": "text/html"}
        return self._answer(self.client.get(path, headers=headers))

    def _csrf(self) -> str:
        import re

        page = self.client.get("/watcher/connect").get_data(as_text=True)
        match = re.search(r'name="csrf_token" value="([^"]+)"', page)
        assert match, page
        return match.group(1)

    def connect(self, username: str = "alice", password: str = "secret") -> Answer:
        form = {"csrf_token": self._csrf(), "username": username, "password": password}
        return self._answer(self.client.post("/watcher/connect", data=form))

    def disconnect(self) -> Answer:
        form = {"csrf_token": self._csrf()}
        return self._answer(self.client.post("/watcher/disconnect", data=form))

    def manager(self) -> Any:
        from flask_watcher_auth import get_state

        return get_state(self.app).manager


class DjangoSite(Site):
    framework = "django"
    status_path = "/watcher/"
    connect_path = "/watcher/connect/"
    disconnect_path = "/watcher/disconnect/"

    def __init__(
        self, emulator: WatcherEmulator, clock: FakeClock, options: Options, settings: Any
    ) -> None:
        from django.contrib.auth import get_user_model
        from django.test import Client

        super().__init__(emulator, clock, options)
        self.settings = settings
        self._configure()
        model = get_user_model()
        self.user = model.objects.create_user(username="portal-user", password="portal-pw")
        self.client = Client(enforce_csrf_checks=True, raise_request_exception=False)
        self.client.force_login(self.user)

    def _configure(self) -> None:
        options = self.options
        config: dict[str, Any] = {
            "URL": self.emulator.url,
            "CLOCK": self.clock,
            "ENCRYPTION_KEYS": list(options.keys),
            "TIMEOUT": options.timeout,
            "LOCK_TIMEOUT": options.lock_timeout,
            "DEADLINE": options.timeout,
            "STORE": "db",
        }
        if not isinstance(options.store, str):
            url, prefix = options.store[1], options.store[2]
            self.settings.CACHES = {
                **self.settings.CACHES,
                "watcher-tokens": {
                    "BACKEND": "django.core.cache.backends.redis.RedisCache",
                    "LOCATION": url,
                    "OPTIONS": {"socket_timeout": 0.5, "socket_connect_timeout": 0.5},
                },
            }
            config.update(STORE="cache", CACHE_ALIAS="watcher-tokens", CACHE_KEY_PREFIX=prefix)
        self.settings.WATCHER_AUTH = config

    def rebuild(self, **changes: Any) -> None:
        for name, value in changes.items():
            setattr(self.options, name, value)
        self._configure()

    def close(self) -> None:
        pass

    @property
    def user_key(self) -> str:
        return str(self.user.pk)

    @staticmethod
    def _answer(response: Any) -> Answer:
        return Answer(
            response.status_code,
            response.get("Location"),
            response.content.decode(errors="replace"),
            dict(response.items()),
        )

    def get(self, path: str, *, as_json: bool = False) -> Answer:
        accept = "application/json" if as_json else "text/html"
        return self._answer(self.client.get(path, headers={"accept": accept}))

    def _csrf(self) -> str:
        self.client.get("/watcher/connect/")
        return str(self.client.cookies["csrftoken"].value)

    def connect(self, username: str = "alice", password: str = "secret") -> Answer:
        form = {"csrfmiddlewaretoken": self._csrf(), "username": username, "password": password}
        return self._answer(self.client.post("/watcher/connect/", form))

    def disconnect(self) -> Answer:
        form = {"csrfmiddlewaretoken": self._csrf()}
        return self._answer(self.client.post("/watcher/disconnect/", form))

    def manager(self) -> Any:
        from django_watcher_auth.conf import get_manager

        return get_manager()


class PortalUser:
    """A Flask-Login user."""

    is_authenticated = True
    is_active = True
    is_anonymous = False

    def __init__(self, user_id: str) -> None:
        self.id = user_id

    def get_id(self) -> str:
        return self.id


def build_flask_portal(**config: Any) -> Any:
    """The Flask portal with the pages listed in this module's docstring."""
    from flask import Flask, jsonify
    from flask_login import LoginManager, login_user

    from flask_watcher_auth import WatcherAuth, current_watcher, watcher_required

    app = Flask("error-portal")
    app.config.update({"SECRET_KEY": "error portal secret key", **config})
    login_manager = LoginManager(app)

    @login_manager.user_loader
    def load_user(user_id: str) -> PortalUser:
        return PortalUser(user_id)

    @app.post("/sign-in/<user_id>")
    def sign_in(user_id: str) -> str:
        login_user(PortalUser(user_id))
        return "signed in"

    WatcherAuth(app)

    @app.get("/stream-list/")
    @watcher_required
    def stream_list() -> str:
        return "\n".join(stream["name"] for stream in current_watcher.paginate("streams"))

    @app.get("/checked-streams/")
    @watcher_required
    def checked_streams() -> Any:
        response = current_watcher.get("streams")
        response.raise_for_status()
        return response.json()

    @app.get("/watcher-api/<path:path>")
    @watcher_required
    def watcher_api(path: str) -> Any:
        return jsonify(current_watcher.json(path))

    @app.get("/naive-streams/")
    @watcher_required
    def naive_streams() -> Any:
        streams = current_watcher.get("streams").json()["streams"]
        return {"streams": [stream["name"] for stream in streams]}

    @app.get("/buggy/")
    @watcher_required
    def buggy() -> Any:
        return {"name": current_watcher.get("profile").json()["no-such-field"]}

    @app.get("/profile/")
    def profile() -> Any:
        return current_watcher.json("profile")

    @app.get("/profile-view/")  # Django's is a class-based view with WatcherRequiredMixin
    @watcher_required
    def profile_view() -> Any:
        return current_watcher.json("profile")

    return app
