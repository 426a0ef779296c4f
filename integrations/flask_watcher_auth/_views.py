"""The ``watcher_auth`` blueprint: connect (API v3 and v2), disconnect and status pages."""

from __future__ import annotations

import logging
import unicodedata
from collections.abc import Callable
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
    ConfigurationError,
    InvalidCredentials,
    TokenDecryptionError,
    TokenManager,
    TokenPair,
    WatcherPermissionDenied,
    WatcherProtocolError,
    WatcherUnavailable,
    web,
)
from watcher_auth.v2 import check_secret

__all__ = [
    "MAX_API_KEY_LENGTH",
    "MAX_PASSWORD_LENGTH",
    "MAX_USERNAME_LENGTH",
    "MODE_API_KEY",
    "MODE_PASSWORD",
    "blueprint",
    "forget",
    "refuse_framing",
    "safe_next_url",
]

logger = logging.getLogger("flask_watcher_auth")

MAX_USERNAME_LENGTH = 150
MAX_PASSWORD_LENGTH = 1024
MAX_API_KEY_LENGTH = 1024
MAX_NEXT_LENGTH = 2048
#: The API v2 connect form's ``mode``: store a user API key, or log in with a password.
MODE_API_KEY = "api_key"
MODE_PASSWORD = "password"

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
        connected=_readable(state.manager.tokens, key)[0] is not None,
    )
    return page, status


@blueprint.route("/connect/v2", methods=["GET", "POST"])
def connect_v2() -> ViewResult:
    """Connect an API v2 account: store a user API key, or log in to API v2 with a password.

    The form has ``username``, ``mode`` (``"api_key"``, the default, or ``"password"``) and
    ``api_key`` or ``password``. A key is stored only after Watcher confirmed it; a password
    is sent once and only the session is kept. Neither is ever put back into the page.
    """
    state = get_state()
    key = state.user_key()
    if key is None:
        return _sign_in_first()
    next_url = safe_next_url(request.values.get("next"))
    mode = request.values.get("mode")
    if mode not in (MODE_API_KEY, MODE_PASSWORD):
        mode = MODE_API_KEY
    username = ""
    error: str | None = None
    status = 200
    if request.method == "POST":
        state.csrf.protect()
        username, secret, error = _read_v2_credentials(request.form, mode)
        if error is None:
            error, status = _connect_v2(key, username, mode, secret)
            if error is None:
                flash("Your Watcher account is connected.")
                return redirect(next_url or url_for(".status"))
        else:
            status = 400
    page = render_template(
        "watcher_auth/connect_v2.html",
        username=username,
        mode=mode,
        next_url=next_url or "",
        error=error,
        connected=_readable(state.manager.v2_tokens, key)[0] is not None,
    )
    return page, status


@blueprint.post("/disconnect")
def disconnect() -> ViewResult:
    """Forget the user's Watcher credentials, API v3 and v2 (POST only)."""
    state = get_state()
    key = state.user_key()
    if key is None:
        return _sign_in_first()
    state.csrf.protect()
    if forget(state.manager, key):
        flash("Your Watcher account is disconnected.")
    return redirect(safe_next_url(request.form.get("next")) or url_for(".status"))


@blueprint.get("/status")
def status() -> ViewResult:
    """Whether the user's Watcher account is connected, as a page or JSON."""
    state = get_state()
    key = state.user_key()
    if key is None:
        return _sign_in_first()
    pair, unreadable = _readable(state.manager.tokens, key)
    facts = _facts(pair)
    v2_pair, v2_unreadable = _readable(state.manager.v2_tokens, key)
    v2: dict[str, Any] | None = None
    if v2_pair is not None:
        v2 = {
            "connected": True,
            "username": v2_pair.username,
            "scheme": v2_pair.scheme,
            "connected_at": _when(v2_pair.connected_at),
        }
    elif v2_unreadable:
        v2 = {"connected": False, "needs_reconnect": True}
    if wants_json():
        extra = {} if v2 is None else {"v2": _as_json(v2)}
        return jsonify(
            connected=pair is not None,
            needs_reconnect=unreadable,
            connect_url=state.connect_url(),
            **_as_json(facts),
            **extra,
        )
    return render_template(
        "watcher_auth/status.html",
        connected=pair is not None,
        needs_reconnect=unreadable,
        v2=v2,
        **facts,
    )


