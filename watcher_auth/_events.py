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
    REFRESHED = "refreshed"
    REAUTHENTICATION_REQUIRED = "reauthentication_required"
    DISCONNECTED = "disconnected"


@dataclass(frozen=True, slots=True)
class WatcherEvent:
    """One event. Carries no secret.

    Attributes:
        type: what happened.
        key: the portal's user key.
        server: the Watcher base URL.
        api: ``"v3"`` or ``"v2"``.
        username: the Watcher username, when known.
    """

    type: EventType
    key: str
    server: str
    api: str = "v3"
    username: str | None = None


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
