"""What every page shows a signed-in person: the Watcher status panel and the staff pages."""

from datetime import datetime
from typing import Any

from django.http import HttpRequest
from django.utils import timezone

from django_watcher_auth.accounts import account_status
from django_watcher_auth.conf import system_api_key
from watcher_auth import WatcherAuthError


def watcher_panel(request: HttpRequest) -> dict[str, Any]:
    """``watcher_panel``: connected as, token expiry, last refresh. Never a token.

    It reads the stored record only; showing it never calls Watcher.
    """
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    try:
        status = account_status(user)
    except WatcherAuthError:
        return {"watcher_panel": {"unavailable": True}}
    return {
        "watcher_panel": {
            "status": status,
            "expires_in": expires_in(status.access_expires_at, timezone.now()),
        }
    }


def expires_in(moment: datetime | None, now: datetime) -> str:
    """``moment`` as "3 min 12 s" from ``now``, for people."""
    if moment is None:
        return "never"
    seconds = int((moment - now).total_seconds())
    if seconds <= 0:
        return "expired; renewed on the next Watcher call"
    minutes, seconds = divmod(seconds, 60)
    return f"{minutes} min {seconds} s" if minutes else f"{seconds} s"


def staff_pages(request: HttpRequest) -> dict[str, Any]:
    """``system_cameras``: whether to link the staff's "All cameras" page (system key set)."""
    user = getattr(request, "user", None)
    if user is None or not user.is_staff:
        return {}
    try:
        return {"system_cameras": system_api_key() is not None}
    except WatcherAuthError:  # a malformed key: the system check reports it
        return {}
