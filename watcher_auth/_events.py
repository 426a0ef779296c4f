"""Events a manager reports to its listeners (the Django and Flask layers make signals of them)."""

from __future__ import annotations

import enum
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["EventType", "Listener", "WatcherEvent"]

logger = logging.getLogger("watcher_auth")


class EventType(str, enum.Enum):
    """What happened to a user key's Watcher credentials."""

    CONNECTED = "connected"
    """A password login stored a new record (``duration``: the login's seconds)."""
    REFRESHED = "refreshed"
    """A refresh stored a new pair (``duration``: the refresh request's seconds)."""
    REFRESH_REJECTED = "refresh_rejected"
    """Watcher definitely refused a refresh token (or a v2 session turned out dead)."""
    REAUTHENTICATION_REQUIRED = "reauthentication_required"
    """The record was deleted: the person has to connect again."""
    DISCONNECTED = "disconnected"
    """The record was deleted on request."""
    UNAUTHORIZED_RETRY = "unauthorized_retry"
    """Watcher answered 401 (v3) or 403 (v2) to a call; the call is retried once."""
    LOCK_WAITED = "lock_waited"
    """The key's refresh lock was taken (``duration``: seconds spent waiting for it)."""
    STORE_ERROR = "store_error"
    """The token store failed (``error``: the exception's type name)."""


@dataclass(frozen=True, slots=True)
class WatcherEvent:
    """One event. Carries no secret.

    Attributes:
        type: what happened.
        key: the portal's user key.
        server: the Watcher base URL.
        api: ``"v3"`` or ``"v2"``.
        username: the Watcher username, when known.
        duration: seconds the step took, for the types that say so.
        error: the exception type's name, for ``STORE_ERROR``.
    """

    type: EventType
    key: str
    server: str
    api: str = "v3"
    username: str | None = None
    duration: float | None = None
    error: str | None = None


Listener = Callable[[WatcherEvent], object]


class EventHub:
    """Calls every listener for each event; a failing listener is logged, not raised."""

    def __init__(self) -> None:
        self._listeners: tuple[Listener, ...] = ()
        self._lock = threading.Lock()

    def add(self, listener: Listener) -> None:
        with self._lock:
            self._listeners = (*self._listeners, listener)

    def remove(self, listener: Listener) -> None:
        with self._lock:
            self._listeners = tuple(x for x in self._listeners if x != listener)

    def emit(self, event: WatcherEvent) -> None:
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:
                logger.exception(
                    "listener %r failed on %s event for key %r",
                    listener,
                    event.type.value,
                    event.key,
                )
