"""Blinker signals for what happens to a user's Watcher credentials.

The names match the Django app's signals. Each is sent with the Flask app as sender and these
keyword arguments: ``user_key`` (the portal user's key), ``username`` (the Watcher username,
when known), ``server`` (the Watcher base URL) and ``api`` (``"v3"``, or ``"v2"`` for an API v2
session or user key). None carries a secret::

    from flask_watcher_auth.signals import watcher_reauthentication_required

    @watcher_reauthentication_required.connect_via(app)
    def tell_the_user(app, user_key, username, **extra):
        ...
"""

from __future__ import annotations

from blinker import Namespace

from watcher_auth import EventType

__all__ = [
    "SIGNALS",
    "watcher_connected",
    "watcher_disconnected",
    "watcher_reauthentication_required",
    "watcher_tokens_refreshed",
]

_signals = Namespace()

watcher_connected = _signals.signal(
    "watcher-connected",
    doc="A Watcher account was connected (a password login, or an API v2 user key).",
)
watcher_tokens_refreshed = _signals.signal(
    "watcher-tokens-refreshed", doc="A user's Watcher tokens were refreshed."
)
watcher_reauthentication_required = _signals.signal(
    "watcher-reauthentication-required",
    doc="Watcher rejected a user's stored credentials; they were deleted.",
)
watcher_disconnected = _signals.signal(
    "watcher-disconnected", doc="A user's Watcher account was disconnected."
)

#: The signal sent for each core event type.
SIGNALS = {
    EventType.CONNECTED: watcher_connected,
    EventType.REFRESHED: watcher_tokens_refreshed,
    EventType.REAUTHENTICATION_REQUIRED: watcher_reauthentication_required,
    EventType.DISCONNECTED: watcher_disconnected,
}
