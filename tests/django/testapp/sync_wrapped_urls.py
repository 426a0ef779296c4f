"""A URLconf with an async view behind a sync-only decorator, for check E010."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import path


def sync_only(view: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
        return view(request, *args, **kwargs)

    return wrapper


@sync_only
async def wrapped_cameras(request: HttpRequest) -> HttpResponse:
    return JsonResponse({})


urlpatterns = [path("cameras/", wrapped_cameras)]
