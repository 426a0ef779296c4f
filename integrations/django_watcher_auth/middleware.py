"""``request.watcher`` (with ``request.watcher_v2`` and ``request.watcher_system``), and Watcher
errors turned into redirects and error pages by the shared policy.

Add it after ``AuthenticationMiddleware``::

    MIDDLEWARE += ["django_watcher_auth.middleware.WatcherMiddleware"]
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponse

from django_watcher_auth._http import (
    aclose_watchers,
    attach_watcher,
    end_watcher_loan,
    watcher_error_response,
)

__all__ = ["WatcherMiddleware"]


class WatcherMiddleware:
    """Sets ``request.watcher`` and its API v2 twins, and answers the Watcher errors views raise.

    ``request.watcher`` is a :class:`~watcher_auth.WatcherSession` for the signed-in user,
    built on first use: a view that never touches it costs no store read and no call to
    Watcher. Using it without a connected account raises
    :class:`~watcher_auth.NotConnected`.

    API v2 (``/vsaas/api/v2``), also built on first use:

    - ``request.watcher_v2``: a :class:`~watcher_auth.v2.WatcherV2Session` with the signed-in
      user's stored API v2 session or user key (``request.watcher_v2.get("cameras")``).
    - ``request.watcher_system``: a :class:`~watcher_auth.v2.WatcherV2Session` with Watcher's
      system key (``WATCHER_AUTH["SYSTEM_API_KEY"]``), which has super-admin rights whoever
      is signed in: use it only in views restricted to staff or for server-side jobs.
      Without a key configured, using it raises :class:`~watcher_auth.ConfigurationError`.

    From views, every library failure is answered by :func:`watcher_auth.web.error_answer`:
    failures that need a (new) connection redirect to the connect page with ``next`` (or
    answer 401 JSON with ``connect_url`` to clients that prefer JSON; after
    ``request.watcher_v2`` failed, the API v2 connect page); Watcher or the token store being
    down answers 503 with ``Retry-After``; Watcher's 403 answers 403; and so on, never 500.
    ``requests`` errors on calls to Watcher (``raise_for_status()``) are answered too.

    Async views get ``await request.awatcher()`` (and ``awatcher_v2()``,
    ``awatcher_system()``): the same user's :class:`~watcher_auth.AsyncWatcherClient` from
    the process's :func:`~django_watcher_auth.conf.get_async_manager`, closed after the
    response. The middleware runs sync or async, as the rest of the stack does (ASGI).
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.async_mode = iscoroutinefunction(get_response)
        if self.async_mode:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self.async_mode:
            return self.__acall__(request)
        attach_watcher(request)
        response: HttpResponse = self.get_response(request)
        end_watcher_loan(request, response)
        return response

    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        attach_watcher(request)
        get_response: Callable[[HttpRequest], Awaitable[HttpResponse]] = self.get_response
        try:
            response = await get_response(request)
        finally:
            await aclose_watchers(request)
        end_watcher_loan(request, response)
        return response

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        """The policy's answer to a library failure; ``None`` lets other exceptions through."""
        return watcher_error_response(request, exception)
