"""A Flask portal for the benchmarks: Flask-Login, the extension, and four views.

``/plain`` is the fair floor: the same GET on a module-level session configured like the
manager's (see :mod:`_peers`), with the header set once.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import requests
from _peers import TIMEOUT, fair_floor

from watcher_auth import TokenPair


@dataclass
class Portal:
    """A test client signed in as portal user ``"1"``, whose key holds a fresh pair."""

    app: Any
    client: Any

    def get(self, path: str) -> None:
        response = self.client.get(path)
        if response.status_code != 200:
            raise RuntimeError(f"GET {path} answered {response.status_code}")


@contextmanager
def portal(url: str, token: str, pair: TokenPair, **config: Any) -> Iterator[Portal]:
    """A portal on Watcher ``url`` with extra ``WATCHER_*`` config; ``/plain`` sends ``token``.

    The pair is written to the store directly, so the manager's first request reads it.
    """
    from flask import Flask
    from flask_login import LoginManager, UserMixin, login_required, login_user

    from flask_watcher_auth import WatcherAuth, current_watcher, get_state, watcher_required

    class User(UserMixin):
        def __init__(self, user_id: str) -> None:
            self.id = user_id

    app = Flask("bench")
    app.config.update({"SECRET_KEY": "watcher-auth benchmarks", "WATCHER_URL": url, **config})
    login = LoginManager(app)
    login.user_loader(User)
    WatcherAuth(app)
    state = get_state(app)
    plain_session = fair_floor(token)
    plain_url = state.manager.api_root + "streams"

    def relay(response: requests.Response) -> tuple[bytes, int]:
        return response.content, response.status_code

    @app.post("/sign-in")
    def sign_in() -> str:
        login_user(User("1"))
        return "ok"

    @app.get("/ours")
    @login_required
    def ours() -> tuple[bytes, int]:
        return relay(current_watcher.get("streams"))

    @app.get("/required")
    @watcher_required
    def required() -> tuple[bytes, int]:
        return relay(current_watcher.get("streams"))

    @app.get("/plain")
    @login_required
    def plain() -> tuple[bytes, int]:
        return relay(plain_session.get(plain_url, timeout=TIMEOUT))

    @app.get("/fresh")
    @login_required
    def fresh() -> tuple[bytes, int]:
        # What a view without watcher-auth pays for a session of its own per request.
        with requests.Session() as own:
            own.headers["Authorization"] = f"Bearer {token}"
            return relay(own.get(plain_url))

    skey = state.manager.store_key("1")
    state.store.save(skey, pair)
    client = app.test_client()
    client.post("/sign-in")
    try:
        yield Portal(app, client)
    finally:
        state.store.delete(skey)
        state.manager.close()
        state.store.close()
