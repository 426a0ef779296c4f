"""The connect, API v2 connect, disconnect and status pages.

Templates (override any of them in a project's own ``templates/`` folder):
``django_watcher_auth/base.html`` (which the others extend: make it extend the site's base),
``connect.html``, ``connect_v2.html``, ``status.html``, ``unavailable.html`` (503 answers)
and ``error.html`` (other failures).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import wraps

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils.translation import gettext as _
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_protect
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_http_methods, require_POST

from django_watcher_auth._http import safe_next, wants_json, watcher_error_response
from django_watcher_auth.accounts import account_status
from django_watcher_auth.accounts import disconnect as forget_account
from django_watcher_auth.conf import get_manager, user_key, watcher_settings
from django_watcher_auth.forms import ConnectForm, ConnectV2Form
from watcher_auth import (
    InvalidCredentials,
    Secret,
    WatcherAuthError,
    WatcherPermissionDenied,
    WatcherProtocolError,
    WatcherUnavailable,
)

__all__ = ["connect", "connect_v2", "disconnect", "status"]

logger = logging.getLogger("django_watcher_auth")


ViewFunction = Callable[..., HttpResponse]


def _answers_failures(view: ViewFunction) -> ViewFunction:
    """Answer the library's failures by the shared policy, also without the middleware."""

    @wraps(view)
    def wrapped(request: HttpRequest, *args: object, **kwargs: object) -> HttpResponse:
        try:
            return view(request, *args, **kwargs)
        except WatcherAuthError as exc:
            response = watcher_error_response(request, exc)
            if response is None:  # pragma: no cover - every library error has an answer
                raise
            return response

    return wrapped


def _after_connect(next_url: str | None) -> str:
    return (
        next_url or watcher_settings.CONNECT_REDIRECT_URL or reverse("django_watcher_auth:status")
    )


def _try_connect(
    request: HttpRequest,
    form: forms.Form,
    attempt: Callable[[], object],
    *,
    rejected: str,
    username: str,
    next_url: str | None,
) -> tuple[HttpResponse | None, int]:
    """Run a connect ``attempt``: the redirect on success, else a form error and a status."""
    try:
        attempt()
    except InvalidCredentials:
        form.add_error(None, rejected)
        return None, 200
    except WatcherPermissionDenied:
        form.add_error(None, _("This Watcher account may not use the Watcher API."))
        return None, 200
    except WatcherUnavailable:
        form.add_error(None, _("Watcher cannot be reached right now. Try again in a minute."))
        return None, 503
    except WatcherProtocolError:
        form.add_error(None, _("Watcher answered in a way this site does not understand."))
        return None, 502
    messages.success(
        request,
        _("Your Watcher account %(username)s is connected.") % {"username": username},
        fail_silently=True,
    )
    return HttpResponseRedirect(_after_connect(next_url)), 200


@sensitive_post_parameters("password")
@csrf_protect
@never_cache
@login_required
@require_http_methods(["GET", "HEAD", "POST"])
@_answers_failures
def connect(request: HttpRequest) -> HttpResponse:
    """Ask for the Watcher username and password, log in once, keep only the tokens.

    On success the person goes to a safe ``next`` (or the status page). A wrong password
    shows the form again with an error; Watcher being down shows an error with status 503.
    """
    http_status = 200
    if request.method == "POST":
        form = ConnectForm(request.POST)
        next_url = safe_next(request, request.POST.get("next"))
        if form.is_valid():
            username = form.cleaned_data["username"]
            password = Secret(form.cleaned_data.pop("password"))
            done, http_status = _try_connect(
                request,
                form,
                lambda: get_manager().login(
                    user_key(request.user), username=username, password=password
                ),
                rejected=_("Watcher did not accept this username and password."),
                username=username,
                next_url=next_url,
            )
            if done is not None:
                return done
    else:
        next_url = safe_next(request, request.GET.get("next"))
        form = ConnectForm(initial={"next": next_url or ""})
    context = {"form": form, "next": next_url, "status": account_status(request.user)}
    return render(request, "django_watcher_auth/connect.html", context, status=http_status)


@sensitive_post_parameters("password", "api_key")
@csrf_protect
@never_cache
@login_required
@require_http_methods(["GET", "HEAD", "POST"])
@_answers_failures
def connect_v2(request: HttpRequest) -> HttpResponse:
    """Connect an API v2 account: store a user API key, or log in to API v2 with a password.

    The key is kept only after Watcher confirmed it (``GET /auth/whoami``); a password is
    sent once and only the session is kept. ``?mode=password`` preselects the password.
    Errors show the form again without the key or password in it.
    """
    http_status = 200
    if request.method == "POST":
        form = ConnectV2Form(request.POST)
        next_url = safe_next(request, request.POST.get("next"))
        if form.is_valid():
            data = form.cleaned_data
            username = data["username"]
            manager = get_manager()
            key = user_key(request.user)
            if data["mode"] == ConnectV2Form.MODE_API_KEY:
                api_key = Secret(data.pop("api_key"))
                done, http_status = _try_connect(
                    request,
                    form,
                    lambda: manager.v2_connect_user_key(key, username=username, api_key=api_key),
                    rejected=_("Watcher did not accept this API key for this username."),
                    username=username,
                    next_url=next_url,
                )
            else:
                password = Secret(data.pop("password"))
                done, http_status = _try_connect(
                    request,
                    form,
                    lambda: manager.v2_login(key, username=username, password=password),
                    rejected=_("Watcher did not accept this username and password."),
                    username=username,
                    next_url=next_url,
                )
            if done is not None:
                return done
    else:
        next_url = safe_next(request, request.GET.get("next"))
        mode = request.GET.get("mode")
        initial = {"next": next_url or ""}
        if mode in (ConnectV2Form.MODE_API_KEY, ConnectV2Form.MODE_PASSWORD):
            initial["mode"] = mode
        form = ConnectV2Form(initial=initial)
    context = {"form": form, "next": next_url, "status": account_status(request.user)}
    return render(request, "django_watcher_auth/connect_v2.html", context, status=http_status)


@csrf_protect
@login_required
@require_POST
@_answers_failures
def disconnect(request: HttpRequest) -> HttpResponse:
    """Forget the signed-in user's Watcher credentials, API v3 and v2 (POST only), then go to
    ``next``."""
    had_tokens = forget_account(request.user)
    if wants_json(request):
        return JsonResponse({"disconnected": had_tokens})
    if had_tokens:
        messages.info(request, _("Your Watcher account is disconnected."), fail_silently=True)
    next_url = safe_next(request, request.POST.get("next"))
    return HttpResponseRedirect(next_url or reverse("django_watcher_auth:status"))


@never_cache
@login_required
@require_http_methods(["GET", "HEAD"])
@_answers_failures
def status(request: HttpRequest) -> HttpResponse:
    """Whether the signed-in user's Watcher account is connected (HTML or JSON)."""
    current = account_status(request.user)
    if wants_json(request):
        return JsonResponse(current.as_json())
    return render(request, "django_watcher_auth/status.html", {"status": current})
