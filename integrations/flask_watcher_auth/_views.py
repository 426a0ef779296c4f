"""The ``watcher_auth`` blueprint: connect, disconnect and status pages."""

from __future__ import annotations

import logging
import unicodedata
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)
from werkzeug.wrappers import Response as BaseResponse

from flask_watcher_auth._extension import get_state, wants_json
from watcher_auth import (
    InvalidCredentials,
    TokenPair,
    WatcherPermissionDenied,
    WatcherProtocolError,
    WatcherUnavailable,
)

__all__ = ["MAX_PASSWORD_LENGTH", "MAX_USERNAME_LENGTH", "blueprint", "safe_next_url"]

logger = logging.getLogger("flask_watcher_auth")

MAX_USERNAME_LENGTH = 150
MAX_PASSWORD_LENGTH = 1024
MAX_NEXT_LENGTH = 2048

blueprint = Blueprint("watcher_auth", __name__, template_folder="templates")

ViewResult = BaseResponse | tuple[str, int] | str


@blueprint.app_template_global("watcher_csrf_token")
def watcher_csrf_token() -> str:
    """The CSRF token the blueprint's forms carry (field ``csrf_token``)."""
    return get_state().csrf.generate()


@blueprint.route("/connect", methods=["GET", "POST"])
def connect() -> ViewResult:
    """Ask for the Watcher username and password, log in once, keep the tokens."""
    state = get_state()
    key = state.user_key()
    if key is None:
        return _sign_in_first()
    next_url = safe_next_url(request.values.get("next"))
    username = ""
    error: str | None = None
    status = 200
    if request.method == "POST":
        state.csrf.protect()
        username, password, error = _read_credentials(request.form)
        if error is None:
            error, status = _log_in(key, username, password)
            if error is None:
                flash("Your Watcher account is connected.")
                return redirect(next_url or url_for(".status"))
        else:
            status = 400
    page = render_template(
        "watcher_auth/connect.html",
        username=username,
        next_url=next_url or "",
        error=error,
        connected=state.manager.is_connected(key),
    )
    return page, status


@blueprint.post("/disconnect")
def disconnect() -> ViewResult:
    """Forget the user's Watcher tokens (POST only)."""
    state = get_state()
    key = state.user_key()
    if key is None:
        return _sign_in_first()
    state.csrf.protect()
    if state.manager.logout(key):
        flash("Your Watcher account is disconnected.")
    return redirect(safe_next_url(request.form.get("next")) or url_for(".status"))


@blueprint.get("/status")
def status() -> ViewResult:
    """Whether the user's Watcher account is connected, as a page or JSON."""
    state = get_state()
    key = state.user_key()
    if key is None:
        return _sign_in_first()
    pair = state.manager.tokens(key)
    facts = _facts(pair)
    if wants_json():
        return jsonify(
            connected=pair is not None,
            connect_url=state.connect_url(),
            **{
                name: value.isoformat() if isinstance(value, datetime) else value
                for name, value in facts.items()
            },
        )
    return render_template("watcher_auth/status.html", connected=pair is not None, **facts)


def safe_next_url(value: str | None) -> str | None:
    """``value`` if it is a path on this site, else ``None``.

    Only relative paths starting with a single ``/`` pass: no scheme, no host, no ``//`` or
    backslash (which browsers read as another host), no control characters.
    """
    if not value or len(value) > MAX_NEXT_LENGTH:
        return None
    if not value.startswith("/") or value.startswith("//") or "\\" in value:
        return None
    if any(unicodedata.category(c) == "Cc" for c in value):
        return None
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return None
    return value


def _read_credentials(form: Any) -> tuple[str, str, str | None]:
    """``(username, password, error)`` from the form; ``error`` is ``None`` when usable."""
    username = form.get("username", "")
    password = form.get("password", "")
    if not isinstance(username, str) or not isinstance(password, str):
        return "", "", "Enter your Watcher username and password."
    username = username.strip()
    if not username or not password:
        return username[:MAX_USERNAME_LENGTH], "", "Enter your Watcher username and password."
    if len(username) > MAX_USERNAME_LENGTH:
        return "", "", f"The username is longer than {MAX_USERNAME_LENGTH} characters."
    if len(password) > MAX_PASSWORD_LENGTH:
        return username, "", f"The password is longer than {MAX_PASSWORD_LENGTH} characters."
    if _has_control_characters(username) or ":" in username:
        return "", "", "The username contains characters Watcher does not accept."
    if _has_control_characters(password):
        return username, "", "The password contains control characters."
    return username, password, None


def _log_in(key: str, username: str, password: str) -> tuple[str | None, int]:
    """Log in with the credentials; ``(error, status)`` for the form, ``(None, 200)`` on success."""
    try:
        get_state().manager.login(key, username=username, password=password)
    except InvalidCredentials:
        return "Watcher did not accept this username and password.", 400
    except WatcherPermissionDenied:
        return "Watcher refused to let this account sign in.", 400
    except WatcherUnavailable:
        return "Watcher cannot be reached right now. Try again in a moment.", 503
    except WatcherProtocolError:
        logger.warning("Watcher's answer to a login for key %r was not understood", key)
        return "Watcher gave an answer this site does not understand. Try again later.", 502
    return None, 200


def _has_control_characters(text: str) -> bool:
    return any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in text)


def _facts(pair: TokenPair | None) -> dict[str, Any]:
    if pair is None:
        return {"username": None, "connected_at": None, "refreshed_at": None, "expires_at": None}
    return {
        "username": pair.username,
        "connected_at": _when(pair.connected_at),
        "refreshed_at": _when(pair.refreshed_at),
        "expires_at": _when(pair.local_expires_at),
    }


def _when(timestamp: float | None) -> datetime | None:
    return None if timestamp is None else datetime.fromtimestamp(timestamp, tz=timezone.utc)


def _sign_in_first() -> ViewResult:
    """Send an anonymous visitor to the portal's sign-in page, or answer 401."""
    login_manager = getattr(current_app, "login_manager", None)
    if login_manager is not None:  # Flask-Login: its login_view, or its 401
        result: ViewResult = login_manager.unauthorized()
        return result
    abort(401, description="Sign in to the portal before connecting a Watcher account.")
