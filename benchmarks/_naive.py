"""The baseline: a client written from the Watcher docs alone, with no coordination.

Each process logs in with the password, keeps the pair in a module global, and on a 401
refreshes with the refresh token; if that refresh is rejected (another thread rotated it
first) it logs in with the password again. This is what portals write without a library.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import requests


class NaiveClient:
    def __init__(self, base_url: str, username: str, password: str) -> None:
        self.api = base_url.rstrip("/") + "/watcher/client-api/v3/"
        self.username = username
        self.password = password
        self.lock = threading.Lock()  # guards the two fields, not the refresh itself
        self.access = ""
        self.refresh = ""
        self.login()

    def login(self) -> None:
        r = requests.post(self.api + "login", auth=(self.username, self.password), timeout=10)
        r.raise_for_status()
        with self.lock:
            self.access, self.refresh = r.json()["access_token"], r.json()["refresh_token"]

    def renew(self) -> None:
        r = requests.post(
            self.api + "login", headers={"Authorization": f"Bearer {self.refresh}"}, timeout=10
        )
        if r.status_code == 401:
            self.login()
            return
        r.raise_for_status()
        with self.lock:
            self.access, self.refresh = r.json()["access_token"], r.json()["refresh_token"]

    def caller(self) -> Callable[[], bool]:
        session = requests.Session()

        def call() -> bool:
            r = session.get(
                self.api + "profile", headers={"Authorization": f"Bearer {self.access}"}
            )
            if r.status_code == 401:
                self.renew()
                r = session.get(
                    self.api + "profile", headers={"Authorization": f"Bearer {self.access}"}
                )
            return r.status_code == 200

        return call
