"""The API v2 session: relative paths under ``/vsaas/api/v2/`` and offset pagination."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import requests

from watcher_auth._session import WatcherSession
from watcher_auth._urls import origin_of
from watcher_auth.v2._policy import DEFAULT_PAGE_SIZE, OffsetPages, strip_credential_headers

__all__ = ["DEFAULT_PAGE_SIZE", "WatcherV2Session"]


class WatcherV2Session(WatcherSession):
    """A ``requests.Session`` for Watcher API v2 (``session.get("cameras")``).

    Made by :meth:`TokenManager.v2_session` and :meth:`TokenManager.v2_system_session`. Like
    the v3 session: relative paths, the manager's timeout, no cookies, and no credentials
    (``x-vsaas-*`` headers included) to another origin, on an absolute URL or a redirect.
    """

    def rebuild_auth(self, prepared_request: requests.PreparedRequest, response: Any) -> None:
        super().rebuild_auth(prepared_request, response)
        if prepared_request.url is None or origin_of(prepared_request.url) != self._origin:
            strip_credential_headers(prepared_request.headers)

    def paginate(
        self,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        item_key: str | None = None,
        limit: int | None = None,
        max_pages: int | None = None,
    ) -> Iterator[Any]:
        """Yield every item of an offset-paginated list such as ``"cameras"``.

        Pages are asked for with ``limit`` and a growing ``offset`` until one comes back
        shorter than ``limit``.

        Args:
            path: the list's path, e.g. ``"cameras"``.
            params: query parameters for every page (``search``...).
            item_key: when pages are JSON objects, the key of their item list; by default
                pages are bare JSON arrays, as ``/cameras`` answers.
            limit: the page size to ask for (default 100).
            max_pages: stop after this many pages.

        Raises:
            WatcherPaginationError: the server answered the same page again (it ignores
                the offset).
        """
        pages = OffsetPages(
            path, params=params, item_key=item_key, limit=limit, max_pages=max_pages
        )
        more = True
        while more:
            items, more = pages.take(self._decode(self.get(path, params=pages.query)))
            yield from items

    def __repr__(self) -> str:
        return f"<WatcherV2Session {self.base_url} auth={self.auth!r}>"
