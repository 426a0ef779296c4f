"""The portal's own pages. Connecting and disconnecting are django_watcher_auth's views."""

from typing import Any
from urllib.parse import quote, urlencode

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from django_watcher_auth.decorators import watcher_required
from watcher_auth import WatcherAPIError


def home(request: HttpRequest) -> HttpResponse:
    """The front page is the camera list."""
    return redirect("cameras")


@watcher_required
def cameras(request: HttpRequest) -> HttpResponse:
    """One page of the signed-in user's Watcher streams; ``?cursor=`` selects the page.

    ``@watcher_required`` sends people without a working Watcher account to the connect
    page (with a message saying why) and refreshes a stale access token first;
    ``request.watcher`` carries the token to Watcher.
    """
    cursor = request.GET.get("cursor", "")
    params = {"limit": settings.PORTAL_CAMERAS_PER_PAGE}
    if cursor:
        params["cursor"] = cursor
    try:
        page = request.watcher.json("streams", params=params)
    except WatcherAPIError as exc:
        if cursor and exc.status_code == 400:
            # A cursor from an old link that Watcher no longer accepts: offer the first page.
            return render(request, "portal/cameras.html", {"stale_cursor": True}, status=400)
        raise
    context = {
        "cameras": [camera_row(stream) for stream in page["streams"]],
        "total": page.get("estimated_count"),
        "next_link": _page_link(page.get("next")),
        "prev_link": _page_link(page.get("prev")),
    }
    return render(request, "portal/cameras.html", context)


def camera_row(stream: dict[str, Any]) -> dict[str, Any]:
    """What the camera list shows of one Watcher stream."""
    stats = stream.get("stats") or {}
    return {
        "name": stream["name"],
        "title": stream.get("title") or stream["name"],
        "alive": bool(stats.get("alive")),
        "playback_url": playback_url(stream),
    }


def playback_url(stream: dict[str, Any]) -> str | None:
    """The player page of a stream, authorized by its ``playback_token``.

    Watcher gives each stream a playback token meant for players and links; the portal's
    access and refresh tokens never go into a page or a URL.
    """
    stats = stream.get("stats") or {}
    token, endpoint = stats.get("playback_token"), stats.get("streaming_endpoint")
    if not token or not endpoint:
        return None
    if "://" not in endpoint:
        endpoint = f"https://{endpoint}"
    name = quote(stream["name"], safe="")
    return f"{endpoint.rstrip('/')}/{name}/embed.html?{urlencode({'token': token})}"


def _page_link(cursor: str | None) -> str | None:
    return f"?{urlencode({'cursor': cursor})}" if cursor else None
