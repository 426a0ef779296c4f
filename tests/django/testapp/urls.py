"""Views a portal would write, using ``request.watcher``."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import include, path
from django.views import View

from django_watcher_auth.decorators import watcher_required
from django_watcher_auth.mixins import WatcherRequiredMixin


@watcher_required
def cameras(request: HttpRequest) -> HttpResponse:
    streams = request.watcher.get("streams").json()["streams"]  # type: ignore[attr-defined]
    return HttpResponse("\n".join(stream["name"] for stream in streams))


@watcher_required
def api_streams(request: HttpRequest) -> HttpResponse:
    streams = request.watcher.json("streams")["streams"]  # type: ignore[attr-defined]
    return JsonResponse({"streams": [stream["name"] for stream in streams]})


def profile(request: HttpRequest) -> HttpResponse:
    """No decorator: the middleware answers the Watcher errors."""
    return JsonResponse(request.watcher.json("profile"))  # type: ignore[attr-defined]


def untouched(request: HttpRequest) -> HttpResponse:
    """Never uses ``request.watcher``."""
    return HttpResponse("ok")


@watcher_required
def stream_list(request: HttpRequest) -> HttpResponse:
    """The README's example: every stream through ``paginate``."""
    streams = list(request.watcher.paginate("streams"))  # type: ignore[attr-defined]
    return HttpResponse("\n".join(stream["name"] for stream in streams))


@watcher_required
def watcher_path(request: HttpRequest, path: str) -> HttpResponse:
    """Any Watcher API path through the JSON helper (``users`` is for admins only)."""
    return JsonResponse(request.watcher.json(path), safe=False)  # type: ignore[attr-defined]


@watcher_required
def checked_streams(request: HttpRequest) -> HttpResponse:
    """A plain ``requests`` call checked with ``raise_for_status()``."""
    response = request.watcher.get("streams")  # type: ignore[attr-defined]
    response.raise_for_status()
    return JsonResponse(response.json())


@watcher_required
def naive_streams(request: HttpRequest) -> HttpResponse:
    """Reads the answer without checking its status, as quick code does."""
    streams = request.watcher.get("streams").json()["streams"]  # type: ignore[attr-defined]
    return JsonResponse({"streams": [stream["name"] for stream in streams]})


@watcher_required
def buggy(request: HttpRequest) -> HttpResponse:
    """A portal bug after a good answer from Watcher: not Watcher's failure."""
    profile = request.watcher.get("profile").json()  # type: ignore[attr-defined]
    return JsonResponse({"name": profile["no-such-field"]})


class ProfileView(WatcherRequiredMixin, View):
    def get(self, request: HttpRequest) -> HttpResponse:
        return JsonResponse(request.watcher.json("profile"))  # type: ignore[attr-defined]


urlpatterns = [
    path("admin/", admin.site.urls),
    path("watcher/", include("django_watcher_auth.urls")),
    path("cameras/", cameras, name="cameras"),
    path("api/streams/", api_streams, name="api-streams"),
    path("profile/", profile, name="profile"),
    path("profile-view/", ProfileView.as_view(), name="profile-view"),
    path("untouched/", untouched, name="untouched"),
    path("stream-list/", stream_list, name="stream-list"),
    path("checked-streams/", checked_streams, name="checked-streams"),
    path("watcher-api/<path:path>", watcher_path, name="watcher-api"),
    path("naive-streams/", naive_streams, name="naive-streams"),
    path("buggy/", buggy, name="buggy"),
]
