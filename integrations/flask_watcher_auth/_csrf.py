"""CSRF protection for the blueprint's forms.

With Flask-WTF installed, its tokens are used (the same ones ``CSRFProtect`` and ``FlaskForm``
use, under its ``WTF_CSRF_*`` settings). Without it, a random per-session token is compared
in constant time.
"""

from __future__ import annotations

import hmac
import importlib
import secrets
from types import ModuleType

from flask import abort, current_app, request, session

__all__ = ["CSRF_FIELD", "SessionCsrf", "WTFCsrf", "choose_csrf"]

CSRF_FIELD = "csrf_token"
_HEADERS = ("X-CSRFToken", "X-CSRF-Token")
_SESSION_KEY = "_watcher_auth_csrf"


class SessionCsrf:
    """A random token kept in the session, for apps without Flask-WTF."""

    def generate(self) -> str:
        """The session's token, created on first use."""
        token = session.get(_SESSION_KEY)
        if not isinstance(token, str) or not token:
            token = secrets.token_urlsafe(32)
            session[_SESSION_KEY] = token
        return token

    def protect(self) -> None:
        """Abort with 400 unless the request carries the session's token."""
        expected = session.get(_SESSION_KEY)
        sent = _sent_token()
        if not isinstance(expected, str) or not sent or not hmac.compare_digest(sent, expected):
            abort(400, description="The form's CSRF token is missing or invalid. Reload the page.")


class WTFCsrf:
    """Flask-WTF's signed, time-limited tokens."""

    def __init__(self, module: ModuleType) -> None:
        self._csrf = module
        self._invalid: type[Exception] = importlib.import_module("wtforms").ValidationError

    def generate(self) -> str:
        """A token for the current session."""
        token: str = self._csrf.generate_csrf()
        return token

    def protect(self) -> None:
        """Abort with 400 unless the request carries a valid token (or WTF_CSRF_ENABLED is off)."""
        if not current_app.config.get("WTF_CSRF_ENABLED", True):
            return
        try:
            self._csrf.validate_csrf(_sent_token())
        except self._invalid as exc:
            abort(400, description=f"CSRF check failed: {exc}")


def choose_csrf() -> SessionCsrf | WTFCsrf:
    """Flask-WTF's CSRF when it is installed, else the session token."""
    try:
        module = importlib.import_module("flask_wtf.csrf")
    except ImportError:
        return SessionCsrf()
    return WTFCsrf(module)


def _sent_token() -> str | None:
    token = request.form.get(CSRF_FIELD)
    if not token:
        for header in _HEADERS:
            token = request.headers.get(header)
            if token:
                break
    return token or None
