"""Signals sent when a portal user's Watcher credentials change.

Each is sent with ``sender=TokenManager`` (the class) and the keyword arguments ``user``
(the portal user, or ``None`` for a service account), ``user_key``, ``username`` (the
Watcher username, when known), ``server`` and ``api`` (``"v3"``, or ``"v2"`` for an API v2
session or user key). None carries a token or key::

    from django.dispatch import receiver
    from django_watcher_auth.signals import watcher_reauthentication_required

    @receiver(watcher_reauthentication_required)
    def tell_them(sender, user, username, **kwargs):
        ...
"""

from __future__ import annotations

from django.dispatch import Signal

__all__ = [
    "watcher_connected",
    "watcher_disconnected",
    "watcher_reauthentication_required",
    "watcher_tokens_refreshed",
]

#: A user connected a Watcher account: a password login (the connect page, or a service
#: account), or an API v2 user key that Watcher accepted.
watcher_connected = Signal()

#: A user's tokens were refreshed without a password.
watcher_tokens_refreshed = Signal()

#: Watcher rejected a user's stored tokens; they must connect again.
watcher_reauthentication_required = Signal()

#: A user's tokens were forgotten (the disconnect page, the admin, a command).
watcher_disconnected = Signal()
