"""A portal user's Watcher account: what the status page shows, and disconnecting it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django_watcher_auth._time import as_datetime
from django_watcher_auth.conf import get_manager, service_account, user_key
from django_watcher_auth.models import WatcherAccount
from django_watcher_auth.stores import DjangoModelStore

__all__ = ["AccountStatus", "account_status", "disconnect", "disconnect_key"]


@dataclass(frozen=True)
class AccountStatus:
    """What is known about a user's Watcher account. Carries no token.

    Attributes:
        connected: tokens are stored.
        needs_relogin: Watcher rejected the stored tokens; the user must connect again.
        username: the Watcher username, when known.
        server: the Watcher server.
        connected_at: when the user last connected with a password.
        refreshed_at: when the tokens were last refreshed.
        access_expires_at: when the current access token expires (it is refreshed
            automatically before that).
        service_account: the service account's username when it serves this user instead.
    """

    connected: bool
    needs_relogin: bool = False
    username: str | None = None
    server: str = ""
    connected_at: datetime | None = None
    refreshed_at: datetime | None = None
    access_expires_at: datetime | None = None
    service_account: str | None = None

    def as_json(self) -> dict[str, Any]:
        """The status as JSON-ready data."""

        def iso(moment: datetime | None) -> str | None:
            return moment.isoformat() if moment is not None else None

        return {
            "connected": self.connected,
            "needs_relogin": self.needs_relogin,
            "username": self.username,
            "server": self.server,
            "connected_at": iso(self.connected_at),
            "refreshed_at": iso(self.refreshed_at),
            "access_expires_at": iso(self.access_expires_at),
            "service_account": self.service_account,
        }


def account_status(user: Any) -> AccountStatus:
    """The Watcher account status of ``user`` (reads the store; never calls Watcher)."""
    return key_status(user_key(user))


def key_status(key: str) -> AccountStatus:
    """The Watcher account status of a user key."""
    manager = get_manager()
    service = service_account()
    pair = manager.tokens(key)
    if pair is not None:
        return AccountStatus(
            connected=True,
            username=pair.username,
            server=manager.server,
            connected_at=as_datetime(pair.connected_at),
            refreshed_at=as_datetime(pair.refreshed_at),
            access_expires_at=as_datetime(pair.local_expires_at),
        )
    needs_relogin = False
    username = None
    store = manager.store
    if isinstance(store, DjangoModelStore):
        row = store.account(manager.store_key(key))
        if row is not None and row.status == str(WatcherAccount.Status.NEEDS_RELOGIN):
            needs_relogin, username = True, row.username or None
    return AccountStatus(
        connected=False,
        needs_relogin=needs_relogin,
        username=username,
        server=manager.server,
        service_account=service[0] if service is not None else None,
    )


def disconnect(user: Any) -> bool:
    """Forget ``user``'s Watcher tokens; returns whether any were stored."""
    return disconnect_key(user_key(user))


def disconnect_key(key: str) -> bool:
    """Forget a user key's Watcher tokens (and its row in the ``"db"`` store)."""
    manager = get_manager()
    had_tokens = manager.logout(key)
    store = manager.store
    if isinstance(store, DjangoModelStore):
        store.purge(manager.store_key(key))
    return had_tokens
