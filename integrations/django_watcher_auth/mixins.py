"""``WatcherRequiredMixin`` for class-based views, sync and async."""

from __future__ import annotations

from typing import Any

from asgiref.sync import sync_to_async
from django.contrib.auth.mixins import AccessMixin
from django.http import HttpRequest, HttpResponse, HttpResponseBase

from django_watcher_auth._http import (
    acheck_watcher_access,
    aclose_watchers,
    awatcher_error_response,
    check_watcher_access,
    signed_in_user,
    watcher_error_response,
)

__all__ = ["WatcherRequiredMixin"]


class WatcherRequiredMixin(AccessMixin):
    """The class-based twin of :func:`~django_watcher_auth.decorators.watcher_required`.

    Put it first among the bases. Anonymous users are handled as ``LoginRequiredMixin``
    handles them (``login_url``, ``raise_exception``...)::

        class CamerasView(WatcherRequiredMixin, TemplateView):
            ...

    Set ``watcher_api = "v2"`` for a view that uses ``request.watcher_v2`` (see
    :func:`~django_watcher_auth.decorators.watcher_v2_required`). A view whose handlers are
    ``async def`` is checked without blocking the event loop and uses
    ``await request.awatcher()``.
    """

    watcher_api = "v3"

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
        if getattr(self, "view_is_async", False):
            return self._adispatch(request, *args, **kwargs)
        return self._dispatch(request, *args, **kwargs)

    async def _adispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
        try:
            user = await signed_in_user(request)
            if user is None or not user.is_authenticated:
                return await sync_to_async(self.handle_no_permission)()
            refused = await acheck_watcher_access(request, self.watcher_api)
            if refused is not None:
                return refused
            try:
                return await super().dispatch(request, *args, **kwargs)  # type: ignore[misc]
            except Exception as exc:
                answer = await awatcher_error_response(request, exc)
                if answer is None:
                    raise
                return answer
        finally:
            await aclose_watchers(request)

    def _dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if not request.user.is_authenticated:
            return self.handle_no_permission()
        refused = check_watcher_access(request, self.watcher_api)
        if refused is not None:
            return refused
        try:
            response: HttpResponse = super().dispatch(  # type: ignore[misc]
                request, *args, **kwargs
            )
        except Exception as exc:
            answer = watcher_error_response(request, exc)
            if answer is None:
                raise
            return answer
        return response
