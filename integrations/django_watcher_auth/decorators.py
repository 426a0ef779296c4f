"""``@watcher_required`` and ``@watcher_v2_required`` for function views, sync and async."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar, cast

from asgiref.sync import iscoroutinefunction
from django.http import HttpRequest, HttpResponse

from django_watcher_auth._http import (
    acheck_watcher_access,
    aclose_watchers,
    awatcher_error_response,
    check_watcher_access,
    watcher_error_response,
)

__all__ = ["watcher_required", "watcher_v2_required"]

View = TypeVar("View", bound=Callable[..., HttpResponse])


def watcher_required(view: View) -> View:
    """Run the view only for a signed-in user with a working Watcher account.

    Anonymous users go to ``LOGIN_URL``; users without tokens, or whose tokens Watcher
    rejects, go to the connect page and come back after connecting; a stale access token is
    refreshed before the view runs. Every library failure, before or inside the view, gets
    the answer of :func:`watcher_auth.web.error_answer` (a 503 page with ``Retry-After``
    while Watcher is down, JSON for API clients...), as the middleware answers them, so the
    decorator also works without it::

        @watcher_required
        def cameras(request):
            streams = request.watcher.get("streams").json()["streams"]
            ...

    On an ``async def`` view the checks run without blocking the event loop, and the view
    uses ``await request.awatcher()`` (an :class:`~watcher_auth.AsyncWatcherClient`)::

        @watcher_required
        async def cameras(request):
            watcher = await request.awatcher()
            names = [stream["name"] async for stream in watcher.paginate("streams")]
            ...
    """
    return _guarded(view, "v3")


def watcher_v2_required(view: View) -> View:
    """Run the view only for a signed-in user with a connected API v2 account.

    The API v2 twin of :func:`watcher_required`: users without a stored API v2 session or
    user key (or whose credentials Watcher no longer accepts) go to the API v2 connect page
    and come back after connecting::

        @watcher_v2_required
        def cameras(request):
            cameras = request.watcher_v2.get("cameras").json()
            ...
    """
    return _guarded(view, "v2")


def _guarded(view: View, api: str) -> View:
    if iscoroutinefunction(view):
        return cast(View, _guarded_async(view, api))

    @wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        refused = check_watcher_access(request, api)
        if refused is not None:
            return refused
        try:
            return view(request, *args, **kwargs)
        except Exception as exc:
            response = watcher_error_response(request, exc)
            if response is None:
                raise
            return response

    return wrapped  # type: ignore[return-value]


def _guarded_async(view: Callable[..., Any], api: str) -> Any:
    @wraps(view)
    async def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        try:
            refused = await acheck_watcher_access(request, api)
            if refused is not None:
                return refused
            try:
                response: HttpResponse = await view(request, *args, **kwargs)
            except Exception as exc:
                answer = await awatcher_error_response(request, exc)
                if answer is None:
                    raise
                return answer
            return response
        finally:
            # Without the middleware nobody else closes them; with it this is a no-op later.
            await aclose_watchers(request)

    return wrapped
