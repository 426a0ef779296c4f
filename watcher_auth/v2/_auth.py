"""``requests`` auth for API v2: the two key schemes, and a user key's stored credentials."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests
from requests.auth import AuthBase

from watcher_auth._exceptions import ConfigurationError
from watcher_auth._session import FlowAuth
from watcher_auth._tokens import Secret
from watcher_auth._urls import origin_of
from watcher_auth.v2._policy import (
    API_KEY_HEADER,
    USER_HEADER,
    check_secret,
    strip_credential_headers,
)

__all__ = ["SystemApiKeyAuth", "UserApiKeyAuth", "WatcherV2Auth", "strip_on_cross_origin_redirect"]

logger = logging.getLogger("watcher_auth")


def strip_on_cross_origin_redirect(response: requests.Response, **kwargs: Any) -> requests.Response:
    """Response hook: drop ``x-vsaas-*`` headers before a redirect to another origin.

    ``requests`` strips only ``Authorization`` on such a redirect and copies every other
    header of the request to the next one; the copy is made from ``response.request``.
    """
    request = response.request
    if response.is_redirect and request is not None and request.url:
        target = urljoin(request.url, response.headers.get("location", ""))
        if origin_of(target) != origin_of(request.url):
            strip_credential_headers(request.headers)
    return response


def _origin(url: str | None) -> tuple[str, str, int] | None:
    if url is None:
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(f"origin must be an http:// or https:// URL, not {url!r}")
    return origin_of(url)


class _ApiKeyAuth(AuthBase, ABC):
    """Adds fixed v2 key headers, only for ``origin`` when one is given."""

    def __init__(self, origin: str | None) -> None:
        self._origin = _origin(origin)
        self.origin = origin

    @abstractmethod
    def _headers(self) -> dict[str, str]:
        """The credential headers this scheme sends."""

    def headers_for(self, url: str) -> dict[str, str]:
        """The headers to send to ``url``: none unless it is on the allowed origin."""
        if self._origin is not None and origin_of(url) != self._origin:
            return {}
        return self._headers()

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        headers = self.headers_for(r.url or "")
        if r.url is None or not headers:
            return r
        r.headers.update(headers)
        r.register_hook("response", strip_on_cross_origin_redirect)  # type: ignore[no-untyped-call]
        return r


class SystemApiKeyAuth(_ApiKeyAuth):
    """Watcher's system API key (``x-vsaas-api-key``): any API v2 request, as super-admin.

    ``requests.get(f"{url}/vsaas/api/v2/cameras", auth=SystemApiKeyAuth(key))``. The key is
    not shown in ``repr``, and it is dropped on a redirect to another origin.

    Args:
        api_key: the system key from Watcher's settings.
        origin: if given (``"https://watcher.example.com"``), the key is sent only to this
            scheme, host and port.

    Raises:
        ConfigurationError: the key is empty or cannot travel in a header.
    """

    def __init__(self, api_key: str, *, origin: str | None = None) -> None:
        super().__init__(origin)
        self._api_key = check_secret(api_key, "system API key")

    def _headers(self) -> dict[str, str]:
        return {API_KEY_HEADER: Secret(self._api_key)}

    def __repr__(self) -> str:
        return f"SystemApiKeyAuth(api_key='***', origin={self.origin!r})"


class UserApiKeyAuth(_ApiKeyAuth):
    """A user's API key (``x-vsaas-api-key`` with ``x-vsaas-user``): that user's permissions.

    ``requests.get(f"{url}/vsaas/api/v2/cameras", auth=UserApiKeyAuth("alice", key))``. The
    key is not shown in ``repr``, and it is dropped on a redirect to another origin.

    Args:
        login: the Watcher login the key belongs to.
        api_key: the key from the user's Watcher profile.
        origin: if given, the key is sent only to this scheme, host and port.

    Raises:
        ConfigurationError: the login or key is empty or cannot travel in a header.
    """

    def __init__(self, login: str, api_key: str, *, origin: str | None = None) -> None:
        super().__init__(origin)
        self.login = check_secret(login, "Watcher login")
        self._api_key = check_secret(api_key, "user API key")

    def _headers(self) -> dict[str, str]:
        return {API_KEY_HEADER: Secret(self._api_key), USER_HEADER: self.login}

    def __repr__(self) -> str:
        return f"UserApiKeyAuth(login={self.login!r}, api_key='***', origin={self.origin!r})"


class WatcherV2Auth(FlowAuth):
    """``requests`` auth with a user key's stored API v2 credentials (session or user key).

    Made by :meth:`TokenManager.v2_auth`. The credentials go only to the manager's Watcher
    origin. A 403 from that origin may mean "dead credentials" or "not allowed":
    ``GET /auth/whoami`` with the same credentials tells which. Dead ones are replaced by a
    new login (when the manager has a credentials provider for the key; then the request is
    sent once more) or deleted with :class:`~watcher_auth.ReauthenticationRequired`; a
    refusal is returned as it came.
    """

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        r = super().__call__(r)
        r.register_hook("response", strip_on_cross_origin_redirect)  # type: ignore[no-untyped-call]
        return r
