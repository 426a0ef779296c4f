"""Views a portal would write, using ``request.watcher``."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import include, path
from django.views import View

from django_watcher_auth.decorators import watcher_required, watcher_v2_required
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


@watcher_required
async def async_cameras(request: HttpRequest) -> HttpResponse:
    """An async view: the user's streams through ``await request.awatcher()``."""
    watcher = await request.awatcher()  # type: ignore[attr-defined]
    names = [stream["name"] async for stream in watcher.paginate("streams")]
    return JsonResponse({"streams": names})


async def async_profile(request: HttpRequest) -> HttpResponse:
    """No decorator: the middleware answers the Watcher errors of an async view."""
    watcher = await request.awatcher()  # type: ignore[attr-defined]
    return JsonResponse(await watcher.json("profile"))


@watcher_required
async def async_checked(request: HttpRequest) -> HttpResponse:
    """An async ``raise_for_status()`` on Watcher's 404."""
    watcher = await request.awatcher()  # type: ignore[attr-defined]
    answer = await watcher.get("streams/no-such-stream")
    answer.raise_for_status()
    return JsonResponse(answer.json())


@watcher_v2_required
async def async_v2_cameras(request: HttpRequest) -> HttpResponse:
    watcher = await request.awatcher_v2()  # type: ignore[attr-defined]
    return JsonResponse({"cameras": [c["name"] async for c in watcher.paginate("cameras")]})


class AsyncProfileView(WatcherRequiredMixin, View):
    async def get(self, request: HttpRequest) -> HttpResponse:
        watcher = await request.awatcher()  # type: ignore[attr-defined]
        return JsonResponse(await watcher.json("profile"))


async def health(request: HttpRequest) -> HttpResponse:
    """Answers at once, without Watcher or the database."""
    return JsonResponse({"status": "ok"})


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
    path("async/cameras/", async_cameras, name="async-cameras"),
    path("async/profile/", async_profile, name="async-profile"),
    path("async/checked/", async_checked, name="async-checked"),
    path("async/v2/cameras/", async_v2_cameras, name="async-v2-cameras"),
    path("async/profile-view/", AsyncProfileView.as_view(), name="async-profile-view"),
    path("health/", health, name="health"),
]
