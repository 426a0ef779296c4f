"""The portal's own pages. Connecting and disconnecting are django_watcher_auth's views."""

from typing import Any
from urllib.parse import quote, urlencode

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from django_watcher_auth.conf import system_api_key
from django_watcher_auth.decorators import watcher_required, watcher_v2_required
from watcher_auth import WatcherAPIError
from watcher_auth.v2 import WatcherV2Session

# An ?offset= from a link is below this; anything else shows the first page.
MAX_OFFSET = 1_000_000_000


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


@watcher_v2_required
def cameras_v2(request: HttpRequest) -> HttpResponse:
    """One page of the signed-in user's cameras through API v2; ``?offset=`` selects the page.

    ``@watcher_v2_required`` sends people without an API v2 account to the API v2 connect
    page (a user API key or a password); ``request.watcher_v2`` carries their session or key.
    """
    context = camera_page(request.watcher_v2, offset_of(request.GET.get("offset")))
    context["heading"] = "Cameras (API v2)"
    return render(request, "portal/cameras_v2.html", context)


@login_required
def all_cameras(request: HttpRequest) -> HttpResponse:
    """Every camera in Watcher, one page at a time, through Watcher's API v2 system key.

    The system key has super-admin rights whoever is signed in, so only staff get here; the
    page exists only when the key is configured (``WATCHER_SYSTEM_API_KEY``).
    """
    if not request.user.is_staff:
        raise PermissionDenied
    if system_api_key() is None:
        raise Http404("No Watcher system key is configured.")
    context = camera_page(request.watcher_system, offset_of(request.GET.get("offset")))
    context["heading"] = "All cameras (system key)"
    return render(request, "portal/cameras_v2.html", context)


def camera_page(watcher: WatcherV2Session, offset: int) -> dict[str, Any]:
    """The API v2 cameras from ``offset`` on, one page of them, with links to the neighbours.

    API v2 pages by ``limit`` and ``offset`` and tells no total: asking for one camera more
    than a page shows tells whether there is a next page.
    """
    size = settings.PORTAL_CAMERAS_PER_PAGE
    found = watcher.json("cameras", params={"limit": size + 1, "offset": offset})
    shown = found[:size]
    return {
        "cameras": [v2_camera_row(camera) for camera in shown],
        "first": offset + 1,
        "last": offset + len(shown),
        "next_link": _offset_link(offset + size) if len(found) > size else None,
        "prev_link": _offset_link(max(offset - size, 0)) if offset > 0 else None,
    }


def v2_camera_row(camera: dict[str, Any]) -> dict[str, Any]:
    """What the API v2 camera list shows of one camera."""
    return {
        "name": camera["name"],
        "title": camera.get("title") or camera["name"],
        "alive": bool((camera.get("stream_status") or {}).get("alive")),
    }


def offset_of(value: str | None) -> int:
    """The ``?offset=`` of a page link; 0 (the first page) for anything but a count."""
    try:
        offset = int(value or 0)
    except ValueError:
        return 0
    return offset if 0 <= offset < MAX_OFFSET else 0


def _page_link(cursor: str | None) -> str | None:
    return f"?{urlencode({'cursor': cursor})}" if cursor else None


def _offset_link(offset: int) -> str:
    return f"?{urlencode({'offset': offset})}"
