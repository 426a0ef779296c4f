"""A portal user's Watcher account: what the status page shows, and disconnecting it."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import transaction

from django_watcher_auth._time import as_datetime
from django_watcher_auth.conf import get_manager, service_account, user_key
from django_watcher_auth.models import WatcherAccount
from django_watcher_auth.stores import DjangoModelStore
from watcher_auth import TokenDecryptionError, WatcherAuthError, web

logger = logging.getLogger("django_watcher_auth")

__all__ = [
    "AccountStatus",
    "V2Status",
    "account_status",
    "disconnect",
    "disconnect_key",
    "forget_deleted_user",
    "key_status",
]


@dataclass(frozen=True)
class V2Status:
    """A user's API v2 account (a session or a user API key). Carries no secret.

    Attributes:
        connected: a session or user key is stored.
        needs_relogin: Watcher no longer accepts the stored one, or the current encryption
            keys cannot read it; the user must connect again.
        needs_reconnect: the stored record cannot be decrypted with the current keys.
        username: the Watcher username, when known.
        scheme: ``"session"`` (a password login) or ``"user-key"`` (an API key), when stored.
        connected_at: when the user connected it.
    """

    connected: bool
    needs_relogin: bool = False
    username: str | None = None
    scheme: str | None = None
    connected_at: datetime | None = None
    needs_reconnect: bool = False

    def as_json(self) -> dict[str, Any]:
        """The status as JSON-ready data."""
        return {
            "connected": self.connected,
            "needs_relogin": self.needs_relogin,
            "needs_reconnect": self.needs_reconnect,
            "username": self.username,
            "scheme": self.scheme,
            "connected_at": _iso(self.connected_at),
        }


@dataclass(frozen=True)
class AccountStatus:
    """What is known about a user's Watcher account. Carries no token.

    Attributes:
        connected: tokens are stored.
        needs_relogin: Watcher rejected the stored tokens, or the current encryption keys
            cannot read them; the user must connect again.
        needs_reconnect: the stored tokens cannot be decrypted with the current keys (the key
            was rotated away, or the record is damaged); connecting again replaces them.
        username: the Watcher username, when known.
        server: the Watcher server.
        connected_at: when the user last connected with a password.
        refreshed_at: when the tokens were last refreshed.
        access_expires_at: when the current access token expires (it is refreshed
            automatically before that).
        service_account: the service account's username when it serves this user instead.
        v2: the user's API v2 account, when one is stored or needs a new login.
    """

    connected: bool
    needs_relogin: bool = False
    username: str | None = None
    server: str = ""
    connected_at: datetime | None = None
    refreshed_at: datetime | None = None
    access_expires_at: datetime | None = None
    service_account: str | None = None
    v2: V2Status | None = None
    needs_reconnect: bool = False

    def as_json(self) -> dict[str, Any]:
        """The status as JSON-ready data (with ``"v2"`` only when :attr:`v2` is set)."""
        data: dict[str, Any] = {
            "connected": self.connected,
            "needs_relogin": self.needs_relogin,
            "needs_reconnect": self.needs_reconnect,
            "username": self.username,
            "server": self.server,
            "connected_at": _iso(self.connected_at),
            "refreshed_at": _iso(self.refreshed_at),
            "access_expires_at": _iso(self.access_expires_at),
            "service_account": self.service_account,
        }
        if self.v2 is not None:
            data["v2"] = self.v2.as_json()
        return data


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def account_status(user: Any) -> AccountStatus:
    """The Watcher account status of ``user`` (reads the store; never calls Watcher)."""
    return key_status(user_key(user))


def key_status(key: str) -> AccountStatus:
    """The Watcher account status of a user key."""
    manager = get_manager()
    service = service_account()
    v2 = _v2_status(key)
    try:
        pair = manager.tokens(key)
    except TokenDecryptionError:
        return AccountStatus(
            connected=False,
            needs_relogin=True,
            needs_reconnect=True,
            username=_stored_username(key, "v3"),
            server=manager.server,
            service_account=service[0] if service is not None else None,
            v2=v2,
        )
    if pair is not None:
        return AccountStatus(
            connected=True,
            username=pair.username,
            server=manager.server,
            connected_at=as_datetime(pair.connected_at),
            refreshed_at=as_datetime(pair.refreshed_at),
            access_expires_at=as_datetime(pair.local_expires_at),
            v2=v2,
        )
    username = _needs_relogin(key, "v3")
    return AccountStatus(
        connected=False,
        needs_relogin=username is not None,
        username=username or None,
        server=manager.server,
        service_account=service[0] if service is not None else None,
        v2=v2,
    )


def _v2_status(key: str) -> V2Status | None:
    try:
        pair = get_manager().v2_tokens(key)
    except TokenDecryptionError:
        return V2Status(
            connected=False,
            needs_relogin=True,
            needs_reconnect=True,
            username=_stored_username(key, "v2"),
        )
    if pair is not None:
        return V2Status(
            connected=True,
            username=pair.username,
            scheme=pair.scheme,
            connected_at=as_datetime(pair.connected_at),
        )
    username = _needs_relogin(key, "v2")
    if username is None:
        return None
    return V2Status(connected=False, needs_relogin=True, username=username or None)


def _needs_relogin(key: str, api: str) -> str | None:
    """The Watcher username ("" if unknown) of a ``"db"`` store row needing a new login."""
    manager = get_manager()
    store = manager.store
    if isinstance(store, DjangoModelStore):
        row = store.account(manager.store_key(key, api=api))
        if row is not None and row.status == str(WatcherAccount.Status.NEEDS_RELOGIN):
            return row.username
    return None


def _stored_username(key: str, api: str) -> str | None:
    """The Watcher username in a ``"db"`` store row's plain columns, if any."""
    manager = get_manager()
    store = manager.store
    if isinstance(store, DjangoModelStore):
        row = store.account(manager.store_key(key, api=api))
        if row is not None:
            return row.username or None
    return None


def disconnect(user: Any) -> bool:
    """Forget ``user``'s Watcher credentials (API v3 and v2); returns whether any were stored."""
    return disconnect_key(user_key(user))


def disconnect_key(key: str, api: str | None = None) -> bool:
    """Forget a user key's Watcher credentials (and their rows in the ``"db"`` store).

    A record the current encryption keys cannot read is deleted too (it counts as one).

    Args:
        key: the user key.
        api: ``"v3"`` or ``"v2"`` to forget only that API's credentials; ``None``: both.
    """
    manager = get_manager()
    had_tokens = False
    if api in (None, "v3"):
        had_tokens = web.forget(manager, key, "v3") or had_tokens
    if api in (None, "v2"):
        had_tokens = web.forget(manager, key, "v2") or had_tokens
    store = manager.store
    if isinstance(store, DjangoModelStore):
        for which in ("v3", "v2") if api is None else (api,):
            store.purge(manager.store_key(key, api=which))
    return had_tokens


def forget_deleted_user(sender: Any, instance: Any, using: str, **kwargs: Any) -> None:
    """``post_delete`` receiver of the user model: forget the deleted user's Watcher records.

    Runs when the deletion commits (a rolled-back deletion keeps them), for every store. A
    store that fails then leaves the records, and a warning names the user key.
    """
    try:
        key = user_key(instance)
    except WatcherAuthError as exc:
        logger.warning("the Watcher records of a deleted portal user were kept: %s", exc)
        return

    def forget() -> None:
        try:
            disconnect_key(key)
        except WatcherAuthError as exc:
            logger.warning(
                "the Watcher records of deleted portal user key %r were kept: %s", key, exc
            )

    transaction.on_commit(forget, using=using)
