"""The connect, disconnect and status pages.

Templates (override any of them in a project's own ``templates/`` folder):
``django_watcher_auth/base.html`` (which the others extend: make it extend the site's base),
``connect.html``, ``status.html`` and ``unavailable.html``.
"""

from __future__ import annotations

import logging

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

from django_watcher_auth._http import safe_next, wants_json
from django_watcher_auth.accounts import account_status
from django_watcher_auth.accounts import disconnect as forget_account
from django_watcher_auth.conf import get_manager, user_key, watcher_settings
from django_watcher_auth.forms import ConnectForm
from watcher_auth import (
    InvalidCredentials,
    WatcherPermissionDenied,
    WatcherProtocolError,
    WatcherUnavailable,
)

__all__ = ["connect", "disconnect", "status"]

logger = logging.getLogger("django_watcher_auth")


def _after_connect(next_url: str | None) -> str:
    return (
        next_url or watcher_settings.CONNECT_REDIRECT_URL or reverse("django_watcher_auth:status")
    )


@sensitive_post_parameters("password")
@csrf_protect
@never_cache
@login_required
@require_http_methods(["GET", "HEAD", "POST"])
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
            try:
                get_manager().login(
                    user_key(request.user),
                    username=username,
                    password=form.cleaned_data.pop("password"),
                )
            except InvalidCredentials:
                form.add_error(None, _("Watcher did not accept this username and password."))
            except WatcherPermissionDenied:
                form.add_error(None, _("This Watcher account may not use the Watcher API."))
            except WatcherUnavailable:
                form.add_error(
                    None, _("Watcher cannot be reached right now. Try again in a minute.")
                )
                http_status = 503
            except WatcherProtocolError:
                form.add_error(None, _("Watcher answered in a way this site does not understand."))
                http_status = 502
            else:
                messages.success(
                    request,
                    _("Your Watcher account %(username)s is connected.") % {"username": username},
                    fail_silently=True,
                )
                return HttpResponseRedirect(_after_connect(next_url))
    else:
        next_url = safe_next(request, request.GET.get("next"))
        form = ConnectForm(initial={"next": next_url or ""})
    context = {"form": form, "next": next_url, "status": account_status(request.user)}
    return render(request, "django_watcher_auth/connect.html", context, status=http_status)


@csrf_protect
@login_required
@require_POST
def disconnect(request: HttpRequest) -> HttpResponse:
    """Forget the signed-in user's Watcher tokens (POST only), then go to ``next``."""
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
def status(request: HttpRequest) -> HttpResponse:
    """Whether the signed-in user's Watcher account is connected (HTML or JSON)."""
    current = account_status(request.user)
    if wants_json(request):
        return JsonResponse(current.as_json())
    return render(request, "django_watcher_auth/status.html", {"status": current})
