"""The baseline: a client written from the Watcher docs alone, with no coordination.

Each process keeps the pair in a module global and on a 401 refreshes with the refresh token;
if that refresh is rejected (another thread rotated it first) it logs in with the password
again. This is what portals write without a library. Its sessions are configured like a
manager's (see :mod:`_peers`), so what it costs per call is its own code, not ``requests``'
defaults.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import requests
from _peers import TIMEOUT, configure_alike


class NaiveClient:
    def __init__(
        self, base_url: str, username: str, password: str, answer: dict[str, Any] | None = None
    ) -> None:
        self.api = base_url.rstrip("/") + "/watcher/client-api/v3/"
        self.username = username
        self.password = password
        self.lock = threading.Lock()  # guards the two fields, not the refresh itself
        self.http = configure_alike(requests.Session())
        self.access = ""
        self.refresh = ""
        if answer is None:
            self.login()
        else:
            self.access, self.refresh = answer["access_token"], answer["refresh_token"]

    def login(self) -> None:
        r = self.http.post(self.api + "login", auth=(self.username, self.password), timeout=TIMEOUT)
        r.raise_for_status()
        with self.lock:
            self.access, self.refresh = r.json()["access_token"], r.json()["refresh_token"]

    def renew(self) -> None:
        r = self.http.post(
            self.api + "login", headers={"Authorization": f"Bearer {self.refresh}"}, timeout=TIMEOUT
        )
        if r.status_code == 401:
            self.login()
            return
        r.raise_for_status()
        with self.lock:
            self.access, self.refresh = r.json()["access_token"], r.json()["refresh_token"]

    def caller(self, path: str = "profile") -> Callable[[], bool]:
        session = configure_alike(requests.Session())
        url = self.api + path

        def call() -> bool:
            r = session.get(
                url, headers={"Authorization": f"Bearer {self.access}"}, timeout=TIMEOUT
            )
            if r.status_code == 401:
                self.renew()
                r = session.get(
                    url, headers={"Authorization": f"Bearer {self.access}"}, timeout=TIMEOUT
                )
            return r.status_code == 200

        return call