def refuse_framing(response: BaseResponse) -> BaseResponse:
    """No other site may frame the blueprint's pages, which hold forms (clickjacking).

    Registered on the app by ``init_app``, before the portal's own ``after_request``
    functions, so it runs after them: a policy the portal sets gets ``frame-ancestors``
    added rather than replaced.
    """
    if request.blueprint != blueprint.name:
        return response
    response.headers["X-Frame-Options"] = "DENY"
    policy = response.headers.get("Content-Security-Policy")
    if not policy:
        response.headers["Content-Security-Policy"] = "frame-ancestors 'none'"
    elif "frame-ancestors" not in policy:
        response.headers["Content-Security-Policy"] = f"{policy}; frame-ancestors 'none'"
    return response


def forget(manager: TokenManager, key: str) -> bool:
    """Forget ``key``'s API v3 tokens and API v2 session or user key; whether any existed.

    Records the current encryption keys cannot read are deleted too.
    """
    return web.forget(manager, key)


def _readable(load: Callable[[str], TokenPair | None], key: str) -> tuple[TokenPair | None, bool]:
    """``(pair, unreadable)``: a record no current key decrypts reads as "needs reconnect"."""
    try:
        return load(key), False
    except TokenDecryptionError:
        return None, True


def _as_json(facts: dict[str, Any]) -> dict[str, Any]:
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in facts.items()}


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
    if _has_control_codes(password):
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


def _read_v2_credentials(form: Any, mode: str) -> tuple[str, str, str | None]:
    """``(username, api key or password, error)`` from the API v2 form for ``mode``."""
    username = form.get("username", "")
    field = "api_key" if mode == MODE_API_KEY else "password"
    secret = form.get(field, "")
    what = "API key" if mode == MODE_API_KEY else "password"
    if not isinstance(username, str) or not isinstance(secret, str):
        return "", "", f"Enter your Watcher username and {what}."
    username = username.strip()
    if not username or not secret:
        return username[:MAX_USERNAME_LENGTH], "", f"Enter your Watcher username and {what}."
    if len(username) > MAX_USERNAME_LENGTH:
        return "", "", f"The username is longer than {MAX_USERNAME_LENGTH} characters."
    limit = MAX_API_KEY_LENGTH if mode == MODE_API_KEY else MAX_PASSWORD_LENGTH
    if len(secret) > limit:
        return username, "", f"The {what} is longer than {limit} characters."
    if _has_control_characters(username):
        return "", "", "The username contains characters Watcher does not accept."
    if _has_control_characters(secret) if mode == MODE_API_KEY else _has_control_codes(secret):
        return username, "", f"The {what} contains control characters."
    if mode == MODE_API_KEY:
        # The key and its login travel in HTTP headers, which take printable ASCII only.
        try:
            check_secret(username, "username")
            check_secret(secret, "API key")
        except ConfigurationError:
            return "", "", "Use only letters, digits and punctuation, without spaces around them."
    return username, secret, None


def _connect_v2(key: str, username: str, mode: str, secret: str) -> tuple[str | None, int]:
    """Store the key or log in; ``(error, status)`` for the form, ``(None, 200)`` on success."""
    manager = get_state().manager
    try:
        if mode == MODE_API_KEY:
            manager.v2_connect_user_key(key, username=username, api_key=secret)
        else:
            manager.v2_login(key, username=username, password=secret)
    except InvalidCredentials:
        if mode == MODE_API_KEY:
            return "Watcher did not accept this API key for this username.", 400
        return "Watcher did not accept this username and password.", 400
    except WatcherUnavailable:
        return "Watcher cannot be reached right now. Try again in a moment.", 503
    except WatcherProtocolError:
        logger.warning("Watcher's answer to an API v2 connect for key %r was not understood", key)
        return "Watcher gave an answer this site does not understand. Try again later.", 502
    return None, 200


def _has_control_codes(text: str) -> bool:
    """NUL, ESC, line breaks...: refused in passwords, where format characters (the joiner
    inside an emoji sequence) are part of what people type."""
    return any(unicodedata.category(c) == "Cc" for c in text)


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
