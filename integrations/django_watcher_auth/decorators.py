"""``@watcher_required`` for function views."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from django.http import HttpRequest, HttpResponse

from django_watcher_auth._http import check_watcher_access, watcher_error_response

__all__ = ["watcher_required"]

View = TypeVar("View", bound=Callable[..., HttpResponse])


def watcher_required(view: View) -> View:
    """Run the view only for a signed-in user with a working Watcher account.

    Anonymous users go to ``LOGIN_URL``; users without tokens, or whose tokens Watcher
    rejects, go to the connect page and come back after connecting; a stale access token is
    refreshed before the view runs. Watcher errors the view raises are answered as the
    middleware answers them, so the decorator also works without it::

        @watcher_required
        def cameras(request):
            streams = request.watcher.get("streams").json()["streams"]
            ...
    """

    @wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        refused = check_watcher_access(request)
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
