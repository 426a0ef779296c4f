"""``manage.py watcher_status``: every stored Watcher account, and when its tokens expire.

One row per record (API v3 tokens and API v2 sessions or keys), then a line with its API,
the access token's expiry on Watcher's clock, the last refresh and when the chain of
refreshes began. Never prints a token.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from django_watcher_auth.conf import get_clock, get_manager, user_for_key
from django_watcher_auth.models import WatcherAccount
from django_watcher_auth.stores import DjangoModelStore
from watcher_auth import (
    StoreKey,
    TokenDecryptionError,
    TokenManager,
    TokenPair,
    TokenStore,
    WatcherAuthError,
)

Row = tuple[str, str, str, str]

_CREDENTIALS = {"jwt": "access token", "session": "session", "user-key": "user API key"}

#: A record the current encryption keys cannot decrypt: the person connects again.
UNREADABLE = "needs reconnect (unreadable with the current keys)"


class Command(BaseCommand):
    help = (
        "List the portal users' Watcher accounts: API, Watcher user, access token expiry, "
        "last refresh and connected since."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--all",
            action="store_true",
            help="Also list accounts that need a new login (database store).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            manager = get_manager()
            store = manager.store
            self.stdout.write(f"Watcher {manager.server}, store {store!r}")
            if type(store).iter_keys is TokenStore.iter_keys:
                self.stdout.write(
                    f"The {type(store).__name__} store cannot list its records, so its "
                    "connected users cannot be shown here (a Django cache store never can; "
                    'the "db" store can).'
                )
                return
            rows = self._rows(manager, everyone=options["all"])
        except WatcherAuthError as exc:
            raise CommandError(str(exc)) from exc
        if not rows:
            self.stdout.write("No connected users.")
            return
        header: Row = ("PORTAL USER", "WATCHER USER", "STATUS", "ACCESS TOKEN")
        widths = [max(len(row[i]) for row, _ in [(header, ""), *rows]) for i in range(4)]
        for row, details in [(header, ""), *rows]:
            self.stdout.write(
                "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
            )
            if details:
                self.stdout.write(f"    {details}")
        self.stdout.write(f"{len(rows)} account(s).")

    def _rows(self, manager: TokenManager, *, everyone: bool) -> list[tuple[Row, str]]:
        rows: list[tuple[Row, str]] = []
        keys = manager.store.iter_keys(server=manager.server)
        for skey in sorted(keys, key=lambda k: (k.user, k.api)):
            who = _portal_user(user_for_key(skey.user), skey.user)
            try:
                pair = manager.store.load(skey)
            except TokenDecryptionError:
                details = f"API {skey.api}; the record cannot be read (needs reconnect)"
                rows.append(((who, "?", UNREADABLE, "-"), details))
                continue
            if pair is not None:
                rows.append(_connected_row(who, skey, pair))
        if everyone and isinstance(manager.store, DjangoModelStore):
            rows.extend(_needing_login(manager.server, manager.store))
        return rows


def _connected_row(who: str, skey: StoreKey, pair: TokenPair) -> tuple[Row, str]:
    row = (who, pair.username or "?", "connected", _expiry(pair.local_expires_at))
    credential = _CREDENTIALS.get(pair.scheme, "access token")
    if pair.expires_at is None:
        expires = f"{credential} does not expire"
    else:
        expires = f"{credential} expires {_utc(pair.expires_at)} (Watcher's clock)"
    details = (
        f"API {skey.api}; {expires}; last refresh {_utc(pair.refreshed_at)}; "
        f"connected since {_utc(pair.connected_at)}"
    )
    return row, details


def _needing_login(server: str, store: DjangoModelStore) -> list[tuple[Row, str]]:
    accounts = (
        WatcherAccount.objects.using(store.using)
        .filter(server=server, status=WatcherAccount.Status.NEEDS_RELOGIN, record="")
        .exclude(connected_at=None)
        .select_related("user")
    )
    return [
        (
            (
                _portal_user(account.user, account.user_key),
                account.username or "?",
                str(account.get_status_display()),
                "-",
            ),
            f"API {account.api}; connected since {_utc(_timestamp(account.connected_at))}",
        )
        for account in accounts
    ]


def _portal_user(user: Any, key: str) -> str:
    return f"(key {key})" if user is None else str(user.get_username())


def _timestamp(moment: datetime | None) -> float | None:
    if moment is None:
        return None
    if timezone.is_naive(moment):
        moment = timezone.make_aware(moment)
    return moment.timestamp()


def _utc(timestamp: float | None) -> str:
    if timestamp is None:
        return "never"
    return datetime.fromtimestamp(timestamp, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _expiry(expires_at: float | None) -> str:
    if expires_at is None:
        return "no expiry"
    left = expires_at - get_clock()()
    if left <= 0:
        return f"expired {int(-left)}s ago, refreshed on next use"
    return f"expires in {int(left)}s"
