"""What the middleware, the decorator and the mixin share: ``request.watcher`` and error pages."""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlencode

import requests
from django.apps import apps
from django.contrib import messages
from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import render
from django.utils.functional import SimpleLazyObject
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext as _

from django_watcher_auth.conf import (
    connect_url,
    get_manager,
    service_account,
    service_key,
    user_key,
    watcher_settings,
)
from watcher_auth import (
    NotConnected,
    ReauthenticationRequired,
    WatcherAuthError,
    WatcherSession,
    WatcherUnavailable,
)
from watcher_auth._session import origin_of

__all__ = [
    "attach_watcher",
    "check_watcher_access",
    "safe_next",
    "wants_json",
    "watcher_error_response",
    "watcher_key",
]

logger = logging.getLogger("django_watcher_auth")

_KEY_ATTR = "_watcher_auth_key"
_RETRY_AFTER = "30"


def watcher_key(request: HttpRequest) -> str:
    """The user key whose Watcher tokens serve this request.

    The signed-in user's own key, or the service account's when one is configured and the
    user has connected no account of their own.

    Raises:
        NotConnected: nobody is signed in to the portal.
    """
    cached = getattr(request, _KEY_ATTR, None)
    if cached is not None:
        return str(cached)
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        raise NotConnected("", "nobody is signed in to the portal, so no Watcher account applies")
    key = user_key(user)
    service = service_account()
    if service is not None and get_manager().tokens(key) is None:
        key = service_key(service[0])
    setattr(request, _KEY_ATTR, key)
    return key


def attach_watcher(request: HttpRequest) -> None:
    """Give ``request`` a lazy ``request.watcher`` (nothing is read until it is used)."""

    def build() -> WatcherSession:
        return get_manager().session(watcher_key(request))

    request.watcher = SimpleLazyObject(build)  # type: ignore[attr-defined]


def check_watcher_access(request: HttpRequest) -> HttpResponse | None:
    """``None`` when the signed-in user has working Watcher tokens, else the response to send.

    Anonymous users go to the login page (or get a 401 JSON answer); users without tokens
    go to the connect page. A stale token is refreshed here, before the view runs.
    """
    if not hasattr(request, "watcher"):
        attach_watcher(request)
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        if wants_json(request):
            return JsonResponse({"error": "login_required"}, status=401)
        return redirect_to_login(request.get_full_path())
    try:
        get_manager().current_tokens(watcher_key(request))
    except WatcherAuthError as exc:
        response = watcher_error_response(request, exc)
        if response is None:
            raise
        return response
    return None


def watcher_error_response(request: HttpRequest, exc: BaseException) -> HttpResponse | None:
    """The page or JSON answer for a Watcher error raised in a view, or ``None`` for others.

    ``NotConnected`` and ``ReauthenticationRequired`` send people to the connect page (JSON
    clients get 401); ``WatcherUnavailable``, or a Watcher call that could not connect or
    timed out, answers 503.
    """
    if isinstance(exc, NotConnected):
        return _reconnect(request, exc)
    if isinstance(exc, WatcherUnavailable) or _watcher_unreachable(exc):
        return _unavailable(request)
    return None


def wants_json(request: HttpRequest) -> bool:
    """Whether to answer JSON: per ``WATCHER_AUTH['JSON_ERRORS']``, else what the client asks."""
    setting = watcher_settings.JSON_ERRORS
    if setting is not None:
        return bool(setting)
    if request.headers.get("x-requested-with") == "XMLHttpRequest":
        return True
    accepted = _accept_qualities(request.headers.get("accept", ""))
    json_q = max(accepted.get("application/json", 0.0), accepted.get("application/*", 0.0))
    html_q = max(accepted.get("text/html", 0.0), accepted.get("text/*", 0.0))
    return json_q > html_q


def safe_next(request: HttpRequest, url: str | None) -> str | None:
    """``url`` if it stays on this site (and on HTTPS when the request is), else ``None``."""
    if not url:
        return None
    if url_has_allowed_host_and_scheme(
        url, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return url
    return None


def _accept_qualities(header: str) -> dict[str, float]:
    qualities: dict[str, float] = {}
    for item in header.split(","):
        media, *params = (part.strip() for part in item.split(";"))
        if not media:
            continue
        quality = 1.0
        for param in params:
            name, _sep, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        qualities[media.lower()] = max(quality, qualities.get(media.lower(), 0.0))
    return qualities


def _reconnect(request: HttpRequest, exc: NotConnected) -> HttpResponse:
    url = connect_url()
    reauth = isinstance(exc, ReauthenticationRequired)
    logger.info(
        "user key %r sent to the Watcher connect page (%s)",
        exc.key,
        "tokens rejected" if reauth else "not connected",
    )
    if wants_json(request):
        body = {
            "error": "watcher_reauthentication_required",
            "reason": "reauthentication_required" if reauth else "not_connected",
            "connect_url": url,
        }
        return JsonResponse(body, status=401)
    if apps.is_installed("django.contrib.messages"):
        text = (
            _("Watcher no longer accepts your saved sign-in. Connect your Watcher account again.")
            if reauth
            else _("Connect your Watcher account to continue.")
        )
        messages.warning(request, text, fail_silently=True)
    back = request.get_full_path() if request.method in ("GET", "HEAD") else None
    back = back or safe_next(request, request.headers.get("referer"))
    if back:
        url = f"{url}{'&' if '?' in url else '?'}{urlencode({'next': back})}"
    return HttpResponseRedirect(url)


def _unavailable(request: HttpRequest) -> HttpResponse:
    logger.warning("Watcher unavailable while serving %s", request.path)
    response: HttpResponse
    if wants_json(request):
        response = JsonResponse({"error": "watcher_unavailable"}, status=503)
    else:
        response = render(request, "django_watcher_auth/unavailable.html", status=503)
    response["Retry-After"] = _RETRY_AFTER
    return response


def _watcher_unreachable(exc: BaseException) -> bool:
    """A ``requests`` connection error or timeout on a call to the configured Watcher."""
    if not isinstance(exc, (requests.ConnectionError, requests.Timeout)):
        return False
    sent: Any = getattr(exc, "request", None)
    url = getattr(sent, "url", None)
    if not isinstance(url, str):
        return False
    try:
        return origin_of(url) == get_manager().origin
    except WatcherAuthError:
        return False
