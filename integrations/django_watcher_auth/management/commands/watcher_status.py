"""``manage.py watcher_status``: connected users and when their access tokens expire."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from django_watcher_auth.conf import get_clock, get_manager, user_for_key
from django_watcher_auth.models import WatcherAccount
from django_watcher_auth.stores import DjangoModelStore
from watcher_auth import TokenDecryptionError, TokenManager, WatcherAuthError

Row = tuple[str, str, str, str]


class Command(BaseCommand):
    help = "List the portal users connected to Watcher, with their access token expiry."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--all",
            action="store_true",
            help="Also list accounts that need a new login (database store).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            manager = get_manager()
            self.stdout.write(f"Watcher {manager.server}, store {manager.store!r}")
            rows: list[Row] | None
            if isinstance(manager.store, DjangoModelStore):
                rows = self._database_rows(manager, manager.store, everyone=options["all"])
            else:
                rows = self._store_rows(manager)
        except WatcherAuthError as exc:
            raise CommandError(str(exc)) from exc
        if rows is None:
            self.stdout.write("This store cannot list its records.")
            return
        if not rows:
            self.stdout.write("No connected users.")
            return
        header: Row = ("PORTAL USER", "WATCHER USER", "STATUS", "ACCESS TOKEN")
        widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
        for row in [header, *rows]:
            self.stdout.write(
                "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
            )
        self.stdout.write(f"{len(rows)} account(s).")

    def _database_rows(
        self, manager: TokenManager, store: DjangoModelStore, *, everyone: bool
    ) -> list[Row]:
        accounts = WatcherAccount.objects.using(store.using).filter(server=manager.server, api="v3")
        if not everyone:
            accounts = accounts.filter(status=WatcherAccount.Status.CONNECTED)
        return [
            (
                _portal_user(account.user, account.user_key),
                account.username or "?",
                str(account.get_status_display()),
                _expiry(_timestamp(account.access_expires_at)),
            )
            for account in accounts.exclude(record="", connected_at=None).select_related("user")
        ]

    def _store_rows(self, manager: TokenManager) -> list[Row] | None:
        keys = list(manager.store.iter_keys(server=manager.server, api="v3"))
        if not keys:
            return None
        rows: list[Row] = []
        for key in keys:
            try:
                pair = manager.store.load(key)
            except TokenDecryptionError:
                who = _portal_user(user_for_key(key.user), key.user)
                rows.append((who, "?", "needs reconnect (unreadable with the current keys)", "-"))
                continue
            if pair is not None:
                rows.append(
                    (
                        _portal_user(user_for_key(key.user), key.user),
                        pair.username or "?",
                        "connected",
                        _expiry(pair.local_expires_at),
                    )
                )
        return rows


def _portal_user(user: Any, key: str) -> str:
    return f"(key {key})" if user is None else str(user.get_username())


def _timestamp(moment: datetime | None) -> float | None:
    if moment is None:
        return None
    if timezone.is_naive(moment):
        moment = timezone.make_aware(moment)
    return moment.timestamp()


def _expiry(expires_at: float | None) -> str:
    if expires_at is None:
        return "-"
    left = expires_at - get_clock()()
    if left <= 0:
        return f"expired {int(-left)}s ago, refreshed on next use"
    return f"expires in {int(left)}s"
