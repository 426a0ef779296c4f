"""The floor and the peers: plain ``requests`` sessions and two OAuth 2 client libraries set up
to talk to Watcher the way a portal would.

Every session here is configured like a :class:`~watcher_auth.TokenManager`'s: ``trust_env``
off (no scan of the environment per call), the CA bundle the manager reads from the
environment once (``requests`` checks whether that path is a folder on every call), an
``HTTPAdapter`` with the same pool sizes, and the same timeout on every call. Only
:func:`typical_client` keeps ``requests``' defaults, as a hand-written client does.

Watcher is not an OAuth 2 server: its login answer has no ``token_type`` or ``expires_in``,
and a refresh is ``POST /login`` with ``Authorization: Bearer <refresh token>`` and no body.
The compliance hooks below adapt both libraries to that, which is what a portal using them
with Watcher has to write. Neither library coordinates refreshes between threads or processes,
and neither retries a call on 401: :class:`OAuthPeer` adds the retry the Watcher docs ask for
(refresh on 401, log in again when the refresh is rejected), as :mod:`_naive` does.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

import jwt
import requests
from requests.adapters import HTTPAdapter

LOGIN_PATH = "/watcher/client-api/v3/login"
API_PATH = "/watcher/client-api/v3/"
#: What ``TokenManager`` uses unless told otherwise.
TIMEOUT = 10.0
POOL_CONNECTIONS, POOL_MAXSIZE = 4, 32

# requests-oauthlib refuses http:// URLs unless this is set; the benchmarks run on loopback.
os.environ.setdefault("OAUTHLIB_INSECURE_TRANSPORT", "1")


#: What a manager verifies TLS with unless told otherwise: the environment's bundle, if any.
VERIFY: bool | str = (
    os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
)


def configure_alike(session: requests.Session) -> requests.Session:
    """``trust_env`` off, the manager's CA bundle and pool sizes, for every scheme."""
    session.trust_env = False
    session.verify = VERIFY
    adapter = HTTPAdapter(pool_connections=POOL_CONNECTIONS, pool_maxsize=POOL_MAXSIZE)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def fair_floor(access_token: str) -> requests.Session:
    """The floor: a bare session configured like ours, with a fixed ``Authorization`` header."""
    session = configure_alike(requests.Session())
    session.headers["Authorization"] = f"Bearer {access_token}"
    return session


def typical_client(access_token: str) -> requests.Session:
    """A session as a hand-written client makes it: ``requests``' defaults, ``trust_env`` on."""
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {access_token}"
    return session


def password_login(server: str, username: str, password: str) -> dict[str, Any]:
    """Watcher's login answer for a password, as a dict."""
    with configure_alike(requests.Session()) as session:
        response = session.post(server + LOGIN_PATH, auth=(username, password), timeout=TIMEOUT)
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body


def oauth_token(answer: dict[str, Any]) -> dict[str, Any]:
    """Watcher's login answer in the shape OAuth 2 clients expect (``expires_at`` from ``exp``)."""
    claims = jwt.decode(answer["access_token"], options={"verify_signature": False})
    return {
        "access_token": answer["access_token"],
        "refresh_token": answer["refresh_token"],
        "token_type": "Bearer",
        "expires_at": int(claims["exp"]),
    }


def _refresh_request(url: str, headers: dict[str, str], body: str) -> tuple[str, dict, str]:
    refresh_token = dict(parse_qsl(body))["refresh_token"]
    return url, {"Accept": "application/json", "Authorization": f"Bearer {refresh_token}"}, ""


def _token_response(response: requests.Response) -> requests.Response:
    if response.status_code == 200:
        response._content = json.dumps(oauth_token(response.json())).encode()
    else:
        # Both libraries raise on an OAuth error body; Watcher sends its own error shape.
        response._content = b'{"error": "invalid_grant"}'
    return response


def authlib_session(server: str, token: dict[str, Any], leeway: float) -> Any:
    """Authlib's ``OAuth2Session`` with auto-refresh armed (token endpoint: Watcher's login)."""
    from authlib.integrations.requests_client import OAuth2Session

    session = OAuth2Session(
        client_id="portal",
        token=token,
        token_endpoint=server + LOGIN_PATH,
        token_endpoint_auth_method="none",
        leeway=leeway,
        default_timeout=TIMEOUT,
    )
    session.register_compliance_hook("refresh_token_request", _refresh_request)
    session.register_compliance_hook("refresh_token_response", _token_response)
    configure_alike(session)
    return session


def oauthlib_session(server: str, token: dict[str, Any]) -> Any:
    """requests-oauthlib's ``OAuth2Session`` with ``auto_refresh_url`` set."""
    from requests_oauthlib import OAuth2Session

    session = OAuth2Session(
        client_id="portal",
        token=token,
        auto_refresh_url=server + LOGIN_PATH,
        # Without an updater the library raises TokenUpdated instead of making the call.
        token_updater=lambda _token: None,
    )
    session.register_compliance_hook("refresh_token_request", _refresh_request)
    session.register_compliance_hook("refresh_token_response", _token_response)
    configure_alike(session)
    return session


def _rejected() -> tuple[type[Exception], ...]:
    from authlib.integrations.base_client import OAuthError
    from oauthlib.oauth2 import OAuth2Error

    return (OAuthError, OAuth2Error)


class OAuthPeer:
    """One OAuth 2 session per process, shared by its threads, as a portal would keep it.

    Args:
        kind: ``"authlib"`` or ``"requests-oauthlib"``.
        server: Watcher's address.
        answer: a login answer to start from (the storm logs in once, before the workers).
        credentials: ``(username, password)`` to log in again when a refresh is rejected.
        leeway: Authlib's seconds before expiry to refresh (requests-oauthlib has none).
    """

    def __init__(
        self,
        kind: str,
        server: str,
        answer: dict[str, Any],
        credentials: tuple[str, str],
        leeway: float,
    ) -> None:
        self.server = server
        self.credentials = credentials
        self.login_url = server + LOGIN_PATH
        token = oauth_token(answer)
        if kind == "authlib":
            self.session = authlib_session(server, token, leeway)
        else:
            self.session = oauthlib_session(server, token)
        self.rejected = _rejected()
        self.lock = threading.Lock()  # guards the token assignment, not the refresh

    def relogin(self) -> None:
        token = oauth_token(password_login(self.server, *self.credentials))
        with self.lock:
            self.session.token = token

    def refresh(self) -> None:
        try:
            self.session.refresh_token(self.login_url)
        except self.rejected:
            self.relogin()

    def caller(self, path: str = "profile") -> Callable[[], bool]:
        url = self.server + API_PATH + path
        session = self.session

        def call() -> bool:
            try:
                r = session.get(url, timeout=TIMEOUT)
            except self.rejected:  # the automatic refresh was rejected
                self.relogin()
                r = session.get(url, timeout=TIMEOUT)
            if r.status_code == 401:
                self.refresh()
                r = session.get(url, timeout=TIMEOUT)
            return bool(r.status_code == 200)

        return call
