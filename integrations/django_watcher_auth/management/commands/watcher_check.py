"""``manage.py watcher_check``: can the store's records be read, and is Watcher reachable at
``WATCHER_AUTH['URL']``?

It reports how many stored records the current encryption keys cannot read (for stores that
can list their keys; nothing is deleted).

With ``--username`` (password from ``--password-env VAR`` or a prompt) or
``--service-account`` it also logs in once and reports the token lifetime. That login opens
a Watcher session for the account, which counts against its ``max_sessions``.
"""

from __future__ import annotations

import getpass
import os
import time
from typing import Any

import requests
from django.core.management.base import BaseCommand, CommandError, CommandParser

from django_watcher_auth.checks import unreadable_warning
from django_watcher_auth.conf import get_clock, get_manager, service_account, watcher_settings
from watcher_auth import (
    MemoryStore,
    TokenManager,
    WatcherAuthError,
    normalize_server_url,
    parse_json_object,
)
from watcher_auth.web import unreadable_keys

_PROBE = "/watcher/client-api/v3/profile"


class Command(BaseCommand):
    help = "Check that Watcher answers at WATCHER_AUTH['URL'], and optionally log in once."

    def add_arguments(self, parser: CommandParser) -> None:
        who = parser.add_mutually_exclusive_group()
        who.add_argument("--username", help="Log in as this Watcher user (asks the password).")
        who.add_argument(
            "--service-account",
            action="store_true",
            help="Log in with the configured service account.",
        )
        parser.add_argument(
            "--password-env",
            metavar="VAR",
            help="Read the password for --username from this environment variable.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            server = normalize_server_url(watcher_settings.URL or "")
        except WatcherAuthError as exc:
            raise CommandError(f"WATCHER_AUTH['URL']: {exc}") from exc
        self._check_store()
        self._probe(server)
        credentials = self._credentials(options)
        if credentials is not None:
            self._login(server, *credentials)

    def _check_store(self) -> None:
        try:
            unreadable = unreadable_keys(get_manager())
        except WatcherAuthError as exc:
            raise CommandError(f"the Watcher token store failed: {exc}") from exc
        if unreadable is None:
            self.stdout.write("The store cannot list its records; unreadable ones are not counted.")
        elif unreadable:
            warning = unreadable_warning(len(unreadable))
            self.stderr.write(f"{warning.id}: {warning.msg}\n{warning.hint}")
        else:
            self.stdout.write("Every stored record can be read with the current keys.")

    def _probe(self, server: str) -> None:
        started = time.monotonic()
        try:
            response = requests.get(
                server + _PROBE,
                timeout=watcher_settings.TIMEOUT,
                verify=watcher_settings.VERIFY_TLS,
                allow_redirects=False,
            )
        except requests.RequestException as exc:
            raise CommandError(
                f"Watcher at {server} cannot be reached ({type(exc).__name__})"
            ) from None
        elapsed = (time.monotonic() - started) * 1000
        is_api = response.status_code in (401, 403) and (
            parse_json_object(response.content) is not None or not response.content.strip()
        )
        if not is_api:
            raise CommandError(
                f"{server} answered HTTP {response.status_code}, not like Watcher's client "
                "API v3: check WATCHER_AUTH['URL']"
            )
        self.stdout.write(f"Watcher at {server} answered in {elapsed:.0f} ms.")

    def _credentials(self, options: dict[str, Any]) -> tuple[str, str] | None:
        if options["service_account"]:
            try:
                service = service_account()
            except WatcherAuthError as exc:
                raise CommandError(str(exc)) from exc
            if service is None:
                raise CommandError("no service account is configured")
            return service
        username = options["username"]
        if not username:
            return None
        variable = options["password_env"]
        if variable:
            password = os.environ.get(variable)
            if not password:
                raise CommandError(f"the environment variable {variable} is empty")
        else:
            password = getpass.getpass(f"Watcher password for {username}: ")
        return username, password

    def _login(self, server: str, username: str, password: str) -> None:
        manager = TokenManager(
            server,
            store=MemoryStore(),
            timeout=watcher_settings.TIMEOUT,
            verify=watcher_settings.VERIFY_TLS,
            clock=get_clock(),
        )
        try:
            pair = manager.login("watcher_check", username=username, password=password)
        except WatcherAuthError as exc:
            raise CommandError(f"login as {username!r} failed: {exc}") from exc
        finally:
            manager.close()
        lifetime = pair.lifetime
        valid = f"{lifetime:.0f}s" if lifetime is not None else "an unknown time"
        self.stdout.write(f"Logged in as {username}; the access token is valid for {valid}.")
