"""The ``requests`` pieces: the bearer auth with its 401 retry, and the per-key session."""

from __future__ import annotations

import http.cookiejar
import logging
import re
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from requests.auth import AuthBase

from watcher_auth._exceptions import (
    WatcherAPIError,
    WatcherAuthError,
    WatcherConnectionError,
    WatcherProtocolError,
)
from watcher_auth._policy import error_summary, parse_json_object
from watcher_auth._tokens import TokenPair

if TYPE_CHECKING:
    from watcher_auth._manager import TokenManager

__all__ = ["WatcherBearerAuth", "WatcherSession", "origin_of"]

logger = logging.getLogger("watcher_auth")

_DEFAULT_PORTS = {"http": 80, "https": 443}
_RETRIED = "_watcher_auth_retried"
_ABSOLUTE_URL = re.compile(r"\s*[A-Za-z][A-Za-z0-9+.-]*://")


def origin_of(url: str) -> tuple[str, str, int]:
    """``(scheme, host, port)`` of a URL, with the default port filled in."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port or _DEFAULT_PORTS.get(scheme, 0)
    except ValueError:
        port = -1
    return scheme, (parts.hostname or "").lower(), port


class _NoCookies(http.cookiejar.DefaultCookiePolicy):
    """Refuses every cookie, so nothing one user's answers set can ride on another's calls."""

    def set_ok(self, cookie: http.cookiejar.Cookie, request: Any) -> bool:
        return False


def block_cookies(session: requests.Session) -> None:
    """Make ``session`` ignore cookies from responses."""
    session.cookies.set_policy(_NoCookies())


class WatcherBearerAuth(AuthBase):
    """``requests`` auth that attaches a user key's fresh access token and retries once on 401.

    Usable with any ``requests`` call (``requests.get(url, auth=manager.auth(key))``). The
    token goes only to the manager's Watcher origin (same scheme, host and port).
    """

    def __init__(self, manager: TokenManager, key: str) -> None:
        self._manager = manager
        self.key = key
        self._origin = manager.origin

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        if r.url is None or origin_of(r.url) != self._origin:
            return r
        pair = self._manager.current_tokens(self.key)
        r.headers["Authorization"] = f"Bearer {pair.access_token}"
        position = _body_position(r)

        def retry_on_401(response: requests.Response, **kwargs: Any) -> requests.Response:
            return self._handle_401(response, pair, position, **kwargs)

        r.register_hook("response", retry_on_401)  # type: ignore[no-untyped-call]
        return r

    def _handle_401(
        self, response: requests.Response, sent: TokenPair, position: int | None, **kwargs: Any
    ) -> requests.Response:
        request = response.request
        if response.status_code != 401 or getattr(request, _RETRIED, False):
            return response
        if request.body is not None and position is None and not _replayable(request.body):
            # The body was a one-shot stream: it cannot be sent twice.
            return response
        logger.info("Watcher answered 401 for key %r; refreshing and retrying once", self.key)
        fresh = self._manager.refresh_after_unauthorized(self.key, sent)
        response.content  # noqa: B018 - drain so the connection goes back to the pool
        response.close()
        retry = request.copy()
        setattr(retry, _RETRIED, True)
        retry.headers["Authorization"] = f"Bearer {fresh.access_token}"
        if position is not None:
            retry.body.seek(position)  # type: ignore[union-attr]
        connection = response.connection
        second: requests.Response = connection.send(retry, **kwargs)
        second.history.append(response)
        second.request = retry
        return second

    def __repr__(self) -> str:
        return f"WatcherBearerAuth(key={self.key!r})"


def _body_position(r: requests.PreparedRequest) -> int | None:
    tell = getattr(r.body, "tell", None)
    if tell is None:
        return None
    try:
        return int(tell())
    except OSError:
        return None


def _replayable(body: object) -> bool:
    return isinstance(body, (bytes, str))


class WatcherSession(requests.Session):
    """A ``requests.Session`` bound to one user key of one Watcher server.

    Relative paths resolve against the API root (``session.get("streams")``), every request
    gets the manager's timeout unless one is given, cookies are ignored, and the bearer token
    is never sent to another origin, on an absolute URL or a redirect.
    """

    def __init__(
        self,
        *,
        base_url: str,
        auth: AuthBase,
        timeout: float | tuple[float, float] | None,
        adapter: HTTPAdapter | None = None,
    ) -> None:
        super().__init__()
        self.base_url = base_url if base_url.endswith("/") else base_url + "/"
        self.auth = auth
        self.timeout = timeout
        self._origin = origin_of(self.base_url)
        self._shared_adapter = adapter
        if adapter is not None:
            scheme, host, port = self._origin
            self.mount(f"{scheme}://{host}:{port}/", adapter)
            self.mount(f"{scheme}://{host}/", adapter)
        block_cookies(self)

    def url_for(self, path: str) -> str:
        """The absolute URL for ``path``; absolute URLs are returned unchanged."""
        # Absolute only when the scheme comes first: "streams?next=http://x" is relative.
        if _ABSOLUTE_URL.match(path):
            return path
        return self.base_url + path.lstrip("/")

    def request(
        self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any
    ) -> requests.Response:
        if isinstance(url, bytes):
            url = url.decode()
        if len(args) <= 6 and "timeout" not in kwargs:  # timeout is the 7th extra positional
            kwargs["timeout"] = self.timeout
        try:
            return super().request(method, self.url_for(url), *args, **kwargs)
        except requests.RequestException as exc:
            if isinstance(exc, WatcherAuthError):
                raise
            raise WatcherConnectionError(
                f"Watcher call {_as_text(method)} {_path_only(self.url_for(url))} failed "
                f"({type(exc).__name__})"
            ) from exc

    def rebuild_auth(self, prepared_request: requests.PreparedRequest, response: Any) -> None:
        super().rebuild_auth(prepared_request, response)  # type: ignore[no-untyped-call]
        if prepared_request.url is None or origin_of(prepared_request.url) != self._origin:
            prepared_request.headers.pop("Authorization", None)

    def json(self, path: str, **kwargs: Any) -> Any:
        """GET ``path`` and return its JSON, raising :class:`WatcherAPIError` on an error status."""
        return self._decode(self.get(path, **kwargs))

    def paginate(
        self,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        item_key: str | None = None,
        limit: int | None = None,
    ) -> Iterator[Any]:
        """Yield every item of a cursor-paginated list, following ``next`` until it is null.

        Args:
            path: the list's path, e.g. ``"streams"``.
            params: query parameters for every page (``q``, ``sort``...).
            item_key: the key of the items in each page; by default the path's last segment.
            limit: the page size to ask for.
        """
        key = item_key or path.rstrip("/").rsplit("/", 1)[-1]
        query: dict[str, Any] = dict(params or {})
        if limit is not None:
            query["limit"] = limit
        while True:
            page = self._decode(self.get(path, params=query))
            if not isinstance(page, dict) or not isinstance(page.get(key), list):
                raise WatcherProtocolError(f"Watcher's {path!r} page has no {key!r} list")
            yield from page[key]
            cursor = page.get("next")
            if not cursor:
                return
            query["cursor"] = cursor

    @staticmethod
    def _decode(response: requests.Response) -> Any:
        if response.status_code >= 400:
            raise WatcherAPIError(
                response.status_code,
                f"Watcher answered {error_summary(response.status_code, response.content)} "
                f"for {response.request.method} {_path_only(response.url)}",
            )
        data = parse_json_object(response.content)
        if data is None:
            try:
                return response.json()
            except ValueError:
                raise WatcherProtocolError("Watcher's answer is not JSON") from None
        return data

    def close(self) -> None:
        for prefix, adapter in list(self.adapters.items()):
            if adapter is not self._shared_adapter:
                adapter.close()
            del self.adapters[prefix]

    def __repr__(self) -> str:
        return f"<WatcherSession {self.base_url} auth={self.auth!r}>"


def _as_text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _path_only(url: str) -> str:
    # Query strings may carry tokens a caller put there; messages show the path alone.
    return urlsplit(url).path
