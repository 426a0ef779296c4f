"""The benchmark portal's views: one GET to Watcher through ``request.watcher``, and the same
GET with a fixed ``Authorization`` header on a plain ``requests.Session`` configured like the
manager's (the fair floor, see :mod:`_peers`)."""

from __future__ import annotations

import requests
from _peers import TIMEOUT, configure_alike
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.urls import path

from django_watcher_auth.decorators import watcher_required

#: The plain view's session and URL; the benchmark sets the header and the URL.
PLAIN = configure_alike(requests.Session())
plain_url = ""


def _relay(response: requests.Response) -> HttpResponse:
    return HttpResponse(response.content, status=response.status_code)


@login_required
def ours(request: HttpRequest) -> HttpResponse:
    return _relay(request.watcher.get("streams"))  # type: ignore[attr-defined]


@watcher_required
def required(request: HttpRequest) -> HttpResponse:
    return _relay(request.watcher.get("streams"))  # type: ignore[attr-defined]


@login_required
def plain(request: HttpRequest) -> HttpResponse:
    return _relay(PLAIN.get(plain_url, timeout=TIMEOUT))


urlpatterns = [
    path("ours/", ours),
    path("required/", required),
    path("plain/", plain),
]
